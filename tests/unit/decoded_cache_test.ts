/**
 * The decoded-chunk disk cache: a second reader serves every chunk from `decoded/` files without
 * touching its source; a damaged, truncated or foreign file is never served (it is removed and the
 * chunk fetched and decoded again); the files count against the disk cache's size budget; files
 * are complete when they appear (written under `tmp/` and renamed).
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { DecodedChunkCache, decodedHeaderSize } from "../../fs/decoded_cache.ts";
import { DiskCache } from "../../fs/disk_cache.ts";
import { BytesSource } from "../../format/range_source.ts";
import { crc32 } from "../../format/gzip.ts";
import { MemoryChunkCache, StargzReader } from "../../format/reader.ts";
import { randomTar } from "./random_tar.ts";
import { convert, expectedTree } from "./tree_helpers.ts";

const sha = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

async function withDir(f: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "crfs-decoded-" });
  try {
    await f(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A disk cache whose initial walk is done (no walk outlives a test's directory). */
async function openDisk(dir: string, opts = {}): Promise<DiskCache> {
  const disk = await DiskCache.open(dir, opts);
  await disk.whenIndexed();
  return disk;
}

/** `n` random bytes (getRandomValues gives at most 64 KiB a call). */
function randomBytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let o = 0; o < n; o += 65_536) crypto.getRandomValues(b.subarray(o, o + 65_536));
  return b;
}

async function* once(b: Uint8Array) {
  yield b;
}

const tar = randomTar({ seed: 8, chunkSize: 3000, entries: 80 });
const { blob } = await convert(tar, { chunkSize: 3000 });
const key = `${sha(blob)}:`;
const expected = await expectedTree(once(tar));

async function readAll(r: StargzReader) {
  for (const [p, n] of expected) {
    if (n.type === "reg") assert.deepEqual(await r.readFile(r.lookup(p)!), n.content, p);
  }
}

/** A reader over `src` whose chunks are cached decoded in `disk` (every chunk size kept). */
async function open(disk: DiskCache, src: BytesSource) {
  const cache = new DecodedChunkCache(disk, new MemoryChunkCache(1 << 20), 1);
  const reader = await StargzReader.open(src, { cache, cacheKey: key, fetchWindow: 0 });
  return { cache, reader };
}

async function decodedFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const d of Deno.readDir(`${dir}/decoded`)) {
    for await (const f of Deno.readDir(`${dir}/decoded/${d.name}`)) {
      out.push(`${dir}/decoded/${d.name}/${f.name}`);
    }
  }
  return out;
}

Deno.test("a second reader gets every chunk from decoded files, not from its source", async () => {
  await withDir(async (dir) => {
    const disk = await openDisk(dir);
    const first = await open(disk, new BytesSource(blob));
    await readAll(first.reader);
    await disk.flush();
    assert.ok(first.cache.stats.stored > 0, "chunks were stored");
    const src = new BytesSource(blob);
    const second = await open(await openDisk(dir), src);
    const reads = src.reads;
    await readAll(second.reader);
    assert.equal(src.reads, reads, "nothing fetched after open");
    assert.equal(second.cache.stats.corrupt, 0);
    assert.ok(second.cache.stats.hits > 0);
  });
});

Deno.test("a damaged or truncated decoded file is removed and never served", async () => {
  await withDir(async (dir) => {
    const disk = await openDisk(dir);
    await readAll((await open(disk, new BytesSource(blob))).reader);
    await disk.flush();
    const files = await decodedFiles(dir);
    assert.ok(files.length >= 2);
    // One file with a flipped byte in its data, one cut short.
    const flipped = await Deno.readFile(files[0]);
    flipped[flipped.length - 1] ^= 0x01;
    await Deno.writeFile(files[0], flipped);
    const cut = await Deno.readFile(files[1]);
    await Deno.writeFile(files[1], cut.subarray(0, cut.length - 1));
    const src = new BytesSource(blob);
    const again = await open(await openDisk(dir), src);
    const reads = src.reads;
    await readAll(again.reader); // exact bytes, checked against the expected tree
    assert.equal(again.cache.stats.corrupt, 2, "both damaged files detected");
    assert.ok(src.reads > reads, "the damaged chunks were fetched again");
  });
});

