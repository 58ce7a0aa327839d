/**
 * The eStargz writer: a tar, tar.gz or tar.zst stream in, an eStargz blob out. Every regular file's
 * content starts a new gzip member and large files are split into chunks, each its own member,
 * with sha256 digests per file and per chunk in the TOC. Tar headers are copied verbatim from
 * the input (exact name bytes, PAX records, GNU long names), so the blob decompresses to the
 * input's entries followed by `stargz.index.json`. Members are compressed on all cores; the
 * output depends only on the input and the options.
 *
 * @module
 */
import { createHash, type Hash } from "node:crypto";
import { concat } from "./bytes.ts";
import { CompressPool } from "./compress_pool.ts";
import { estargzFooter } from "./footer.ts";
import { gzipMember } from "./gzip.ts";
import { cleanPath } from "./names.ts";
import {
  encodeHeader,
  END_OF_ARCHIVE,
  paddingFor,
  TarError,
  type TarHeader,
  tarHeader,
} from "./tar_header.ts";
import { tarStream } from "./tar_input.ts";
import { readTar } from "./tar_reader.ts";
import {
  LANDMARK_CONTENT,
  NO_PREFETCH_LANDMARK,
  PREFETCH_LANDMARK,
  serializeTOC,
  type TOC,
  TOC_TAR_NAME,
  type TOCEntry,
  tocEntryFromHeader,
} from "./toc.ts";

/** Default chunk size: 4 MiB, as google/crfs and stargz-snapshotter. */
export const DEFAULT_CHUNK_SIZE = 4 << 20;

/** Options for {@link writeEStargz}. */
export interface WriterOptions {
  /** Largest chunk of a file in one gzip member. Default 4 MiB. */
  chunkSize?: number;
  /**
   * Pack small files into shared gzip members: a chunk starts a new member only once the
   * current one holds at least this many uncompressed bytes; otherwise it joins it at its
   * `innerOffset` (as the reference writer's `WithMinChunkSize`, which counts compressed bytes).
   * Smaller blobs, but readers older than `innerOffset` cannot read them. Default 0 (off).
   */
  minChunkSize?: number;
  /** gzip level 1–9. Default 6. */
  level?: number;
  /** Compression workers; default one per core, 0 = on the calling thread. */
  workers?: number;
  /** A pool to share between writers instead of starting one. */
  pool?: CompressPool;
  /** Called with the number of input bytes consumed so far, now and then. */
  onProgress?: (inputBytes: number) => void;
  /**
   * Paths to put first, in this order (with their parent directories and hardlink targets),
   * followed by the `.prefetch.landmark` that tells readers to prefetch them. The input is
   * spooled to a temporary file to reorder it.
   */
  prioritized?: string[];
  /** Directory for that temporary file; default the system's. */
  tempDir?: string;
}

/** What {@link writeEStargz} produced. */
export interface WriteResult {
  /** `sha256:…` of the TOC JSON (the `containerd.io/snapshot/stargz/toc.digest` annotation). */
  tocDigest: string;
  /** `sha256:…` of the uncompressed tar the blob decompresses to (the layer's diff ID). */
  diffId: string;
  /** Size of that uncompressed tar. */
  uncompressedSize: number;
  /** `sha256:…` of the blob bytes written. */
  blobDigest: string;
  /** Size of the blob. */
  blobSize: number;
  /** The TOC written. */
  toc: TOC;
  /** Prioritized paths that the input did not have. */
  missingPrioritized: string[];
}

/** What the writer reads a file's content from. */
interface ContentReader {
  read(n: number): Promise<Uint8Array>;
  readonly remaining: number;
}

/** One input entry in output order, or the place of the landmark. */
type Ordered =
  | { h: TarHeader; clean: string; raw: Uint8Array; content: ContentReader }
  | { landmark: typeof PREFETCH_LANDMARK | typeof NO_PREFETCH_LANDMARK };

