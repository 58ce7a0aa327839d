/**
 * Decompressed chunks on disk: a {@link ChunkCache} in front of the shared in-memory one that
 * keeps every big chunk the reader decoded (and so verified) in the disk cache's `decoded/`
 * directory, so that reading it again — after the kernel dropped its pages, or in a new process
 * — costs a file read and a CRC instead of a decompression on the main thread. A big chunk goes
 * to its file only, not to the memory cache (reads are served from the file, warm in the page
 * cache, see below); the memory cache gets small chunks, big ones read back whole, and every
 * chunk when the disk cache can no longer write.
 *
 * Only bytes the reader has checked are stored (a chunk is `set` after its decompression passed
 * the gzip CRC and, under the default policy, the chunk digest of the TOC). A file (`cdc2`) is a
 * header — a magic number, a CRC-32 of the cache key and the block CRCs, and a CRC-32 of every
 * 64 KiB block of the bytes — then the bytes, written to a temporary name and renamed (never seen
 * half-written), counted in the disk cache's size budget and evicted with its ranges. Every read
 * checks what it reads: the header's CRC (which also ties the file to its key, so a file moved to
 * another chunk's name fails) and the CRC of every block read; a whole-chunk read also checks the
 * length against the TOC's chunk size. A file that fails is removed and the read is a miss (the
 * reader then fetches and decodes the chunk again). The CRCs guard against damage on disk (bit
 * rot, truncation, a partial copy) as the gzip CRCs guard the compressed ranges; they run at
 * memory speed, where re-hashing with SHA-256 held re-reads to the hash's 300–900 MB/s here.
 * Files of the earlier `cdc1` layout (one CRC of key and bytes) are still read whole.
 *
 * {@link DecodedChunkCache.readRange} serves part of a chunk (a FUSE read) straight from its file
 * into the caller's buffer with `pread`, reading only the blocks it covers: a big file re-read
 * from the disk cache then streams through a few small buffers instead of a 4 MiB buffer per chunk
 * (which piled up as garbage faster than V8 collected it: hundreds of MB resident). The files of
 * such reads stay open (a few, least recently used closed) and the kernel is asked to read each
 * one ahead whole when it is opened. While a chunk's file is being written, its reads are served
 * from the bytes the write holds (a cold sequential read catches up with its read-ahead): no wait
 * for the write and no read back; once written, the bytes are let go.
 *
 * Small chunks are not kept (a file per small file made cold walks slower, and decoding them is
 * cheap): they come from the compressed ranges. Big ones are not kept compressed as well
 * ({@link DecodedChunkCache.keeps} tells the reader, which tells the disk cache which parts of
 * a fetch to keep as ranges): a decoded file that fails its checks or is evicted is fetched again.
 *
 * @module
 */
import { crc32 } from "../format/crc32.ts";
import { sha256HexSync } from "../format/sha256.ts";
import type { ChunkCache, ChunkInfo } from "../format/reader.ts";
import type { DiskCache } from "./disk_cache.ts";
import { LruMap } from "./lru_map.ts";
import { PreadFile } from "./positional_read.ts";

/** Chunks smaller than this (decompressed) are not kept on disk. */
export const DECODED_MIN_SIZE = 64 << 10;

/** The bytes each block CRC covers. */
const BLOCK = 64 << 10;
/** `cdc2` header: magic, CRC-32 of key and block CRCs, then one CRC-32 per block (little-endian). */
const MAGIC = 0x32636463; // "cdc2"
/** `cdc1` (earlier layout): magic, then a CRC-32 of key and bytes; 8 bytes. */
const MAGIC_V1 = 0x31636463; // "cdc1"
const V1_HEADER_SIZE = 8;
/** Files kept open for {@link DecodedChunkCache.readRange}, in all. */
const OPEN_FILES = 16;
const encoder = new TextEncoder();

/** Blocks of a chunk of `size` bytes. */
const blockCount = (size: number) => Math.ceil(size / BLOCK);
/** The header's size for a chunk of `size` bytes. */
export const decodedHeaderSize = (size: number): number => 8 + 4 * blockCount(size);