Deno.test("the stored checksum is the check: damage, a wrong size, another chunk's file", async () => {
  await withDir(async (dir) => {
    const disk = await openDisk(dir);
    const cache = new DecodedChunkCache(disk, new MemoryChunkCache(0), 1);
    const bytes = crypto.getRandomValues(new Uint8Array(5000));
    cache.set("k", bytes, { size: bytes.length });
    await disk.flush();
    assert.deepEqual(await cache.get("k", { size: bytes.length }), bytes);
    const file = await Deno.readFile(cache.pathOf("k"));
    file[40] ^= 0x80; // one bit in the data
    await Deno.writeFile(cache.pathOf("k"), file);
    assert.equal(await cache.get("k", { size: bytes.length }), undefined, "damaged: a miss");
    await assert.rejects(() => Deno.stat(cache.pathOf("k")), Deno.errors.NotFound);
    // Bytes of another length than the TOC says are a miss.
    cache.set("k", bytes, { size: bytes.length });
    await disk.flush();
    assert.equal(await cache.get("k", { size: bytes.length + 1 }), undefined, "wrong size");
    // A file copied to another chunk's name is a miss (the checksum covers the key).
    cache.set("d", bytes, { size: bytes.length });
    await disk.flush();
    await Deno.mkdir(cache.pathOf("e").replace(/\/[^/]+$/, ""), { recursive: true });
    await Deno.copyFile(cache.pathOf("d"), cache.pathOf("e"));
    assert.equal(await cache.get("e", { size: bytes.length }), undefined, "another key's file");
    assert.deepEqual(await cache.get("d", { size: bytes.length }), bytes);
  });
});

Deno.test("decoded files share the disk cache's budget and are written whole", async () => {
  await withDir(async (dir) => {
    const disk = await openDisk(dir, { maxBytes: 40_000 });
    const cache = new DecodedChunkCache(disk, new MemoryChunkCache(0), 1);
    for (let i = 0; i < 30; i++) {
      const b = new Uint8Array(4000).fill(i);
      cache.set(`k${i}`, b, { size: b.length });
      await disk.flush();
    }
    await disk.whenIndexed();
    let total = 0;
    for (const f of await decodedFiles(dir)) {
      const st = await Deno.stat(f);
      assert.equal(st.size, decodedHeaderSize(4000) + 4000, "a whole file");
      total += st.size;
    }
    assert.ok(total <= 40_000, `decoded files hold ${total} bytes, over the budget`);
    assert.ok(disk.stats.evictions > 0);
    assert.deepEqual([...Deno.readDirSync(`${dir}/tmp`)], [], "no temporary file left");
    assert.deepEqual(await cache.get("k29", { size: 4000 }), new Uint8Array(4000).fill(29));
    // Chunks below the minimum size are not kept on disk.
    const big = new DecodedChunkCache(disk, new MemoryChunkCache(0));
    big.set("small", new Uint8Array(100), { size: 100 });
    await disk.flush();
    await assert.rejects(() => Deno.stat(big.pathOf("small")), Deno.errors.NotFound);
  });
});

