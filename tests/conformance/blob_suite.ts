/**
 * The blob conformance suite: one function, {@link blobConformance}, that holds one layer format
 * variant to what every layer crfs reads must satisfy (as the estargz Go package runs one suite
 * over every compressor). `blobs_test.ts` calls it once per variant; a new layer format (e.g.
 * zstd:chunked) is proven by adding one more call there.
 *
 * For the blob a case makes, and the uncompressed layer tar it came from:
 * - **tree**: the reader's node tree (walked from the root) equals what real GNU tar extracts
 *   from the tar as root — names, types, modes, owners, sizes, link targets, link counts, device
 *   numbers, mtimes to the nanosecond, xattrs, file bytes by sha256, plus sampled ranged reads;
 * - **open bound**: footer and TOC in one range read when the tail guess covers them, never more
 *   than two (counted through a wrapping source);
 * - **truncation**: every cut in the tail region (from the TOC's start, or the last 1 KiB when
 *   the TOC is bigger) and 24 sampled cuts before it make a shorter blob that must not open;
 *   24 sampled cuts in the content, as a source whose bytes past the cut are lost but whose TOC
 *   is intact, must open and then read each file exactly or reject — never a wrong byte;
 * - **byte flips**: one bit flipped at 24 sampled bytes before the TOC and 24 in TOC and footer:
 *   open fails cleanly, or every file reads back exactly or rejects (with the TOC digest of the
 *   case, when it has one, checked as the manifest annotation would be).
 *
 * "Cleanly" means an `Error` with a message that is not a `TypeError`/`ReferenceError` (the
 * marks of a crash). Sampling is deterministic (seeded by the blob size).
 *
 * A case may carry its descriptor's annotations (zstd:chunked: the manifest position and
 * checksum); every open then passes them, so the TOC is found from them rather than from the
 * footer: one read always, and a cut that leaves the TOC whole (only the footer lost) may open
 * as long as every read is right.
 *
 * The reader surface used is small on purpose: `StargzReader.open(source, options)`, `root`,
 * `children(node)`, node attribute fields, `read(node, offset, length)`, `readFile(node)` and
 * `openRequests`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { RangeSource } from "../../format/range_source.ts";
import { type OpenOptions, StargzReader } from "../../format/reader.ts";
import type { TOCNode } from "../../format/toc_index.ts";
import { type ExtractedNode, extractWithGnuTar } from "../helpers/tar_extract.ts";
import { MANIFEST_POSITION_KEY, zstdChunkedAnnotation } from "../../format/zstd_chunked.ts";

/** Documented ways a variant's writer lost information `tar -x` keeps. */
export interface BlobQuirks {
  /**
   * Names (and link targets) that are not UTF-8 were stored with U+FFFD (google/crfs, and Go's
   * encoding/json in the reference writer).
   */
  lossyNames?: boolean;
  /** Times were rounded to whole seconds (google/crfs, the reference Go writer). */
  wholeSecondTimes?: boolean;
  /**
   * Xattrs left out of the comparison on both sides: ones the writer never saw, and ones GNU
   * tar cannot restore (it ignores `LIBARCHIVE.xattr.*` PAX records; the kernel refuses a
   * malformed `security.capability`).
   */
  ignoreXattrs?: string[];
}

/** One variant's blob and the layer tar it was made from. */
export interface BlobCase {
  /** The layer blob as a registry would serve it. */
  blob: Uint8Array;
  /** The uncompressed layer tar the blob was written from. */
  tar: Uint8Array;
  /** `sha256:…` of the TOC (the manifest annotation), when the variant has one. */
  tocDigest?: string;
  /** The descriptor's annotations, passed to every open (zstd:chunked finds its TOC by them). */
  annotations?: Record<string, string>;
  quirks?: BlobQuirks;
}

/**
 * A source over bytes that counts and records reads, optionally failing every read that touches
 * `[lostFrom, lostTo)` (bytes a registry can no longer serve).
 */
