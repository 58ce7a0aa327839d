/**
 * The ICR driver against the ICR emulator (IBM's REST listing API and IAM), backed by the real
 * docker-registry: IAM tokens from an API key (option or docker config `iamapikey` entry),
 * cached; namespaces and images through `/api/v1` with the `Account` header; tags (with
 * digests from `DigestTags`) and blobs through v2 with the `iamapikey` login; wrong keys fail
 * clearly without showing the key.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createContext } from "../../drivers/driver.ts";
import { RegistryError } from "../../drivers/errors.ts";
import { IcrDriver, isIcrHost } from "../../drivers/icr.ts";
import { defaultDrivers } from "../../drivers/mod.ts";
import { parseReference } from "../../drivers/reference.ts";
import { startIcrEmulator } from "../emulators/icr.ts";
import { pushImage } from "../helpers/images.ts";
import { startRegistry } from "../helpers/registry.ts";

const KEY = "test-api-key-0123456789";

Deno.test("ICR host matching and driver selection", () => {
  for (
    const h of [
      "icr.io",
      "us.icr.io",
      "uk.icr.io",
      "jp2.icr.io",
      "ca2.icr.io",
      "in2.icr.io",
      "fr2.icr.io",
    ]
  ) assert.ok(isIcrHost(h), h);
  for (const h of ["icr.io.example.com", "registry.bluemix.com", "gcr.io"]) {
    assert.ok(!isIcrHost(h), h);
  }
  assert.equal(defaultDrivers({ dockerConfig: false }).forHost("de.icr.io").name, "icr");
});

Deno.test("ICR listing through the REST API, images through v2 with iamapikey", async () => {
  const reg = await startRegistry();
  const emu = startIcrEmulator({
    backend: reg.url,
    apiKey: KEY,
    account: "acct-42",
    registryHost: "us.icr.io",
  });
  const tmp = await Deno.makeTempDir({ prefix: "crfs-icr-" });
  try {
    const app = await pushImage(reg, "ns1/app", "v1", { files: { "a": "a\n" } });
    const app2 = await pushImage(reg, "ns1/app", "v2", { files: { "b": "b\n" } });
    await pushImage(reg, "ns1/tools/x", "1", { files: { "x": "x\n" } });
    await pushImage(reg, "ns2/web", "latest", { files: { "w": "w\n" } });

    const lines: string[] = [];
    const opts = { icrUrl: emu.url, iamUrl: emu.iamUrl, icrAccount: "acct-42" };
    const d = new IcrDriver(createContext({ dockerConfig: false, debug: (l) => lines.push(l) }), {
      ...opts,
      icrApiKey: KEY,
    });
    assert.deepEqual(await d.listOwners("us.icr.io"), ["ns1", "ns2"]);
    assert.deepEqual(await d.listRepositories("us.icr.io"), ["ns1/app", "ns1/tools/x", "ns2/web"]);
    assert.deepEqual(await d.listRepositories("us.icr.io", "ns1"), ["ns1/app", "ns1/tools/x"]);
    assert.equal(emu.tokensIssued, 1, "the IAM token is cached");
    const api = emu.requests.filter((r) => r.path.startsWith("/api/v1/"));
    assert.ok(api.length >= 3 && api.every((r) => r.account === "acct-42" && r.auth === "Bearer"));

    const tags = await d.listTags({ host: "us.icr.io", repository: "ns1/app" }, { digests: true });
    assert.deepEqual(tags.map((t) => [t.name, t.digest]), [["v1", app.digest], [
      "v2",
      app2.digest,
    ]]);
    assert.ok(emu.requests.some((r) => r.path === "/v2/ns1/app/tags/list"), "tag names through v2");
    assert.ok(!emu.requests.some((r) => r.method === "HEAD"), "digests from DigestTags, no HEADs");

    const resolved = await d.resolve(parseReference("us.icr.io/ns1/app:v1"));
    assert.equal(resolved.manifest.digest, app.digest);
    const layer = app.image.layers[0];
    const src = await d.blob({ host: "us.icr.io", repository: "ns1/app" }, layer.digest);
    assert.deepEqual(await src.read(0, layer.bytes.length), layer.bytes);
    assert.ok(
      emu.requests.some((r) => r.path.startsWith("/v2/ns1/app/blobs/") && r.auth === "Basic"),
    );
    assert.ok(!lines.join("\n").includes(KEY), "the API key never reaches the debug log");

    // The key from a docker config login (user iamapikey).
    await Deno.writeTextFile(
      `${tmp}/config.json`,
      JSON.stringify({ auths: { "us.icr.io": { auth: btoa(`iamapikey:${KEY}`) } } }),
    );
    const fromConfig = new IcrDriver(createContext({ dockerConfig: tmp }), opts);
    assert.deepEqual(await fromConfig.listOwners("us.icr.io"), ["ns1", "ns2"]);

    // A wrong key: a clear error that does not show it.
    const wrong = new IcrDriver(createContext({ dockerConfig: false }), {
      ...opts,
      icrApiKey: "wrong-key-zzz",
    });
    await assert.rejects(wrong.listOwners("us.icr.io"), (e: RegistryError) => {
      assert.equal(e.code, "UNAUTHORIZED");
      assert.match(e.message, /IAM refused the API key/);
      assert.ok(!e.message.includes("wrong-key-zzz"));
      return true;
    });
    await assert.rejects(
      wrong.getManifest({ host: "us.icr.io", repository: "ns1/app" }, "v1"),
      (e: RegistryError) => e.code === "UNAUTHORIZED" && /rejected the credentials/.test(e.message),
    );
    // The account header is required by this emulated account.
    const noAccount = new IcrDriver(createContext({ dockerConfig: false }), {
      icrUrl: emu.url,
      iamUrl: emu.iamUrl,
      icrApiKey: KEY,
    });
    await assert.rejects(
      noAccount.listOwners("us.icr.io"),
      (e: RegistryError) => e.status === 401 && /account/.test(e.message),
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
    await emu.stop();
    await reg.stop();
  }
});
