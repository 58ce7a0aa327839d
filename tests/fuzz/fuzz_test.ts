/**
 * Fuzzing the parsers crfs exposes to hostile input: tar streams (the convert input), footers,
 * TOC JSON and whole blobs, mutated from real ones. Every case must end in the result or in one
 * of crfs's own error types — never a crash (TypeError, RangeError…), a hang, or bytes that
 * differ from the truth. `FUZZ_CASES` sets the cases per target (default sized for CI) and
 * `FUZZ_SEED` the seed; `deno task fuzz` runs a long campaign with a fresh seed (printed, so a
 * failure can be replayed).
 *
 * @module
 */
import assert from "node:assert/strict";
import { BytesSource } from "../../format/range_source.ts";
import { IntegrityError, StargzFormatError, StargzReader } from "../../format/reader.ts";
import { TOCError } from "../../format/toc.ts";
import { buildIndex } from "../../format/toc_index.ts";
import { parseTOC } from "../../format/toc.ts";
import { parseFooter } from "../../format/footer.ts";
import { TarError } from "../../format/tar_header.ts";
import { readTar } from "../../format/tar_reader.ts";
import { GzipError } from "../../format/gzip.ts";
import { randomTar, rng } from "../unit/random_tar.ts";
import { convert, expectedTree } from "../unit/tree_helpers.ts";

const CAMPAIGN = Deno.env.get("FUZZ_CAMPAIGN") === "1";
const CASES = Number(Deno.env.get("FUZZ_CASES") ?? (CAMPAIGN ? 200_000 : 5000));
const SEED = Number(Deno.env.get("FUZZ_SEED") ?? (CAMPAIGN ? Date.now() % 1e9 : 20261123));
if (CAMPAIGN) console.log(`fuzz campaign: ${CASES} cases per target, FUZZ_SEED=${SEED}`);
const KNOWN = [TarError, GzipError, TOCError, StargzFormatError, IntegrityError];
const known = (e: unknown) => KNOWN.some((k) => e instanceof k);

async function* once(b: Uint8Array) {
  yield b;
}

/** A mutated copy of `b`: flips, overwrites with interesting values, cuts, splices. */
function mutate(b: Uint8Array, r: () => number): Uint8Array {
  const out = b.slice();
  const n = 1 + Math.floor(r() * 4);
  let cur = out;
  for (let k = 0; k < n; k++) {
    const at = Math.floor(r() * cur.length);
    const x = r();
    if (x < 0.4) cur[at] ^= 1 << Math.floor(r() * 8);
    else if (x < 0.6) cur[at] = [0, 0xff, 0x7f, 0x80, 0x30, 0x37, 0x20][Math.floor(r() * 7)];
    else if (x < 0.7) {
      cur.fill(r() < 0.5 ? 0 : 0x37, at, Math.min(cur.length, at + 1 + Math.floor(r() * 12)));
    } else if (x < 0.85) cur = cur.subarray(0, at); // truncation
    else {
      // Copy a block from elsewhere over this place (duplicated headers, overlapping members).
      const from = Math.floor(r() * cur.length);
      const len = Math.min(512, cur.length - Math.max(at, from));
      cur.copyWithin(at, from, from + len);
    }
  }
  return cur;
}

Deno.test(`fuzz: the tar reader on ${CASES} mutated tar streams`, async () => {
  const r = rng(SEED);
  const bases = [
    randomTar({ seed: 1, chunkSize: 700, entries: 40 }),
    randomTar({ seed: 2, chunkSize: 700, entries: 40, format: "gnu" }),
  ];
  let errors = 0;
  for (let i = 0; i < CASES; i++) {
    const input = mutate(bases[i % 2], r);
    try {
      for await (const e of readTar(once(input))) {
        if (e.header.kind === "reg") await e.readAll();
      }
    } catch (e) {
      assert.ok(known(e), `case ${i}: ${e}`);
      errors++;
    }
  }
  assert.ok(errors > CASES / 10, `mutations were noticed (${errors})`);
});

Deno.test(`fuzz: footers, ${CASES * 10} random and mutated tails`, () => {
  const r = rng(SEED + 1);
  for (let i = 0; i < CASES * 10; i++) {
    const tail = new Uint8Array(47 + Math.floor(r() * 10));
    for (let k = 0; k < tail.length; k++) {
      tail[k] = r() < 0.5 ? Math.floor(r() * 256) : "STARGZ0123456789abcdef"[k % 22].charCodeAt(0);
    }
    if (r() < 0.5) {
      tail.set(
        [0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 26, 0, 0x53, 0x47, 22, 0],
        tail.length - 51 < 0 ? 0 : tail.length - 51,
      );
    }
    const f = parseFooter(tail);
    if (f) assert.ok(Number.isSafeInteger(f.tocOffset) && f.tocOffset >= 0, `case ${i}`);
  }
});