class ProbeSource implements RangeSource {
  readonly reads: [number, number][] = [];
  constructor(
    readonly bytes: Uint8Array,
    readonly lostFrom = Infinity,
    readonly lostTo = Infinity,
  ) {}
  get size(): number {
    return this.bytes.length;
  }
  read(offset: number, length: number): Promise<Uint8Array> {
    this.reads.push([offset, length]);
    const end = Math.min(offset + length, this.bytes.length);
    if (offset < 0 || length < 0) return Promise.reject(new RangeError("negative range"));
    if (end > this.lostFrom && offset < this.lostTo) {
      return Promise.reject(new Error(`bytes from ${this.lostFrom} are lost (test source)`));
    }
    return Promise.resolve(this.bytes.slice(offset, Math.max(offset, end)));
  }
}

const OPEN: OpenOptions = { readAhead: 0 };
const TAIL_GUESS = 256 << 10; // the reader's documented default

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** Path → node for the whole tree, walked from the root through `children`. */
function walk(r: StargzReader): Map<string, TOCNode> {
  const out = new Map<string, TOCNode>();
  const visit = (dir: TOCNode, prefix: string) => {
    for (const [name, child] of r.children(dir)) {
      const path = prefix === "" ? name : `${prefix}/${name}`;
      out.set(path, child);
      if (child.type === "dir") visit(child, path);
    }
  };
  visit(r.root, "");
  return out;
}

const lossy = (s: string) => s.replace(/[\udc80-\udcff]/g, "\ufffd");

/** Errors a clean refusal may be: anything but the marks of a crash in the reader. */
function assertClean(e: unknown, what: string): void {
  assert.ok(e instanceof Error, `${what}: threw a non-Error ${String(e)}`);
  assert.ok(
    !(e instanceof TypeError) && !(e instanceof ReferenceError),
    `${what}: crashed instead of refusing: ${e.stack}`,
  );
  assert.ok(e.message.length > 0, `${what}: error without a message`);
}

interface Prepared {
  c: BlobCase;
  want: Map<string, ExtractedNode>;
  /** File content by path (read once through a healthy reader, checked against sha256). */
  content: Map<string, Uint8Array>;
  /** Blob offset of the TOC's gzip member (from the footer). */
  tailStart: number;
  /** Where the TOC the annotations locate ends, when they locate it. */
  tocEnd?: number;
}

/** The open options of a case: its TOC digest and annotations. */
function openOpts(c: BlobCase): OpenOptions {
  return { tocDigest: c.tocDigest, annotations: c.annotations };
}

/** End of the TOC that `c`'s zstd:chunked manifest position annotation names, if any. */
function annotatedTocEnd(c: BlobCase): number | undefined {
  const pos = c.annotations &&
    zstdChunkedAnnotation(c.annotations, MANIFEST_POSITION_KEY)?.split(":").map(Number);
  return pos ? pos[0] + pos[1] : undefined;
}

/** Asserts the reader's tree equals the extraction; returns file bytes by path. */
async function assertTree(
  r: StargzReader,
  want: Map<string, ExtractedNode>,
  quirks: BlobQuirks,
): Promise<Map<string, Uint8Array>> {
  const got = walk(r);
  const name = (p: string) => quirks.lossyNames ? lossy(p) : p;
  const wantByName = new Map([...want].map(([p, n]) => [name(p), n]));
  assert.deepEqual([...got.keys()].sort(), [...wantByName.keys()].sort(), "same names");
  const content = new Map<string, Uint8Array>();
  for (const [path, w] of wantByName) {
    const n = got.get(path)!;
    const at = JSON.stringify(path);
    assert.equal(n.type, w.type, `${at} type`);
    // tar -x cannot give a symlink a mode; Linux shows 0777.
    if (w.type !== "symlink") assert.equal(n.mode & 0o7777, w.mode, `${at} mode`);
    assert.equal(n.uid, w.uid, `${at} uid`);
    assert.equal(n.gid, w.gid, `${at} gid`);
    assert.equal(n.nlink, w.nlink, `${at} nlink`);
    if (!w.implicit) {
      if (quirks.wholeSecondTimes) {
        const rounded = w.mtimeSec + (w.mtimeNsec >= 5e8 ? 1 : 0);
        assert.equal(n.mtimeSec, rounded, `${at} mtime (whole seconds)`);
      } else {
        assert.equal(n.mtimeSec, w.mtimeSec, `${at} mtime`);
        assert.equal(n.mtimeNsec, w.mtimeNsec, `${at} mtime ns`);
      }
    }
    if (w.type === "symlink") {
      assert.equal(n.linkName, quirks.lossyNames ? lossy(w.linkName) : w.linkName, `${at} target`);
    }
    if (w.type === "char" || w.type === "block") {
      assert.equal(n.devMajor, w.devMajor, `${at} devMajor`);
      assert.equal(n.devMinor, w.devMinor, `${at} devMinor`);
    }
    const keep = ([k]: [string, Uint8Array]) => !quirks.ignoreXattrs?.includes(k);
    assert.deepEqual(
      new Map([...n.xattrs].filter(keep)),
      new Map([...w.xattrs].filter(keep)),
      `${at} xattrs`,
    );
    if (w.type !== "reg") continue;
    assert.equal(n.size, w.size, `${at} size`);
    const bytes = await r.readFile(n);
    assert.equal(sha256(bytes), w.sha256, `${at} content sha256`);
    content.set(path, bytes);
    // Ranged reads: start, a chunk-crossing middle, the last byte, past the end.
    const probes: [number, number][] = [
      [0, 1],
      [Math.floor(n.size / 3), 70_000],
      [
        n.size - 1,
        1,
      ],
      [n.size, 10],
      [Math.max(0, n.size - 5), 100],
    ];
    for (const [off, len] of probes) {
      if (off < 0) continue;
      assert.deepEqual(
        await r.read(n, off, len),
        bytes.subarray(off, off + len),
        `${at} [${off}+${len}]`,
      );
    }
  }
  return content;
}

