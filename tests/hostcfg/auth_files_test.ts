/**
 * drivers/auth_files.ts: the file order of containers-auth.json(5) with the environment pointed
 * at temp dirs, namespace-scoped keys (most specific wins, never another namespace), key
 * normalization, legacy .dockercfg, credHelpers/credsStore and registries.conf helpers as real
 * programs on PATH, `podman login` writing the auth.json crfs then uses against docker-registry
 * with htpasswd, and a token server that records which user asked for which repository.
 */
import assert from "node:assert/strict";
import {
  authFilePaths,
  AuthFiles,
  authKeysFor,
  CredentialsFileError,
  normalizeAuthKey,
} from "../../drivers/auth_files.ts";
import { createContext } from "../../drivers/driver.ts";
import { DockerV2Driver } from "../../drivers/docker_v2.ts";
import { pushImage } from "../helpers/images.ts";
import { startRegistry } from "../helpers/registry.ts";
import { podmanLoginWith } from "./tls_helpers.ts";

const b64 = (s: string) => btoa(s);

async function writeJson(path: string, value: unknown): Promise<void> {
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  await Deno.writeTextFile(path, JSON.stringify(value));
}

function envOf(vars: Record<string, string>): (name: string) => string | undefined {
  return (name) => vars[name];
}

Deno.test("auth files: the order of containers-auth.json(5), explicit file first", () => {
  const env = envOf({
    HOME: "/h",
    XDG_RUNTIME_DIR: "/run/user/7",
    XDG_CONFIG_HOME: "/cfg",
    DOCKER_CONFIG: "/dock",
  });
  assert.deepEqual(authFilePaths({ env }).map((p) => p.path), [
    "/run/user/7/containers/auth.json",
    "/cfg/containers/auth.json",
    "/dock/config.json",
    "/h/.dockercfg",
  ]);
  assert.deepEqual(
    authFilePaths({ env: envOf({ HOME: "/h", REGISTRY_AUTH_FILE: "/x/auth.json" }) }).map((p) =>
      p.path
    ),
    ["/x/auth.json", "/h/.config/containers/auth.json", "/h/.docker/config.json", "/h/.dockercfg"],
  );
  // --authfile beats $REGISTRY_AUTH_FILE and takes the primary file's place.
  const explicit = authFilePaths({
    authFile: "/flag.json",
    env: envOf({ HOME: "/h", REGISTRY_AUTH_FILE: "/x.json", XDG_RUNTIME_DIR: "/run/u" }),
  });
  assert.equal(explicit[0].path, "/flag.json");
  assert.ok(!explicit.some((p) => p.path === "/x.json" || p.path.startsWith("/run/u")));
  assert.equal(authFilePaths({ env: envOf({ HOME: "/h" }) }).at(-1)!.legacy, true);
  // No $XDG_RUNTIME_DIR (root under sudo or systemd): podman's primary file is per uid in /run.
  assert.deepEqual(authFilePaths({ env: envOf({ HOME: "/root" }), uid: 0 }).map((p) => p.path), [
    "/run/containers/0/auth.json",
    "/root/.config/containers/auth.json",
    "/root/.docker/config.json",
    "/root/.dockercfg",
  ]);
  assert.equal(
    authFilePaths({ env: envOf({}), uid: 1000 })[0].path,
    "/run/containers/1000/auth.json",
  );
});

Deno.test("auth files: key normalization and lookup keys", () => {
  assert.equal(normalizeAuthKey("https://index.docker.io/v1/"), "docker.io");
  assert.equal(normalizeAuthKey("registry-1.docker.io"), "docker.io");
  assert.equal(normalizeAuthKey("http://Quay.IO/team/app"), "quay.io");
  assert.equal(normalizeAuthKey("Quay.IO/team/app/"), "quay.io/team/app");
  assert.equal(normalizeAuthKey("reg.lan:5000/team", true), "reg.lan:5000");
  assert.deepEqual(authKeysFor({ host: "my-registry.local", path: "namespace/user/image" }), [
    "my-registry.local/namespace/user/image",
    "my-registry.local/namespace/user",
    "my-registry.local/namespace",
    "my-registry.local",
  ]);
  assert.deepEqual(authKeysFor({ host: "registry-1.docker.io", path: "library/ubuntu" }), [
    "docker.io/library/ubuntu",
    "docker.io/library",
    "docker.io",
  ]);
});

