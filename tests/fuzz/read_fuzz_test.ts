/**
 * Fuzzing reads, not only index building: blobs of every layer format (legacy google/crfs
 * stargz, eStargz at several chunk sizes and with shared members, zstd:chunked) are mutated —
 * bytes, whole chunks, TOC fields re-serialized under a valid TOC digest — then opened with
 * {@link StargzReader} (strict verification, the default) and read at random offsets and sizes:
 * zero-length, past the end, straddling chunks, several at once. Every read must give exactly
 * the source tar's bytes for its range or throw one of crfs's own errors; never wrong bytes, a
 * crash (TypeError, RangeError…), a hang (each case has a deadline) or memory a TOC asks for
 * (resident memory is checked against a bound: a TOC claiming a chunk of gigabytes must not get
 * it). `FUZZ_CAMPAIGN=1` runs a long campaign with a fresh seed (printed), `FUZZ_SEED` replays
 * one, `FUZZ_READ_CASES` sets the number of mutated blobs.
 *
 * @module
 */
import assert from "node:assert/strict";
import { ChunkDecodeError } from "../../format/chunk_decode.ts";
import { GzipError } from "../../format/gzip.ts";
import { LayerFormatError } from "../../format/layer_format.ts";
import { chunksOf } from "../../format/toc_index.ts";
import { BytesSource } from "../../format/range_source.ts";
import { DecodePool } from "../../format/decode_pool.ts";
import {
  IntegrityError,
  MemoryChunkCache,
  StargzFormatError,
  StargzReader,
} from "../../format/reader.ts";
import { TOCError } from "../../format/toc.ts";
import { ZstdError } from "../../format/zstd.ts";
import { rng } from "../unit/random_tar.ts";
import {
  type BaseBlob,
  baseBlobs,
  editTOC,
  type Mutant,
  mutateBytes,
  swapChunks,
} from "./read_blobs.ts";

const CAMPAIGN = Deno.env.get("FUZZ_CAMPAIGN") === "1";
const CASES = Number(Deno.env.get("FUZZ_READ_CASES") ?? (CAMPAIGN ? 20_000 : 360));
const SEED = Number(Deno.env.get("FUZZ_SEED") ?? (CAMPAIGN ? Date.now() % 1e9 : 20261201));
if (CAMPAIGN) console.log(`read fuzz campaign: ${CASES} mutated blobs, FUZZ_SEED=${SEED}`);
/** Resident memory allowed above what the process held before the campaign. */
const RSS_BOUND = 768 << 20;
/** Deadline of one case (open and all its reads). */
const CASE_MS = 20_000;

const KNOWN = [
  IntegrityError,
  StargzFormatError,
  TOCError,
  GzipError,
  ZstdError,
  ChunkDecodeError,
  LayerFormatError,
];
const known = (e: unknown) => KNOWN.some((k) => e instanceof k);

