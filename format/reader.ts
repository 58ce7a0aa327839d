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
import { type ChunkCodec, decodeChunk, type MemberMemo } from "./chunk_decode.ts";
import type { DecodePool } from "./decode_pool.ts";
import { ESTARGZ_FOOTER_SIZE, type Footer } from "./footer.ts";
import {
  type LayerFormat,
  LayerFormatError,
  type LayerFormatName,
  type TOCLocation,
} from "./layer_format.ts";
import type { RangeSource } from "./range_source.ts";
import { GZIP_STARGZ } from "./stargz_layer.ts";
import { parseTOC, type TOC, TOC_DIGEST_ANNOTATION, TOCError } from "./toc.ts";
import {
  type Chunk,
  chunksOf,
  indexTOC,
  nodeAt,
  type TOCIndex,
  type TOCNode,
} from "./toc_index.ts";
import { cleanPath } from "./names.ts";
import { FOOTER_V2_SIZE, ZSTD_CHUNKED } from "./zstd_chunked.ts";
import { newSha256, type Sha256, sha256Hex, sha256HexBulk } from "./sha256.ts";
import { SKIPPABLE_HEADER_SIZE } from "./zstd_frame.ts";

/** The biggest footer of any format (zstd:chunked's 72-byte one): the least tail read. */
const MAX_FOOTER_SIZE = Math.max(ESTARGZ_FOOTER_SIZE, SKIPPABLE_HEADER_SIZE + FOOTER_V2_SIZE);

/** The layer formats, in the order `open` tries them. */
const LAYER_FORMATS: readonly LayerFormat[] = [ZSTD_CHUNKED, GZIP_STARGZ];

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
  /**
   * Optional: bytes `[offset, offset + length)` of the chunk (clipped to its size) without
   * loading all of it, read into `into` when that suits the cache; undefined when it cannot
   * (the reader then gets the whole chunk). What it returns must be exactly those bytes.
   */
  readRange?(
    key: string,
    info: ChunkInfo,
    offset: number,
    length: number,
    into?: Uint8Array<ArrayBuffer>,
  ): Uint8Array | undefined | Promise<Uint8Array | undefined>;
  /** Optional: true when the cache holds the chunk somewhere reading it ahead gains nothing. */
  holds?(key: string, info: ChunkInfo): boolean;
  /**
   * Optional: true when `set` keeps the chunk where a later reader (another process too) finds
   * it, e.g. decoded on disk: the compressed bytes it was fetched in then need no keeping too.
   */
  keeps?(key: string, info: ChunkInfo): boolean;
}

/**
 * Bytes counted for each entry of a {@link MemoryChunkCache} beyond its chunk's: the key, the map
 * entry and the buffer's own bookkeeping. Without it a cache of tiny chunks (small files) held
 * hundreds of thousands of entries within its byte bound, ten times the memory it counted.
 */
export const CHUNK_ENTRY_OVERHEAD = 256;

/**
 * A least-recently-used in-memory {@link ChunkCache} bounded by total bytes (each chunk's plus
 * {@link CHUNK_ENTRY_OVERHEAD}).
 */
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
    const size = value.length + CHUNK_ENTRY_OVERHEAD;
    if (size > this.maxBytes) return;
    const old = this.#map.get(key);
    if (old) {
      this.#bytes -= old.length + CHUNK_ENTRY_OVERHEAD;
      this.#map.delete(key);
    }
    this.#map.set(key, value);
    this.#bytes += size;
    for (const [k, v] of this.#map) {
      if (this.#bytes <= this.maxBytes) break;
      this.#map.delete(k);
      this.#bytes -= v.length + CHUNK_ENTRY_OVERHEAD;
    }
  }
  /** Drops every chunk (e.g. to give memory back: a disk cache serves them again). */
  clear(): void {
    this.#map.clear();
    this.#bytes = 0;
  }
  /** Bytes counted for the chunks held. */
  get bytes(): number {
    return this.#bytes;
  }
}