Deno.test("auth files: namespaces, file order, legacy file, empty entries, bad files", async () => {
  const dir = await Deno.makeTempDir({ prefix: "crfs-authfiles-" });
  try {
    const env = envOf({
      HOME: `${dir}/home`,
      XDG_RUNTIME_DIR: `${dir}/run`,
      XDG_CONFIG_HOME: `${dir}/cfg`,
    });
    await writeJson(`${dir}/run/containers/auth.json`, {
      auths: {
        "reg.example/team": { auth: b64("team-user:team-pw") },
        "reg.example/team/app": { auth: b64("app-user:app-pw") },
        "helper-only.example": {},
      },
    });
    await writeJson(`${dir}/cfg/containers/auth.json`, {
      auths: { "reg.example": { auth: b64("host-user:host-pw") } },
    });
    await writeJson(`${dir}/home/.docker/config.json`, {
      auths: {
        "https://index.docker.io/v1/": { auth: b64("hub-user:hub-pw") },
        "helper-only.example": { identitytoken: "refresh-xyz" },
      },
    });
    await writeJson(`${dir}/home/.dockercfg`, {
      "https://legacy.example/v1/": { auth: b64("old-user:old-pw"), email: "x@y" },
    });
    const files = new AuthFiles({ env });
    const user = async (host: string, path: string) => {
      const c = await files.credentialsFor({ host, path });
      return c && `${c.username ?? ""}|${c.identityToken ?? ""}|${c.key}`;
    };
    assert.equal(await user("reg.example", "team/app"), "app-user||reg.example/team/app");
    assert.equal(await user("reg.example", "team/app/sub"), "app-user||reg.example/team/app");
    assert.equal(await user("reg.example", "team/other"), "team-user||reg.example/team");
    // Another namespace on the same host: not the team's key; the next file's host-wide one.
    assert.equal(await user("reg.example", "teamx/app"), "host-user||reg.example");
    assert.equal(await user("reg.example", "other/app"), "host-user||reg.example");
    assert.equal(await user("reg.example:5000", "team/app"), undefined);
    assert.equal(await user("registry-1.docker.io", "library/ubuntu"), "hub-user||docker.io");
    assert.equal(await user("docker.io", "library/ubuntu"), "hub-user||docker.io");
    // An empty entry in an earlier file does not hide a later file's credentials.
    assert.equal(await user("helper-only.example", "x"), "|refresh-xyz|helper-only.example");
    assert.equal(await user("legacy.example", "a/b"), "old-user||legacy.example");
    assert.equal(await user("nowhere.example", "a"), undefined);
    const c = await files.credentialsFor({ host: "reg.example", path: "team/app" });
    assert.equal(c?.password, "app-pw");
    assert.ok(!c!.source.includes("app-pw") && c!.source.includes("auth.json"));

    await Deno.writeTextFile(`${dir}/cfg/containers/auth.json`, "{not json");
    await assert.rejects(
      () => files.credentialsFor({ host: "reg.example", path: "other/app" }),
      (e: Error) =>
        e instanceof CredentialsFileError &&
        /cfg\/containers\/auth\.json is not valid JSON/.test(e.message),
    );
    await writeJson(`${dir}/cfg/containers/auth.json`, {
      auths: { "bad.example": { auth: "!!" } },
    });
    await assert.rejects(
      () => files.credentialsFor({ host: "bad.example", path: "a" }),
      /"auth" is not base64/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("auth files: credHelpers, credsStore and registries.conf helpers run for real", async () => {
  const dir = await Deno.makeTempDir({ prefix: "crfs-authhelpers-" });
  const savedPath = Deno.env.get("PATH") ?? "";
  try {
    await Deno.mkdir(`${dir}/bin`);
    // A helper that answers per server URL and logs what it was asked.
    for (const name of ["one", "store", "global"]) {
      await Deno.writeTextFile(
        `${dir}/bin/docker-credential-${name}`,
        `#!/bin/sh
read url
echo "${name} $1 $url" >> ${dir}/asked.log
case "$url" in
  *nothing*) echo "credentials not found in native keychain"; exit 1 ;;
  *token*) echo '{"Username":"<token>","Secret":"rt-${name}"}' ;;
  *) echo "{\\"Username\\":\\"${name}-user\\",\\"Secret\\":\\"${name}-pw\\"}" ;;
esac
`,
        { mode: 0o755 },
      );
    }
    await Deno.writeTextFile(`${dir}/bin/docker-credential-broken`, "#!/bin/sh\nexit 3\n", {
      mode: 0o755,
    });
    Deno.env.set("PATH", `${dir}/bin:${savedPath}`);
    await writeJson(`${dir}/home/.docker/config.json`, {
      auths: { "static.example": { auth: b64("static-user:static-pw") } },
      credHelpers: {
        "helped.example": "one",
        "https://token.example": "one",
        "b.example": "broken",
      },
      credsStore: "store",
    });
    const env = envOf({ HOME: `${dir}/home` });
    const files = new AuthFiles({ env });
    const got = async (f: AuthFiles, host: string) => {
      const c = await f.credentialsFor({ host, path: "team/app" });
      return c && `${c.username ?? ""}:${c.password ?? ""}:${c.identityToken ?? ""}`;
    };
    assert.equal(await got(files, "helped.example"), "one-user:one-pw:");
    assert.equal(await got(files, "token.example"), "::rt-one");
    assert.equal(await got(files, "static.example"), "static-user:static-pw:");
    assert.equal(await got(files, "stored.example"), "store-user:store-pw:");
    assert.equal(await got(files, "nothing.example"), undefined);
    await assert.rejects(
      () => got(files, "b.example"),
      /docker-credential-broken failed.*exit code 3/,
    );
    const asked = (await Deno.readTextFile(`${dir}/asked.log`)).trim().split("\n");
    assert.deepEqual(asked, [
      "one get helped.example",
      "one get https://token.example",
      "store get stored.example",
      "store get nothing.example",
    ]);
    // registries.conf credential-helpers: a helper first, then the files.
    const ordered = new AuthFiles({ env, credentialHelpers: ["global", "containers-auth.json"] });
    assert.equal(await got(ordered, "static.example"), "global-user:global-pw:");
    const filesFirst = new AuthFiles({
      env,
      credentialHelpers: ["containers-auth.json", "global"],
    });
    assert.equal(await got(filesFirst, "static.example"), "static-user:static-pw:");
    const missing = new AuthFiles({ env, credentialHelpers: ["absent"] });
    await assert.rejects(
      () => got(missing, "x.example"),
      /docker-credential-absent is not on PATH/,
    );
  } finally {
    Deno.env.set("PATH", savedPath);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("auth files: podman login writes auth.json; crfs pulls with it from htpasswd docker-registry", async () => {
  const reg = await startRegistry({ auth: "basic", users: { alice: "alice-pw-1" } });
  const dir = await Deno.makeTempDir({ prefix: "crfs-podmanlogin-" });
  try {
    const pushed = await pushImage(reg, "team/app", "v1");
    const authFile = `${dir}/auth.json`;
    await podmanLoginWith(
      dir,
      ["--tls-verify=false", "--authfile", authFile, "--username", "alice", reg.host],
      "alice-pw-1\n",
      { XDG_RUNTIME_DIR: `${dir}/run` },
    );
    const written = JSON.parse(await Deno.readTextFile(authFile));
    assert.ok(written.auths[reg.host]?.auth, "podman wrote an auths entry for the registry");

    const files = new AuthFiles({ authFile, env: envOf({ HOME: `${dir}/nohome` }) });
    const creds = await files.credentialsFor({ host: reg.host, path: "team/app" });
    assert.equal(creds?.username, "alice");
    const d = new DockerV2Driver(createContext({
      dockerConfig: false,
      username: creds!.username,
      password: creds!.password,
    }));
    const m = await d.getManifest({ host: reg.host, repository: "team/app" }, "v1");
    assert.equal(m.digest, pushed.digest);
  } finally {
    await reg.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("auth files: a namespace-scoped credential is never sent for another namespace", async () => {
  const reg = await startRegistry({
    auth: "token",
    users: { pusher: "push-pw", teamuser: "team-pw-2" },
    anonymousActions: ["pull"],
  });
  const dir = await Deno.makeTempDir({ prefix: "crfs-authns-" });
  try {
    await pushImage(reg, "team/app", "v1");
    await pushImage(reg, "other/app", "v1");
    // podman logs in for the namespace only, into its primary file under $XDG_RUNTIME_DIR.
    await podmanLoginWith(
      dir,
      ["--tls-verify=false", "--username", "teamuser", `${reg.host}/team`],
      "team-pw-2\n",
      {
        XDG_RUNTIME_DIR: `${dir}/run`,
      },
    );
    const written = JSON.parse(await Deno.readTextFile(`${dir}/run/containers/auth.json`));
    assert.deepEqual(Object.keys(written.auths), [`${reg.host}/team`]);
    const files = new AuthFiles({ env: envOf({ XDG_RUNTIME_DIR: `${dir}/run` }) });
    const ts = reg.tokenServer!;
    ts.requests.length = 0;
    for (const repository of ["team/app", "other/app"]) {
      const creds = await files.credentialsFor({ host: reg.host, path: repository });
      const d = new DockerV2Driver(createContext({
        dockerConfig: false,
        username: creds?.username,
        password: creds?.password,
      }));
      await d.getManifest({ host: reg.host, repository }, "v1");
    }
    const asked = ts.requests.map((r) => `${r.via}:${r.user ?? "-"}:${r.scopes.join(",")}`);
    assert.ok(asked.includes("basic:teamuser:repository:team/app:pull"), asked.join(" "));
    assert.ok(asked.includes("anonymous:-:repository:other/app:pull"), asked.join(" "));
    for (const r of ts.requests) {
      if (r.user === "teamuser") {
        assert.ok(r.scopes.every((s) => s.startsWith("repository:team/")), asked.join(" "));
      }
    }
  } finally {
    await reg.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