/** What {@link assertRightOrRefused} saw. */
interface Outcome {
  opened: boolean;
  /** Files whose read was refused (never wrong). */
  refusedReads: number;
}

/**
 * Opening through `src` either fails cleanly or gives a reader whose every file reads back the
 * right bytes or rejects cleanly.
 */
async function assertRightOrRefused(
  src: RangeSource,
  p: Prepared,
  what: string,
  opts: OpenOptions = {},
): Promise<Outcome> {
  let r: StargzReader;
  try {
    r = await StargzReader.open(src, { ...OPEN, ...opts, ...openOpts(p.c) });
  } catch (e) {
    assertClean(e, `${what}: open`);
    return { opened: false, refusedReads: 0 };
  }
  const got = walk(r);
  let refusedReads = 0;
  for (const [path, bytes] of p.content) {
    const n = got.get(path);
    assert.ok(n, `${what}: opened but ${JSON.stringify(path)} is gone`);
    assert.equal(n.size, bytes.length, `${what}: ${path} size`);
    let read: Uint8Array;
    try {
      read = await r.readFile(n);
    } catch (e) {
      assertClean(e, `${what}: read ${path}`);
      refusedReads++;
      continue;
    }
    assert.deepEqual(read, bytes, `${what}: ${path}: wrong bytes`);
  }
  return { opened: true, refusedReads };
}

/** Deterministic sample of `count` integers in `[lo, hi)`. */
function sample(lo: number, hi: number, count: number, seed: number): number[] {
  const out = new Set<number>();
  let x = seed >>> 0 || 1;
  const n = Math.min(count, hi - lo);
  while (out.size < n) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.add(lo + ((x >>> 0) % (hi - lo)));
  }
  return [...out].sort((a, b) => a - b);
}

/** How many cuts and flips are sampled outside the tail region. */
const SAMPLES = 24;
/** Cuts within this many bytes of the end (at least from the TOC's start) are all tried. */
const TAIL_REGION = 1024;

/**
 * Registers the conformance tests for one layer format variant. `makeCase` runs once (lazily,
 * shared by the tests).
 *
 * @example
 * ```ts
 * blobConformance("eStargz 64 KiB chunks", async () => {
 *   const tar = await buildTar();
 *   return { tar, blob: (await convert(tar, { chunkSize: 64 << 10 })).blob };
 * });
 * ```
 */