/** Options for {@link StargzReader.open}. */
export interface OpenOptions {
  /** Expected `sha256:…` of the TOC JSON (e.g. from the manifest annotation); checked if given. */
  tocDigest?: string;
  /**
   * The layer descriptor's annotations. zstd:chunked's `…manifest-position` locates the TOC
   * without reading the footer (one range request) and `…manifest-checksum` is verified;
   * `containerd.io/snapshot/stargz/toc.digest` is checked like `tocDigest` (neither with
   * `verify: "none"`).
   */
  annotations?: Record<string, string>;
  /**
   * Bytes read from the blob's end in the first request (at least the biggest footer, 72
   * bytes: 0 reads the footer alone, then exactly the TOC it points at). Default 256 KiB.
   */
  tailGuess?: number;
  /** Largest uncompressed TOC accepted. Default 256 MiB. */
  maxTocBytes?: number;
  /**
   * Verification policy: `strict` (default) checks every chunk digest and, for files without
   * them (legacy stargz), the file digest before serving any byte of the file (the whole file
   * read once); `none` checks only gzip CRCs.
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

/** `chunk` with its file. */
const owned = (chunk: Chunk): Owned => ({ node: chunk.node, chunk });

/** Fetches at least this big are decoded in the decode pool, when the reader has one. */
const POOL_MIN = 128 << 10;

/** A stargz or eStargz blob opened for reading. */
export class StargzReader {
  /** The blob. */
  readonly source: RangeSource;
  /** What the footer said. */
  readonly footer: Footer;
  /**
   * The parsed TOC, as in the blob. Parsed again from the compressed TOC bytes on first use:
   * opening needs only the tree, and a layer's entries (several MB of objects for a TOC of
   * 10,000 entries) would otherwise be kept for the reader's whole life.
   */
  get toc(): TOC {
    if (this.#toc === undefined) {
      this.#toc = this.#tocAgain!();
      this.#tocAgain = undefined;
    }
    return this.#toc;
  }
  #toc: TOC | undefined;
  #tocAgain: (() => TOC) | undefined;
  /** `sha256:…` of the TOC JSON bytes. */
  readonly tocDigest: string;
  /** The tree. */
  readonly index: TOCIndex;
  /** Range requests made by `open` (1 or 2). */
  readonly openRequests: number;
  /** Which layer format the blob is. */
  readonly format: LayerFormatName;
  /** How its chunks are compressed. */
  readonly #codec: ChunkCodec;
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
  readonly #inflight = new Map<string, Promise<Uint8Array>>();
  readonly #lastEnd = new WeakMap<TOCNode, number>();
  /** Whole-file digest checks done or under way (strict, files without chunk digests). */
  readonly #fileChecks = new WeakMap<TOCNode, Promise<void>>();
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
    toc: () => TOC,
    tocDigest: string,
    index: TOCIndex,
    openRequests: number,
    opts: OpenOptions,
    kind: { format: LayerFormatName; codec: ChunkCodec },
  ) {
    this.source = source;
    this.format = kind.format;
    this.#codec = kind.codec;
    this.footer = footer;
    this.#tocAgain = toc;
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

  /**
   * Opens a blob: finds its TOC (from `opts.annotations` when they locate it, else from the
   * footer), verifies the TOC digests the options or annotations give, builds the tree.
   *
   * @example Open a layer with its descriptor's annotations (any format crfs reads)
   * ```ts
   * const r = await StargzReader.open(source, { annotations: descriptor.annotations });
   * const data = await r.readFile(r.lookup("/etc/os-release")!);
   * ```
   */
  static async open(source: RangeSource, opts: OpenOptions = {}): Promise<StargzReader> {
    const size = source.size;
    const maxToc = opts.maxTocBytes ?? 256 << 20;
    const annotations = opts.annotations ?? {};
    // `verify: "none"` checks no digest the annotations give (an explicit `tocDigest` still is).
    const strict = (opts.verify ?? "strict") === "strict";
    const expected = opts.tocDigest ?? (strict ? annotations[TOC_DIGEST_ANNOTATION] : undefined);
    let format: LayerFormat | undefined;
    let loc: TOCLocation | undefined;
    // What of the blob's tail we hold: `have` starts at `haveStart`.
    let have: Uint8Array = new Uint8Array(0);
    let haveStart = size;
    let requests = 0;
    try {
      for (const f of LAYER_FORMATS) {
        loc = f.fromAnnotations(annotations, size);
        if (loc) {
          format = f;
          break;
        }
      }
      if (!loc) {
        if (size < ESTARGZ_FOOTER_SIZE - 4) {
          throw new StargzFormatError(`blob of ${size} bytes is too small to be stargz`);
        }
        const guess = Math.min(size, Math.max(opts.tailGuess ?? 256 << 10, MAX_FOOTER_SIZE));
        haveStart = size - guess;
        have = await source.read(haveStart, guess);
        requests = 1;
        if (have.length !== guess) throw new StargzFormatError("short read of the blob's tail");
        for (const f of LAYER_FORMATS) {
          loc = f.fromTail(have, size);
          if (loc) {
            format = f;
            break;
          }
        }
      }
    } catch (e) {
      if (e instanceof LayerFormatError) throw new StargzFormatError(e.message);
      throw e;
    }
    if (!loc || !format) {
      throw new StargzFormatError(
        "no stargz footer at the end of the blob (not stargz/eStargz/zstd:chunked)",
      );
    }
    const footer = loc.footer;
    if (loc.start >= loc.end || loc.end > size || footer.tocOffset > loc.start) {
      throw new StargzFormatError(`footer points at ${footer.tocOffset}, past the blob's data`);
    }
    if (loc.end - loc.start > maxToc || (loc.uncompressedSize ?? 0) > maxToc) {
      throw new StargzFormatError(
        `TOC of ${loc.end - loc.start} compressed bytes exceeds the limit`,
      );
    }
    let compressed: Uint8Array;
    if (loc.start >= haveStart) {
      compressed = have.subarray(loc.start - haveStart, loc.end - haveStart);
    } else if (haveStart < loc.end) {
      // The TOC is bigger than the guess: fetch only the part before what we already have.
      const head = await source.read(loc.start, haveStart - loc.start);
      requests++;
      if (head.length !== haveStart - loc.start) {
        throw new StargzFormatError("short read of the TOC");
      }
      compressed = new Uint8Array(loc.end - loc.start);
      compressed.set(head);
      compressed.set(have.subarray(0, loc.end - haveStart), head.length);
    } else {
      compressed = await source.read(loc.start, loc.end - loc.start);
      requests++;
      if (compressed.length !== loc.end - loc.start) {
        throw new StargzFormatError("short read of the TOC");
      }
    }
    if (loc.compressedDigest && strict) {
      const got = `sha256:${await sha256Hex(compressed)}`;
      if (got !== loc.compressedDigest) {
        throw new IntegrityError(
          `manifest checksum mismatch: expected ${loc.compressedDigest}, got ${got}`,
        );
      }
    }
    let json: Uint8Array;
    try {
      json = await format.decodeTOC(compressed, loc, maxToc);
    } catch (e) {
      const msg = (e as Error).message;
      throw new StargzFormatError(
        e instanceof LayerFormatError ? msg : `cannot decompress the TOC: ${msg}`,
      );
    }
    const tocDigest = `sha256:${await sha256Hex(json)}`;
    if (expected && expected !== tocDigest) {
      throw new IntegrityError(`TOC digest mismatch: expected ${expected}, got ${tocDigest}`);
    }
    const { index } = indexTOC(json, footer.tocOffset);
    // The TOC was checked whole above: parsing the same bytes again gives the same TOC.
    const kept = compressed.byteLength === compressed.buffer.byteLength
      ? compressed
      : compressed.slice();
    const decoder = format;
    const toc = () => parseTOC(decoder.decodeTOCAgain(kept, loc, maxToc));
    return new StargzReader(source, footer, toc, tocDigest, index, requests, opts, {
      format: loc.format,
      codec: format.codec,
    });
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
    return typeof p === "string" ? nodeAt(this.index.root, p) : undefined;
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
   * rejects the read; fetches other readers share go on. `into`, a scratch buffer of at least
   * `length` bytes, may be filled and (a prefix of it) returned, to avoid allocating; the caller
   * must not reuse it before the promise settles.
   */
  async read(
    node: TOCNode,
    offset: number,
    length: number,
    signal?: AbortSignal,
    into?: Uint8Array<ArrayBuffer>,
  ): Promise<Uint8Array> {
    if (node.type !== "reg") {
      throw new StargzFormatError(`${this.#pathOf(node)} is not a regular file`);
    }
    if (offset < 0 || length < 0) throw new RangeError("negative offset or length");
    const end = Math.min(node.size, offset + length);
    if (offset >= end) return new Uint8Array();
    const whole = offset === 0 && end === node.size;
    // Strict, and the file's only digest is its whole-content one: check it before serving part.
    if (!whole && this.#needsFileCheck(node)) await abortable(this.#verifyFile(node), signal);
    const chunks = chunksOf(node);
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
    // Sequential reading: fetch what follows in the background (not what the cache holds
    // where reading it ahead gains nothing).
    const sequential = this.#lastEnd.get(node) === offset;
    this.#lastEnd.set(node, end);
    let readAhead = this.#readAhead > 0 && sequential && i < chunks.length;
    const startReadAhead = () => {
      if (!readAhead) return;
      readAhead = false;
      const ahead: Owned[] = [];
      for (let k = i, bytes = 0; k < chunks.length && bytes < this.#readAhead; k++) {
        const c = chunks[k];
        bytes += c.chunkSize;
        const info = { size: c.chunkSize, digest: c.digest };
        if (this.#cache.holds?.(this.#cacheKey + chunkKey(c), info)) continue;
        ahead.push({ node, chunk: c });
      }
      if (ahead.length > 0) this.#chunks(ahead, true).catch(() => {});
    };
    // Part of one chunk: the cache may serve just that part (a chunk kept decoded on disk).
    if (needed.length === 1 && this.#cache.readRange && !this.#needsFileCheck(node)) {
      const c = needed[0];
      const key = chunkKey(c);
      if (!this.#inflight.has(key)) {
        startReadAhead();
        let part: Uint8Array | undefined;
        try {
          // Not abortable: the cache may be writing into `into`, which the caller takes back
          // once this settles (a local read: it settles soon).
          part = await this.#cache.readRange(
            this.#cacheKey + key,
            { size: c.chunkSize, digest: c.digest },
            offset - c.chunkOffset,
            end - offset,
            into,
          );
        } catch {
          part = undefined; // a broken cache entry is a miss
        }
        if (signal?.aborted) throw signal.reason;
        if (part && part.length === end - offset) {
          this.stats.cacheHits++;
          return part;
        }
      }
    }
    const pending = this.#chunks(needed.map((chunk) => ({ node, chunk })), false);
    startReadAhead();
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
    if (whole && this.#needsFileCheck(node)) {
      await this.#checkFileDigest(node, out);
      this.#deriveChunkDigests(
        node,
        await Promise.all(datas.map(async (d) => `sha256:${await sha256HexBulk(d)}`)),
      );
    }
    return out;
  }

  /**
   * True when strict verification must check `node` by its whole-content digest: it has one
   * and some chunk has no digest of its own (legacy stargz, zstd:chunked without chunkDigest).
   */
  #needsFileCheck(node: TOCNode): boolean {
    return this.#verify && node.digest !== undefined && chunksOf(node).some((c) => !c.digest);
  }

  /** Throws {@link IntegrityError} unless `content` matches the file's digest. */
  async #checkFileDigest(node: TOCNode, content: Uint8Array | Sha256): Promise<void> {
    const got = `sha256:${
      content instanceof Uint8Array ? await sha256HexBulk(content) : content.digestHex()
    }`;
    if (got !== node.digest) {
      throw new IntegrityError(
        `${this.#pathOf(node)}: file digest mismatch (expected ${node.digest}, got ${got})`,
      );
    }
  }

