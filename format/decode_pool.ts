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
  readonly #warmAfter: number;
  #declined = 0;

  /**
   * Up to `size` workers (default: one per core), started by the first decode and stopped after
   * `idleMs` without one (default 0.5 s: a worker holds 10–20 MB), so an idle mount holds no
   * worker's memory. With `warmAfterBytes`, {@link ready} starts them only once callers have
   * decoded that many bytes themselves: starting workers costs the calling thread tens of
   * milliseconds, more than a few big files (a container start) take to decode in place.
   */
  constructor(
    size = navigator.hardwareConcurrency ?? 1,
    idleMs = 500,
    opts: { warmAfterBytes?: number } = {},
  ) {
    this.size = Math.max(1, size);
    this.#pool = new WorkerPool(new URL("./decode_worker.ts", import.meta.url), this.size, {
      idleMs,
    });
    this.#warmAfter = opts.warmAfterBytes ?? 0;
  }

  /** Workers running now (0 until the first decode and after an idle period). */
  get running(): number {
    return this.#pool.running;
  }

  /** Starts the workers ahead of the first decode; resolves once one is ready. */
  warm(): Promise<void> {
    return this.#pool.warm();
  }

  /**
   * True when a worker is ready to decode `bytes` now. Otherwise false, and the caller decodes
   * them itself rather than wait for a worker to load (tens of milliseconds, more than decoding a
   * few MB takes); the workers start for later decodes (once `warmAfterBytes` were declined).
   */
  ready(bytes: number): boolean {
    if (this.#pool.ready > 0) return true;
    this.#declined += bytes;
    if (this.#declined >= this.#warmAfter && this.#pool.running === 0) {
      this.#declined = 0;
      this.#pool.warm();
    }
    return false;
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
