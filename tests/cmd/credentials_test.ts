/**
 * Credentials given on the command line belong to one registry. Two token-auth registries, each
 * with its own token server recording who asked: `--creds` for registry A (bound to the host the
 * command names, or to `--creds-host`) never reach B's token server, even when the same setup
 * reads from B; `--src-creds`/`--dest-creds` each go to their own side; ambiguous or unbound
 * credential flags are usage errors. The binding is `setupRegistry`'s, which every command uses.
 *
 * @module
 */
import assert from "node:assert/strict";
import { RegistryError } from "../../drivers/errors.ts";
import { UsageError } from "../../convert/errors.ts";
import { credentialFlags, setupRegistry } from "../../cmd/registry_options.ts";
import { pushImage } from "../helpers/images.ts";
import { startRegistry } from "../helpers/registry.ts";

const noStdin = () => Promise.reject(new Error("stdin must not be read"));

async function twoRegistries() {
  const a = await startRegistry({ auth: "token", users: { alice: "alice-pw-A" } });
  const b = await startRegistry({ auth: "token", users: { bob: "bob-pw-B" } });
  await pushImage(a, "team/app", "v1");
  await pushImage(b, "team/app", "v1");
  a.tokenServer!.requests.length = 0;
  b.tokenServer!.requests.length = 0;
  const dir = await Deno.makeTempDir({ prefix: "crfs-creds-" });
  const emptyAuth = `${dir}/auth.json`;
  await Deno.writeTextFile(emptyAuth, "{}");
  return {
    a,
    b,
    emptyAuth,
    async stop() {
      await a.stop();
      await b.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("--creds go only to the registry they are for", async () => {
  const t = await twoRegistries();
  try {
    const setup = await setupRegistry(
      { creds: "alice:alice-pw-A", "no-cache": true, authfile: t.emptyAuth },
      { prefetch: false, credentials: { hosts: [t.a.host] } },
    );
    try {
      const repoA = { host: t.a.host, repository: "team/app" };
      const repoB = { host: t.b.host, repository: "team/app" };
      await setup.drivers.forHost(t.a.host).getManifest(repoA, "v1");
      const e = await setup.drivers.forHost(t.b.host).getManifest(repoB, "v1").then(
        () => undefined,
        (e) => e,
      );
      assert.ok(e instanceof RegistryError && e.code === "UNAUTHORIZED", String(e));
      assert.deepEqual(t.a.tokenServer!.requests.map((r) => [r.via, r.user]), [["basic", "alice"]]);
      assert.ok(t.b.tokenServer!.requests.length > 0, "B was asked");
      assert.ok(
        t.b.tokenServer!.requests.every((r) => r.via === "anonymous" && r.user === undefined),
        JSON.stringify(t.b.tokenServer!.requests),
      );
    } finally {
      setup.close();
    }
  } finally {
    await t.stop();
  }
});

Deno.test("--src-creds and --dest-creds each go to their own registry", async () => {
  const t = await twoRegistries();
  try {
    const setup = await setupRegistry({
      "src-creds": "alice:alice-pw-A",
      "dest-creds": "bob:bob-pw-B",
      "no-cache": true,
      authfile: t.emptyAuth,
    }, { prefetch: false, credentials: { src: t.a.host, dest: t.b.host } });
    try {
      for (const reg of [t.a, t.b]) {
        await setup.drivers.forHost(reg.host).getManifest(
          { host: reg.host, repository: "team/app" },
          "v1",
        );
      }
      assert.deepEqual(t.a.tokenServer!.requests.map((r) => r.user), ["alice"]);
      assert.deepEqual(t.b.tokenServer!.requests.map((r) => r.user), ["bob"]);
    } finally {
      setup.close();
    }
  } finally {
    await t.stop();
  }
});

Deno.test("credential flags: bound, ambiguous and unbound", async () => {
  assert.deepEqual(
    await credentialFlags({ creds: "u:p", "creds-host": ["r.example", "s.example"] }, {}, noStdin),
    [{
      hosts: ["r.example", "s.example"],
      username: "u",
      password: "p",
      source: "--creds (for r.example, s.example)",
    }],
  );
  assert.deepEqual(
    (await credentialFlags({ username: "u", "password-stdin": true }, {
      hosts: ["r.example"],
    }, () => Promise.resolve("from-stdin")))[0],
    {
      hosts: ["r.example"],
      username: "u",
      password: "from-stdin",
      source: "--username (for r.example)",
    },
  );
  const usage = async (values: Record<string, unknown>, targets: object, re: RegExp) => {
    await assert.rejects(
      credentialFlags(values, targets, noStdin),
      (e) => e instanceof UsageError && re.test(e.message),
    );
  };
  await usage({ creds: "u:p" }, {}, /needs --creds-host HOST/);
  await usage({ creds: "u:p" }, { hosts: ["a.example", "b.example"] }, /several registries/);
  // convert: --creds/--username are the destination's (where it pushes), else the source's.
  assert.deepEqual(
    (await credentialFlags({ creds: "u:p" }, { src: "a.example", dest: "b.example" }, noStdin))[0]
      .hosts,
    ["b.example"],
  );
  assert.deepEqual(
    (await credentialFlags({ creds: "u:p" }, { src: "a.example" }, noStdin))[0].hosts,
    ["a.example"],
  );
  await usage({ username: "u" }, { hosts: ["a.example"] }, /USER:PASS or --password-stdin/);
  await usage({ creds: "u:p", username: "u" }, { hosts: ["a.example"] }, /exclude each other/);
  await usage({ "src-creds": "u:p" }, { dest: "b.example" }, /source is not a registry/);
  await usage({ "password-stdin": true }, { hosts: ["a.example"] }, /--password-stdin needs/);
  // The same registry on both sides is one registry: no ambiguity.
  const same = await credentialFlags(
    { creds: "u:p" },
    { src: "a.example", dest: "A.example" },
    noStdin,
  );
  assert.deepEqual(same[0].hosts, ["a.example"]);
});
