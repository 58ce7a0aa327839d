/**
 * The eStargz writer and reader together: random trees and real directories round-trip exactly
 * (names as bytes, attributes, link counts, contents at any offset), output is deterministic,
 * converting twice gives a valid blob with one TOC, and GNU tar extracts the blob to the same
 * tree as the input.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { BytesSource } from "../../format/range_source.ts";
import { StargzReader } from "../../format/reader.ts";
import { inflateMembers } from "../../format/gzip.ts";
import { readTar } from "../../format/tar_reader.ts";
import { assertSameTree, convert, expectedTree } from "./tree_helpers.ts";
import { randomTar } from "./random_tar.ts";

async function* once(b: Uint8Array) {
  yield b;
}

for (
  const [seed, format, chunkSize] of [
    [1, "pax", 1000],
    [2, "pax", 4096],
    [3, "gnu", 777],
    [4, "pax", 65536],
    [5, "gnu", 10000],
    [6, "pax", 512],
    [7, "pax", 3000],
    [8, "gnu", 1 << 20],
  ] as const
) {
  Deno.test(`random tree ${seed} (${format}, chunk ${chunkSize}) round-trips`, async () => {
    const tar = randomTar({ seed, chunkSize, format, entries: 150 });
    const { blob, result } = await convert(tar, { chunkSize });
    const r = await StargzReader.open(new BytesSource(blob), { tocDigest: result.tocDigest });
    assert.equal(r.footer.kind, "estargz");
    assert.equal(r.footer.size, 51);
    assert.ok(r.index.noPrefetchLandmark);
    await assertSameTree(r, await expectedTree(once(tar)), seed);
    // Chunks never exceed the chunk size and every chunk has a digest.
    for (const e of r.toc.entries) {
      if (e.type === "chunk" || (e.type === "reg" && e.size)) {
        assert.ok(e.chunkDigest, `${e.name} has a chunk digest`);
        assert.ok((e.chunkSize ?? 0) <= chunkSize);
      }
    }
    // The blob decompresses to the diff ID it reports.
    const plain = inflateMembers(blob);
    assert.equal(result.uncompressedSize, plain.length);
    assert.equal(result.diffId, `sha256:${createHash("sha256").update(plain).digest("hex")}`);
    assert.equal(result.blobDigest, `sha256:${createHash("sha256").update(blob).digest("hex")}`);
    assert.equal(result.blobSize, blob.length);
  });
}

Deno.test("same input and options give the same bytes, whatever the worker count", async () => {
  const tar = randomTar({ seed: 42, chunkSize: 2000, entries: 200 });
  const a = await convert(tar, { chunkSize: 2000, workers: 2 });
  const b = await convert(tar, { chunkSize: 2000, workers: 0 });
  const c = await convert(tar, { chunkSize: 2000, workers: 3 });
  assert.deepEqual(a.blob, b.blob);
  assert.deepEqual(a.blob, c.blob);
  const d = await convert(tar, { chunkSize: 3000 });
  assert.notDeepEqual(a.blob, d.blob);
});

Deno.test("converting a converted blob gives a valid blob with one TOC", async () => {
  const tar = randomTar({ seed: 9, chunkSize: 1500, entries: 80 });
  const first = await convert(tar, { chunkSize: 1500 });
  const second = await convert(first.blob, { chunkSize: 1500 });
  const r = await StargzReader.open(new BytesSource(second.blob));
  await assertSameTree(r, await expectedTree(once(tar)), 9);
  const names: string[] = [];
  for await (const e of readTar(once(inflateMembers(second.blob)))) names.push(e.header.name);
  assert.equal(names.filter((n) => n === "stargz.index.json").length, 1);
  assert.equal(names.filter((n) => n === ".no.prefetch.landmark").length, 1);
  assert.equal(first.result.tocDigest, second.result.tocDigest, "same TOC both times");
});

Deno.test("an empty tar converts to a valid, empty blob", async () => {
  const { blob } = await convert(new Uint8Array(1024));
  const r = await StargzReader.open(new BytesSource(blob));
  assert.deepEqual([...r.index.byPath.keys()], [""]);
});

async function run(cmd: string, args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** Lists a directory with everything `tar -x` restores, one sorted line per file. */
async function describe(dir: string): Promise<string[]> {
  const out = await run("find", [".", "-printf", "%p|%y|%m|%U|%G|%s|%T@|%l|%n\\n"], dir);
  return out.trim().split("\n").map((l) => {
    const f = l.split("|");
    if (f[1] === "d") f[5] = "-"; // directory sizes depend on the filesystem
    return f.join("|");
  }).sort();
}