Deno.test("part of a chunk comes from its decoded file: only the blocks read, each checked", async () => {
  await withDir(async (dir) => {
    const disk = await openDisk(dir);
    const writer = new DecodedChunkCache(disk, new MemoryChunkCache(0), 1);
    const bytes = randomBytes(200_000); // blocks of 64 KiB: 3 + part
    const info = { size: bytes.length };
    writer.set("k", bytes, info);
    await disk.flush();
    // A new process: nothing in memory, the file found by the disk cache's walk.
    const cache = new DecodedChunkCache(await openDisk(dir), new MemoryChunkCache(0), 1);
    assert.ok(cache.holds("k", info));
    assert.equal(cache.holds("other", info), false);
    assert.equal(await cache.readRange("other", info, 0, 10), undefined, "no file: a miss");
    assert.deepEqual(
      await cache.readRange("k", info, 70_000, 1000),
      bytes.subarray(70_000, 71_000),
    );
    // Block-aligned: straight into the caller's buffer.
    const into = new Uint8Array(65_536);
    const part = await cache.readRange("k", info, 65_536, 65_536, into);
    assert.ok(part && part.buffer === into.buffer, "read into the given buffer");
    assert.deepEqual(part, bytes.subarray(65_536, 131_072));
    // Past the chunk's end: clipped.
    assert.deepEqual(await cache.readRange("k", info, 196_608, 10_000), bytes.subarray(196_608));
    assert.equal(cache.stats.rangeHits, 3);
    // One flipped bit in the third block: reads of other blocks still pass, that one fails and
    // the file goes.
    const file = await Deno.readFile(cache.pathOf("k"));
    file[decodedHeaderSize(bytes.length) + 2 * 65_536 + 5] ^= 0x10;
    await Deno.writeFile(cache.pathOf("k"), file);
    const fresh = new DecodedChunkCache(await openDisk(dir), new MemoryChunkCache(0), 1);
    assert.deepEqual(await fresh.readRange("k", info, 0, 100), bytes.subarray(0, 100));
    assert.equal(await fresh.readRange("k", info, 131_072, 100), undefined, "damaged block");
    assert.equal(fresh.stats.corrupt, 1);
    await assert.rejects(() => Deno.stat(fresh.pathOf("k")), Deno.errors.NotFound);
    assert.equal(await fresh.readRange("k", info, 0, 100), undefined, "gone");
  });
});

Deno.test("a damaged header fails range reads too, and a cdc1 file is still read whole", async () => {
  await withDir(async (dir) => {
    const disk = await openDisk(dir);
    const cache = new DecodedChunkCache(disk, new MemoryChunkCache(0), 1);
    const bytes = randomBytes(100_000);
    const info = { size: bytes.length };
    cache.set("h", bytes, info);
    await disk.flush();
    const file = await Deno.readFile(cache.pathOf("h"));
    file[9] ^= 0x01; // a block CRC: the header's own CRC no longer holds
    await Deno.writeFile(cache.pathOf("h"), file);
    assert.equal(await cache.readRange("h", info, 0, 10), undefined);
    assert.equal(await cache.get("h", info), undefined, "the whole read removes it");
    assert.equal(cache.stats.corrupt, 1);
    // The earlier layout: magic "cdc1", a CRC-32 of key and bytes, the bytes.
    const old = new Uint8Array(8 + bytes.length);
    const dv = new DataView(old.buffer);
    dv.setUint32(0, 0x31636463, true);
    dv.setUint32(4, crc32(bytes, crc32(new TextEncoder().encode("v1"))), true);
    old.set(bytes, 8);
    await Deno.mkdir(cache.pathOf("v1").replace(/\/[^/]+$/, ""), { recursive: true });
    await Deno.writeFile(cache.pathOf("v1"), old);
    const again = new DecodedChunkCache(await openDisk(dir), new MemoryChunkCache(0), 1);
    assert.equal(await again.readRange("v1", info, 0, 10), undefined, "no range reads of cdc1");
    assert.deepEqual(await again.get("v1", info), bytes);
  });
});

Deno.test("a reader serves parts of big chunks from decoded files, byte for byte", async () => {
  await withDir(async (dir) => {
    const disk = await openDisk(dir);
    const first = await open(disk, new BytesSource(blob));
    await readAll(first.reader);
    await disk.flush();
    const src = new BytesSource(blob);
    const second = await open(await openDisk(dir), src);
    const reads = src.reads;
    for (const [p, n] of expected) {
      const content = n.content;
      if (n.type !== "reg" || !content || content.length < 10) continue;
      const node = second.reader.lookup(p)!;
      const mid = content.length >> 1;
      assert.deepEqual(await second.reader.read(node, 3, 5), content.subarray(3, 8), p);
      assert.deepEqual(
        await second.reader.read(node, mid, content.length),
        content.subarray(mid),
        p,
      );
    }
    assert.equal(src.reads, reads, "nothing fetched after open");
    assert.ok(second.cache.stats.rangeHits > 0, "parts read from decoded files");
    assert.equal(second.cache.stats.corrupt, 0);
  });
});

