/**
 * Hostile TOCs and strict verification of what a TOC cannot vouch for: a chunk of a gigabyte of
 * compressed zeros (a 1 MB member) must not be inflated or allocated, sizes of terabytes must
 * not be allocated from, and under `verify: "strict"` a legacy stargz file (no chunk digests,
 * only the whole-file digest) whose member was recompressed with different content (so its CRC
 * holds) is refused on partial reads too, not only when one read covers the whole file.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import zlib from "node:zlib";
import { MAX_CHUNK_BYTES } from "../../format/chunk_decode.ts";
import { estargzFooter } from "../../format/footer.ts";
import { crc32, gzipMember } from "../../format/gzip.ts";
import { chunksOf } from "../../format/toc_index.ts";
import { BytesSource } from "../../format/range_source.ts";
import { IntegrityError, StargzReader } from "../../format/reader.ts";
import { encodeHeader, END_OF_ARCHIVE, padToBlock, tarHeader } from "../../format/tar_header.ts";
import { FIXTURES } from "../unit/tree_helpers.ts";
import { recompressedLegacy } from "../fuzz/read_blobs.ts";

const enc = new TextEncoder();

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) (out.set(p, o), o += p.length);
  return out;
}

/** A gzip member of `n` zero bytes (`n` a multiple of 64 MiB), built without holding them. */
function zerosMember(n: number): Uint8Array {
  const piece = new Uint8Array(64 << 20);
  // Fully flushed blocks restart the dictionary, so copies of one block concatenate.
  const block = zlib.deflateRawSync(piece, { level: 9, finishFlush: zlib.constants.Z_FULL_FLUSH });
  const parts: Uint8Array[] = [new Uint8Array([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])];
  let crc = 0;
  for (let k = 0; k < n / piece.length; k++) {
    parts.push(block);
    crc = crc32(piece, crc);
  }
  parts.push(new Uint8Array([3, 0])); // a final empty block
  const trailer = new Uint8Array(8);
  new DataView(trailer.buffer).setUint32(0, crc, true);
  new DataView(trailer.buffer).setUint32(4, n >>> 0, true);
  parts.push(trailer);
  return concat(parts);
}

/** An eStargz blob of one file `big` whose one chunk is `member`, as the TOC `entry` says. */
function blobWith(member: Uint8Array, entry: Record<string, unknown>): Uint8Array {
  const lead = gzipMember([new Uint8Array(512)]); // content offsets start past 0
  const json = enc.encode(JSON.stringify({
    version: 1,
    entries: [{ name: "big", type: "reg", mode: 0o644, offset: lead.length, ...entry }],
  }));
  const toc = gzipMember([
    encodeHeader(tarHeader({ name: "stargz.index.json", kind: "reg", size: json.length })),
    padToBlock(json),
    END_OF_ARCHIVE,
  ]);
  const tocOffset = lead.length + member.length;
  return concat([lead, member, toc, estargzFooter(tocOffset)]);
}

Deno.test("hostile TOC: a chunk of a gigabyte of compressed zeros is refused, not inflated", async () => {
  const n = 1 << 30;
  const member = zerosMember(n);
  assert.ok(member.length < 2 << 20, `the member is small (${member.length} bytes)`);
  const reader = await StargzReader.open(new BytesSource(blobWith(member, { size: n })));
  const node = reader.lookup("big")!;
  assert.equal(node.size, n);
  const before = Deno.memoryUsage().rss;
  await assert.rejects(
    reader.read(node, 0, 4096),
    (e: Error) => e instanceof IntegrityError && /exceeds the 128 MiB limit/.test(e.message),
  );
  await assert.rejects(reader.read(node, n - 10, 10), IntegrityError);
  const grown = Deno.memoryUsage().rss - before;
  assert.ok(grown < 256 << 20, `resident memory grew by ${grown >> 20} MiB`);
});

Deno.test("hostile TOC: a chunk as big as the limit still reads; one byte more is refused", async () => {
  const member = zerosMember(MAX_CHUNK_BYTES);
  const ok = await StargzReader.open(
    new BytesSource(blobWith(member, { size: MAX_CHUNK_BYTES })),
    { cache: { get: () => undefined, set: () => {} } },
  );
  const got = await ok.read(ok.lookup("big")!, MAX_CHUNK_BYTES - 5, 100);
  assert.deepEqual(got, new Uint8Array(5));
  // The member holds the limit's bytes; a TOC saying one more is refused before inflating.
  const over = await StargzReader.open(
    new BytesSource(blobWith(member, { size: MAX_CHUNK_BYTES + 1 })),
  );
  await assert.rejects(over.read(over.lookup("big")!, 0, 1), /exceeds the 128 MiB limit/);
});

Deno.test("hostile TOC: terabyte sizes and inner offsets allocate nothing", async () => {
  const member = gzipMember([enc.encode("hello")]);
  for (
    const entry of [
      { size: 2 ** 40 },
      { size: 2 ** 50 },
      { size: 5, innerOffset: 2 ** 45 },
      { size: 2 ** 31, chunkSize: 2 ** 31 },
    ]
  ) {
    const reader = await StargzReader.open(new BytesSource(blobWith(member, entry)));
    const node = reader.lookup("big")!;
    const before = Deno.memoryUsage().rss;
    await assert.rejects(reader.read(node, 0, 2 ** 31), IntegrityError, JSON.stringify(entry));
    await assert.rejects(reader.read(node, node.size - 1, 1), IntegrityError);
    const grown = Deno.memoryUsage().rss - before;
    assert.ok(
      grown < 64 << 20,
      `${JSON.stringify(entry)}: resident memory grew ${grown >> 20} MiB`,
    );
  }
});

Deno.test("verify strict: a legacy file recompressed with other content is refused on partial reads", async () => {
  const { blob, at, truth } = await recompressedLegacy();
  const strict = await StargzReader.open(new BytesSource(blob));
  const node = strict.lookup("data/big.bin")!;
  // The damage is real: without verification the changed byte comes back.
  const none = await StargzReader.open(new BytesSource(blob), { verify: "none" });
  const loose = await none.read(none.lookup("data/big.bin")!, at, 1);
  assert.notDeepEqual(loose, truth.subarray(at, at + 1));
  // Strict: the changed chunk, an untouched chunk of the same file, and the whole file.
  await assert.rejects(strict.read(node, at, 1), IntegrityError);
  await assert.rejects(strict.read(node, 0, 10), IntegrityError);
  await assert.rejects(strict.readFile(node), IntegrityError);
  // Other files of the blob still read.
  assert.deepEqual(await strict.readFile(strict.lookup("data/hello.txt")!), enc.encode("hello\n"));
});

Deno.test("verify strict: a legacy multi-chunk file's partial reads are checked once, then by derived chunk digests", async () => {
  const blob = await Deno.readFile(`${FIXTURES}/synthetic-small.crfs-64k.stargz`);
  const reader = await StargzReader.open(new BytesSource(blob));
  const node = reader.lookup("data/big.bin")!;
  const want = createHash("sha256");
  const all = await StargzReader.open(new BytesSource(blob)).then((r) =>
    r.readFile(r.lookup("data/big.bin")!)
  );
  want.update(all);
  assert.equal(`sha256:${want.digest("hex")}`, node.digest);
  assert.deepEqual(await reader.read(node, 70_000, 5), all.subarray(70_000, 70_005));
  // The check gave every chunk a digest of its own: later fetches are verified chunk by chunk.
  assert.ok(chunksOf(node).every((c) => c.digest?.startsWith("sha256:")));
  assert.deepEqual(await reader.read(node, 150_000, 9000), all.subarray(150_000, 159_000));
});
