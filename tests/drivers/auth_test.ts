/**
 * Authentication against the real docker-registry: htpasswd basic auth and token auth (our token
 * server, RS256 JWTs the registry verifies), right and wrong credentials, anonymous pulls, token
 * caching per scope, push and cross-repository-mount scopes, `token` vs `access_token` responses,
 * docker config `auths` / `identitytoken`, and a real credential helper program found on `PATH`
 * through `$DOCKER_CONFIG` (run in a child process so the environment stays private). No
 * credential may appear in an error message or a debug log.
 *
 * @module
 */
import assert from "node:assert/strict";
import { parseWwwAuthenticate } from "../../drivers/auth.ts";
import { AuthFiles, CredentialsFileError } from "../../drivers/auth_files.ts";
import { createContext, type DriverOptions } from "../../drivers/driver.ts";
import { DockerV2Driver } from "../../drivers/docker_v2.ts";
import { RegistryError } from "../../drivers/errors.ts";
import { pushImage } from "../helpers/images.ts";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";

function driver(options: DriverOptions = {}): DockerV2Driver {
  return new DockerV2Driver(createContext({ dockerConfig: false, backoffMs: 10, ...options }));
}

async function rejectsWith(
  p: Promise<unknown>,
  code: string,
  pattern?: RegExp,
): Promise<RegistryError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof RegistryError, `expected RegistryError, got ${e}`);
    assert.equal(e.code, code, e.message);
    if (pattern) assert.match(e.message, pattern);
    return e;
  }
  assert.fail(`expected a ${code} error`);
}

function userOf(reg: TestRegistry): [string, string] {
  return Object.entries(reg.users)[0];
}

Deno.test("WWW-Authenticate parsing", () => {
  assert.deepEqual(
    parseWwwAuthenticate(
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull,push"',
    ),
    [{
      scheme: "bearer",
      params: {
        realm: "https://auth.docker.io/token",
        service: "registry.docker.io",
        scope: "repository:library/ubuntu:pull,push",
      },
    }],
  );
  assert.deepEqual(parseWwwAuthenticate('Basic realm="Registry Realm"'), [{
    scheme: "basic",
    params: { realm: "Registry Realm" },
  }]);
  assert.deepEqual(
    parseWwwAuthenticate('Bearer realm="a\\"b", error="insufficient_scope", Basic realm=x'),
    [
      { scheme: "bearer", params: { realm: 'a"b', error: "insufficient_scope" } },
      { scheme: "basic", params: { realm: "x" } },
    ],
  );
  assert.deepEqual(parseWwwAuthenticate(""), []);
});

Deno.test("basic auth: right, wrong and missing credentials", async () => {
  const reg = await startRegistry({ auth: "basic" });
  try {
    const [user, password] = userOf(reg);
    const pushed = await pushImage(reg, "sec/img", "v1");
    const repo = { host: reg.host, repository: "sec/img" };
    const lines: string[] = [];
    const ok = driver({ username: user, password, debug: (l) => lines.push(l) });
    const m = await ok.getManifest(repo, "v1");
    assert.equal(m.digest, pushed.digest);
    const src = await ok.blob(repo, pushed.image.layers[0].digest);
    assert.deepEqual(await src.read(0, 20), pushed.image.layers[0].bytes.subarray(0, 20));
    assert.ok(lines.some((l) => l.includes("(auth: basic)")), "requests carried basic auth");

    const wrong = driver({ username: user, password: "not-the-password" });
    const e1 = await rejectsWith(
      wrong.getManifest(repo, "v1"),
      "UNAUTHORIZED",
      /authentication failed.*rejected the credentials/,
    );
    assert.match(e1.message, new RegExp(`${reg.host}/sec/img:v1`), "names the reference");
    assert.ok(!e1.message.includes("not-the-password"));

    const none = driver();
    await rejectsWith(
      none.getManifest(repo, "v1"),
      "UNAUTHORIZED",
      /authentication required.*docker login/,
    );
    assert.ok(!lines.join("\n").includes(password), "no password in the debug log");
  } finally {
    await reg.stop();
  }
});