Deno.test("a chunk still being written is read from the bytes being written, then from its file", async () => {
  await withDir(async (dir) => {
    const disk = await openDisk(dir);
    const cache = new DecodedChunkCache(disk, new MemoryChunkCache(0), 1);
    const bytes = randomBytes(100_000);
    const info = { size: bytes.length };
    const path = cache.pathOf("w");
    cache.set("w", bytes, info);
    assert.ok(disk.writing(path), "being written");
    assert.ok(cache.holds("w", info), "no read-ahead of it into memory");
    assert.deepEqual(await cache.readRange("w", info, 10, 100), bytes.subarray(10, 110));
    assert.deepEqual(await cache.get("w", info), bytes, "whole, while being written");
    assert.equal(cache.stats.rangeHits, 0, "not from its file yet");
    assert.equal(await disk.writing(path), true);
    assert.equal(disk.writing(path), undefined, "written");
    assert.deepEqual(await cache.readRange("w", info, 10, 100), bytes.subarray(10, 110));
    assert.equal(cache.stats.rangeHits, 1, "from its file");
    await disk.flush();
    assert.deepEqual(await cache.get("w", info), bytes);
    // Written, the bytes are no longer held: damage to the file is what a read now sees.
    const damaged = await Deno.readFile(path);
    damaged[damaged.length - 1] ^= 0x01;
    await Deno.writeFile(path, damaged);
    const fresh = new DecodedChunkCache(disk, new MemoryChunkCache(0), 1);
    assert.equal(await fresh.get("w", info), undefined);
    assert.equal(await cache.get("w", info), undefined, "not served from memory");
    assert.equal(cache.stats.corrupt + fresh.stats.corrupt, 1);
  });
});

Deno.test("chunks kept decoded are not kept compressed too; a new process still fetches nothing", async () => {
  await withDir(async (dir) => {
    const minSize = 2000;
    const digest = sha(blob);
    const layer = async (disk: DiskCache, src: BytesSource) => {
      const cache = new DecodedChunkCache(disk, new MemoryChunkCache(1 << 20), minSize);
      const reader = await StargzReader.open(disk.caching(digest, src), {
        cache,
        cacheKey: key,
        fetchWindow: 0,
        tailGuess: 0, // the footer, then the TOC: no chunk comes with them
      });
      return { cache, reader };
    };
    const disk = await openDisk(dir);
    const first = await layer(disk, new BytesSource(blob));
    await readAll(first.reader);
    await disk.flush();
    const all = first.reader.index.chunks;
    const big = all.filter((c) => c.chunkSize >= minSize);
    const small = all.filter((c) => c.chunkSize < minSize);
    assert.ok(big.length > 0 && small.length > 0, "both kinds of chunk");
    assert.equal(first.cache.stats.stored, new Set(big.map((c) => c.offset)).size);
    const ranges: [number, number][] = [];
    for await (const e of Deno.readDir(`${dir}/ranges/${digest.slice(7)}`)) {
      const [from, to] = e.name.split("-").map(Number);
      ranges.push([from, to]);
    }
    const covered = (c: { offset: number; end: number }) =>
      ranges.some(([from, to]) => from <= c.offset && c.end <= to);
    for (const c of big) assert.ok(!covered(c), `big chunk at ${c.offset} kept compressed`);
    for (const c of small) assert.ok(covered(c), `small chunk at ${c.offset} not kept`);
    // Another process on the same directory: the TOC and small chunks from ranges, big ones
    // from decoded files.
    const src = new BytesSource(blob);
    const second = await layer(await openDisk(dir), src);
    await readAll(second.reader);
    assert.equal(src.reads, 0, "no byte came from the source");
    // A damaged decoded file: dropped, and its chunk fetched from the source again.
    const files = await decodedFiles(dir);
    const damaged = await Deno.readFile(files[0]);
    damaged[damaged.length - 1] ^= 0x01;
    await Deno.writeFile(files[0], damaged);
    const src3 = new BytesSource(blob);
    const third = await layer(await openDisk(dir), src3);
    await readAll(third.reader);
    assert.equal(third.cache.stats.corrupt, 1);
    assert.ok(src3.reads > 0, "the damaged chunk was fetched again");
  });
});
