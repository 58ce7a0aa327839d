/**
 * The disk cache: cached ranges serve reads exactly, a reopened layer (a second mount, a second
 * process) reads nothing from its source, damaged ranges are detected by the reader's checks,
 * dropped and fetched again (never returned), the size budget evicts the least recently used
 * ranges, objects are checked against their digest, tags expire with their TTL.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { DiskCache } from "../../fs/disk_cache.ts";
import { BytesSource } from "../../format/range_source.ts";
import { StargzReader } from "../../format/reader.ts";
import { randomTar } from "./random_tar.ts";
import { convert, expectedTree } from "./tree_helpers.ts";

const sha = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

async function withDir(f: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "crfs-cache-" });
  try {
    await f(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function* once(b: Uint8Array) {
  yield b;
}

const tar = randomTar({ seed: 3, chunkSize: 3000, entries: 120 });
const { blob } = await convert(tar, { chunkSize: 3000 });
const digest = sha(blob);
const expected = await expectedTree(once(tar));

async function readAll(r: StargzReader) {
  for (const [p, n] of expected) {
    if (n.type === "reg") assert.deepEqual(await r.readFile(r.lookup(p)!), n.content, p);
  }
}

Deno.test("cached ranges serve exactly what the source would", async () => {
  await withDir(async (dir) => {
    const c = await DiskCache.open(dir);
    const src = new BytesSource(blob);
    const cs = c.caching(digest, src);
    const a = await cs.read(100, 5000);
    await c.flush();
    const reads = src.reads;
    assert.deepEqual(await cs.read(100, 5000), a);
    assert.deepEqual(
      await cs.read(1000, 10),
      blob.subarray(1000, 1010),
      "a sub-range of a cached range",
    );
    assert.equal(src.reads, reads, "served from disk");
    await cs.read(6000, 10);
    assert.equal(src.reads, reads + 1, "outside the cached range: fetched");
  });
});

Deno.test("a read keeps only the parts it is told to keep", async () => {
  await withDir(async (dir) => {
    const c = await DiskCache.open(dir);
    const src = new BytesSource(blob);
    const cs = c.caching(digest, src);
    const got = await cs.read(1000, 9000, undefined, { keep: [[500, 2000], [4000, 5000]] });
    assert.deepEqual(got, blob.subarray(1000, 10_000), "all the bytes asked for");
    await c.flush();
    const names = [];
    for await (const e of Deno.readDir(`${dir}/ranges/${digest.slice(7)}`)) names.push(e.name);
    assert.deepEqual(names.sort(), ["1000-2000", "4000-5000"], "the kept parts, clipped");
    const reads = src.reads;
    assert.deepEqual(await cs.read(1200, 800), blob.subarray(1200, 2000));
    assert.deepEqual(await cs.read(4000, 1000), blob.subarray(4000, 5000));
    assert.equal(src.reads, reads, "kept parts served from disk");
    assert.deepEqual(await cs.read(2000, 100), blob.subarray(2000, 2100));
    assert.equal(src.reads, reads + 1, "a part not kept is fetched again");
    await cs.read(20_000, 100, undefined, { keep: [] });
    await c.flush();
    assert.equal(c.stats.writes, 3, "nothing kept of a read told to keep nothing");
  });
});

Deno.test("a layer reopened through the cache reads nothing from its source", async () => {
  await withDir(async (dir) => {
    const first = await DiskCache.open(dir);
    const src1 = new BytesSource(blob);
    await readAll(await StargzReader.open(first.caching(digest, src1)));
    assert.ok(src1.reads > 0);
    await first.flush();
    // "Another process": a new cache object over the same directory, a source that counts.
    const second = await DiskCache.open(dir);
    const src2 = new BytesSource(blob);
    await readAll(await StargzReader.open(second.caching(digest, src2)));
    assert.equal(src2.reads, 0, "no byte came from the source");
    assert.ok(second.stats.hits > 0);
  });
});

Deno.test("damaged cached bytes are detected, dropped and fetched again", async () => {
  await withDir(async (dir) => {
    const c = await DiskCache.open(dir);
    await readAll(await StargzReader.open(c.caching(digest, new BytesSource(blob))));
    await c.flush();
    // Flip a byte inside the first file chunk, in whichever cached range holds it.
    const r0 = await StargzReader.open(new BytesSource(blob));
    const target = r0.index.chunks.find(({ node }) =>
      !r0.index.pathOf(node)!.includes("landmark")
    )!.offset + 20;
    const hexDir = `${dir}/ranges/${digest.slice(7)}`;
    let flipped = 0;
    for await (const e of Deno.readDir(hexDir)) {
      const [start, end] = e.name.split("-").map(Number);
      if (target < start || target >= end) continue;
      const b = await Deno.readFile(`${hexDir}/${e.name}`);
      b[target - start] ^= 0x55;
      await Deno.writeFile(`${hexDir}/${e.name}`, b);
      flipped++;
    }
    assert.ok(flipped > 0);
    const again = await DiskCache.open(dir);
    const src = new BytesSource(blob);
    await readAll(await StargzReader.open(again.caching(digest, src)));
    assert.ok(again.stats.corrupt > 0, "damage was noticed");
    assert.ok(src.reads > 0, "and the bytes fetched again");
    await again.flush(); // the ranges fetched again are written behind the reads
  });
});

Deno.test("the least recently used ranges go when the budget is exceeded", async () => {
  await withDir(async (dir) => {
    const c = await DiskCache.open(dir, { maxBytes: 3000 });
    await c.whenIndexed();
    const src = new BytesSource(blob);
    const cs = c.caching(digest, src);
    for (const at of [0, 1000, 2000]) {
      await cs.read(at, 1000);
      await c.flush();
    }
    await cs.read(0, 1000); // used again
    await cs.read(5000, 1000);
    await c.flush();
    assert.ok(c.stats.bytes <= 3000);
    const reads = src.reads;
    await cs.read(0, 1000);
    assert.equal(src.reads, reads, "0 was used recently: kept");
    await cs.read(1000, 1000);
    assert.equal(src.reads, reads + 1, "1000 was the least recently used: evicted");
  });
});

Deno.test("objects are checked against their digest; tags expire with their TTL", async () => {
  await withDir(async (dir) => {
    const c = await DiskCache.open(dir);
    const m = new TextEncoder().encode('{"schemaVersion":2}');
    await c.putObject(sha(m), m);
    assert.deepEqual(await c.object(sha(m)), m);
    await c.putObject(`sha256:${"ab".repeat(32)}`, m); // wrong digest: refused
    assert.equal(await c.object(`sha256:${"ab".repeat(32)}`), undefined);
    await c.putTag("h/r:t", sha(m));
    assert.equal(await c.tag("h/r:t", 60_000), sha(m));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(await c.tag("h/r:t", 10), undefined);
    await c.putRepository("h/r");
    assert.deepEqual(await c.repositories(60_000), ["h/r"]);
  });
});

Deno.test("records written later start after the caller's work and are there after flush", async () => {
  await withDir(async (dir) => {
    const c = await DiskCache.open(dir);
    const m = new TextEncoder().encode('{"schemaVersion":2,"later":true}');
    let started = false;
    c.later(() => {
      started = true;
      return c.putObject(sha(m), m);
    });
    c.later(() => c.putTag("h/r:later", sha(m)));
    // Not begun while the caller still runs (not even after its microtasks).
    await Promise.resolve();
    assert.equal(started, false);
    await c.flush();
    assert.equal(started, true);
    assert.deepEqual(await c.object(sha(m)), m);
    assert.equal(await c.tag("h/r:later", 60_000), sha(m));
    // A range stored from a read is written behind it, and served once flushed.
    const bytes = new Uint8Array(4096).map((_, i) => i & 0xff);
    const src = c.caching("sha256:" + "cd".repeat(32), new BytesSource(bytes));
    assert.deepEqual(await src.read(100, 1000), bytes.subarray(100, 1100));
    await c.flush();
    const again = await DiskCache.open(dir);
    assert.deepEqual(await again.readRange("cd".repeat(32), 100, 1100), bytes.subarray(100, 1100));
  });
});