/** Checks and cleans an entry's name; undefined for entries a conversion writes anew. */
function entryName(h: TarHeader): string | undefined {
  const name = cleanPath(h.name);
  if (typeof name !== "string") {
    const why = name.problem === "dotdot" ? "a '..' component" : "a NUL byte";
    throw new TarError(`tar: entry ${JSON.stringify(h.name)} has ${why}`);
  }
  if (name === TOC_TAR_NAME || name === PREFETCH_LANDMARK || name === NO_PREFETCH_LANDMARK) {
    return undefined; // from an earlier conversion
  }
  return name;
}

/** Input order, after the `.no.prefetch.landmark` (as the reference writer places it). */
async function* streamOrder(input: AsyncIterable<Uint8Array>): AsyncGenerator<Ordered> {
  yield { landmark: NO_PREFETCH_LANDMARK };
  for await (const e of readTar(tarStream(input))) {
    const clean = entryName(e.header);
    if (clean !== undefined) yield { h: e.header, clean, raw: e.rawHeader, content: e };
  }
}

/**
 * Prioritized order: the input is spooled to a temporary file, then the prioritized paths come
 * first (each after its parent directories and, for hardlinks, its target), then the
 * `.prefetch.landmark`, then everything else in input order.
 */
async function* prioritizedOrder(
  input: AsyncIterable<Uint8Array>,
  prioritized: string[],
  missing: string[],
  tempDir?: string,
): AsyncGenerator<Ordered> {
  const path = await Deno.makeTempFile({ prefix: "crfs-spool-", dir: tempDir });
  const file = await Deno.open(path, { read: true, write: true });
  try {
    const list: { h: TarHeader; clean: string; at: number; rawLen: number; size: number }[] = [];
    let pos = 0;
    const write = async (b: Uint8Array) => {
      for (let o = 0; o < b.length;) o += await file.write(b.subarray(o));
      pos += b.length;
    };
    for await (const e of readTar(tarStream(input))) {
      const clean = entryName(e.header);
      if (clean === undefined) continue;
      const at = pos;
      const size = e.remaining;
      await write(e.rawHeader);
      while (e.remaining > 0) await write(await e.read(1 << 20));
      list.push({ h: e.header, clean, at, rawLen: e.rawHeader.length, size });
    }
    const byName = new Map<string, number[]>();
    list.forEach((x, i) => byName.set(x.clean, [...(byName.get(x.clean) ?? []), i]));
    const moved = new Set<number>();
    const first: number[] = [];
    const moveName = (name: string, depth = 0) => {
      if (depth > 64) return;
      const parts = name.split("/");
      for (let k = 1; k < parts.length; k++) {
        for (const i of byName.get(parts.slice(0, k).join("/")) ?? []) {
          if (!moved.has(i)) (moved.add(i), first.push(i));
        }
      }
      for (const i of byName.get(name) ?? []) {
        if (moved.has(i)) continue;
        const t = list[i].h.kind === "hardlink" ? cleanPath(list[i].h.linkName) : undefined;
        if (typeof t === "string") moveName(t, depth + 1);
        moved.add(i);
        first.push(i);
      }
    };
    for (const p of prioritized) {
      const name = cleanPath(p);
      if (typeof name !== "string" || !byName.has(name)) missing.push(p);
      else moveName(name);
    }
    const spooled = (i: number): Ordered => {
      const x = list[i];
      let left = x.size;
      let at = x.at + x.rawLen;
      return {
        h: x.h,
        clean: x.clean,
        raw: new Uint8Array(0), // filled below
        content: {
          get remaining() {
            return left;
          },
          async read(n: number) {
            const out = new Uint8Array(Math.min(n, left));
            await file.seek(at, Deno.SeekMode.Start);
            for (let o = 0; o < out.length;) {
              const got = await file.read(out.subarray(o));
              if (got === null) throw new TarError("tar: spool file ended early");
              o += got;
            }
            at += out.length;
            left -= out.length;
            return out;
          },
        },
      };
    };
    const withHeader = async (i: number): Promise<Ordered> => {
      const o = spooled(i) as Extract<Ordered, { h: TarHeader }>;
      const raw = new Uint8Array(list[i].rawLen);
      await file.seek(list[i].at, Deno.SeekMode.Start);
      for (let k = 0; k < raw.length;) k += (await file.read(raw.subarray(k)))!;
      o.raw = raw;
      return o;
    };
    for (const i of first) yield await withHeader(i);
    yield { landmark: PREFETCH_LANDMARK };
    for (let i = 0; i < list.length; i++) if (!moved.has(i)) yield await withHeader(i);
  } finally {
    file.close();
    await Deno.remove(path).catch(() => {});
  }
}

