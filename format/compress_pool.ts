/**
 * A pool of workers compressing gzip members (or zstd frames) in parallel (one per core by
 * default). Results come back per batch; ordering is the caller's business. Output bytes do not
 * depend on how members are batched or which worker compresses them.
 *
 * @module
 */
import type { ChunkCodec } from "./chunk_decode.ts";
import { gzipMember } from "./gzip.ts";
import { WorkerPool } from "./worker_pool.ts";
import { zstdCompress } from "./zstd.ts";

/** Compresses gzip members on worker threads. */
export class CompressPool {
  readonly #pool: WorkerPool<
    { level: number; members: Uint8Array[]; codec?: ChunkCodec },
    Uint8Array[]
  >;
  readonly size: number;

  /** Starts `size` workers (0 compresses on the calling thread). */
  constructor(size = navigator.hardwareConcurrency ?? 1) {
    this.size = Math.max(0, size);
    this.#pool = new WorkerPool(new URL("./compress_worker.ts", import.meta.url), this.size);
  }

  /**
   * Compresses each member (its plaintext bytes, which are transferred: do not reuse them)
   * into one gzip member, or with `codec` `zstd` into one zstd frame.
   */
  compress(
    members: Uint8Array[],
    level: number,
    codec: ChunkCodec = "gzip",
  ): Promise<Uint8Array[]> {
    if (this.size === 0) {
      const one = codec === "zstd"
        ? (m: Uint8Array) => zstdCompress(m, level)
        : (m: Uint8Array) => gzipMember([m], level);
      return Promise.resolve(members.map(one));
    }
    return this.#pool.run({ level, members, codec }, members.map((m) => m.buffer as ArrayBuffer));
  }

  /** Stops the workers. */
  close(): void {
    this.#pool.close();
  }
}
