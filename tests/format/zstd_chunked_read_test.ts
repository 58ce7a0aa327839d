/**
 * Reading zstd:chunked layers written by skopeo (containers/storage's writer): located through
 * the descriptor's annotations or the footer, in one range request, byte-exact against `tar -x`
 * of the same layer, manifest checksum verified.
 *
 * @module
 */
import assert from "node:assert/strict";
import { FileSource } from "../../format/range_source.ts";
import { IntegrityError, StargzReader } from "../../format/reader.ts";
import { chunksOf } from "../../format/toc_index.ts";
import { announcedLayer } from "../../format/layer_kind.ts";
import { assertSameAsTarX, run, sampleTree, skopeoZstdChunked } from "./helpers.ts";

const dir = await Deno.makeTempDir({ prefix: "crfs-zstd-read-" });
const tarPath = await sampleTree(dir);
const layer = await skopeoZstdChunked(dir, await Deno.readFile(tarPath));
await run("sh", ["-c", `zstd -q -d -c '${layer.path}' > '${dir}/skopeo.tar'`]);

Deno.test.afterAll(() => Deno.remove(dir, { recursive: true }));

Deno.test("skopeo writes zstd:chunked with io.containers. annotations", () => {
  assert.equal(layer.mediaType, "application/vnd.oci.image.layer.v1.tar+zstd");
  assert.match(
    layer.annotations["io.containers.zstd-chunked.manifest-position"],
    /^\d+:\d+:\d+:1$/,
  );
});

Deno.test("a skopeo zstd:chunked layer opened with its annotations reads like tar -x", async () => {
  const src = await FileSource.open(layer.path);
  try {
    const r = await StargzReader.open(src, { annotations: layer.annotations });
    assert.equal(r.format, "zstd:chunked");
    assert.equal(r.openRequests, 1, "the manifest in one range request");
    await assertSameAsTarX(r, `${dir}/skopeo.tar`, dir);
    assert.deepEqual(
      r.lookup("etc/hello")!.xattrs.get("user.crfs"),
      new TextEncoder().encode("yes"),
    );
    assert.equal(r.lookup("etc/hard"), r.lookup("etc/hello"));
    assert.ok(r.stats.bytesFetched < (await Deno.stat(layer.path)).size);
  } finally {
    src.close();
  }
});

Deno.test("without annotations the footer locates the manifest, in one request", async () => {
  const src = await FileSource.open(layer.path);
  try {
    const r = await StargzReader.open(src);
    assert.equal(r.format, "zstd:chunked");
    assert.equal(r.footer.kind, "zstd:chunked");
    assert.equal(r.openRequests, 1);
    await assertSameAsTarX(r, `${dir}/skopeo.tar`, dir);
    const small = await StargzReader.open(src, { tailGuess: 64 });
    assert.equal(small.openRequests, 2, "a manifest bigger than the guess takes a second request");
    assert.equal(small.tocDigest, r.tocDigest);
  } finally {
    src.close();
  }
});

Deno.test("a wrong manifest checksum or position is refused", async () => {
  const src = await FileSource.open(layer.path);
  try {
    const bad = { ...layer.annotations };
    bad["io.containers.zstd-chunked.manifest-checksum"] = `sha256:${"0".repeat(64)}`;
    await assert.rejects(() => StargzReader.open(src, { annotations: bad }), IntegrityError);
    const [off, len, raw] = layer.annotations["io.containers.zstd-chunked.manifest-position"]
      .split(":").map(Number);
    for (
      const pos of [
        `${off + 1}:${len}:${raw}:1`,
        `${off}:${len}:${raw}:2`,
        `x`,
        `${off}:${len * 1000}:${raw}:1`,
      ]
    ) {
      const a = { "io.github.containers.zstd-chunked.manifest-position": pos };
      await assert.rejects(() => StargzReader.open(src, { annotations: a }), `position ${pos}`);
    }
    const lying = { "io.containers.zstd-chunked.manifest-position": `${off}:${len}:${raw - 1}:1` };
    await assert.rejects(
      () => StargzReader.open(src, { annotations: lying }),
      /announced|more than/,
    );
  } finally {
    src.close();
  }
});

Deno.test("announcedLayer tells zstd:chunked and eStargz descriptors apart without a request", () => {
  assert.deepEqual(announcedLayer(layer.annotations), {
    format: "zstd:chunked",
    tocKey: layer.annotations["io.containers.zstd-chunked.manifest-checksum"],
  });
  const toc = `sha256:${"a".repeat(64)}`;
  assert.deepEqual(announcedLayer({ "containerd.io/snapshot/stargz/toc.digest": toc }), {
    format: "estargz",
    tocKey: toc,
  });
  assert.equal(announcedLayer({}), undefined);
  assert.equal(announcedLayer(undefined), undefined);
});

Deno.test("single-chunk files without a chunkDigest are verified by their file digest", async () => {
  const src = await FileSource.open(layer.path);
  try {
    const r = await StargzReader.open(src, { annotations: layer.annotations });
    const hello = r.lookup("etc/hello")!;
    assert.equal(chunksOf(hello).length, 1);
    assert.equal(chunksOf(hello)[0].digest, hello.digest, "the file digest checks its one chunk");
  } finally {
    src.close();
  }
});

Deno.test("verify none checks no digest the annotations give", async () => {
  const src = await FileSource.open(layer.path);
  try {
    const bad = { ...layer.annotations };
    bad["io.containers.zstd-chunked.manifest-checksum"] = `sha256:${"0".repeat(64)}`;
    bad["containerd.io/snapshot/stargz/toc.digest"] = `sha256:${"1".repeat(64)}`;
    const r = await StargzReader.open(src, { annotations: bad, verify: "none" });
    assert.equal(r.format, "zstd:chunked");
    await assert.rejects(() => StargzReader.open(src, { annotations: bad }), IntegrityError);
  } finally {
    src.close();
  }
});
