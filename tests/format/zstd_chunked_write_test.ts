/**
 * The zstd:chunked writer: round trips through crfs's reader, plain zstd decompression back to
 * the exact input tar, a tar-split stream that rebuilds that tar, the Go reference reader
 * verifying crfs's output, and crfs reading what the Go reference writer produces.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import zlib from "node:zlib";
import { DecodePool } from "../../format/decode_pool.ts";
import { BytesSource, FileSource } from "../../format/range_source.ts";
import { StargzReader } from "../../format/reader.ts";
import { readTar } from "../../format/tar_reader.ts";
import { Crc64, parseTarSplit } from "../../format/tar_split.ts";
import { unzstd } from "../../format/zstd.ts";
import { parseZstdChunkedFooter } from "../../format/zstd_chunked.ts";
import {
  writeZstdChunked,
  type ZstdChunkedWriterOptions,
} from "../../format/zstd_chunked_writer.ts";
import {
  buildZstdChunkedWithReference,
  verifyZstdChunkedWithReference,
} from "../helpers/reference_zstd.ts";
import { randomTar } from "../unit/random_tar.ts";
import { assertSameTree, expectedTree } from "../unit/tree_helpers.ts";
import { assertSameAsTarX, run, sampleTree } from "./helpers.ts";

const dir = await Deno.makeTempDir({ prefix: "crfs-zstd-write-" });
Deno.test.afterAll(() => Deno.remove(dir, { recursive: true }));

async function* once(b: Uint8Array) {
  yield b;
}

async function write(tar: Uint8Array, opts: ZstdChunkedWriterOptions = {}) {
  const out: Uint8Array[] = [];
  const result = await writeZstdChunked(once(tar), (b) => {
    out.push(b.slice());
  }, opts);
  const blob = new Uint8Array(result.blobSize);
  let o = 0;
  for (const p of out) (blob.set(p, o), o += p.length);
  return { blob, result };
}

const sha256 = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

for (
  const [seed, chunkSize, footer] of [[1, 1000, "v1"], [2, 5000, "v2"], [3, 1 << 20, "v1"]] as const
) {
  Deno.test(`random tree ${seed} (chunk ${chunkSize}, footer ${footer}) round-trips`, async () => {
    const tar = randomTar({ seed, chunkSize, entries: 120 });
    const { blob, result } = await write(tar, { chunkSize, footer });
    assert.equal(result.blobDigest, sha256(blob));
    // Plain zstd decompression gives back the input tar, byte for byte: the diff ID is kept.
    assert.deepEqual(unzstd(blob), tar);
    assert.equal(result.diffId, sha256(tar));
    const expected = await expectedTree(once(tar));
    for (const annotations of [undefined, result.annotations]) {
      const r = await StargzReader.open(new BytesSource(blob), { annotations });
      assert.equal(r.format, "zstd:chunked");
      assert.equal(r.openRequests, 1);
      assert.equal(r.tocDigest, result.tocDigest);
      await assertSameTree(r, expected, seed);
    }
    // Big fetches decode zstd frames in the decode pool too.
    const pool = new DecodePool(2);
    try {
      // Workers ready first: reads decode inline while none is.
      await pool.warm();
      const r = await StargzReader.open(new BytesSource(blob), { decodePool: pool });
      await r.prefetch("all");
      await assertSameTree(r, expected, seed + 50);
    } finally {
      pool.close();
    }
    const f = parseZstdChunkedFooter(blob.subarray(blob.length - 100))!;
    assert.equal(f.size, footer === "v2" ? 72 : 48);
  });
}

Deno.test("a gzip tar in gives the same blob as the plain tar", async () => {
  const tar = randomTar({ seed: 5, chunkSize: 2000, entries: 40 });
  const plain = await write(tar);
  const gz = await write(zlib.gzipSync(tar));
  assert.deepEqual(gz.blob, plain.blob);
});

Deno.test("the tar-split frame rebuilds the exact tar, and its digest is in the TOC", async () => {
  const tar = randomTar({ seed: 6, chunkSize: 3000, entries: 150 });
  const { blob, result } = await write(tar, { chunkSize: 3000 });
  const [off, len, raw] = result.annotations["io.github.containers.zstd-chunked.tarsplit-position"]
    .split(":").map(Number);
  const frame = blob.subarray(off, off + len);
  assert.equal(result.toc.tarSplitDigest, sha256(frame));
  const text = unzstd(frame);
  assert.equal(text.length, raw);
  const contents: Uint8Array[] = [];
  for await (const e of readTar(once(tar))) contents.push(await e.readAll());
  const parts: Uint8Array[] = [];
  let files = 0;
  let position = 0;
  for (const e of parseTarSplit(text)) {
    assert.equal(e.position, position++);
    if (e.type === 2) {
      parts.push(e.payload ?? new Uint8Array());
      continue;
    }
    const content = contents[files++];
    assert.equal(e.size ?? 0, content.length, `${e.name} size`);
    if (content.length > 0) assert.deepEqual(e.payload, new Crc64().update(content).digest());
    else assert.equal(e.payload, undefined);
    parts.push(content);
  }
  assert.equal(files, contents.length);
  const rebuilt = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) (rebuilt.set(p, o), o += p.length);
  assert.deepEqual(rebuilt, tar);
});

Deno.test("the Go zstdchunked reader verifies crfs's zstd:chunked output", async () => {
  const tarPath = await sampleTree(await Deno.makeTempDir({ dir }));
  const tar = await Deno.readFile(tarPath);
  const { blob, result } = await write(tar, { chunkSize: 256 << 10 });
  const path = `${dir}/ours.zst`;
  await Deno.writeFile(path, blob);
  const report = await verifyZstdChunkedWithReference(path, result.tocDigest);
  assert.ok(report.verified);
  assert.equal(report.tocDigest, result.tocDigest);
  const expected = await expectedTree(once(tar));
  let regs = 0;
  for (const e of report.entries) {
    const want = expected.get(e.name);
    assert.ok(want, `${e.name} is in the tar`);
    if (e.type !== "reg") continue;
    regs++;
    assert.equal(e.sha256, sha256(want.content!), `${e.name} content`);
  }
  assert.equal(regs, [...expected.values()].filter((n) => n.type === "reg").length);
  assert.ok(report.entries.some((e) => e.chunks > 1), "a file of several chunks");
  assert.equal(report.entries.find((e) => e.name === "etc/hello")!.xattrs["user.crfs"], "yes");
});

Deno.test("crfs reads zstd:chunked written by the Go zstdchunked writer like tar -x", async () => {
  const sub = await Deno.makeTempDir({ dir });
  const tarPath = await sampleTree(sub);
  const path = `${sub}/go.zst`;
  const built = await buildZstdChunkedWithReference(tarPath, path, 100_000);
  assert.ok(built.annotations["io.containers.zstd-chunked.manifest-position"]);
  await run("sh", ["-c", `zstd -q -d -c '${path}' > '${sub}/go.tar'`]);
  const src = await FileSource.open(path);
  try {
    for (const annotations of [built.annotations, undefined]) {
      const r = await StargzReader.open(src, { annotations });
      assert.equal(r.format, "zstd:chunked");
      assert.equal(r.tocDigest, built.tocDigest);
      assert.equal(r.openRequests, 1);
      await assertSameAsTarX(r, `${sub}/go.tar`, sub, [".no.prefetch.landmark"]);
    }
  } finally {
    src.close();
  }
});

Deno.test("the same input gives the same blob whatever the worker count", async () => {
  const tar = randomTar({ seed: 12, chunkSize: 70_000, entries: 60 });
  const one = await write(tar, { chunkSize: 70_000, workers: 0 });
  const two = await write(tar, { chunkSize: 70_000, workers: 2 });
  assert.deepEqual(two.blob, one.blob);
  assert.equal(two.result.tocDigest, one.result.tocDigest);
  const r = await StargzReader.open(new BytesSource(two.blob));
  await assertSameTree(r, await expectedTree(once(tar)), 12);
});
