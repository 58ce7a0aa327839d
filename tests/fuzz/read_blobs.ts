/**
 * Test helpers for fuzzing reads: blobs of every layer format the reader handles (google/crfs
 * legacy stargz fixtures, crfs eStargz at several chunk sizes and with members shared by small
 * files, zstd:chunked) with the truth of every regular file taken from the source tar, and
 * mutations of them — bytes (flips, runs, truncations, copied blocks), whole chunks swapped or
 * copied over each other, and TOC fields edited and re-serialized so that the TOC digest holds
 * while offsets and sizes lie.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { estargzFooter, legacyFooter } from "../../format/footer.ts";
import { gzipMember, inflateMember } from "../../format/gzip.ts";
import { BytesSource } from "../../format/range_source.ts";
import { chunksOf } from "../../format/toc_index.ts";
import { StargzReader } from "../../format/reader.ts";
import { encodeHeader, END_OF_ARCHIVE, padToBlock, tarHeader } from "../../format/tar_header.ts";
import { serializeTOC, type TOCEntry } from "../../format/toc.ts";
import { skippableFrame, zstdCompress } from "../../format/zstd.ts";
import { zstdChunkedFooter } from "../../format/zstd_chunked.ts";
import { writeZstdChunked } from "../../format/zstd_chunked_writer.ts";
import { writeEStargz } from "../../format/writer.ts";
import { randomTar } from "../unit/random_tar.ts";
import { expectedTree, FIXTURES } from "../unit/tree_helpers.ts";

/** A blob to mutate, with the truth of its files. */
export interface BaseBlob {
  name: string;
  blob: Uint8Array;
  /** Clean path → content of every regular file of the source tar. */
  truth: Map<string, Uint8Array>;
}

/** A mutated blob, with how to open it (a rewritten TOC's digest). */
export interface Mutant {
  blob: Uint8Array;
  what: string;
  tocDigest?: string;
}

async function* once(b: Uint8Array) {
  yield b;
}

async function collect(write: (sink: (b: Uint8Array) => void) => Promise<unknown>) {
  const parts: Uint8Array[] = [];
  await write((b) => {
    parts.push(b.slice());
  });
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) (out.set(p, o), o += p.length);
  return out;
}

async function truthOf(tar: Uint8Array, lossyNames = false): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for (const [p, n] of await expectedTree(once(tar), { lossyNames })) {
    if (n.type === "reg") out.set(p, n.content!);
  }
  return out;
}

/** A tar with files around `cs` bytes and a few spanning many chunks. */
function sampleTar(seed: number, cs: number): Uint8Array {
  return randomTar({ seed, chunkSize: cs, entries: 40 });
}

/**
 * The base blobs: the legacy fixtures, eStargz at chunk sizes 700 and 4096 (the second with
 * small files packed into shared members), zstd:chunked at chunk size 1000.
 */
export async function baseBlobs(): Promise<BaseBlob[]> {
  const out: BaseBlob[] = [];
  for (
    const [blob, tar] of [
      ["synthetic-small.crfs-64k.stargz", "synthetic-small.tar"],
      ["synthetic-tree.crfs-64k.stargz", "synthetic-tree.tar"],
      ["synthetic-gnu.crfs.stargz", "synthetic-gnu.tar"],
    ]
  ) {
    out.push({
      name: `legacy ${blob}`,
      blob: await Deno.readFile(`${FIXTURES}/${blob}`),
      truth: await truthOf(await Deno.readFile(`${FIXTURES}/${tar}`), true),
    });
  }
  const t1 = sampleTar(11, 700);
  out.push({
    name: "estargz chunk 700",
    blob: await collect((s) => writeEStargz(once(t1), s, { chunkSize: 700, workers: 0 })),
    truth: await truthOf(t1),
  });
  const t2 = sampleTar(12, 3000);
  out.push({
    name: "estargz chunk 4096 minChunkSize 2000",
    blob: await collect((s) =>
      writeEStargz(once(t2), s, { chunkSize: 4096, minChunkSize: 2000, workers: 0 })
    ),
    truth: await truthOf(t2),
  });
  const t3 = sampleTar(13, 1000);
  const zstdOpts = { chunkSize: 1000, level: 3, workers: 0 };
  out.push({
    name: "zstd:chunked chunk 1000",
    // `workers: 0` where the writer takes it (the zstd branch compresses on a pool): on the
    // calling thread, no workers started per blob.
    blob: await collect((s) => writeZstdChunked(once(t3), s, zstdOpts)),
    truth: await truthOf(t3),
  });
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) (out.set(p, o), o += p.length);
  return out;
}

const sha256 = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/**
 * `base` with its TOC replaced by `entries` (re-serialized, the footer rewritten) and the new
 * TOC's digest, so that a reader given that digest accepts the TOC as authentic.
 */