  /**
   * After the file's digest held over its chunks' bytes, gives each chunk the digest of its
   * bytes (`digests`, in file order), so every later fetch of it is checked on its own.
   */
  #deriveChunkDigests(node: TOCNode, digests: string[]): void {
    chunksOf(node).forEach((c, k) => {
      c.digest ??= digests[k];
    });
  }

  /**
   * Checks a file whose only digest is its whole-content one: reads all its chunks (a few MiB
   * at a time), hashes them, and on success derives per-chunk digests. Once per file; a
   * failure is forgotten, so a later read tries again.
   */
  #verifyFile(node: TOCNode): Promise<void> {
    let p = this.#fileChecks.get(node);
    if (!p) {
      p = (async () => {
        const hash = await newSha256();
        const digests: string[] = [];
        const cs = chunksOf(node);
        for (let i = 0; i < cs.length;) {
          const batch: Owned[] = [];
          for (let bytes = 0; i < cs.length && (batch.length === 0 || bytes < 4 << 20); i++) {
            batch.push({ node, chunk: cs[i] });
            bytes += cs[i].chunkSize;
          }
          for (const d of await this.#chunks(batch, false)) {
            hash.update(d);
            digests.push(`sha256:${await sha256HexBulk(d)}`);
          }
        }
        await this.#checkFileDigest(node, hash);
        this.#deriveChunkDigests(node, digests);
      })();
      this.#fileChecks.set(node, p);
      p.catch(() => this.#fileChecks.delete(node));
    }
    return p;
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
      const pending = this.#inflight.get(chunkKey(chunk));
      if (pending) {
        out[i] = pending;
        continue;
      }
      // The common case on the read path: a memory hit, answered without any bookkeeping.
      const hit = this.#cache.get(this.#cacheKey + chunkKey(chunk), {
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
      const key = chunkKey(chunk);
      this.#inflight.set(key, d.promise);
      d.promise.finally(() => this.#inflight.delete(key)).catch(() => {});
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
      for (const m of this.#withSiblings(misses)) {
        const prev = run[run.length - 1];
        if (
          prev &&
          (!follows(prev.o.chunk, m.o.chunk) ||
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
    let k = this.#chunkIndexAfter(last);
    let prev = last;
    for (; k < all.length; k++) {
      const c = all[k];
      if (!follows(prev, c) || c.end - start > this.#window) break;
      prev = c;
      const key = chunkKey(c);
      if (this.#inflight.has(key)) continue;
      const d = deferred<Uint8Array>();
      this.#inflight.set(key, d.promise);
      d.promise.finally(() => this.#inflight.delete(key)).catch(() => {});
      run.push({ o: owned(c), d });
    }
    const end = prev.end;
    this.#windowEnd = end;
    if (sequential) {
      const next: Owned[] = [];
      for (; k < all.length && all[k].end - end <= this.#window; k++) next.push(owned(all[k]));
      if (next.length > 0) queueMicrotask(() => this.#chunks(next, true).catch(() => {}));
    }
    // A chunk already in flight inside the window breaks contiguity of what we fetch: keep
    // only the leading contiguous part.
    for (let i = 1; i < run.length; i++) {
      if (!follows(run[i - 1].o.chunk, run[i].o.chunk)) {
        for (const r of run.splice(i)) {
          if (this.#inflight.get(chunkKey(r.o.chunk)) === r.d.promise) {
            this.#inflight.delete(chunkKey(r.o.chunk));
          }
          r.d.reject(new Error("not fetched"));
        }
        break;
      }
    }
  }

  /**
   * `misses` with, beside each chunk that shares its member with others (eStargz
   * `innerOffset`), the member's other chunks not already being fetched: the same bytes and one
   * decompression give them all, so they go to the cache now rather than cost a fetch later.
   */
  #withSiblings(
    misses: { o: Owned; d: Deferred<Uint8Array> }[],
  ): { o: Owned; d: Deferred<Uint8Array> }[] {
    const all = this.index.chunks;
    const out: typeof misses = [];
    const expanded = new Set<number>(); // member offsets already placed with all their chunks
    let claimed: Map<Chunk, (typeof misses)[number]> | undefined;
    for (const m of misses) {
      const c = m.o.chunk;
      if (expanded.has(c.offset)) continue;
      let k = this.#chunkIndexAfter(c) - 1; // m's own place
      while (k > 0 && all[k - 1].offset === c.offset) k--;
      const sharedMember = all[k]?.offset === c.offset && k + 1 < all.length &&
        all[k + 1].offset === c.offset;
      if (!sharedMember) {
        out.push(m);
        continue;
      }
      expanded.add(c.offset);
      claimed ??= new Map(misses.map((x) => [x.o.chunk, x]));
      for (; k < all.length && all[k].offset === c.offset; k++) {
        const sibling = all[k];
        const own = claimed.get(sibling);
        if (own) {
          out.push(own);
          continue;
        }
        const key = chunkKey(sibling);
        if (this.#inflight.has(key)) continue;
        const d = deferred<Uint8Array>();
        this.#inflight.set(key, d.promise);
        d.promise.finally(() => this.#inflight.delete(key)).catch(() => {});
        out.push({ o: owned(sibling), d });
      }
    }
    return out;
  }

  /** Index in `index.chunks` of the first chunk after `c` in blob order. */
  #chunkIndexAfter(c: Chunk): number {
    const all = this.index.chunks;
    let lo = 0;
    let hi = all.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const m = all[mid];
      if (m.offset < c.offset || (m.offset === c.offset && m.innerOffset <= c.innerOffset)) {
        lo = mid + 1;
      } else hi = mid;
    }
    return lo;
  }

  /** The chunk from the cache (checked against its size), or undefined. */
  async #cached(c: Chunk): Promise<Uint8Array | undefined> {
    const info = { size: c.chunkSize, digest: c.digest };
    try {
      const hit = await this.#cache.get(this.#cacheKey + chunkKey(c), info);
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
    const keep = this.#keepCompressed(run);
    this.source.read(start, length, undefined, keep && { keep }).then(async (bytes) => {
      this.stats.requests++;
      this.stats.bytesFetched += bytes.length;
      if (background) this.stats.backgroundBytes += bytes.length;
      if (bytes.length !== length) {
        throw new StargzFormatError(`short read at ${start}: ${bytes.length} of ${length} bytes`);
      }
      const failed: typeof run = [];
      // Big fetches (even a single big chunk) decode on other cores; small ones right here, and
      // big ones too while the workers are still starting (waiting for one costs more).
      const pooled = this.#decodePool && length >= POOL_MIN && this.#decodePool.ready(length)
        ? await this.#decodePool.decode(
          bytes,
          run.map(({ o: { chunk: c } }) => ({
            start: c.offset - start,
            end: c.end - start,
            innerOffset: c.innerOffset,
            size: c.chunkSize,
            digest: c.digest,
            codec: this.#codec,
          })),
          this.#verify,
        )
        : undefined;
      const memo: MemberMemo = new Map();
      for (const [k, m] of run.entries()) {
        const c = m.o.chunk;
        try {
          const r = pooled?.[k];
          if (typeof r === "string") throw this.#integrity(m.o.node, c, r);
          const data = r ?? await this.#decode(m.o.node, c, bytes, c.offset - start, memo);
          this.stats.chunksFetched++;
          this.#cache.set(this.#cacheKey + chunkKey(c), data, {
            size: c.chunkSize,
            digest: c.digest,
          });
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
   * The parts of a run's compressed bytes a caching source should keep: the extents of the
   * chunks the chunk cache does not keep itself (undefined, all of them, when it cannot say).
   */
  #keepCompressed(run: { o: Owned }[]): [number, number][] | undefined {
    if (!this.#cache.keeps) return undefined;
    const keep: [number, number][] = [];
    for (const { o: { chunk: c } } of run) {
      const info = { size: c.chunkSize, digest: c.digest };
      if (this.#cache.keeps(this.#cacheKey + chunkKey(c), info)) continue;
      const last = keep[keep.length - 1];
      // Chunks sharing a member have the same extent; others follow each other.
      if (last && c.offset <= last[1]) last[1] = Math.max(last[1], c.end);
      else keep.push([c.offset, c.end]);
    }
    return keep;
  }

  /**
   * Fetches chunks in the background into the cache: the prioritized region before the
   * `.prefetch.landmark` (`landmark`), or the whole blob (`all`), one range request at a time
   * so foreground reads keep most of the bandwidth. Resolves with the bytes fetched; stops
   * early when `signal` aborts.
   */
  async prefetch(mode: "landmark" | "all", signal?: AbortSignal): Promise<number> {
    const limit = mode === "all" ? Infinity : this.index.prefetchLandmark ?? 0;
    const todo = this.index.chunks.filter((c) => c.offset < limit).map(owned);
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

  /**
   * Decodes on this thread the chunk whose member starts at `at` in `bytes`; errors name the
   * file. `memo` shares members decompressed for earlier chunks of the same fetch.
   */
  async #decode(
    node: TOCNode,
    c: Chunk,
    bytes: Uint8Array,
    at: number,
    memo: MemberMemo,
  ): Promise<Uint8Array> {
    const spec = {
      start: at,
      end: at + c.end - c.offset,
      innerOffset: c.innerOffset,
      size: c.chunkSize,
      digest: c.digest,
      codec: this.#codec,
    };
    try {
      return await decodeChunk(bytes, spec, this.#verify, memo);
    } catch (e) {
      throw this.#integrity(node, c, (e as Error).message);
    }
  }

  #integrity(node: TOCNode, c: Chunk, why: string): IntegrityError {
    return new IntegrityError(
      `${
        this.#pathOf(node)
      }: chunk at file offset ${c.chunkOffset} (blob offset ${c.offset}): ${why}`,
    );
  }

  /** A path of `node` for messages. */
  #pathOf(node: TOCNode): string {
    return this.index.pathOf(node) ?? "(a file no longer in the tree)";
  }

  /** Offsets `[0, end)` of the prioritized (prefetch) region, if the blob has a landmark. */
  prefetchRegion(): { start: number; end: number } | undefined {
    const lm = this.index.prefetchLandmark;
    return lm ? { start: 0, end: lm } : undefined;
  }
}

/** The key of a chunk in the cache and among fetches: its member, and its place inside it. */
function chunkKey(c: Chunk): string {
  return c.innerOffset === 0 ? String(c.offset) : `${c.offset}+${c.innerOffset}`;
}

/**
 * True when `next` can be fetched in the same range request right after `prev`: it starts
 * where `prev`'s extent ends, or shares its member (eStargz `innerOffset`).
 */
function follows(prev: Chunk, next: Chunk): boolean {
  return next.offset === prev.end || (next.offset === prev.offset && next.end === prev.end);
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
