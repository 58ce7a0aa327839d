/**
 * The `local` pseudo-registry and OCI image layouts: `.stargz` files as single-layer images,
 * layouts read as repositories (tags, indexes, platforms, blobs as file range sources), layouts
 * written atomically (blobs, index.json ref names) and checked by skopeo, pushes through the
 * driver interface, and clear errors.
 *
 * @module
 */
import assert from "node:assert/strict";
import { canList, canPing, canPush } from "../../drivers/capabilities.ts";
import { RegistryError } from "../../drivers/errors.ts";
import { LocalDriver, OciLayout, REF_NAME } from "../../drivers/local.ts";
import { MediaType } from "../../drivers/manifest.ts";
import { defaultDrivers } from "../../drivers/mod.ts";
import { parseOciTarget, parseReference } from "../../drivers/reference.ts";
import {
  buildImage,
  buildIndex,
  gzip,
  imageBlobs,
  randomBytes,
  sha256,
  skopeoCopy,
  tar,
  writeOciLayout,
} from "../helpers/images.ts";
import { startRegistry } from "../helpers/registry.ts";

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "crfs-local-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function rejectsCode(p: Promise<unknown>, code: string, pattern?: RegExp) {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof RegistryError, String(e));
    assert.equal(e.code, code, e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("parseOciTarget", () => {
  assert.deepEqual(parseOciTarget("oci:/tmp/out:v1"), { dir: "/tmp/out", tag: "v1" });
  assert.deepEqual(parseOciTarget("oci:/tmp/out"), { dir: "/tmp/out" });
  assert.deepEqual(parseOciTarget("oci:rel/dir:latest"), { dir: "rel/dir", tag: "latest" });
  assert.deepEqual(parseOciTarget("oci:/a:b/c"), { dir: "/a:b/c" });
  assert.equal(parseOciTarget("docker://x"), undefined);
  assert.throws(
    () => parseOciTarget("oci:"),
    /^Error: oci:: oci: needs a directory$|needs a directory/,
  );
  assert.throws(() => parseOciTarget("oci:dir:bad tag"), /oci:dir:bad tag: bad tag "bad tag"/);
});

Deno.test("local directory: .stargz files and OCI layouts as images", async () => {
  await withDir(async (dir) => {
    const blob = await gzip(tar({ "hello.txt": "hi\n", "big.bin": randomBytes(300_000, 4) }));
    await Deno.writeFile(`${dir}/foo.stargz`, blob);
    await Deno.mkdir(`${dir}/team`);
    await Deno.writeFile(`${dir}/team/bar.stargz`, blob);
    await Deno.writeFile(`${dir}/Bad Name.stargz`, blob);
    await Deno.symlink(`${dir}/foo.stargz`, `${dir}/linked.stargz`);
    await Deno.writeTextFile(`${dir}/notes.txt`, "not an image");
    const amd = await buildImage({ architecture: "amd64", files: { "p": "amd64\n" } });
    const arm = await buildImage({
      architecture: "arm64",
      variant: "v8",
      files: { "p": "arm64\n" },
    });
    const index = await buildIndex([amd, arm]);
    await writeOciLayout(`${dir}/layouts/app`, [...imageBlobs(amd), ...imageBlobs(arm), index], {
      multi: index,
      v1: amd.manifest,
    });

    const drivers = defaultDrivers({ dockerConfig: false, localDir: dir });
    const d = drivers.forHost("local");
    assert.equal(d.name, "local");
    assert.ok(canList(d) && canPush(d) && canPing(d), "local lists, pushes and pings");
    await d.ping("local");
    assert.deepEqual(await d.listOwners("local"), ["foo", "layouts", "linked", "team"]);
    assert.deepEqual(await d.listRepositories("local"), [
      "foo",
      "layouts/app",
      "linked",
      "team/bar",
    ]);
    assert.deepEqual(await d.listRepositories("local", "team"), ["team/bar"]);

    const ref = parseReference("local/foo");
    assert.equal(ref.host, "local");
    const r = await d.resolve(ref);
    assert.equal(r.manifest.json.layers.length, 1);
    const layer = r.manifest.json.layers[0];
    assert.equal(layer.digest, await sha256(blob));
    assert.equal(layer.size, blob.length);
    assert.equal(layer.mediaType, MediaType.OCI_LAYER_GZIP);
    assert.equal(await sha256(r.manifest.bytes), r.manifest.digest);
    const tags = await d.listTags(ref);
    assert.deepEqual(tags.map((t) => [t.name, t.digest]), [["latest", r.manifest.digest]]);
    const src = await d.blob(ref, layer.digest, layer.size);
    try {
      assert.deepEqual(await src.read(1234, 5000), blob.subarray(1234, 6234));
    } finally {
      src.close?.();
    }
    const cfg = await d.getConfig(ref, r.manifest);
    assert.equal(cfg.json.os, "linux");
    const streamed = new Uint8Array(
      await new Response(await d.fetchBlob(ref, layer.digest)).arrayBuffer(),
    );
    assert.deepEqual(streamed, blob);
    await rejectsCode(d.getManifest(ref, "v2"), "MANIFEST_UNKNOWN", /only has the tag latest/);
    await rejectsCode(
      d.resolve(parseReference("local/missing")),
      "NAME_UNKNOWN",
      new RegExp(`missing.*${dir}`),
    );

    const app = parseReference("local/layouts/app:multi");
    const armImg = await d.resolve(app, { platform: "linux/arm64" });
    assert.equal(armImg.manifest.digest, arm.manifest.digest);
    assert.equal(armImg.index?.digest, index.digest);
    const v1 = await d.resolve(parseReference("local/layouts/app:v1"));
    assert.equal(v1.manifest.digest, amd.manifest.digest);
    const appTags = await d.listTags(app);
    assert.deepEqual(appTags.map((t) => [t.name, t.digest]), [["multi", index.digest], [
      "v1",
      amd.manifest.digest,
    ]]);
    const lsrc = await d.blob(app, arm.layers[0].digest);
    try {
      assert.deepEqual(await lsrc.read(0, lsrc.size), arm.layers[0].bytes);
    } finally {
      lsrc.close?.();
    }
    await rejectsCode(
      d.resolve(parseReference("local/layouts/app:nope")),
      "MANIFEST_UNKNOWN",
      /tags: multi, v1/,
    );
  });
});

Deno.test("OCI layouts are written atomically and readable by skopeo and the registry", async () => {
  await withDir(async (dir) => {
    const out = `${dir}/out`;
    const layout = await OciLayout.create(out);
    assert.ok(await OciLayout.isLayout(out));
    const img = await buildImage({
      layers: [{ "a.bin": randomBytes(100_000, 8) }, { "b.txt": "b\n" }],
    });
    await layout.writeBlob(img.layers[0].digest, img.layers[0].bytes, img.layers[0].bytes.length);
    await layout.writeBlob(
      img.layers[1].digest,
      new Blob([img.layers[1].bytes as Uint8Array<ArrayBuffer>]).stream(),
    );
    await layout.writeBlob(img.config.digest, img.config.bytes);
    // A wrong digest leaves nothing behind.
    await rejectsCode(
      layout.writeBlob(`sha256:${"5".repeat(64)}`, randomBytes(10, 1)),
      "DIGEST_MISMATCH",
    );
    const leftovers = [...Deno.readDirSync(`${out}/blobs/sha256`)].filter((e) =>
      e.name.startsWith(".")
    );
    assert.deepEqual(leftovers, []);
    assert.equal(await layout.hasBlob(`sha256:${"5".repeat(64)}`), false);

    const digest = await layout.putManifest(img.manifest.bytes, img.manifest.mediaType, "v1");
    assert.equal(digest, img.manifest.digest);
    const other = await buildImage({ files: { "c": "c\n" } });
    for (const b of [...other.layers, other.config]) await layout.writeBlob(b.digest, b.bytes);
    await layout.putManifest(other.manifest.bytes, other.manifest.mediaType, "v2");
    await layout.putManifest(other.manifest.bytes, other.manifest.mediaType, "v1"); // moves v1
    const index = JSON.parse(await Deno.readTextFile(`${out}/index.json`));
    assert.deepEqual(
      index.manifests.map((
        m: { digest: string; annotations: Record<string, string> },
      ) => [m.annotations[REF_NAME], m.digest]),
      [["v2", other.manifest.digest], ["v1", other.manifest.digest]],
    );
    assert.deepEqual([...Deno.readDirSync(out)].map((e) => e.name).sort(), [
      "blobs",
      "index.json",
      "oci-layout",
    ]);
    await layout.putManifest(img.manifest.bytes, img.manifest.mediaType, "v1");

    // skopeo reads the layout, and copies it into a real registry.
    const raw = await new Deno.Command("skopeo", {
      args: ["inspect", "--raw", `oci:${out}:v1`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(raw.success, new TextDecoder().decode(raw.stderr));
    assert.deepEqual(raw.stdout, img.manifest.bytes);
    const reg = await startRegistry();
    try {
      const pushed = await skopeoCopy(`oci:${out}:v1`, `docker://${reg.host}/from/layout:v1`);
      assert.equal(pushed, img.manifest.digest);
    } finally {
      await reg.stop();
    }
    const again = await OciLayout.open(out);
    const resolved = await again.resolve("v1");
    assert.equal(resolved.manifest.digest, img.manifest.digest);
    const cfg = await again.getConfig(resolved.manifest);
    assert.deepEqual(cfg.bytes, img.config.bytes);
    await rejectsCode(OciLayout.open(`${dir}/nothing`), "NOT_FOUND", /not an OCI image layout/);
  });
});

Deno.test("pushing to local/NAME through the driver interface writes a layout", async () => {
  await withDir(async (dir) => {
    const d = new LocalDriver({ localDir: dir });
    const repo = { host: "local", repository: "pushed/img" };
    const img = await buildImage({ files: { "z": "z\n" } });
    for (const b of [...img.layers, img.config]) {
      assert.equal(await d.blobExists(repo, b.digest), false);
      await d.uploadBlob(repo, b.digest, b.bytes.length, b.bytes);
      assert.equal(await d.blobExists(repo, b.digest), true);
    }
    assert.equal(
      await d.putManifest(repo, "t1", img.manifest.mediaType, img.manifest.bytes),
      img.manifest.digest,
    );
    const raw = await new Deno.Command("skopeo", {
      args: ["inspect", "--raw", `oci:${dir}/pushed/img:t1`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(raw.success, new TextDecoder().decode(raw.stderr));
    assert.deepEqual(raw.stdout, img.manifest.bytes);
    assert.equal(
      await d.mountBlob({ host: "local", repository: "copy" }, img.layers[0].digest, "pushed/img"),
      true,
    );
    assert.equal(
      await d.blobExists({ host: "local", repository: "copy" }, img.layers[0].digest),
      true,
    );
    assert.deepEqual(await d.listRepositories("local"), ["copy", "pushed/img"]);
  });
});
