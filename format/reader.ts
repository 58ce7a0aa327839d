/**
 * The stargz/eStargz reader: opens a blob through a {@link RangeSource} (footer and TOC in one
 * range read in the common case, never more than two), validates the TOC, and answers lookups,
 * directory listings, stats and byte-exact reads at any offset, decompressing only the chunks a
 * read touches. Adjacent chunks are fetched in one range request, identical in-flight fetches
 * are shared, recently used chunks are kept in memory, and eStargz chunk digests are verified
 * before any byte is returned.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { inflateMembers } from "./gzip.ts";
import { decodeChunk } from "./chunk_decode.ts";
import type { DecodePool } from "./decode_pool.ts";
import { ESTARGZ_FOOTER_SIZE, type Footer, parseFooter } from "./footer.ts";
import type { RangeSource } from "./range_source.ts";
import { parseTOC, type TOC, TOC_TAR_NAME, TOCError } from "./toc.ts";
import { buildIndex, type Chunk, type TOCIndex, type TOCNode } from "./toc_index.ts";
import { cleanPath, decodeName } from "./names.ts";
import { decodeHeaderBlock } from "./tar_header.ts";

/** Bytes that failed a digest check. */
export class IntegrityError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "IntegrityError";
  }
}

/** A blob that is not a readable stargz blob. */
export class StargzFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StargzFormatError";
  }
}

/** What a cache is told about a chunk: its size and, when the TOC has it, its digest. */
export interface ChunkInfo {
  size: number;
  digest?: string;
}

/**
 * A cache of decompressed chunks, shared by readers if wanted. Keys are opaque strings. `get`
 * may answer later (a disk cache); what it returns must be the exact bytes that were `set`.
 */
export interface ChunkCache {
  get(key: string, info: ChunkInfo): Uint8Array | undefined | Promise<Uint8Array | undefined>;
  set(key: string, value: Uint8Array, info: ChunkInfo): void;
}