Deno.test("token auth: tokens per scope, cached; push and mount scopes; wrong credentials", async () => {
  const reg = await startRegistry({ auth: "token" });
  try {
    const [user, password] = userOf(reg);
    const pushed = await pushImage(reg, "tok/img", "v1");
    const ts = reg.tokenServer!;
    ts.requests.length = 0;
    const lines: string[] = [];
    const d = driver({ username: user, password, debug: (l) => lines.push(l) });
    const repo = { host: reg.host, repository: "tok/img" };
    const m = await d.getManifest(repo, "v1");
    assert.equal(m.digest, pushed.digest);
    await d.getManifest(repo, pushed.digest);
    const src = await d.blob(repo, pushed.image.layers[0].digest);
    await src.read(0, 10);
    await src.read(10, 10);
    assert.equal(d.auth.tokenRequests, 1, "one token for all pulls of one repository");
    assert.deepEqual(ts.requests.map((r) => [r.via, r.user, r.scopes]), [["basic", user, [
      "repository:tok/img:pull",
    ]]]);
    assert.ok(lines.some((l) => l.includes("(auth: bearer)")));

    // Push asks for pull,push; a cross-repository mount also asks for pull on the source.
    const target = { host: reg.host, repository: "tok/copy" };
    assert.equal(await d.mountBlob(target, pushed.image.layers[0].digest, "tok/img"), true);
    const mountScopes = ts.requests.at(-1)!.scopes.sort();
    assert.deepEqual(mountScopes, ["repository:tok/copy:pull,push", "repository:tok/img:pull"]);
    await d.putManifest(target, "v1", m.mediaType, m.bytes).catch(() => {}); // config may be missing; scope is what matters
    assert.ok(ts.requests.some((r) => r.scopes.includes("repository:tok/copy:pull,push")));

    // Catalog scope.
    assert.deepEqual(await d.listRepositories(reg.host), ["tok/copy", "tok/img"]);
    assert.ok(ts.requests.some((r) => r.scopes.includes("registry:catalog:*")));

    const text = lines.join("\n");
    assert.ok(!text.includes(password), "no password in the debug log");
    assert.ok(!/Bearer [A-Za-z0-9_-]{20,}/.test(text), "no token in the debug log");

    const wrong = driver({ username: user, password: "wrong-pw" });
    const e = await rejectsWith(
      wrong.getManifest(repo, "v1"),
      "UNAUTHORIZED",
      /token server rejected the credentials/,
    );
    assert.match(e.message, /tok\/img:v1/);
    assert.ok(!e.message.includes("wrong-pw"));

    const anonymous = driver();
    await rejectsWith(anonymous.getManifest(repo, "v1"), "UNAUTHORIZED", /authentication required/);
  } finally {
    await reg.stop();
  }
});

Deno.test("token auth: anonymous pulls, access_token responses without expires_in", async () => {
  const reg = await startRegistry({
    auth: "token",
    anonymousActions: ["pull"],
    tokenField: "access_token",
    tokenExpiresIn: 0,
  });
  try {
    const pushed = await pushImage(reg, "pub/img", "v1");
    const d = driver();
    const m = await d.getManifest({ host: reg.host, repository: "pub/img" }, "v1");
    assert.equal(m.digest, pushed.digest);
    assert.equal(reg.tokenServer!.requests.at(-1)!.via, "anonymous");
    // Anonymous users may not push.
    await rejectsWith(
      d.putManifest({ host: reg.host, repository: "pub/img" }, "v2", m.mediaType, m.bytes),
      "UNAUTHORIZED",
      /authentication required/,
    );
  } finally {
    await reg.stop();
  }
});

Deno.test("token auth: cached tokens are renewed after they expire", async () => {
  const reg = await startRegistry({ auth: "token", tokenExpiresIn: 1 });
  try {
    const [user, password] = userOf(reg);
    await pushImage(reg, "exp/img", "v1");
    const d = driver({ username: user, password });
    const repo = { host: reg.host, repository: "exp/img" };
    await d.getManifest(repo, "v1");
    await d.getManifest(repo, "v1");
    assert.equal(d.auth.tokenRequests, 1);
    await new Promise((r) => setTimeout(r, 1100));
    await d.getManifest(repo, "v1");
    assert.equal(d.auth.tokenRequests, 2, "a new token after expires_in");
  } finally {
    await reg.stop();
  }
});

