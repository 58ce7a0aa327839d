/**
 * The GCR driver against the GCR emulator (Google's list extension and the GCE metadata server),
 * backed by the real docker-registry: projects from the metadata server only when "on GCE",
 * repositories through `child`, tags with digests through the `manifest` map, and images
 * through plain v2.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createContext } from "../../drivers/driver.ts";
import { RegistryError } from "../../drivers/errors.ts";
import { GcrDriver, isGcrHost } from "../../drivers/gcr.ts";
import { defaultDrivers } from "../../drivers/mod.ts";
import { parseReference } from "../../drivers/reference.ts";
import { startGcrEmulator } from "../emulators/gcr.ts";
import { pushImage } from "../helpers/images.ts";
import { startRegistry } from "../helpers/registry.ts";

Deno.test("GCR host matching and driver selection", () => {
  for (
    const h of ["gcr.io", "us.gcr.io", "eu.gcr.io", "asia.gcr.io", "europe-west1-docker.pkg.dev"]
  ) {
    assert.ok(isGcrHost(h), h);
  }
  for (const h of ["gcr.io.example.com", "quay.io", "docker.pkg.dev", "registry-1.docker.io"]) {
    assert.ok(!isGcrHost(h), h);
  }
  const drivers = defaultDrivers({ dockerConfig: false });
  assert.equal(drivers.forHost("us.gcr.io").name, "gcr");
  assert.equal(drivers.forHost("quay.io").name, "docker-v2");
});

Deno.test("GCR listing through the emulator: project from the metadata server, children, tags with digests", async () => {
  const reg = await startRegistry();
  const emu = startGcrEmulator({ backend: reg.url, project: "my-proj" });
  const tmp = await Deno.makeTempDir({ prefix: "crfs-gcr-" });
  try {
    const app = await pushImage(reg, "my-proj/app", "v1", { files: { "app.txt": "app\n" } });
    await pushImage(reg, "my-proj/app", "latest", { files: { "app.txt": "app\n" } });
    const svc = await pushImage(reg, "my-proj/team/svc", "1.0", { files: { "svc.txt": "svc\n" } });
    await pushImage(reg, "my-proj/team/deep/x", "2", { files: { "x.txt": "x\n" } });
    await pushImage(reg, "other-proj/hidden", "1", { files: { "h.txt": "h\n" } });

    const d = new GcrDriver(createContext({ dockerConfig: false }), {
      gcrUrl: emu.url,
      gceMetadataHost: emu.host,
    });
    assert.deepEqual(await d.listOwners("gcr.io"), ["my-proj"]);
    const meta = emu.requests.find((r) => r.path.startsWith("/computeMetadata/"));
    assert.equal(meta?.metadataFlavor, "Google", "metadata asked with Metadata-Flavor: Google");
    assert.deepEqual(await d.listRepositories("gcr.io"), [
      "my-proj/app",
      "my-proj/team/deep/x",
      "my-proj/team/svc",
    ]);
    assert.deepEqual(await d.listRepositories("gcr.io", "my-proj/team"), [
      "my-proj/team/deep/x",
      "my-proj/team/svc",
    ]);
    assert.deepEqual(await d.listRepositories("gcr.io", "other-proj"), ["other-proj/hidden"]);
    assert.ok(!emu.requests.some((r) => r.path.startsWith("/v2/_catalog")), "no catalog on GCR");

    const tags = await d.listTags({ host: "gcr.io", repository: "my-proj/app" });
    assert.deepEqual(tags.map((t) => [t.name, t.digest]), [["latest", app.digest], [
      "v1",
      app.digest,
    ]]);
    assert.equal(typeof tags[0].size, "number");
    assert.ok(tags[0].size! > 0, "imageSizeBytes string parsed");
    assert.equal(tags[0].created?.getTime(), 1700000000000, "timeCreatedMs string parsed");
    assert.ok(
      !emu.requests.some((r) => r.method === "HEAD"),
      "digests came with the listing, no HEADs",
    );

    const resolved = await d.resolve(parseReference("gcr.io/my-proj/team/svc:1.0"));
    assert.equal(resolved.manifest.digest, svc.digest);
    const layer = svc.image.layers[0];
    const src = await d.blob(
      { host: "gcr.io", repository: "my-proj/team/svc" },
      layer.digest,
      layer.bytes.length,
    );
    assert.deepEqual(await src.read(3, 30), layer.bytes.subarray(3, 33));

    try {
      await d.listTags({ host: "gcr.io", repository: "my-proj/nothing" });
      assert.fail("expected an error");
    } catch (e) {
      assert.ok(e instanceof RegistryError);
      assert.equal(e.status, 404);
      assert.match(e.message, /gcr\.io\/my-proj\/nothing/);
    }
    // Off GCE: no metadata request at all, and an immediate answer.
    await Deno.writeTextFile(`${tmp}/product_name`, "Standard PC (Q35 + ICH9, 2009)\n");
    const before = emu.requests.length;
    const off = new GcrDriver(createContext({ dockerConfig: false }), {
      gcrUrl: emu.url,
      dmiProductFile: `${tmp}/product_name`,
    });
    if (
      !Deno.env.get("GOOGLE_CLOUD_PROJECT") && !Deno.env.get("CLOUDSDK_CORE_PROJECT") &&
      !Deno.env.get("GCE_METADATA_HOST")
    ) {
      const t0 = performance.now();
      assert.deepEqual(await off.listOwners("gcr.io"), []);
      assert.ok(performance.now() - t0 < 200, "never waits off GCE");
      await assert.rejects(
        off.listRepositories("gcr.io"),
        (e: RegistryError) => e.code === "UNSUPPORTED" && /name one/.test(e.message),
      );
      assert.equal(emu.requests.length, before, "nothing asked off GCE");
    }
    const explicit = new GcrDriver(createContext({ dockerConfig: false }), {
      gcrUrl: emu.url,
      gcrProject: "other-proj",
    });
    assert.deepEqual(await explicit.listRepositories("gcr.io"), ["other-proj/hidden"]);
  } finally {
    await Deno.remove(tmp, { recursive: true });
    await emu.stop();
    await reg.stop();
  }
});
