/**
 * Credentials depend on the repository: an auth-file key naming a namespace (`HOST/team`, as
 * `podman login HOST/team` writes it) is sent for `team/…` only. Against a token-auth registry
 * whose token server records who asked: pulls of `team/app` authenticate as the namespace's
 * user, pulls of `other/app` on the same host stay anonymous (and are refused), and a
 * host-wide key serves the other namespace without the team's user ever showing up there.
 *
 * @module
 */
import assert from "node:assert/strict";
import { AuthFiles } from "../../drivers/auth_files.ts";
import { createContext } from "../../drivers/driver.ts";
import { DockerV2Driver } from "../../drivers/docker_v2.ts";
import { RegistryError } from "../../drivers/errors.ts";
import { pushImage } from "../helpers/images.ts";
import { startRegistry } from "../helpers/registry.ts";

Deno.test("a namespace-scoped credential is not sent to another namespace", async () => {
  const reg = await startRegistry({
    auth: "token",
    users: { teamuser: "team-pw", hostuser: "host-pw" },
  });
  const dir = await Deno.makeTempDir({ prefix: "crfs-nscreds-" });
  try {
    await pushImage(reg, "team/app", "v1");
    await pushImage(reg, "other/app", "v1");
    const ts = reg.tokenServer!;
    const authFile = `${dir}/auth.json`;
    const write = (auths: Record<string, string>) =>
      Deno.writeTextFile(
        authFile,
        JSON.stringify({
          auths: Object.fromEntries(
            Object.entries(auths).map(([k, v]) => [k, { auth: btoa(v) }]),
          ),
        }),
      );
    await write({ [`${reg.host}/team`]: "teamuser:team-pw" });
    const files = new AuthFiles({ authFile, env: () => undefined });
    const d = new DockerV2Driver(createContext({ authFiles: files, retries: 0 }));
    ts.requests.length = 0;
    await d.getManifest({ host: reg.host, repository: "team/app" }, "v1");
    const e = await d.getManifest({ host: reg.host, repository: "other/app" }, "v1").then(
      () => undefined,
      (e) => e,
    );
    assert.ok(e instanceof RegistryError && e.code === "UNAUTHORIZED", String(e));
    const byScope = (repo: string) =>
      ts.requests.filter((r) => r.scopes.some((s) => s.startsWith(`repository:${repo}:`)));
    assert.ok(byScope("team/app").length > 0);
    assert.ok(byScope("team/app").every((r) => r.user === "teamuser"));
    assert.ok(byScope("other/app").length > 0);
    assert.ok(
      byScope("other/app").every((r) => r.via === "anonymous"),
      JSON.stringify(byScope("other/app")),
    );

    // A host-wide key for the rest of the host: the namespace key still wins for team/.
    await write({
      [`${reg.host}/team`]: "teamuser:team-pw",
      [reg.host]: "hostuser:host-pw",
    });
    const d2 = new DockerV2Driver(createContext({ authFiles: files, retries: 0 }));
    ts.requests.length = 0;
    await d2.getManifest({ host: reg.host, repository: "other/app" }, "v1");
    await d2.getManifest({ host: reg.host, repository: "team/app" }, "v1");
    assert.deepEqual(byScope("other/app").map((r) => r.user), ["hostuser"]);
    assert.deepEqual(byScope("team/app").map((r) => r.user), ["teamuser"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
    await reg.stop();
  }
});