Deno.test("docker config: auths entries, identity tokens, Docker Hub key", async () => {
  const reg = await startRegistry({ auth: "token", refreshTokens: { "refresh-abc-123": "crfs" } });
  const dir = await Deno.makeTempDir({ prefix: "crfs-dockercfg-" });
  try {
    const [user, password] = userOf(reg);
    const pushed = await pushImage(reg, "cfg/img", "v1");
    const repo = { host: reg.host, repository: "cfg/img" };
    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({ auths: { [`http://${reg.host}`]: { auth: btoa(`${user}:${password}`) } } }),
    );
    const d = driver({ dockerConfig: dir });
    assert.equal((await d.getManifest(repo, "v1")).digest, pushed.digest);
    assert.equal(reg.tokenServer!.requests.at(-1)!.via, "basic");

    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({ auths: { [reg.host]: { identitytoken: "refresh-abc-123" } } }),
    );
    const d2 = driver({ dockerConfig: `${dir}/config.json` });
    assert.equal((await d2.getManifest(repo, "v1")).digest, pushed.digest);
    const last = reg.tokenServer!.requests.at(-1)!;
    assert.deepEqual([last.method, last.via, last.user], ["POST", "refresh_token", "crfs"]);

    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({ auths: { [reg.host]: { identitytoken: "stale" } } }),
    );
    const e = await rejectsWith(
      driver({ dockerConfig: dir }).getManifest(repo, "v1"),
      "UNAUTHORIZED",
      /token server rejected the credentials from .*crfs-dockercfg-.* \(key 127\.0\.0\.1:/,
    );
    assert.ok(!e.message.includes("stale"));

    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({
        auths: { "https://index.docker.io/v1/": { auth: btoa("hubuser:hubpass") } },
      }),
    );
    // The lookup is auth_files.ts's (the docker config read as an auth file).
    const only = new AuthFiles({ authFile: `${dir}/config.json`, env: () => undefined });
    const hub = await only.credentialsFor({ host: "registry-1.docker.io", path: "library/x" });
    assert.equal(hub?.username, "hubuser");
    assert.equal(hub?.password, "hubpass");
    assert.equal(await only.credentialsFor({ host: "quay.io", path: "a/b" }), undefined);
    await Deno.writeTextFile(`${dir}/config.json`, "{not json");
    await assert.rejects(
      only.credentialsFor({ host: "quay.io", path: "a/b" }),
      (e) => e instanceof CredentialsFileError && /not valid JSON/.test(e.message),
    );
    // Through the authenticator, a broken file is a CREDENTIALS error.
    await rejectsWith(
      driver({ dockerConfig: dir }).getManifest(repo, "v1"),
      "CREDENTIALS",
      /not valid JSON/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
    await reg.stop();
  }
});

Deno.test("credential helpers from $DOCKER_CONFIG run from PATH (credHelpers and credsStore)", async () => {
  const reg = await startRegistry({ auth: "basic" });
  const dir = await Deno.makeTempDir({ prefix: "crfs-credhelper-" });
  try {
    const [user, password] = userOf(reg);
    const pushed = await pushImage(reg, "helper/img", "v1");
    await Deno.mkdir(`${dir}/bin`);
    await Deno.mkdir(`${dir}/cfg`);
    await Deno.writeTextFile(
      `${dir}/bin/docker-credential-test`,
      `#!/bin/sh
read -r host
echo "$1 $host" >> "${dir}/helper.log"
if [ "$1" = get ] && [ "$host" = "${reg.host}" ]; then
  printf '{"ServerURL":"%s","Username":"${user}","Secret":"${password}"}' "$host"
else
  echo "credentials not found in native keychain"
  exit 1
fi
`,
      { mode: 0o755 },
    );
    const script = `${dir}/client.ts`;
    const driverUrl = import.meta.resolve("../../drivers/driver.ts");
    const v2Url = import.meta.resolve("../../drivers/docker_v2.ts");
    await Deno.writeTextFile(
      script,
      `import { createContext } from ${JSON.stringify(driverUrl)};
import { DockerV2Driver } from ${JSON.stringify(v2Url)};
const d = new DockerV2Driver(createContext({ retries: 0 }));
try {
  const m = await d.getManifest({ host: Deno.args[0], repository: "helper/img" }, "v1");
  console.log(JSON.stringify({ digest: m.digest }));
} catch (e) {
  console.log(JSON.stringify({ code: e.code, message: e.message }));
}
`,
    );
    const run = async (config: object) => {
      await Deno.writeTextFile(`${dir}/cfg/config.json`, JSON.stringify(config));
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--no-lock", script, reg.host],
        env: { DOCKER_CONFIG: `${dir}/cfg`, PATH: `${dir}/bin:${Deno.env.get("PATH")}`, HOME: dir },
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
      return JSON.parse(new TextDecoder().decode(out.stdout));
    };
    assert.deepEqual(await run({ credHelpers: { [reg.host]: "test" } }), { digest: pushed.digest });
    assert.deepEqual(await run({ credsStore: "test" }), { digest: pushed.digest });
    const log = await Deno.readTextFile(`${dir}/helper.log`);
    assert.deepEqual(log.trim().split("\n"), [`get ${reg.host}`, `get ${reg.host}`]);
    const missing = await run({ credHelpers: { [reg.host]: "absent" } });
    assert.equal(missing.code, "CREDENTIALS");
    assert.match(missing.message, /docker-credential-absent.*not on PATH/);
    const other = await run({ credHelpers: { "other.example:5000": "test" } });
    assert.equal(other.code, "UNAUTHORIZED");
    assert.ok(!JSON.stringify([missing, other]).includes(password));
  } finally {
    await Deno.remove(dir, { recursive: true });
    await reg.stop();
  }
});