/** The CRC-32 of `key` followed by `data`. */
const checksum = (key: string, data: Uint8Array) => crc32(data, crc32(encoder.encode(key)));

/** Chunk files open for range reads, shared by every cache (by path). */
const openFiles = new LruMap<string, OpenChunkFile>(OPEN_FILES, (_, f) => {
  f.evicted = true;
  if (f.users === 0) f.file.close();
});

/** A chunk file open for range reads: its descriptor and block CRCs (header checked). */
interface OpenChunkFile {
  file: PreadFile;
  /** Block CRCs, from the checked header. */
  crcs: Uint32Array;
  headerSize: number;
  /** Reads under way; the descriptor is closed only when none is (it could be reused). */
  users: number;
  evicted: boolean;
}

/** Counters of a {@link DecodedChunkCache}. */
export interface DecodedCacheStats {
  /** Chunks served from `decoded/` files. */
  hits: number;
  /** Chunks written. */
  stored: number;
  /** Files removed because their bytes failed the check. */
  corrupt: number;
  /** Parts of chunks served from `decoded/` files by {@link DecodedChunkCache.readRange}. */
  rangeHits: number;
}

/** See the module documentation. */
export class DecodedChunkCache implements ChunkCache {
  readonly #disk: DiskCache;
  readonly #memory: ChunkCache;
  readonly #minSize: number;
  readonly #reading = new Map<string, Promise<Uint8Array | undefined>>();
  /** Counters. */
  readonly stats: DecodedCacheStats = { hits: 0, stored: 0, corrupt: 0, rangeHits: 0 };
  readonly #open = openFiles;
  /** Recent keys' file paths (a path is a hash of the key: reads of one chunk ask again). */
  readonly #paths = new LruMap<string, string>(1024);
  readonly #opening = new Map<string, Promise<OpenChunkFile | undefined>>();
  /**
   * Chunks being written to their files, by path: the bytes the write holds until it is done,
   * which serve reads of the chunk meanwhile (no wait for the write, no read back from disk).
   */
  readonly #unwritten = new Map<string, Uint8Array>();

  /**
   * Keeps big chunks under `disk`'s directory, in front of `memory` (which answers first and
   * receives what is read from disk). `minSize` (default {@link DECODED_MIN_SIZE}) is the
   * smallest chunk kept.
   *
   * @example
   * ```ts
   * const disk = await DiskCache.open("/var/cache/crfs");
   * const cache = new DecodedChunkCache(disk, new MemoryChunkCache(32 << 20));
   * const reader = await StargzReader.open(disk.caching(digest, source), { cache, cacheKey: digest + ":" });
   * ```
   */
  constructor(disk: DiskCache, memory: ChunkCache, minSize = DECODED_MIN_SIZE) {
    this.#disk = disk;
    this.#memory = memory;
    this.#minSize = minSize;
  }

  /** The file that holds the chunk with cache key `key`. */
  pathOf(key: string): string {
    let path = this.#paths.get(key);
    if (path === undefined) {
      const hex = sha256HexSync(encoder.encode(key));
      path = `${this.#disk.dir}/decoded/${hex.slice(0, 2)}/${hex}`;
      this.#paths.set(key, path);
    }
    return path;
  }