export function blobConformance(name: string, makeCase: () => Promise<BlobCase>): void {
  let prepared: Promise<Prepared> | undefined;
  const prepare = () =>
    prepared ??= (async () => {
      const c = await makeCase();
      const want = await extractWithGnuTar(c.tar);
      const src = new ProbeSource(c.blob);
      const r = await StargzReader.open(src, { ...OPEN, ...openOpts(c) });
      const content = await assertTree(r, want, c.quirks ?? {});
      return { c, want, content, tailStart: r.footer.tocOffset, tocEnd: annotatedTocEnd(c) };
    })();

  Deno.test(`blob conformance: ${name}: the reader's tree equals tar -x`, async () => {
    // prepare() opens the blob and asserts the tree (the other tests need it to hold).
    const p = await prepare();
    assert.ok(p.want.size > 0, "tar -x extracted something");
  });

  Deno.test(`blob conformance: ${name}: footer and TOC in at most 2 range reads`, async () => {
    const p = await prepare();
    const src = new ProbeSource(p.c.blob);
    const r = await StargzReader.open(src, { ...OPEN, ...openOpts(p.c) });
    assert.equal(src.reads.length, r.openRequests, "openRequests counts the reads made");
    if (p.tocEnd !== undefined) {
      // The annotations locate the TOC: exactly one read, whatever the tail guess.
      assert.equal(src.reads.length, 1, "one read: the TOC the annotations locate");
      const small = new ProbeSource(p.c.blob);
      await StargzReader.open(small, { ...OPEN, tailGuess: 64, ...openOpts(p.c) });
      assert.equal(small.reads.length, 1, "the tail guess does not matter");
      return;
    }
    const tocAndFooter = p.c.blob.length - r.footer.tocOffset;
    if (tocAndFooter <= TAIL_GUESS) assert.equal(src.reads.length, 1, "one read: common case");
    else assert.ok(src.reads.length <= 2, `${src.reads.length} reads`);
    // A tail guess too small for the TOC: exactly one more read, never a third.
    const small = new ProbeSource(p.c.blob);
    await StargzReader.open(small, { ...OPEN, tailGuess: 64, ...openOpts(p.c) });
    assert.equal(small.reads.length, 2, "a small tail guess costs exactly one more read");
  });

  Deno.test(`blob conformance: ${name}: clean refusal at every truncation`, async () => {
    const p = await prepare();
    const size = p.c.blob.length;
    const tailFrom = Math.max(0, size - TAIL_REGION, Math.min(p.tailStart, size - 64));
    const cuts = [
      ...sample(0, tailFrom, SAMPLES, size),
      ...Array.from({ length: size - tailFrom }, (_, i) => tailFrom + i),
    ];
    for (const cut of cuts) {
      // A shorter blob: the footer is gone, so open must refuse.
      const { opened } = await assertRightOrRefused(
        new ProbeSource(p.c.blob.subarray(0, cut)),
        p,
        `truncated to ${cut} of ${size}`,
      );
      // With annotations the footer is never read: only a cut into the TOC must refuse.
      if (p.tocEnd === undefined || cut < p.tocEnd) {
        assert.equal(opened, false, `a blob truncated to ${cut} of ${size} bytes opened`);
      }
    }
    // A blob whose TOC is still there but whose content after the cut can no longer be fetched
    // (open reads exactly the TOC and footer): reads past the cut refuse, the rest are right.
    let refused = 0;
    for (const cut of sample(0, p.tailStart, SAMPLES, size + 1)) {
      const { opened, refusedReads } = await assertRightOrRefused(
        new ProbeSource(p.c.blob, cut, p.tailStart),
        p,
        `content lost after ${cut}`,
        { tailGuess: size - p.tailStart },
      );
      assert.ok(opened, `content lost after ${cut}: the intact TOC did not open`);
      refused += refusedReads;
    }
    assert.ok(refused > 0, "no read ever touched the lost content");
  });

  Deno.test(`blob conformance: ${name}: byte flips give the right bytes or an error`, async () => {
    const p = await prepare();
    const size = p.c.blob.length;
    const tailFrom = Math.max(0, Math.min(p.tailStart, size - 64));
    const at = [
      ...sample(0, tailFrom, SAMPLES, size + 2),
      ...sample(tailFrom, size, SAMPLES, size + 3),
    ];
    let opened = 0;
    for (const [i, pos] of at.entries()) {
      // Low and high bits in turn.
      const mask = i % 2 === 0 ? 0x01 : 0x80;
      const bad = p.c.blob.slice();
      bad[pos] ^= mask;
      const o = await assertRightOrRefused(new ProbeSource(bad), p, `byte ${pos} ^ ${mask}`);
      if (o.opened) opened++;
    }
    // Flips in file content leave the TOC intact: those blobs open, and their reads were checked.
    assert.ok(opened > 0, "no flipped blob opened: the flips never reached file content");
  });
}
