/**
 * Streaming zstd decompression (plain `.tar.zst` layers and zstd:chunked blobs read as a whole):
 * the same bytes as frame-by-frame decompression whatever the read sizes, skippable frames
 * skipped, truncation and damage refused; both writers take zstd input.
 *
 * @module
 */
import assert from "node:assert/strict";
import { BytesSource } from "../../format/range_source.ts";
import { StargzReader } from "../../format/reader.ts";
import { writeEStargz } from "../../format/writer.ts";
import {
  skippableFrame,
  unzstd,
  unzstdStream,
  zstdCompress,
  ZstdError,
} from "../../format/zstd.ts";
import { writeZstdChunked } from "../../format/zstd_chunked_writer.ts";
import { randomTar } from "../unit/random_tar.ts";
import { assertSameTree, expectedTree } from "../unit/tree_helpers.ts";
import { run } from "./helpers.ts";

async function* pieces(b: Uint8Array, size: number) {
  for (let o = 0; o < b.length; o += size) yield b.slice(o, o + size);
}

async function collect(it: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const out: Uint8Array[] = [];
  for await (const c of it) out.push(c.slice());
  const all = new Uint8Array(out.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of out) (all.set(p, o), o += p.length);
  return all;
}

const tar = randomTar({ seed: 31, chunkSize: 4000, entries: 80 });
const chunked: Uint8Array[] = [];
await writeZstdChunked(pieces(tar, 1 << 20), (b) => {
  chunked.push(b.slice());
}, { chunkSize: 4000 });
const chunkedBlob = await collect((async function* () {
  yield* chunked;
})());

Deno.test("streamed decompression equals frame-by-frame, at any read size", async () => {
  const frames = [
    zstdCompress(new TextEncoder().encode("one ")),
    skippableFrame(new Uint8Array(100)),
    zstdCompress(new Uint8Array(300_000).fill(7)),
    skippableFrame(new Uint8Array(0)),
    zstdCompress(new TextEncoder().encode("three")),
  ];
  const joined = await collect((async function* () {
    yield* frames;
  })());
  for (const b of [joined, chunkedBlob]) {
    const want = unzstd(b);
    for (const size of [1, 3, 4096, 1 << 20]) {
      if (size === 1 && b.length > 100_000) continue;
      assert.deepEqual(await collect(unzstdStream(pieces(b, size))), want, `reads of ${size}`);
    }
  }
  assert.deepEqual(await collect(unzstdStream(pieces(chunkedBlob, 999))), tar);
});

Deno.test("a plain zstd stream from the zstd tool (one frame) decompresses", async () => {
  const dir = await Deno.makeTempDir({ prefix: "crfs-zstd-stream-" });
  try {
    await Deno.writeFile(`${dir}/t.tar`, tar);
    await run("zstd", ["-q", "-19", `${dir}/t.tar`, "-o", `${dir}/t.tar.zst`]);
    const z = await Deno.readFile(`${dir}/t.tar.zst`);
    assert.deepEqual(await collect(unzstdStream(pieces(z, 65536))), tar);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("truncated or damaged zstd streams are refused", async () => {
  for (const cut of [1, 5, 100, chunkedBlob.length - 30]) {
    await assert.rejects(
      () => collect(unzstdStream(pieces(chunkedBlob.subarray(0, cut), 4096))),
      ZstdError,
      `cut at ${cut}`,
    );
  }
  const bad = chunkedBlob.slice();
  bad[0] ^= 0xff;
  await assert.rejects(() => collect(unzstdStream(pieces(bad, 4096))), ZstdError);
});

Deno.test("both writers take zstd input: a zstd:chunked layer converts to eStargz", async () => {
  const out: Uint8Array[] = [];
  const res = await writeEStargz(pieces(chunkedBlob, 65536), (b) => {
    out.push(b.slice());
  }, { workers: 0 });
  const blob = await collect((async function* () {
    yield* out;
  })());
  assert.equal(blob.length, res.blobSize);
  const expected = await expectedTree(pieces(tar, 1 << 20));
  await assertSameTree(await StargzReader.open(new BytesSource(blob)), expected, 1);
  const again: Uint8Array[] = [];
  await writeZstdChunked(pieces(chunkedBlob, 65536), (b) => {
    again.push(b.slice());
  }, { chunkSize: 4000 });
  assert.deepEqual(
    await collect((async function* () {
      yield* again;
    })()),
    chunkedBlob,
    "zstd:chunked of zstd:chunked is the same blob",
  );
});