/** A sink for output bytes. */
export type ByteSink = (bytes: Uint8Array) => Promise<void> | void;

const BATCH_BYTES = 1 << 20;
const MAX_INFLIGHT_BYTES = 64 << 20;

/** Orders compressed batches back into a byte stream and tracks member offsets. */
class MemberPipeline {
  readonly #pool: CompressPool;
  readonly #level: number;
  readonly #sink: ByteSink;
  readonly #diff: Hash = createHash("sha256");
  readonly #blob: Hash = createHash("sha256");
  #batch: Uint8Array[] = [];
  #batchBytes = 0;
  #inflight: { promise: Promise<Uint8Array[]>; bytes: number }[] = [];
  #inflightBytes = 0;
  /** Compressed start offset of each member, filled as members are written. */
  readonly offsets: number[] = [];
  #members = 0;
  written = 0;
  uncompressed = 0;

  constructor(pool: CompressPool, level: number, sink: ByteSink) {
    this.#pool = pool;
    this.#level = level;
    this.#sink = sink;
  }

  /** Number of members queued so far (the index the next one gets). */
  get count(): number {
    return this.#members;
  }

  /** Queues a member's plaintext (which must own its buffer); returns the member's index. */
  async add(plain: Uint8Array): Promise<number> {
    this.#diff.update(plain);
    this.uncompressed += plain.length;
    this.#batch.push(plain);
    this.#batchBytes += plain.length;
    if (this.#batchBytes >= BATCH_BYTES || this.#batch.length >= 512) await this.#submit();
    return this.#members++;
  }

  async #submit(): Promise<void> {
    if (this.#batch.length === 0) return;
    const bytes = this.#batchBytes;
    this.#inflight.push({ promise: this.#pool.compress(this.#batch, this.#level), bytes });
    this.#inflightBytes += bytes;
    this.#batch = [];
    this.#batchBytes = 0;
    while (this.#inflightBytes > MAX_INFLIGHT_BYTES) await this.#drainOne();
  }

  async #drainOne(): Promise<void> {
    const head = this.#inflight.shift()!;
    this.#inflightBytes -= head.bytes;
    for (const m of await head.promise) {
      this.offsets.push(this.written);
      await this.#write(m);
    }
  }

  async #write(bytes: Uint8Array): Promise<void> {
    this.#blob.update(bytes);
    this.written += bytes.length;
    await this.#sink(bytes);
  }