  get(key: string, info: ChunkInfo): Uint8Array | undefined | Promise<Uint8Array | undefined> {
    const hit = this.#memory.get(key, info);
    if (hit instanceof Uint8Array && hit.length === info.size) return hit;
    if (info.size < this.#minSize) return hit;
    const unwritten = this.#unwritten.get(this.pathOf(key));
    if (unwritten) return unwritten;
    let p = this.#reading.get(key);
    if (!p) {
      p = this.#read(key, info);
      this.#reading.set(key, p);
      p.finally(() => this.#reading.delete(key)).catch(() => {});
    }
    return p;
  }

  async #read(key: string, info: ChunkInfo): Promise<Uint8Array | undefined> {
    const path = this.pathOf(key);
    await this.#disk.writing(path); // written moments ago: wait rather than decode it again
    const headerSize = decodedHeaderSize(info.size);
    const file = await this.#disk.readFile(path, headerSize + info.size);
    if (!file) return undefined;
    const data = this.#check(key, info, file, headerSize);
    if (!data) {
      return await this.#dropCorrupt(path);
    }
    this.stats.hits++;
    this.#memory.set(key, data, info);
    return data;
  }

  /** The chunk's bytes in `file` when every check holds (either layout), else undefined. */
  #check(key: string, info: ChunkInfo, file: Uint8Array, headerSize: number) {
    if (file.length < V1_HEADER_SIZE) return undefined;
    const dv = new DataView(file.buffer, file.byteOffset, file.length);
    const magic = dv.getUint32(0, true);
    if (magic === MAGIC_V1) {
      const data = file.subarray(V1_HEADER_SIZE);
      const ok = data.length === info.size && dv.getUint32(4, true) === checksum(key, data);
      return ok ? data : undefined;
    }
    if (magic !== MAGIC || file.length !== headerSize + info.size) return undefined;
    const crcs = file.subarray(8, headerSize);
    if (dv.getUint32(4, true) !== checksum(key, crcs)) return undefined;
    const data = file.subarray(headerSize);
    for (let b = 0, o = 0; o < data.length; b++, o += BLOCK) {
      const want = dv.getUint32(8 + 4 * b, true);
      if (crc32(data.subarray(o, Math.min(o + BLOCK, data.length))) !== want) return undefined;
    }
    return data;
  }