/** A least-recently-used in-memory {@link ChunkCache} bounded by total bytes. */
export class MemoryChunkCache implements ChunkCache {
  #map = new Map<string, Uint8Array>();
  #bytes = 0;
  readonly maxBytes: number;
  constructor(maxBytes = 64 << 20) {
    this.maxBytes = maxBytes;
  }
  get(key: string): Uint8Array | undefined {
    const v = this.#map.get(key);
    if (v !== undefined) {
      this.#map.delete(key);
      this.#map.set(key, v);
    }
    return v;
  }
  set(key: string, value: Uint8Array): void {
    if (value.length > this.maxBytes) return;
    const old = this.#map.get(key);
    if (old) {
      this.#bytes -= old.length;
      this.#map.delete(key);
    }
    this.#map.set(key, value);
    this.#bytes += value.length;
    for (const [k, v] of this.#map) {
      if (this.#bytes <= this.maxBytes) break;
      this.#map.delete(k);
      this.#bytes -= v.length;
    }
  }
}

/** Options for {@link StargzReader.open}. */
export interface OpenOptions {
  /** Expected `sha256:…` of the TOC JSON (e.g. from the manifest annotation); checked if given. */
  tocDigest?: string;
  /** Bytes read from the blob's end in the first request. Default 256 KiB. */
  tailGuess?: number;
  /** Largest uncompressed TOC accepted. Default 256 MiB. */
  maxTocBytes?: number;
  /**
   * Verification policy: `strict` (default) checks every eStargz chunk digest and, for blobs
   * without them, file digests on whole-file reads; `none` checks only gzip CRCs.
   */
  verify?: "strict" | "none";
  /** Decompressed-chunk cache; default a private 32 MiB LRU. */
  cache?: ChunkCache;
  /** Key prefix for `cache` entries (e.g. the blob digest) when a cache is shared. */
  cacheKey?: string;
  /** Largest compressed extent fetched in one range request when coalescing. Default 8 MiB. */
  maxCoalesce?: number;
  /**
   * Bytes of a file fetched ahead in the background when it is read sequentially. Default
   * 8 MiB; 0 turns read-ahead off.
   */
  readAhead?: number;
  /**
   * When a read must fetch, also fetch the chunks that follow in the blob up to this many
   * compressed bytes in the same request (small files are read in bursts: a directory walk, a
   * program start). Default 256 KiB; 0 fetches only what the read needs.
   */
  fetchWindow?: number;
  /** Workers to decode big fetches on; default: decode on the calling thread. */
  decodePool?: DecodePool;
}

/** Counters of one reader, for status reports. */
export interface ReaderStats {
  /** Compressed bytes fetched from the source for content. */
  bytesFetched: number;
  /** Range requests made for content. */
  requests: number;
  /** Chunks served from the cache. */
  cacheHits: number;
  /** Chunks fetched from the source. */
  chunksFetched: number;
  /** Compressed bytes fetched by prefetch and read-ahead (included in `bytesFetched`). */
  backgroundBytes: number;
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(v: T): void;
  reject(e: unknown): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((a, b) => {
    resolve = a;
    reject = b;
  });
  promise.catch(() => {}); // rejections are observed by whoever awaits it
  return { promise, resolve, reject };
}

/** A chunk with the file it belongs to. */
interface Owned {
  node: TOCNode;
  chunk: Chunk;
}

/** Fetches at least this big are decoded in the decode pool, when the reader has one. */
const POOL_MIN = 128 << 10;

const sha256Hex = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** A stargz or eStargz blob opened for reading. */
export class StargzReader {
  /** The blob. */
  readonly source: RangeSource;
  /** What the footer said. */
  readonly footer: Footer;
  /** The parsed TOC. */
  readonly toc: TOC;
  /** `sha256:…` of the TOC JSON bytes. */
  readonly tocDigest: string;
  /** The tree. */
  readonly index: TOCIndex;
  /** Range requests made by `open` (1 or 2). */
  readonly openRequests: number;
  readonly #verify: boolean;
  readonly #cache: ChunkCache;
  readonly #cacheKey: string;
  readonly #maxCoalesce: number;
  readonly #readAhead: number;
  readonly #fetchWindow: number;
  readonly #decodePool?: DecodePool;
  /** Where the last foreground fetch window ended, and how big windows are now. */
  #windowEnd = -1;
  #window = 0;
  readonly #inflight = new Map<number, Promise<Uint8Array>>();
  readonly #lastEnd = new WeakMap<TOCNode, number>();
  /** Counters for status reports. */
  readonly stats: ReaderStats = {
    bytesFetched: 0,
    requests: 0,
    cacheHits: 0,
    chunksFetched: 0,
    backgroundBytes: 0,
  };

  private constructor(
    source: RangeSource,
    footer: Footer,
    toc: TOC,
    tocDigest: string,
    index: TOCIndex,
    openRequests: number,
    opts: OpenOptions,
  ) {
    this.source = source;
    this.footer = footer;
    this.toc = toc;
    this.tocDigest = tocDigest;
    this.index = index;
    this.openRequests = openRequests;
    this.#verify = (opts.verify ?? "strict") === "strict";
    this.#cache = opts.cache ?? new MemoryChunkCache(32 << 20);
    this.#cacheKey = opts.cacheKey ?? "";
    this.#maxCoalesce = opts.maxCoalesce ?? 8 << 20;
    this.#readAhead = opts.readAhead ?? 8 << 20;
    this.#fetchWindow = opts.fetchWindow ?? 256 << 10;
    this.#decodePool = opts.decodePool;
  }