  /** Writes everything queued. */
  async flush(): Promise<void> {
    await this.#submit();
    while (this.#inflight.length > 0) await this.#drainOne();
  }

  /** Writes a member compressed here (the TOC) plus raw trailing bytes (the footer). */
  async finish(plain: Uint8Array, trailer: (offset: number) => Uint8Array) {
    await this.flush();
    this.#diff.update(plain);
    this.uncompressed += plain.length;
    const tocOffset = this.written;
    await this.#write(gzipMember([plain], this.#level));
    await this.#write(trailer(tocOffset));
    return {
      diffId: `sha256:${this.#diff.digest("hex")}`,
      blobDigest: `sha256:${this.#blob.digest("hex")}`,
    };
  }
}

/** Collects the plaintext of the member being built. */
class MemberBuffer {
  #parts: Uint8Array[] = [];
  size = 0;
  push(b: Uint8Array): void {
    if (b.length === 0) return;
    this.#parts.push(b);
    this.size += b.length;
  }
  /** The plaintext in a fresh buffer, and resets. */
  take(): Uint8Array {
    const out = concat(this.#parts);
    this.#parts = [];
    this.size = 0;
    return out;
  }
}

function landmarkHeader(name: string): TarHeader {
  // As the reference writer: mode 0, owner 0, time 0, one byte.
  return tarHeader({ name, mode: 0, size: 1 });
}

/**
 * Converts a tar, tar.gz or tar.zst (zstd:chunked too) stream into an eStargz blob written to
 * `sink`.
 * A `stargz.index.json` or landmark already in the input (a converted layer) is dropped and
 * written anew, so converting twice gives a valid blob.
 */
export async function writeEStargz(
  input: AsyncIterable<Uint8Array>,
  sink: ByteSink,
  opts: WriterOptions = {},
): Promise<WriteResult> {
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  if (!Number.isSafeInteger(chunkSize) || chunkSize < 1) throw new RangeError("bad chunk size");
  const minChunkSize = opts.minChunkSize ?? 0;
  if (!Number.isSafeInteger(minChunkSize) || minChunkSize < 0) {
    throw new RangeError("bad minimum chunk size");
  }
  const level = opts.level ?? 6;
  const pool = opts.pool ?? new CompressPool(opts.workers);
  const pipe = new MemberPipeline(pool, level, sink);
  const member = new MemberBuffer();
  /** TOC entries in blob order; null where a later entry of the same name replaced one. */
  const entries: (TOCEntry | null)[] = [];
  /** Entries whose `offset` is a member index until the end. */
  const fixups: { entry: TOCEntry; member: number }[] = [];
  /** Clean name → its entries (the entry and its chunks) and the hardlinks made to it. */
  const byName = new Map<string, { indices: number[]; links: number[] }>();
  let consumed = 0;

  /** True once the member being built starts with a chunk (others can then share it). */
  let memberHasChunk = false;
  /** Ends the member being built; what is pushed next starts member `pipe.count`. */
  const startMember = async () => {
    if (member.size > 0) await pipe.add(member.take());
    memberHasChunk = false;
  };

  /**
   * A name seen before is replaced: tar extraction keeps the later entry, and readers that key
   * chunks by name (the reference one) need one entry per name, so the earlier one leaves the
   * TOC (its bytes stay in the blob: `tar -x` gives the same result). Hardlinks made to it
   * before still mean the old file: the first of them takes over its entries, the others point
   * at that name.
   */
  const replaced = (old: { indices: number[]; links: number[] }) => {
    if (old.links.length === 0) {
      for (const i of old.indices) entries[i] = null;
      return;
    }
    const [first, ...rest] = old.links;
    const heir = entries[first]!;
    for (const i of old.indices) if (entries[i]) entries[i]!.name = heir.name;
    entries[first] = null;
    for (const l of rest) entries[l]!.linkName = heir.name;
    const heirName = cleanPath(heir.name) as string;
    byName.set(heirName, { indices: old.indices, links: rest });
  };

  const addEntry = async (
    h: TarHeader,
    name: string,
    clean: string,
    rawHeader: Uint8Array,
    entry: ContentReader | undefined,
    content?: Uint8Array,
  ) => {
    member.push(rawHeader);
    const earlier = byName.get(clean);
    if (earlier) replaced(earlier);
    const mine: number[] = [];
    byName.set(clean, { indices: mine, links: [] });
    const e = tocEntryFromHeader(h, name);
    mine.push(entries.push(e) - 1);
    if (h.kind === "hardlink") {
      const target = cleanPath(h.linkName);
      if (typeof target === "string") byName.get(target)?.links.push(mine[0]);
    }
    if (h.kind !== "reg") {
      // Content of other kinds (a GNU dump directory) is copied through as it is.
      while (entry && entry.remaining > 0) member.push((await entry.read(1 << 20)).slice());
      if (entry && h.kind === "dir") {
        member.push(new Uint8Array(paddingFor(rawContentSize(rawHeader))));
      }
      return;
    }
    e.size = h.size;
    const fileHash = createHash("sha256");
    let written = 0;
    let ent = e;
    const landmark = name === PREFETCH_LANDMARK || name === NO_PREFETCH_LANDMARK;
    while (written < h.size) {
      const shared = memberHasChunk && !landmark && member.size < minChunkSize;
      if (!shared) await startMember();
      const size = Math.min(chunkSize, h.size - written);
      const data = content ? content.subarray(written, written + size) : await entry!.read(size);
      if (data.length !== size) {
        throw new TarError(`tar: content of ${JSON.stringify(h.name)} truncated`);
      }
      consumed += size;
      fileHash.update(data);
      if (size === chunkSize && h.size > chunkSize) ent.chunkSize = size;
      ent.chunkOffset = written || undefined;
      ent.chunkDigest = `sha256:${createHash("sha256").update(data).digest("hex")}`;
      fixups.push({ entry: ent, member: pipe.count });
      if (shared) ent.innerOffset = member.size;
      memberHasChunk = true;
      member.push(data);
      written += size;
      if (written < h.size) {
        ent = { name, type: "chunk" };
        mine.push(entries.push(ent) - 1);
      }
    }
    e.digest = `sha256:${fileHash.digest("hex")}`;
    member.push(new Uint8Array(paddingFor(h.size)));
    opts.onProgress?.(consumed);
  };

  const missingPrioritized: string[] = [];
  try {
    const order = opts.prioritized?.length
      ? prioritizedOrder(input, opts.prioritized, missingPrioritized, opts.tempDir)
      : streamOrder(input);
    for await (const item of order) {
      if ("landmark" in item) {
        const lm = landmarkHeader(item.landmark);
        const content = new Uint8Array([LANDMARK_CONTENT]);
        await addEntry(lm, item.landmark, item.landmark, encodeHeader(lm), undefined, content);
        continue;
      }
      consumed += item.raw.length;
      await addEntry(item.h, item.h.name, item.clean, item.raw, item.content);
    }
    await startMember();
    await pipe.flush();
    for (const { entry, member } of fixups) entry.offset = pipe.offsets[member];
    const toc: TOC = { version: 1, entries: elideUserNames(entries.filter((e) => e !== null)) };
    const json = serializeTOC(toc);
    const tocHeader = encodeHeader({ ...landmarkHeader(TOC_TAR_NAME), size: json.length });
    const tocTar = new Uint8Array(tocHeader.length + json.length + paddingFor(json.length) + 1024);
    tocTar.set(tocHeader);
    tocTar.set(json, tocHeader.length);
    tocTar.set(END_OF_ARCHIVE, tocTar.length - 1024);
    const { diffId, blobDigest } = await pipe.finish(tocTar, estargzFooter);
    return {
      tocDigest: `sha256:${createHash("sha256").update(json).digest("hex")}`,
      diffId,
      uncompressedSize: pipe.uncompressed,
      blobDigest,
      blobSize: pipe.written,
      toc,
      missingPrioritized,
    };
  } finally {
    if (!opts.pool) pool.close();
  }
}

/** The size field of the last header block in `raw` (the entry's own header). */
function rawContentSize(raw: Uint8Array): number {
  const block = raw.subarray(raw.length - 512);
  const text = new TextDecoder().decode(block.subarray(124, 136)).replace(/[\0 ]+$/, "").trim();
  return text ? parseInt(text, 8) || 0 : 0;
}

/** Leaves out a user name where the previous entry with that uid had the same one. */
function elideUserNames(entries: TOCEntry[]): TOCEntry[] {
  const last = new Map<number, string>();
  for (const e of entries) {
    if (e.userName === undefined || e.type === "chunk") continue;
    const uid = e.uid ?? 0;
    if (last.get(uid) === e.userName) delete e.userName;
    else last.set(uid, e.userName);
  }
  return entries;
}