export async function withTOC(base: Uint8Array, entries: TOCEntry[]): Promise<Mutant> {
  const r = await StargzReader.open(new BytesSource(base));
  const json = serializeTOC({ ...r.toc, entries });
  const head = base.subarray(0, r.footer.tocOffset);
  let tail: Uint8Array[];
  if (r.format === "zstd:chunked") {
    const frame = skippableFrame(zstdCompress(json, 3));
    const manifestOffset = head.length + 8;
    tail = [
      frame,
      zstdChunkedFooter({
        manifestOffset,
        manifestLength: frame.length - 8,
        manifestUncompressed: json.length,
      }, false),
    ];
  } else {
    const member = gzipMember([
      encodeHeader(tarHeader({ name: "stargz.index.json", kind: "reg", size: json.length })),
      padToBlock(json),
      END_OF_ARCHIVE,
    ]);
    const footer = r.format === "stargz" ? legacyFooter(head.length) : estargzFooter(head.length);
    tail = [member, footer];
  }
  const blob = new Uint8Array(head.length + tail.reduce((a, p) => a + p.length, 0));
  blob.set(head);
  let o = head.length;
  for (const p of tail) (blob.set(p, o), o += p.length);
  return { blob, what: "toc", tocDigest: sha256(json) };
}

const INTERESTING = [0, 1, 2, 7, 511, 512, 4095, 65536, 2 ** 31, 2 ** 32 + 1, 2 ** 40, 2 ** 50];

/** Byte mutations: flips, interesting bytes, runs, truncation, a block copied elsewhere. */
export function mutateBytes(b: Uint8Array, r: () => number): Mutant {
  let cur = b.slice();
  const steps: string[] = [];
  for (let k = 0, n = 1 + Math.floor(r() * 3); k < n; k++) {
    const at = Math.floor(r() * cur.length);
    const x = r();
    if (x < 0.4) {
      cur[at] ^= 1 << Math.floor(r() * 8);
      steps.push(`flip@${at}`);
    } else if (x < 0.6) {
      cur[at] = [0, 0xff, 0x7f, 0x80][Math.floor(r() * 4)];
      steps.push(`set@${at}`);
    } else if (x < 0.75) {
      const len = 1 + Math.floor(r() * 64);
      cur.fill(r() < 0.5 ? 0 : 0xff, at, at + len);
      steps.push(`run@${at}+${len}`);
    } else if (x < 0.85) {
      cur = cur.subarray(0, at);
      steps.push(`cut@${at}`);
    } else {
      const from = Math.floor(r() * cur.length);
      const len = Math.min(1 + Math.floor(r() * 2048), cur.length - Math.max(at, from));
      cur.copyWithin(at, from, from + len);
      steps.push(`copy ${from}->${at}+${len}`);
    }
  }
  return { blob: cur, what: steps.join(",") };
}

/** Compressed extents `[offset, end)` of the blob's chunks, one per member. */
async function extents(blob: Uint8Array): Promise<[number, number][]> {
  const r = await StargzReader.open(new BytesSource(blob));
  const seen = new Map<number, number>();
  for (const chunk of r.index.chunks) seen.set(chunk.offset, chunk.end);
  return [...seen];
}

/** Two chunks' compressed bytes exchanged (equal lengths) or one copied over another's start. */
export async function swapChunks(b: Uint8Array, r: () => number): Promise<Mutant> {
  const ex = await extents(b);
  const out = b.slice();
  if (ex.length < 2) return { blob: out, what: "swap (none)" };
  const [a0, a1] = ex[Math.floor(r() * ex.length)];
  const same = ex.filter(([s, e]) => e - s === a1 - a0 && s !== a0);
  if (same.length > 0 && r() < 0.7) {
    const [b0] = same[Math.floor(r() * same.length)];
    out.set(b.subarray(a0, a1), b0);
    out.set(b.subarray(b0, b0 + (a1 - a0)), a0);
    return { blob: out, what: `swap ${a0}<->${b0}` };
  }
  const [b0, b1] = ex[Math.floor(r() * ex.length)];
  out.set(b.subarray(a0, a0 + Math.min(a1 - a0, b1 - b0)), b0);
  return { blob: out, what: `copy chunk ${a0}->${b0}` };
}

/**
 * TOC edits that keep it well-formed enough to pass parsing often: numeric fields of content
 * entries set to other entries' values, nudged, or huge; two chunks' offsets exchanged; a chunk
 * boundary moved inside a file (chunks still tile it); a file's last chunk and size claiming
 * gigabytes. Digests are never edited: they are what the blob is checked against.
 */