/** Random reads over `reader`'s files; throws an AssertionError on a wrong byte or crash. */
async function readRandomly(
  reader: StargzReader,
  base: BaseBlob,
  r: () => number,
  where: string,
): Promise<number> {
  const files = [...base.truth.keys()];
  let errors = 0;
  const one = async (path: string, off: number, len: number) => {
    const node = reader.lookup(path);
    if (!node || node.type !== "reg") return;
    const want = base.truth.get(path)!;
    try {
      const got = await reader.read(node, off, len);
      // Bytes served are the truth; where the read stops is what the (authentic) TOC says
      // the size is, which a lying TOC may set short: stopping early serves no wrong byte.
      const expect = want.subarray(off, Math.min(off + len, Math.max(node.size, off)));
      const first = firstDifference(got, expect);
      assert.ok(
        first < 0,
        `${where}: ${path} [${off}+${len}] of ${want.length}: ${got.length} bytes back, ` +
          `${expect.length} expected, first difference at ${first}`,
      );
    } catch (e) {
      if (e instanceof assert.AssertionError) throw e;
      assert.ok(known(e), `${where}: read ${path} [${off}+${len}]: ${(e as Error)?.stack ?? e}`);
      errors++;
    }
  };
  for (let round = 0; round < 4; round++) {
    const batch: Promise<void>[] = [];
    for (let k = 0, n = 1 + Math.floor(r() * 4); k < n; k++) {
      const path = files[Math.floor(r() * files.length)];
      const size = base.truth.get(path)!.length;
      const node = reader.lookup(path);
      const chunks = node ? chunksOf(node) : [];
      const x = r();
      let off: number;
      if (x < 0.15) off = 0;
      else if (x < 0.4 && chunks.length > 1) {
        // Around a chunk boundary.
        const c = chunks[1 + Math.floor(r() * (chunks.length - 1))];
        off = Math.max(0, c.chunkOffset - Math.floor(r() * 5));
      } else if (x < 0.5) off = size + Math.floor(r() * 3); // at or past the end
      else off = Math.floor(r() * (size + 1));
      const y = r();
      const len = y < 0.1
        ? 0
        : y < 0.2
        ? 1
        : y < 0.3
        ? size
        : y < 0.35
        ? 2 ** 31
        : Math.floor(r() * 9000);
      batch.push(one(path, off, len));
    }
    await Promise.all(batch);
  }
  return errors;
}

/** Index of the first byte where `a` and `b` differ (a length difference counts), or -1. */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

function deadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms (hang)`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

Deno.test(`fuzz: reads at random offsets over ${CASES} mutated blobs of every format give the truth or an error`, async () => {
  const bases = await baseBlobs();
  // The unmutated blobs read back as their tars (so the oracle itself is right).
  for (const base of bases) {
    const reader = await StargzReader.open(new BytesSource(base.blob));
    for (const [path, want] of base.truth) {
      const node = reader.lookup(path);
      assert.ok(node, `${base.name}: ${path}`);
      assert.deepEqual(await reader.readFile(node), want, `${base.name}: ${path}`);
    }
    assert.equal(await readRandomly(reader, base, rng(SEED), base.name), 0, base.name);
  }
  const r = rng(SEED);
  const pool = new DecodePool(1);
  try {
    // Workers ready first: reads decode inline while none is.
    await pool.warm();
    const rss0 = Deno.memoryUsage().rss;
    let opened = 0;
    let failedReads = 0;
    const kinds = new Map<string, number>();
    for (let i = 0; i < CASES; i++) {
      const base = bases[i % bases.length];
      const x = r();
      const kind = x < 0.4 ? "bytes" : x < 0.6 ? "chunks" : "toc";
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      const m: Mutant = kind === "bytes"
        ? mutateBytes(base.blob, r)
        : kind === "chunks"
        ? await swapChunks(base.blob, r)
        : await editTOC(base.blob, r);
      const where = `case ${i} (FUZZ_SEED=${SEED}, ${base.name}, ${m.what})`;
      await deadline(
        (async () => {
          let reader: StargzReader;
          try {
            // Every third case decodes big fetches in workers; every other one has a chunk
            // cache too small to keep a file, so chunks are fetched and checked again.
            reader = await StargzReader.open(new BytesSource(m.blob), {
              tocDigest: m.tocDigest,
              decodePool: i % 3 === 0 ? pool : undefined,
              cache: i % 2 === 0 ? new MemoryChunkCache(16 << 10) : undefined,
            });
          } catch (e) {
            assert.ok(known(e), `${where}: open: ${(e as Error)?.stack ?? e}`);
            return;
          }
          opened++;
          failedReads += await readRandomly(reader, base, r, where);
        })(),
        CASE_MS,
        where,
      );
      const grown = Deno.memoryUsage().rss - rss0;
      assert.ok(grown < RSS_BOUND, `${where}: resident memory grew by ${grown >> 20} MiB`);
    }
    // The campaign reached reads and its mutations were noticed.
    assert.ok(opened > CASES / 4, `opened ${opened} of ${CASES}`);
    assert.ok(failedReads > 0, "some reads failed");
  } finally {
    pool.close();
  }
});