  set(key: string, value: Uint8Array, info: ChunkInfo): void {
    if (value.length < this.#minSize || value.length !== info.size || !this.#disk.writable) {
      this.#memory.set(key, value, info);
      return;
    }
    // A big chunk goes to its file only: reads of it are served from there (the page cache
    // keeps it warm), so it holds no memory once written.
    const header = new Uint8Array(decodedHeaderSize(value.length));
    const dv = new DataView(header.buffer);
    dv.setUint32(0, MAGIC, true);
    for (let b = 0, o = 0; o < value.length; b++, o += BLOCK) {
      dv.setUint32(8 + 4 * b, crc32(value.subarray(o, Math.min(o + BLOCK, value.length))), true);
    }
    dv.setUint32(4, checksum(key, header.subarray(8)), true);
    const path = this.pathOf(key);
    this.#disk.storeFile(path, [header, value]);
    this.stats.stored++;
    const written = this.#disk.writing(path);
    if (written && !this.#unwritten.has(path)) {
      this.#unwritten.set(path, value);
      written.finally(() => this.#unwritten.delete(path)).catch(() => {});
    }
  }

  /**
   * Bytes `[offset, offset + length)` of the chunk (clipped to its size): from the memory cache,
   * or read from its decoded file into `into` (when given, at least `length` bytes, and the read
   * starts and ends on block boundaries; otherwise into a buffer of the blocks read) with every
   * block read checked. Undefined when the chunk is neither in memory nor in a `cdc2` file known
   * to the disk cache, or fails a check (the file is then removed): the caller reads it the usual
   * way.
   */
  readRange(
    key: string,
    info: ChunkInfo,
    offset: number,
    length: number,
    into?: Uint8Array<ArrayBuffer>,
  ): Uint8Array | undefined | Promise<Uint8Array | undefined> {
    const end = Math.min(info.size, offset + length);
    const hit = this.#memory.get(key, info);
    if (hit instanceof Uint8Array && hit.length === info.size) return hit.subarray(offset, end);
    if (info.size < this.#minSize || offset >= end) return undefined;
    const path = this.pathOf(key);
    const unwritten = this.#unwritten.get(path);
    if (unwritten) return unwritten.subarray(offset, end);
    if (this.#disk.hasFile(path)) return this.#readRange(key, info, path, offset, end, into);
    // Decoded moments ago and still being written (a re-read right after a fast first read):
    // wait for the file rather than fetch and decode the chunk again.
    return this.#disk.writing(path)?.then((ok) =>
      ok ? this.#readRange(key, info, path, offset, end, into) : undefined
    );
  }

  async #readRange(
    key: string,
    info: ChunkInfo,
    path: string,
    offset: number,
    end: number,
    into?: Uint8Array<ArrayBuffer>,
  ): Promise<Uint8Array | undefined> {
    const f = this.#open.get(path) ?? await this.#openFile(key, info, path);
    if (!f) return undefined;
    const from = Math.floor(offset / BLOCK) * BLOCK;
    const to = Math.min(info.size, Math.ceil(end / BLOCK) * BLOCK);
    const direct = into && from === offset && to === end && into.length >= to - from;
    const buf = direct ? into.subarray(0, to - from) : new Uint8Array(to - from);
    if (f.file.closed) return undefined; // closed since it was opened: read the usual way
    f.users++;
    let n: number;
    try {
      n = await f.file.read(buf, f.headerSize + from);
    } catch {
      return undefined; // an I/O error is no proof of damage: read the usual way
    } finally {
      f.users--;
      if (f.evicted && f.users === 0) f.file.close();
    }
    let ok = n === buf.length;
    for (let b = from / BLOCK, o = 0; ok && o < buf.length; b++, o += BLOCK) {
      ok = crc32(buf.subarray(o, Math.min(o + BLOCK, buf.length))) === f.crcs[b];
    }
    if (!ok) {
      return await this.#dropCorrupt(path);
    }
    this.stats.rangeHits++;
    this.#disk.touchFile(path);
    return buf.subarray(offset - from, end - from);
  }

  /** Opens a chunk file for range reads and checks its header; undefined if it cannot be. */
  #openFile(key: string, info: ChunkInfo, path: string): Promise<OpenChunkFile | undefined> {
    let p = this.#opening.get(path);
    if (!p) {
      p = (async () => {
        const file = PreadFile.open(path);
        if (!file) return undefined;
        const headerSize = decodedHeaderSize(info.size);
        const header = new Uint8Array(headerSize);
        let n = -1;
        try {
          n = await file.read(header, 0);
        } catch { /* a miss */ }
        const dv = new DataView(header.buffer);
        const crcs = header.subarray(8);
        if (
          n !== headerSize || dv.getUint32(0, true) !== MAGIC ||
          dv.getUint32(4, true) !== checksum(key, crcs)
        ) {
          // Another layout, or damage: the whole-chunk read decides (and removes damage).
          file.close();
          return undefined;
        }
        file.willNeed();
        const open: OpenChunkFile = {
          file,
          crcs: Uint32Array.from(
            { length: crcs.length / 4 },
            (_, i) => dv.getUint32(8 + 4 * i, true),
          ),
          headerSize,
          users: 0,
          evicted: false,
        };
        this.#open.set(path, open);
        return open;
      })();
      this.#opening.set(path, p);
      p.finally(() => this.#opening.delete(path)).catch(() => {});
    }
    return p;
  }

  /** Stops range reads from the file at `path` (closed once its reads settle). */
  /** A decoded file whose checks failed: counted, closed and removed (the chunk is fetched again). */
  async #dropCorrupt(path: string): Promise<undefined> {
    this.stats.corrupt++;
    this.#close(path);
    await this.#disk.dropFile(path);
    return undefined;
  }

  #close(path: string): void {
    const f = this.#open.peek(path);
    if (!f) return;
    this.#open.delete(path);
    f.evicted = true;
    if (f.users === 0) f.file.close();
  }

  /**
   * True when {@link set} writes the chunk to a decoded file (big enough, and the disk cache
   * still writes): its compressed bytes need not be kept as well.
   */
  keeps(_key: string, info: ChunkInfo): boolean {
    return info.size >= this.#minSize && this.#disk.writable;
  }

  /**
   * True when the chunk is in a decoded file (or being written to one), so reading it ahead into
   * memory gains nothing: instead its file is opened for range reads now, which asks the kernel to read it ahead (a
   * sequential read then finds the next chunk's pages in memory when it gets there).
   */
  holds(key: string, info: ChunkInfo): boolean {
    if (info.size < this.#minSize) return false;
    const path = this.pathOf(key);
    if (this.#disk.writing(path)) return true;
    if (!this.#disk.hasFile(path)) return false;
    if (!this.#open.has(path)) this.#openFile(key, info, path).catch(() => {});
    return true;
  }
}