export async function editTOC(b: Uint8Array, r: () => number): Promise<Mutant> {
  const toc = (await StargzReader.open(new BytesSource(b))).toc;
  const entries = structuredClone(toc.entries);
  const content = entries.filter((e) =>
    (e.type === "reg" && (e.size ?? 0) > 0) || e.type === "chunk"
  );
  const pick = () => content[Math.floor(r() * content.length)];
  const steps: string[] = [];
  const fields = ["offset", "chunkOffset", "chunkSize", "size", "innerOffset"] as const;
  for (let k = 0, n = 1 + Math.floor(r() * 2); k < n && content.length > 0; k++) {
    const x = r();
    const e = pick();
    if (x < 0.35) {
      const f = fields[Math.floor(r() * fields.length)];
      const y = r();
      const old = e[f] ?? 0;
      const v = y < 0.3
        ? pick()[f] ?? 0
        : y < 0.6
        ? Math.max(0, old + Math.floor(r() * 9) - 4)
        : INTERESTING[Math.floor(r() * INTERESTING.length)];
      e[f] = v;
      steps.push(`${f}=${v}@${e.name}`);
    } else if (x < 0.55) {
      const o = pick();
      [e.offset, o.offset] = [o.offset, e.offset];
      [e.innerOffset, o.innerOffset] = [o.innerOffset, e.innerOffset];
      steps.push(`swap offsets ${e.name}/${o.name}`);
    } else if (x < 0.8) {
      // Move the boundary between a chunk and the one before it: tiling still holds.
      const i = entries.indexOf(e);
      const prev = entries[i - 1];
      if (e.type === "chunk" && prev && prev.name === e.name && (prev.chunkSize ?? 0) > 0) {
        const d = Math.floor(r() * 9) - 4 || 1;
        e.chunkOffset = (e.chunkOffset ?? 0) + d;
        prev.chunkSize = (prev.chunkSize ?? 0) + d;
        if (e.chunkSize) e.chunkSize -= d;
        steps.push(`boundary ${d}@${e.name}#${e.chunkOffset}`);
      }
    } else {
      // A file whose last chunk claims gigabytes (size follows, so chunks still tile).
      const i = entries.indexOf(e);
      let j = i;
      while (entries[j + 1]?.type === "chunk" && entries[j + 1].name === e.name) j++;
      let f = i;
      while (f > 0 && entries[f].type === "chunk") f--;
      const last = entries[j];
      const file = entries[f];
      const big = [2 ** 30, 2 ** 33, 2 ** 40][Math.floor(r() * 3)];
      const grow = big - (last.chunkSize || (file.size ?? 0) - (last.chunkOffset ?? 0));
      if (last.chunkSize) last.chunkSize += grow;
      file.size = (file.size ?? 0) + grow;
      steps.push(`huge ${big}@${file.name}`);
    }
  }
  const m = await withTOC(b, entries);
  return { ...m, what: `toc ${steps.join(",")}` };
}

/**
 * The legacy 64 KiB fixture with one chunk of `data/big.bin` (a multi-chunk file: google/crfs
 * wrote no chunk digests) recompressed with one byte changed, padded to its old length in the
 * gzip header's name field, so offsets, CRC and length all hold. Returns the blob and the
 * changed file offset.
 */
export async function recompressedLegacy(): Promise<
  { blob: Uint8Array; at: number; truth: Uint8Array }
> {
  const blob = await Deno.readFile(`${FIXTURES}/synthetic-small.crfs-64k.stargz`);
  const reader = await StargzReader.open(new BytesSource(blob));
  const node = reader.lookup("data/big.bin")!;
  if (chunksOf(node).length < 3 || chunksOf(node).some((c) => c.digest) || !node.digest) {
    throw new Error("data/big.bin is not a multi-chunk file without chunk digests");
  }
  const truth = await reader.readFile(node);
  const c = chunksOf(node)[1];
  const old = blob.subarray(c.offset, c.end);
  const { data } = inflateMember(old);
  for (let k = 0; k < 64; k++) {
    const changed = data.slice();
    changed[c.innerOffset + 100 + k] ^= 0x55;
    for (const level of [9, 6, 1]) {
      const member = gzipMember([changed], level);
      const slack = old.length - member.length;
      if (slack < 2) continue;
      // FNAME of slack-1 bytes plus its NUL.
      const fixed = concat([
        member.subarray(0, 10),
        new Uint8Array(slack - 1).fill(0x61),
        new Uint8Array(1),
        member.subarray(10),
      ]);
      fixed[3] |= 8;
      const out = blob.slice();
      out.set(fixed, c.offset);
      return { blob: out, at: c.chunkOffset + 100 + k, truth };
    }
  }
  throw new Error("could not recompress the member to its length");
}