Deno.test("GNU tar extracts the blob to exactly the input tree (a real directory)", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "crfs-test-" });
  try {
    const srcTar = `${tmp}/src.tar`;
    // A real directory of this machine with thousands of files, symlinks and hardlinks.
    await run("tar", [
      "-cf",
      srcTar,
      "--xattrs",
      "-C",
      "/usr",
      "share/zoneinfo",
      "share/perl5",
      "lib/python3",
    ]);
    const tar = await Deno.readFile(srcTar);
    const { blob } = await convert(tar, { chunkSize: 64 << 10 });
    await Deno.writeFile(`${tmp}/out.tar.gz`, blob);
    await Deno.mkdir(`${tmp}/a`);
    await Deno.mkdir(`${tmp}/b`);
    await run("tar", ["-xf", srcTar, "--xattrs", "-C", `${tmp}/a`]);
    await run("tar", ["-xzf", `${tmp}/out.tar.gz`, "--xattrs", "-C", `${tmp}/b`]);
    await Deno.remove(`${tmp}/b/stargz.index.json`);
    await Deno.remove(`${tmp}/b/.no.prefetch.landmark`);
    // Parents the tar has no entry for get the extraction time: leave them out.
    const implicit = (l: string) => /^(\.|\.\/lib|\.\/share)\|/.test(l);
    const a = (await describe(`${tmp}/a`)).filter((l) => !implicit(l));
    const b = (await describe(`${tmp}/b`)).filter((l) => !implicit(l));
    assert.ok(a.length > 2000, `a real tree (${a.length} entries)`);
    assert.deepEqual(b, a);
    await run("diff", ["-r", "--no-dereference", `${tmp}/a`, `${tmp}/b`]);
    // And the reader agrees with the tar about every file.
    const r = await StargzReader.open(new BytesSource(blob));
    await assertSameTree(r, await expectedTree(once(tar)), 11);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("prioritized files come first, before a .prefetch.landmark, with parents and link targets", async () => {
  const tar = randomTar({ seed: 31, chunkSize: 2000, entries: 200 });
  const expected = await expectedTree(once(tar));
  const regs = [...expected].filter(([p, n]) => n.type === "reg" && p.includes("/")).map(([p]) =>
    p
  );
  const wanted = [regs[3], regs[0], regs[regs.length - 1]];
  const out: Uint8Array[] = [];
  const { writeEStargz } = await import("../../format/writer.ts");
  const result = await writeEStargz(once(tar), (b) => {
    out.push(b.slice());
  }, { chunkSize: 2000, prioritized: [...wanted, "no/such/file"] });
  assert.deepEqual(result.missingPrioritized, ["no/such/file"]);
  const blob = new Uint8Array(out.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of out) {
    blob.set(p, o);
    o += p.length;
  }
  const r = await StargzReader.open(new BytesSource(blob));
  const landmark = r.index.prefetchLandmark!;
  assert.ok(landmark > 0, "the blob has a .prefetch.landmark");
  assert.equal(r.index.noPrefetchLandmark, false);
  const prioritizedNodes = new Set(wanted.map((p) => r.lookup(p)!));
  for (const chunk of r.index.chunks) {
    if (prioritizedNodes.has(chunk.node)) {
      assert.ok(chunk.offset < landmark, `${r.index.pathOf(chunk.node)} before the landmark`);
    }
  }
  assert.ok(r.index.chunks.some((chunk) => chunk.offset > landmark), "the rest after it");
  // Prefetching the landmark region fetches the prioritized chunks and nothing after them.
  const fetched = await r.prefetch("landmark");
  assert.ok(fetched > 0 && fetched <= landmark, `prefetched ${fetched} of ${landmark}`);
  const requests = r.stats.requests;
  for (const p of wanted) await r.readFile(r.lookup(p)!);
  assert.equal(r.stats.requests, requests, "prioritized files are read from the cache");
  // Same tree, same bytes, whatever the order.
  await assertSameTree(r, expected, 31);
});

Deno.test("reads decoded in worker threads give the same bytes and the same errors", async () => {
  const { DecodePool } = await import("../../format/decode_pool.ts");
  const pool = new DecodePool(2);
  try {
    // Workers ready first: reads decode inline while none is.
    await pool.warm();
    const tar = randomTar({ seed: 44, chunkSize: 3000, entries: 150 });
    const { blob } = await convert(tar, { chunkSize: 3000 });
    const r = await StargzReader.open(new BytesSource(blob), {
      decodePool: pool,
      fetchWindow: 1 << 20,
    });
    await assertSameTree(r, await expectedTree(once(tar)), 44);
    // A flipped byte inside a member: an error for that chunk, never other bytes.
    const bad = blob.slice();
    const c = r.index.chunks[Math.floor(r.index.chunks.length / 2)];
    bad[c.offset + 15] ^= 0x40;
    const rb = await StargzReader.open(new BytesSource(bad), {
      decodePool: pool,
      fetchWindow: 1 << 20,
    });
    await assert.rejects(
      () => rb.readFile(rb.lookup(r.index.pathOf(c.node)!)!),
      /chunk at file offset/,
    );
  } finally {
    pool.close();
  }
});

Deno.test("the decode pool starts workers at the first decode and stops them when idle", async () => {
  const { DecodePool } = await import("../../format/decode_pool.ts");
  const pool = new DecodePool(2, 50);
  try {
    assert.equal(pool.running, 0, "no worker before the first decode");
    const tar = randomTar({ seed: 45, chunkSize: 300_000, entries: 6 });
    const { blob } = await convert(tar, { chunkSize: 300_000 });
    const r = await StargzReader.open(new BytesSource(blob), { decodePool: pool });
    assert.equal(pool.running, 0, "opening decodes nothing on workers");
    await assertSameTree(r, await expectedTree(once(tar)), 45);
    assert.ok(pool.running > 0, "big chunks started the workers");
    for (let i = 0; i < 100 && pool.running > 0; i++) await new Promise((t) => setTimeout(t, 20));
    assert.equal(pool.running, 0, "idle workers stopped");
    // A later read starts them again and gives the same bytes.
    const again = await StargzReader.open(new BytesSource(blob), { decodePool: pool });
    await assertSameTree(again, await expectedTree(once(tar)), 46);
  } finally {
    pool.close();
  }
});