Deno.test(`fuzz: TOC parsing and indexing on ${CASES} hostile TOCs`, async () => {
  const r = rng(SEED + 2);
  const { blob } = await convert(randomTar({ seed: 3, chunkSize: 900, entries: 60 }), {
    chunkSize: 900,
  });
  const base = (await StargzReader.open(new BytesSource(blob))).toc;
  const values = [
    -1,
    0,
    1,
    2 ** 53,
    2 ** 31,
    1e300,
    0.5,
    "",
    "x",
    "../..",
    "/",
    null,
    true,
    [],
    {},
    "sha256:00",
    "\u0000",
  ];
  const keys = [
    "name",
    "type",
    "size",
    "offset",
    "chunkOffset",
    "chunkSize",
    "linkName",
    "mode",
    "modtime",
    "digest",
    "chunkDigest",
    "xattrs",
    "innerOffset",
    "devMajor",
  ];
  let rejected = 0;
  for (let i = 0; i < CASES; i++) {
    const entries = structuredClone(base.entries) as unknown as Record<string, unknown>[];
    for (let k = 0; k < 1 + Math.floor(r() * 3); k++) {
      const e = entries[Math.floor(r() * entries.length)];
      const x = r();
      if (x < 0.6) e[keys[Math.floor(r() * keys.length)]] = values[Math.floor(r() * values.length)];
      else if (x < 0.75) entries.splice(Math.floor(r() * entries.length), 1);
      else if (x < 0.9) entries.push(structuredClone(entries[Math.floor(r() * entries.length)]));
      else entries.reverse();
    }
    const json = new TextEncoder().encode(JSON.stringify({ version: 1, entries }));
    try {
      buildIndex(parseTOC(json), blob.length - 51);
    } catch (e) {
      assert.ok(known(e), `case ${i}: ${e}`);
      rejected++;
    }
  }
  assert.ok(rejected > 0);
});

Deno.test(`fuzz: ${Math.ceil(CASES / 3)} mutated blobs never give a wrong byte`, async () => {
  const r = rng(SEED + 3);
  const tar = randomTar({ seed: 4, chunkSize: 800, entries: 50 });
  const { blob } = await convert(tar, { chunkSize: 800 });
  const truth = await expectedTree(once(tar));
  let errors = 0;
  for (let i = 0; i < Math.ceil(CASES / 3); i++) {
    const bad = mutate(blob, r);
    let reader: StargzReader;
    try {
      reader = await StargzReader.open(new BytesSource(bad));
    } catch (e) {
      assert.ok(known(e), `case ${i} (open): ${e}`);
      errors++;
      continue;
    }
    for (const [path, want] of truth) {
      if (want.type !== "reg") continue;
      const node = reader.lookup(path);
      if (!node || node.type !== "reg") continue;
      try {
        const got = await reader.readFile(node);
        // The TOC is covered by its gzip CRC and chunks by their digests: what comes back is
        // either the truth or an error.
        assert.deepEqual(got, want.content, `case ${i}: ${path}`);
      } catch (e) {
        if (e instanceof assert.AssertionError) throw e;
        assert.ok(known(e), `case ${i} (read ${path}): ${e}`);
        errors++;
      }
    }
  }
  assert.ok(errors > 0);
});

Deno.test(`fuzz: convert on ${Math.ceil(CASES / 5)} mutated tars gives an error or a blob that reads back as the tar`, async () => {
  const r = rng(SEED + 4);
  const base = randomTar({ seed: 5, chunkSize: 600, entries: 40 });
  for (let i = 0; i < Math.ceil(CASES / 5); i++) {
    const input = mutate(base, r);
    let out: Uint8Array;
    try {
      out = (await convert(input, { chunkSize: 600, workers: 0 })).blob;
    } catch (e) {
      assert.ok(known(e), `case ${i}: ${e}`);
      continue;
    }
    // Accepted: the blob must read back exactly as the (mutated) tar says.
    let truth;
    try {
      truth = await expectedTree(once(input));
    } catch {
      continue; // the independent model rejects what the writer kept (e.g. replaced dirs)
    }
    const reader = await StargzReader.open(new BytesSource(out));
    for (const [path, want] of truth) {
      if (want.type !== "reg") continue;
      assert.deepEqual(
        await reader.readFile(reader.lookup(path)!),
        want.content,
        `case ${i}: ${path}`,
      );
    }
  }
});
