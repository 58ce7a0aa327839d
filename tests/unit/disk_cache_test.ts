/**
 * The disk cache: verified chunks, LRU eviction within the size budget, damaged entries turned
 * into misses, digests checked for objects, tags honoured for their TTL, and a reopened layer
 * (a second mount, a second process) that reads nothing from its source.
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

const D = `sha256:${"ab".repeat(32)}`;
const sha = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

async function withDir(f: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "crfs-cache-" });
  try {
    await f(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function settle() {
  // Writes happen in the background; give them a moment.
  for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 5));
}

Deno.test("chunks come back exactly; damaged or mismatched entries are misses", async () => {
  await withDir(async (dir) => {
    const c = await DiskCache.open(dir);
    const data = crypto.getRandomValues(new Uint8Array(5000));
    c.set(`${D}:100`, data, { size: data.length, digest: sha(data) });
    await settle();
    assert.deepEqual(await c.get(`${D}:100`, { size: data.length, digest: sha(data) }), data);
    assert.equal(await c.get(`${D}:101`, { size: 1 }), undefined);
    // Wrong expected digest or size: a miss.
    assert.equal(
      await c.get(`${D}:100`, { size: data.length, digest: sha(new Uint8Array(1)) }),
      undefined,
    );
    // A flipped byte on disk: a miss, and the file is gone.
    c.set(`${D}:200`, data, { size: data.length });
    await settle();
    const path = `${dir}/chunks/ab/sha256-${"ab".repeat(32)}/200`;
    const raw = await Deno.readFile(path);
    raw[10] ^= 1;
    await Deno.writeFile(path, raw);
    assert.equal(await c.get(`${D}:200`, { size: data.length }), undefined);
    assert.equal(c.stats.corrupt >= 1, true);
    await assert.rejects(() => Deno.stat(path));
  });
});

Deno.test("the least recently used entries go when the budget is exceeded", async () => {
  await withDir(async (dir) => {
    const c = await DiskCache.open(dir, { maxBytes: 3 * 1064 });
    const b = (i: number) => new Uint8Array(1000).fill(i);
    for (const i of [1, 2, 3]) {
      c.set(`${D}:${i}`, b(i), { size: 1000 });
      await settle();
    }
    assert.ok(await c.get(`${D}:1`, { size: 1000 }), "1 is used again");
    c.set(`${D}:4`, b(4), { size: 1000 });
    await settle();
    assert.equal(await c.get(`${D}:2`, { size: 1000 }), undefined, "2 was the least recently used");
    assert.ok(await c.get(`${D}:1`, { size: 1000 }));
    assert.ok(await c.get(`${D}:4`, { size: 1000 }));
    assert.ok(c.stats.bytes <= c.maxBytes);
    // A new process sees the same entries and the same budget.
    const again = await DiskCache.open(dir, { maxBytes: 3 * 1064 });
    assert.ok(await again.get(`${D}:4`, { size: 1000 }));
  });
});

Deno.test("objects are checked against their digest; tags expire with their TTL", async () => {
  await withDir(async (dir) => {
    const c = await DiskCache.open(dir);
    const m = new TextEncoder().encode('{"schemaVersion":2}');
    await c.putObject(sha(m), m);
    assert.deepEqual(await c.object(sha(m)), m);
    await c.putObject(D, m); // wrong digest: refused
    assert.equal(await c.object(D), undefined);
    await c.putTag("h/r:t", sha(m));
    assert.equal(await c.tag("h/r:t", 60_000), sha(m));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(await c.tag("h/r:t", 10), undefined);
  });
});

Deno.test("a layer reopened through the cache reads nothing from its source", async () => {
  await withDir(async (dir) => {
    const tar = randomTar({ seed: 3, chunkSize: 3000, entries: 120 });
    const { blob } = await convert(tar, { chunkSize: 3000 });
    const expected = await expectedTree((async function* () {
      yield tar;
    })());
    const digest = sha(blob);
    const first = await DiskCache.open(dir);
    const src1 = new BytesSource(blob);
    const r1 = await StargzReader.open(first.tailCaching(digest, src1), {
      cache: first,
      cacheKey: `${digest}:`,
    });
    for (const [p, n] of expected) if (n.type === "reg") await r1.readFile(r1.lookup(p)!);
    assert.ok(src1.reads > 0);
    await settle();
    // "Another process": a new cache object over the same directory, a source that counts.
    const second = await DiskCache.open(dir);
    const src2 = new BytesSource(blob);
    const r2 = await StargzReader.open(second.tailCaching(digest, src2), {
      cache: second,
      cacheKey: `${digest}:`,
    });
    for (const [p, n] of expected) {
      if (n.type === "reg") assert.deepEqual(await r2.readFile(r2.lookup(p)!), n.content, p);
    }
    assert.equal(src2.reads, 0, "no byte came from the source");
    assert.ok(second.stats.hits > 0);
  });
});
