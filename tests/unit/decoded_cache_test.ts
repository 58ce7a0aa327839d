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
import { DecodedChunkCache } from "../../fs/decoded_cache.ts";
import { DiskCache } from "../../fs/disk_cache.ts";
import { BytesSource } from "../../format/range_source.ts";
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
      assert.equal(st.size, 8 + 4000, "a whole file");
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
