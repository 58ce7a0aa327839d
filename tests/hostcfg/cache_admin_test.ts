/**
 * `crfs cache status|prune` (cmd/cache.ts, fs/cache_admin.ts) over a cache the real DiskCache
 * wrote: counts and sizes, pruning by age (file times set into the past), by size (least recently
 * used first), dry runs, tmp leftovers, and a DiskCache reopened after pruning still serving what
 * is left and missing what went.
 */
import assert from "node:assert/strict";
import { DiskCache } from "../../fs/disk_cache.ts";
import { cacheStatus, parseDuration, pruneCache } from "../../fs/cache_admin.ts";
import { crfs } from "../cmd/helpers.ts";
import type { RangeSource } from "../../format/range_source.ts";

const HEX = (c: string) => c.repeat(64);
const DAY = 86400_000;

function source(size: number): RangeSource {
  return {
    size,
    read: (offset: number, length: number) =>
      Promise.resolve(new Uint8Array(Math.min(length, size - offset)).fill(offset % 251)),
  };
}

async function sha256(b: Uint8Array<ArrayBuffer>): Promise<string> {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", b));
  return "sha256:" + [...h].map((x) => x.toString(16).padStart(2, "0")).join("");
}

/** A cache with two blobs of ranges, one object, a tag record, a tmp leftover; ages set. */
async function filledCache(dir: string): Promise<{ objectDigest: string }> {
  const cache = await DiskCache.open(dir);
  const a = cache.caching(`sha256:${HEX("a")}`, source(1 << 20));
  const b = cache.caching(`sha256:${HEX("b")}`, source(1 << 20));
  await a.read(0, 1000); // old
  await a.read(4096, 2000); // old
  await b.read(0, 3000); // recent
  const obj = new TextEncoder().encode('{"schemaVersion":2}');
  const objectDigest = await sha256(obj);
  await cache.putObject(objectDigest, obj);
  await cache.putTag("127.0.0.1:5000/x:latest@linux/amd64", objectDigest);
  await cache.flush();
  const now = Date.now();
  const age = (p: string, days: number) =>
    Deno.utime(p, (now - days * DAY) / 1000, (now - days * DAY) / 1000);
  await age(`${dir}/ranges/${HEX("a")}/0-1000`, 40);
  await age(`${dir}/ranges/${HEX("a")}/4096-6096`, 20);
  await age(`${dir}/ranges/${HEX("b")}/0-3000`, 1);
  await age(`${dir}/objects/${objectDigest.slice(7)}`, 10);
  await Deno.writeFile(`${dir}/tmp/leftover`, new Uint8Array(50));
  await age(`${dir}/tmp/leftover`, 1);
  await Deno.writeFile(`${dir}/tmp/in-progress`, new Uint8Array(7));
  return { objectDigest };
}

