/**
 * A pool of workers decompressing and checking fetched chunks, so that a reader's big fetches
 * (read-ahead, fetch windows, prefetch) decode on other cores while the main thread keeps
 * answering the filesystem.
 *
 * @module
 */
import type { ChunkSpec } from "./chunk_decode.ts";
import { WorkerPool } from "./worker_pool.ts";

/** What a worker is given: the fetched bytes (a view of a buffer of the pool's) and the chunks. */
export interface DecodeJob {
  bytes: Uint8Array;
  chunks: ChunkSpec[];
  verify: boolean;
}

/** What a worker answers: per chunk its bytes or why it failed, and the job's buffer back. */
export interface DecodeAnswer {
  chunks: (Uint8Array | string)[];
  /** The buffer `bytes` were in, handed back for the next job (unless a chunk's bytes use it). */
  input?: ArrayBuffer;
}

/** Input buffers are made in steps of this many bytes, so that one serves fetches of near sizes. */
const INPUT_STEP = 256 << 10;

/** Decodes chunks of fetched ranges on worker threads. */
export class DecodePool {
  readonly #pool: WorkerPool<DecodeJob, DecodeAnswer>;
  readonly size: number;
  readonly #warmAfter: number;
  #declined = 0;
  /**
   * Input buffers the workers handed back, reused for the next jobs' copies (a fresh buffer per
   * fetch cost page faults and garbage); one per worker and one more at most, dropped when the
   * workers stop.
   */
  #spare: ArrayBuffer[] = [];
  #made = 0;

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
      onClose: () => this.#spare = [],
    });
    this.#warmAfter = opts.warmAfterBytes ?? 0;
  }

  /** Input buffers made so far, and those kept for reuse now (for tests and statistics). */
  get inputBuffers(): { made: number; spare: number } {
    return { made: this.#made, spare: this.#spare.length };
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
   * Decodes `chunks` of `bytes` (copied to the workers, in buffers they hand back); per chunk,
   * its bytes or the message of why it failed. Several chunks are shared out among the workers
   * (chunks of one member stay together), each given only its part of `bytes`.
   */
  async decode(
    bytes: Uint8Array,
    chunks: ChunkSpec[],
    verify: boolean,
  ): Promise<(Uint8Array | string)[]> {
    const parts = await Promise.all(
      shares(chunks, this.size).map(([from, to]) =>
        this.#decodePart(bytes, chunks.slice(from, to), verify)
      ),
    );
    return parts.flat();
  }

  /** Decodes `chunks` (in order) of `bytes` on one worker. */
  async #decodePart(
    bytes: Uint8Array,
    chunks: ChunkSpec[],
    verify: boolean,
  ): Promise<(Uint8Array | string)[]> {
    let from = Infinity;
    let to = 0;
    for (const c of chunks) {
      from = Math.min(from, c.start);
      to = Math.max(to, c.end);
    }
    const part = bytes.subarray(from, to);
    const input = this.#inputBuffer(part.length);
    const copy = new Uint8Array(input, 0, part.length);
    copy.set(part);
    const job = chunks.map((c) => ({ ...c, start: c.start - from, end: c.end - from }));
    const answer = await this.#pool.run({ bytes: copy, chunks: job, verify }, [input]);
    if (answer.input && this.#pool.running > 0) {
      this.#spare.push(answer.input);
      if (this.#spare.length > this.size + 1) this.#spare.shift();
    }
    return answer.chunks;
  }

  /** A spare buffer for `n` bytes (not much bigger), or a new one. */
  #inputBuffer(n: number): ArrayBuffer {
    let best = -1;
    for (let i = 0; i < this.#spare.length; i++) {
      const size = this.#spare[i].byteLength;
      if (
        size >= n && size <= 2 * n + INPUT_STEP && (best < 0 || size < this.#spare[best].byteLength)
      ) {
        best = i;
      }
    }
    if (best >= 0) return this.#spare.splice(best, 1)[0];
    this.#made++;
    return new ArrayBuffer(Math.max(INPUT_STEP, Math.ceil(n / INPUT_STEP) * INPUT_STEP));
  }

  /** Stops the workers. */
  close(): void {
    this.#pool.close();
  }
}

/**
 * `chunks` cut into at most `n` runs (`[from, to)` indexes) of about equal compressed bytes;
 * chunks of one member (the same `start`) are never cut apart.
 */
function shares(chunks: ChunkSpec[], n: number): [number, number][] {
  let total = 0;
  for (const c of chunks) total += c.end - c.start;
  const out: [number, number][] = [];
  let from = 0;
  let bytes = 0;
  for (let i = 0; i < chunks.length; i++) {
    bytes += chunks[i].end - chunks[i].start;
    const last = i + 1 === chunks.length;
    const cut = !last && out.length + 1 < n && bytes >= total / n &&
      chunks[i + 1].start !== chunks[i].start;
    if (cut || last) {
      out.push([from, i + 1]);
      from = i + 1;
      bytes = 0;
    }
  }
  return out;
}
