/**
 * Decompressed chunks on disk: a {@link ChunkCache} in front of the shared in-memory one that
 * keeps every big chunk the reader decoded (and so verified) in the disk cache's `decoded/`
 * directory, so that reading it again — after the kernel dropped its pages, or in a new process
 * — costs one file read and one hash instead of a decompression on the main thread.
 *
 * A file is a 32-byte SHA-256 of the chunk's bytes followed by the bytes, written to a temporary
 * name and renamed (never seen half-written), counted in the disk cache's size budget and
 * evicted with its ranges. Every read checks the bytes again: against the chunk digest of the TOC
 * when it has one, else against the stored hash, and their length against the TOC; a file that
 * fails is removed and the read is a miss (the reader then fetches and decodes the chunk again).
 * Small chunks are not kept (a file per small file made cold walks slower, and decoding them is
 * cheap): they come from the compressed ranges.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { ChunkCache, ChunkInfo } from "../format/reader.ts";
import type { DiskCache } from "./disk_cache.ts";

/** Chunks smaller than this (decompressed) are not kept on disk. */
export const DECODED_MIN_SIZE = 64 << 10;

const HASH_SIZE = 32;
const DIGEST_RE = /^sha256:([0-9a-f]{64})$/;

const sha256 = (b: Uint8Array) => new Uint8Array(createHash("sha256").update(b).digest());

function hexBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

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
    const data = file.subarray(HASH_SIZE);
    const digest = info.digest ? DIGEST_RE.exec(info.digest) : null;
    const expected = digest ? hexBytes(digest[1]) : file.subarray(0, HASH_SIZE);
    if (
      file.length < HASH_SIZE || data.length !== info.size || !sameBytes(sha256(data), expected)
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
    // The reader verified the bytes against the chunk digest before handing them over; without
    // one, the hash is taken now.
    const digest = info.digest ? DIGEST_RE.exec(info.digest) : null;
    const hash = digest ? hexBytes(digest[1]) : sha256(value);
    this.#disk.storeFile(this.pathOf(key), [hash, value]);
    this.stats.stored++;
  }
}