Deno.test("crfs cache status: counts, sizes and ages of a real cache", async () => {
  const dir = await Deno.makeTempDir({ prefix: "crfs-cacheadm-" });
  try {
    await filledCache(dir);
    const s = await cacheStatus(dir);
    assert.deepEqual(s.ranges, { files: 3, bytes: 6000, blobs: 2 });
    assert.equal(s.objects.files, 1);
    assert.equal(s.tags.files, 1);
    assert.deepEqual(s.tmp, { files: 2, bytes: 57 });
    assert.equal(s.total.files, 7);
    assert.ok(Date.now() - s.oldestUse! > 39 * DAY && Date.now() - s.newestUse! < DAY);

    const out = await crfs(["cache", "status", "--cache-dir", dir]);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /ranges\s+3 files\s+5\.86 KiB\s+\(2 blobs\)/);
    assert.match(out.stdout, /objects\s+1 files/);
    const js = await crfs(["cache", "status", "--cache-dir", dir, "--json"]);
    assert.equal(JSON.parse(js.stdout).ranges.bytes, 6000);

    const missing = await crfs(["cache", "status", "--cache-dir", `${dir}/nope`]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no cache at .*nope/);
    const notCache = await crfs(["cache", "status", "--cache-dir", `${dir}/ranges/${HEX("a")}`]);
    assert.equal(notCache.code, 1);
    assert.match(notCache.stderr, /is not a crfs cache/);
    const usage = await crfs(["cache", "shrink"]);
    assert.equal(usage.code, 2);
    const badDur = await crfs(["cache", "prune", "--older-than", "soon", "--cache-dir", dir]);
    assert.equal(badDur.code, 2);
    assert.match(badDur.stderr, /--older-than: not a duration/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("crfs cache prune: by age, by size (LRU), dry run; a reopened cache misses what went", async () => {
  const dir = await Deno.makeTempDir({ prefix: "crfs-cacheadm-" });
  try {
    const { objectDigest } = await filledCache(dir);
    const dry = await crfs([
      "cache",
      "prune",
      "--older-than",
      "30d",
      "--dry-run",
      "--cache-dir",
      dir,
    ]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /would remove 2 files/); // the 40-day range and the tmp leftover
    assert.equal((await cacheStatus(dir)).total.files, 7);

    const old = await crfs(["cache", "prune", "--older-than", "30d", "--cache-dir", dir]);
    assert.equal(old.code, 0, old.stderr);
    assert.match(old.stdout, /removed 2 files/);
    let s = await cacheStatus(dir);
    assert.deepEqual(s.ranges, { files: 2, bytes: 5000, blobs: 2 });
    assert.deepEqual(s.tmp, { files: 1, bytes: 7 }, "a fresh tmp file is left alone");

    // Least recently used first: the 20-day range (2000 bytes), then the 10-day object; the
    // 1-day range and the fresh tag record stay.
    const target = s.total.bytes - 2000 - s.objects.bytes;
    const r = await pruneCache(dir, { toBytes: target });
    assert.equal(r.removedFiles, 2);
    s = await cacheStatus(dir);
    assert.deepEqual(s.ranges, { files: 1, bytes: 3000, blobs: 1 });
    assert.equal(s.objects.files, 0);
    assert.equal(s.total.bytes, target);
    assert.ok(
      !(await Deno.stat(`${dir}/ranges/${HEX("a")}`).then(() => true, () => false)),
      "empty blob dir removed",
    );

    const cache = await DiskCache.open(dir);
    await cache.whenIndexed();
    assert.equal(await cache.object(objectDigest), undefined);
    const b = cache.caching(`sha256:${HEX("b")}`, source(1 << 20));
    await b.read(0, 3000);
    assert.equal(cache.stats.hits, 1);
    const a = cache.caching(`sha256:${HEX("a")}`, source(1 << 20));
    await a.read(0, 1000);
    assert.equal(cache.stats.misses, 1);
    await cache.flush();

    const toZero = await crfs(["cache", "prune", "--to", "1", "--cache-dir", dir, "--json"]);
    assert.equal(toZero.code, 0, toZero.stderr);
    assert.ok(JSON.parse(toZero.stdout).after.total.bytes <= 7 + 200);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cache admin: durations", () => {
  assert.equal(parseDuration("30d"), 30 * DAY);
  assert.equal(parseDuration("12h"), 12 * 3600_000);
  assert.equal(parseDuration("90m"), 90 * 60_000);
  assert.equal(parseDuration("2w"), 14 * DAY);
  assert.equal(parseDuration("45"), 45_000);
  assert.throws(() => parseDuration("-1d"), /not a duration/);
});

Deno.test("crfs cache status and prune: chunks kept decompressed (decoded/) count and go", async () => {
  const dir = await Deno.makeTempDir({ prefix: "crfs-cacheadm-" });
  try {
    await filledCache(dir);
    const file = `${dir}/decoded/${HEX("c").slice(0, 2)}/${HEX("c")}`;
    await Deno.mkdir(`${dir}/decoded/cc`, { recursive: true });
    await Deno.writeFile(file, new Uint8Array(5000));
    const old = (Date.now() - 50 * DAY) / 1000;
    await Deno.utime(file, old, old);
    const s = await cacheStatus(dir);
    assert.deepEqual(s.decoded, { files: 1, bytes: 5000 });
    assert.equal(s.total.files, 8);
    const out = await crfs(["cache", "status", "--cache-dir", dir]);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /decoded\s+1 files\s+4\.88 KiB/);
    const r = await pruneCache(dir, { olderThanMs: 30 * DAY });
    assert.equal(r.after.decoded.files, 0);
    await assert.rejects(Deno.stat(file), Deno.errors.NotFound);
    await assert.rejects(Deno.stat(`${dir}/decoded/cc`), Deno.errors.NotFound, "empty dir gone");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
