/**
 * Decompressed chunks on disk: a {@link ChunkCache} in front of the shared in-memory one that
 * keeps every big chunk the reader decoded (and so verified) in the disk cache's `decoded/`
 * directory, so that reading it again — after the kernel dropped its pages, or in a new process
 * — costs one file read and one hash instead of a decompression on the main thread.
 *
 * Only bytes the reader has checked are stored (a chunk is `set` after its decompression passed
 * the gzip CRC and, under the default policy, the chunk digest of the TOC). A file is an 8-byte
 * header — a magic number and a CRC-32 of the cache key followed by the bytes — and the bytes,
 * written to a temporary name and renamed (never seen half-written), counted in the disk cache's
 * size budget and evicted with its ranges. Every read checks the file again: its length against
 * the TOC's chunk size and the CRC (which also ties the file to its key, so a file moved to
 * another chunk's name fails); a file that fails is removed and the read is a miss (the reader
 * then fetches and decodes the chunk again). The CRC guards against damage on disk (bit rot,
 * truncation, a partial copy) as the gzip CRCs guard the compressed ranges; it runs at memory
 * speed, where re-hashing with SHA-256 held re-reads to the hash's 300–900 MB/s on this machine.
 * Small chunks are not kept (a file per small file made cold walks slower, and decoding them is
 * cheap): they come from the compressed ranges.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { crc32 } from "../format/gzip.ts";
import type { ChunkCache, ChunkInfo } from "../format/reader.ts";
import type { DiskCache } from "./disk_cache.ts";

/** Chunks smaller than this (decompressed) are not kept on disk. */
export const DECODED_MIN_SIZE = 64 << 10;

/** Header: magic (4 bytes), CRC-32 of key and bytes (4 bytes, little-endian). */
const HEADER_SIZE = 8;
const MAGIC = 0x31636463; // "cdc1"
const encoder = new TextEncoder();

/** The CRC-32 of `key` followed by `data`. */
const checksum = (key: string, data: Uint8Array) => crc32(data, crc32(encoder.encode(key)));

/** Counters of a {@link DecodedChunkCache}. */
export interface DecodedCacheStats {
  /** Chunks served from `decoded/` files. */
  hits: number;
  /** Chunks written. */
  stored: number;
  /** Files removed because their bytes failed the check. */
  corrupt: number;
}

/** See the module documentation. */
export class DecodedChunkCache implements ChunkCache {
  readonly #disk: DiskCache;
  readonly #memory: ChunkCache;
  readonly #minSize: number;
  readonly #reading = new Map<string, Promise<Uint8Array | undefined>>();
  /** Counters. */
  readonly stats: DecodedCacheStats = { hits: 0, stored: 0, corrupt: 0 };

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
    const hex = createHash("sha256").update(key).digest("hex");
    return `${this.#disk.dir}/decoded/${hex.slice(0, 2)}/${hex}`;
  }

  get(key: string, info: ChunkInfo): Uint8Array | undefined | Promise<Uint8Array | undefined> {
    const hit = this.#memory.get(key, info);
    if (hit instanceof Uint8Array && hit.length === info.size) return hit;
    if (info.size < this.#minSize) return hit;
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
    const file = await this.#disk.readFile(path);
    if (!file) return undefined;
    const data = file.subarray(HEADER_SIZE);
    const head = new DataView(file.buffer, file.byteOffset, Math.min(file.length, HEADER_SIZE));
    if (
      file.length < HEADER_SIZE || data.length !== info.size ||
      head.getUint32(0, true) !== MAGIC || head.getUint32(4, true) !== checksum(key, data)
    ) {
      this.stats.corrupt++;
      await this.#disk.dropFile(path);
      return undefined;
    }
    this.stats.hits++;
    this.#memory.set(key, data, info);
    return data;
  }

  set(key: string, value: Uint8Array, info: ChunkInfo): void {
    this.#memory.set(key, value, info);
    if (value.length < this.#minSize || value.length !== info.size) return;
    const header = new Uint8Array(HEADER_SIZE);
    const dv = new DataView(header.buffer);
    dv.setUint32(0, MAGIC, true);
    dv.setUint32(4, checksum(key, value), true);
    this.#disk.storeFile(this.pathOf(key), [header, value]);
    this.stats.stored++;
  }
}