  /** Opens a blob: reads footer and TOC, verifies the TOC digest if expected, builds the tree. */
  static async open(source: RangeSource, opts: OpenOptions = {}): Promise<StargzReader> {
    const size = source.size;
    if (size < ESTARGZ_FOOTER_SIZE - 4) {
      throw new StargzFormatError(`blob of ${size} bytes is too small to be stargz`);
    }
    const guess = Math.min(size, Math.max(opts.tailGuess ?? 256 << 10, ESTARGZ_FOOTER_SIZE));
    let tailStart = size - guess;
    let tail = await source.read(tailStart, guess);
    let requests = 1;
    if (tail.length !== guess) throw new StargzFormatError("short read of the blob's tail");
    const footer = parseFooter(tail);
    if (!footer) {
      throw new StargzFormatError("no stargz footer at the end of the blob (not stargz/eStargz)");
    }
    const tocEnd = size - footer.size;
    if (footer.tocOffset >= tocEnd) {
      throw new StargzFormatError(`footer points at ${footer.tocOffset}, past the blob's data`);
    }
    const maxToc = opts.maxTocBytes ?? 256 << 20;
    if (tocEnd - footer.tocOffset > maxToc) {
      throw new StargzFormatError(
        `TOC of ${tocEnd - footer.tocOffset} compressed bytes exceeds the limit`,
      );
    }
    if (footer.tocOffset < tailStart) {
      // The TOC is bigger than the guess: fetch only the part before what we already have.
      const head = await source.read(footer.tocOffset, tailStart - footer.tocOffset);
      requests++;
      if (head.length !== tailStart - footer.tocOffset) {
        throw new StargzFormatError("short read of the TOC");
      }
      const joined = new Uint8Array(head.length + tail.length);
      joined.set(head);
      joined.set(tail, head.length);
      tail = joined;
      tailStart = footer.tocOffset;
    }
    const tocMember = tail.subarray(footer.tocOffset - tailStart, tocEnd - tailStart);
    let tocTar: Uint8Array;
    try {
      tocTar = inflateMembers(tocMember, maxToc + 4096);
    } catch (e) {
      throw new StargzFormatError(`cannot decompress the TOC: ${(e as Error).message}`);
    }
    if (tocTar.length < 512) throw new StargzFormatError("TOC member holds no tar header");
    let header;
    try {
      header = decodeHeaderBlock(tocTar.subarray(0, 512));
    } catch (e) {
      throw new StargzFormatError(`TOC tar header: ${(e as Error).message}`);
    }
    const tocName = cleanPath(decodeName(header.name));
    if (tocName !== TOC_TAR_NAME) {
      throw new StargzFormatError(
        `TOC member holds ${JSON.stringify(tocName)}, not ${TOC_TAR_NAME}`,
      );
    }
    if (header.size > tocTar.length - 512) throw new StargzFormatError("TOC truncated");
    const json = tocTar.subarray(512, 512 + header.size);
    const tocDigest = `sha256:${sha256Hex(json)}`;
    if (opts.tocDigest && opts.tocDigest !== tocDigest) {
      throw new IntegrityError(`TOC digest mismatch: expected ${opts.tocDigest}, got ${tocDigest}`);
    }
    const toc = parseTOC(json);
    const index = buildIndex(toc, footer.tocOffset);
    return new StargzReader(source, footer, toc, tocDigest, index, requests, opts);
  }

  /** The root directory. */
  get root(): TOCNode {
    return this.index.root;
  }

  /**
   * The node at `path` (any form: `/etc/passwd`, `./etc/`), or undefined. A node is its own
   * `FileAttr` (type, mode, owner, size, times, link target, devices, xattrs).
   */
  lookup(path: string): TOCNode | undefined {
    const p = cleanPath(path);
    return typeof p === "string" ? this.index.byPath.get(p) : undefined;
  }

  /** The children of a directory, by name, in TOC order. */
  children(dir: TOCNode): Map<string, TOCNode> {
    return dir.children ?? new Map();
  }

  /** Compressed bytes fetched for content so far. */
  get bytesFetched(): number {
    return this.stats.bytesFetched;
  }

  /** Range requests made for content so far. */
  get contentRequests(): number {
    return this.stats.requests;
  }

