/**
 * A pool of workers decompressing and checking fetched chunks, so that a reader's big fetches
 * (read-ahead, fetch windows, prefetch) decode on other cores while the main thread keeps
 * answering the filesystem.
 *
 * @module
 */
import type { ChunkSpec } from "./chunk_decode.ts";
import { WorkerPool } from "./worker_pool.ts";

/** Decodes chunks of fetched ranges on worker threads. */
export class DecodePool {
  readonly #pool: WorkerPool<
    { bytes: Uint8Array; chunks: ChunkSpec[]; verify: boolean },
    (Uint8Array | string)[]
  >;
  readonly size: number;

  /**
   * Up to `size` workers (default: one per core), started by the first decode and stopped after
   * `idleMs` without one (default 0.5 s: a worker holds 10–20 MB), so an idle mount holds no
   * worker's memory.
   */
  constructor(size = navigator.hardwareConcurrency ?? 1, idleMs = 500) {
    this.size = Math.max(1, size);
    this.#pool = new WorkerPool(new URL("./decode_worker.ts", import.meta.url), this.size, {
      idleMs,
    });
  }

  /** Workers running now (0 until the first decode and after an idle period). */
  get running(): number {
    return this.#pool.running;
  }

  /**
   * Decodes `chunks` of `bytes` (copied to the worker); per chunk, its bytes or the message of
   * why it failed.
   */
  decode(
    bytes: Uint8Array,
    chunks: ChunkSpec[],
    verify: boolean,
  ): Promise<(Uint8Array | string)[]> {
    const copy = bytes.slice();
    return this.#pool.run({ bytes: copy, chunks, verify }, [copy.buffer]);
  }

  /** Stops the workers. */
  close(): void {
    this.#pool.close();
  }
}