  /**
   * Reads `length` bytes of a regular file from `offset` (fewer only at the end of the file).
   * Throws {@link IntegrityError} when fetched bytes fail their digest. An aborted `signal`
   * rejects the read; fetches other readers share go on.
   */
  async read(
    node: TOCNode,
    offset: number,
    length: number,
    signal?: AbortSignal,
  ): Promise<Uint8Array> {
    if (node.type !== "reg") throw new StargzFormatError(`${node.path} is not a regular file`);
    if (offset < 0 || length < 0) throw new RangeError("negative offset or length");
    const end = Math.min(node.size, offset + length);
    if (offset >= end) return new Uint8Array();
    const chunks = node.chunks;
    // First chunk containing `offset`.
    let lo = 0;
    let hi = chunks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (chunks[mid].chunkOffset <= offset) lo = mid;
      else hi = mid - 1;
    }
    const needed: Chunk[] = [];
    let i = lo;
    for (; i < chunks.length && chunks[i].chunkOffset < end; i++) needed.push(chunks[i]);
    const pending = this.#chunks(needed.map((chunk) => ({ node, chunk })), false);
    // Sequential reading: fetch what follows in the background.
    if (this.#readAhead > 0 && this.#lastEnd.get(node) === offset && i < chunks.length) {
      const ahead: Owned[] = [];
      for (let k = i, bytes = 0; k < chunks.length && bytes < this.#readAhead; k++) {
        ahead.push({ node, chunk: chunks[k] });
        bytes += chunks[k].chunkSize;
      }
      this.#chunks(ahead, true).catch(() => {});
    }
    this.#lastEnd.set(node, end);
    const datas = await abortable(pending, signal);
    if (needed.length === 1) {
      const c = needed[0];
      return datas[0].subarray(offset - c.chunkOffset, end - c.chunkOffset);
    }
    const out = new Uint8Array(end - offset);
    for (let i = 0; i < needed.length; i++) {
      const c = needed[i];
      const from = Math.max(offset, c.chunkOffset);
      const to = Math.min(end, c.chunkOffset + c.chunkSize);
      out.set(datas[i].subarray(from - c.chunkOffset, to - c.chunkOffset), from - offset);
    }
    if (
      this.#verify && offset === 0 && end === node.size && node.digest &&
      !needed.some((c) => c.digest)
    ) {
      const got = `sha256:${sha256Hex(out)}`;
      if (got !== node.digest) {
        throw new IntegrityError(
          `${node.path}: file digest mismatch (expected ${node.digest}, got ${got})`,
        );
      }
    }
    return out;
  }

  /** Reads a whole regular file. */
  readFile(node: TOCNode): Promise<Uint8Array> {
    return this.read(node, 0, node.size);
  }

  /**
   * The decompressed bytes of `chunks` (in blob order), each from a fetch already under way,
   * the cache, or the source — chunks adjacent in the blob fetched in one range request.
   */
  async #chunks(chunks: Owned[], background: boolean): Promise<Uint8Array[]> {
    const out: Promise<Uint8Array>[] = new Array(chunks.length);
    const mine: { o: Owned; d: Deferred<Uint8Array> }[] = [];
    for (let i = 0; i < chunks.length; i++) {
      const { chunk } = chunks[i];
      const pending = this.#inflight.get(chunk.offset);
      if (pending) {
        out[i] = pending;
        continue;
      }
      // The common case on the read path: a memory hit, answered without any bookkeeping.
      const hit = this.#cache.get(this.#cacheKey + chunk.offset, {
        size: chunk.chunkSize,
        digest: chunk.digest,
      });
      if (hit instanceof Uint8Array && hit.length === chunk.chunkSize) {
        this.stats.cacheHits++;
        out[i] = Promise.resolve(hit);
        continue;
      }
      // Claim the chunk before any await, so concurrent reads share this fetch.
      const d = deferred<Uint8Array>();
      this.#inflight.set(chunk.offset, d.promise);
      d.promise.finally(() => this.#inflight.delete(chunk.offset)).catch(() => {});
      out[i] = d.promise;
      mine.push({ o: chunks[i], d });
    }
    if (mine.length > 0) {
      const hits = await Promise.all(mine.map(({ o }) => this.#cached(o.chunk)));
      const misses: { o: Owned; d: Deferred<Uint8Array> }[] = [];
      mine.forEach((m, k) => {
        const hit = hits[k];
        if (hit) {
          this.stats.cacheHits++;
          m.d.resolve(hit);
        } else misses.push(m);
      });
      let run: typeof misses = [];
      for (const m of misses) {
        const prev = run[run.length - 1];
        if (
          prev &&
          (prev.o.chunk.end !== m.o.chunk.offset ||
            m.o.chunk.end - run[0].o.chunk.offset > this.#maxCoalesce)
        ) {
          this.#fetchRun(run, background);
          run = [];
        }
        run.push(m);
      }
      if (run.length > 0) {
        if (!background && this.#fetchWindow > 0) this.#extend(run);
        this.#fetchRun(run, background);
      }
    }
    return await Promise.all(out);
  }

  /**
   * Adds to `run` the chunks that follow it in the blob, up to the fetch window. Misses that
   * walk the blob in order (a `find` reading everything, a program loading its libraries
   * in the order the image was built) grow the window up to 4 MiB and start fetching the next
   * window in the background, so the walk rarely waits for the network.
   */
  #extend(run: { o: Owned; d: Deferred<Uint8Array> }[]): void {
    const all = this.index.chunks;
    const last = run[run.length - 1].o.chunk;
    const start = run[0].o.chunk.offset;
    const sequential = this.#windowEnd >= 0 && start >= this.#windowEnd - this.#fetchWindow &&
      start <= this.#windowEnd + this.#fetchWindow;
    this.#window = sequential
      ? Math.min(Math.max(this.#window, this.#fetchWindow) * 2, 4 << 20)
      : this.#fetchWindow;
    let k = this.#chunkIndexAfter(last.offset);
    let end = last.end;
    for (; k < all.length; k++) {
      const o = all[k];
      if (o.chunk.offset !== end || o.chunk.end - start > this.#window) break;
      end = o.chunk.end;
      if (this.#inflight.has(o.chunk.offset)) continue;
      const d = deferred<Uint8Array>();
      this.#inflight.set(o.chunk.offset, d.promise);
      d.promise.finally(() => this.#inflight.delete(o.chunk.offset)).catch(() => {});
      run.push({ o, d });
    }
    this.#windowEnd = end;
    if (sequential) {
      const next: Owned[] = [];
      for (; k < all.length && all[k].chunk.end - end <= this.#window; k++) next.push(all[k]);
      if (next.length > 0) queueMicrotask(() => this.#chunks(next, true).catch(() => {}));
    }
    // A chunk already in flight inside the window breaks contiguity of what we fetch: keep
    // only the leading contiguous part.
    for (let i = 1; i < run.length; i++) {
      if (run[i].o.chunk.offset !== run[i - 1].o.chunk.end) {
        for (const r of run.splice(i)) {
          if (this.#inflight.get(r.o.chunk.offset) === r.d.promise) {
            this.#inflight.delete(r.o.chunk.offset);
          }
          r.d.reject(new Error("not fetched"));
        }
        break;
      }
    }
  }

  /** Index in `index.chunks` of the first chunk after blob offset `offset`. */
  #chunkIndexAfter(offset: number): number {
    const all = this.index.chunks;
    let lo = 0;
    let hi = all.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (all[mid].chunk.offset <= offset) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The chunk from the cache (checked against its size), or undefined. */
  async #cached(c: Chunk): Promise<Uint8Array | undefined> {
    const info = { size: c.chunkSize, digest: c.digest };
    try {
      const hit = await this.#cache.get(this.#cacheKey + c.offset, info);
      return hit && hit.length === c.chunkSize ? hit : undefined;
    } catch {
      return undefined; // a broken cache entry is a miss
    }
  }

  /**
   * Fetches compressed-contiguous chunks in one range request and settles their promises. When
   * bytes fail their checks, any cached copy is dropped and the failed chunks are fetched once
   * more; a second failure is the reader's answer.
   */
  #fetchRun(run: { o: Owned; d: Deferred<Uint8Array> }[], background: boolean, retry = true): void {
    const start = run[0].o.chunk.offset;
    const length = run[run.length - 1].o.chunk.end - start;
    this.source.read(start, length).then(async (bytes) => {
      this.stats.requests++;
      this.stats.bytesFetched += bytes.length;
      if (background) this.stats.backgroundBytes += bytes.length;
      if (bytes.length !== length) {
        throw new StargzFormatError(`short read at ${start}: ${bytes.length} of ${length} bytes`);
      }
      const failed: typeof run = [];
      // Big fetches (even a single big chunk) decode on other cores; small ones right here.
      const pooled = this.#decodePool && length >= POOL_MIN
        ? await this.#decodePool.decode(
          bytes,
          run.map(({ o: { chunk: c } }) => ({
            start: c.offset - start,
            end: c.end - start,
            innerOffset: c.innerOffset,
            size: c.chunkSize,
            digest: c.digest,
          })),
          this.#verify,
        )
        : undefined;
      for (const [k, m] of run.entries()) {
        const c = m.o.chunk;
        try {
          const r = pooled?.[k];
          if (typeof r === "string") throw this.#integrity(m.o.node, c, r);
          const data = r ??
            await this.#decode(m.o.node, c, bytes.subarray(c.offset - start, c.end - start));
          this.stats.chunksFetched++;
          this.#cache.set(this.#cacheKey + c.offset, data, { size: c.chunkSize, digest: c.digest });
          m.d.resolve(data);
        } catch (e) {
          if (retry && e instanceof IntegrityError) failed.push(m);
          else m.d.reject(e);
        }
      }
      if (failed.length > 0) {
        // Bytes damaged in a cache or in transit: drop any cached copy and fetch once more.
        await this.source.invalidate?.(start, length);
        for (const m of failed) this.#fetchRun([m], background, false);
      }
    }).catch((e) => {
      for (const { d } of run) d.reject(e);
    });
  }

  /**
   * Fetches chunks in the background into the cache: the prioritized region before the
   * `.prefetch.landmark` (`landmark`), or the whole blob (`all`), one range request at a time
   * so foreground reads keep most of the bandwidth. Resolves with the bytes fetched; stops
   * early when `signal` aborts.
   */
  async prefetch(mode: "landmark" | "all", signal?: AbortSignal): Promise<number> {
    const limit = mode === "all" ? Infinity : this.index.prefetchLandmark ?? 0;
    const todo = this.index.chunks.filter((o) => o.chunk.offset < limit);
    const before = this.stats.backgroundBytes;
    let batch: Owned[] = [];
    const flush = async () => {
      if (batch.length === 0 || signal?.aborted) return;
      const b = batch;
      batch = [];
      await this.#chunks(b, true).catch(() => {});
    };
    for (const o of todo) {
      if (signal?.aborted) break;
      const first = batch[0];
      if (first && o.chunk.end - first.chunk.offset > this.#maxCoalesce) await flush();
      batch.push(o);
    }
    await flush();
    return this.stats.backgroundBytes - before;
  }

  /** Decodes one chunk on this thread; errors name the file. */
  async #decode(node: TOCNode, c: Chunk, compressed: Uint8Array): Promise<Uint8Array> {
    const spec = {
      start: 0,
      end: compressed.length,
      innerOffset: c.innerOffset,
      size: c.chunkSize,
      digest: c.digest,
    };
    try {
      return await decodeChunk(compressed, spec, this.#verify);
    } catch (e) {
      throw this.#integrity(node, c, (e as Error).message);
    }
  }

  #integrity(node: TOCNode, c: Chunk, why: string): IntegrityError {
    return new IntegrityError(
      `${node.path}: chunk at file offset ${c.chunkOffset} (blob offset ${c.offset}): ${why}`,
    );
  }

  /** Offsets `[0, end)` of the prioritized (prefetch) region, if the blob has a landmark. */
  prefetchRegion(): { start: number; end: number } | undefined {
    const lm = this.index.prefetchLandmark;
    return lm ? { start: 0, end: lm } : undefined;
  }
}

/** `p`, or a rejection as soon as `signal` aborts (the work behind `p` goes on). */
function abortable<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

export type { TOCError };
