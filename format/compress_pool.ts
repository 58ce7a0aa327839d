/**
 * A pool of workers compressing gzip members in parallel (one per core by default). Results come
 * back per batch; ordering is the caller's business. Output bytes do not depend on how members
 * are batched or which worker compresses them.
 *
 * @module
 */
import { gzipMember } from "./gzip.ts";

interface Pending {
  resolve: (m: Uint8Array[]) => void;
  reject: (e: Error) => void;
}

/** Compresses gzip members on worker threads. */
export class CompressPool {
  #workers: Worker[] = [];
  #idle: Worker[] = [];
  #queue: { id: number; level: number; members: Uint8Array[] }[] = [];
  #pending = new Map<number, Pending>();
  #nextId = 1;
  readonly size: number;

  /** Starts `size` workers (0 compresses on the calling thread). */
  constructor(size = navigator.hardwareConcurrency ?? 1) {
    this.size = Math.max(0, size);
    for (let i = 0; i < this.size; i++) {
      const w = new Worker(new URL("./compress_worker.ts", import.meta.url).href, {
        type: "module",
      });
      w.onmessage = (e: MessageEvent) => this.#done(w, e.data);
      w.onerror = (e: ErrorEvent) => {
        e.preventDefault();
        for (const p of this.#pending.values()) {
          p.reject(new Error(`compression worker: ${e.message}`));
        }
        this.#pending.clear();
      };
      this.#workers.push(w);
      this.#idle.push(w);
    }
  }

  /**
   * Compresses each member (its plaintext bytes, which are transferred: do not reuse them)
   * into one gzip member.
   */
  compress(members: Uint8Array[], level: number): Promise<Uint8Array[]> {
    if (this.size === 0) return Promise.resolve(members.map((m) => gzipMember([m], level)));
    const id = this.#nextId++;
    const p = new Promise<Uint8Array[]>((resolve, reject) =>
      this.#pending.set(id, { resolve, reject })
    );
    this.#queue.push({ id, level, members });
    this.#pump();
    return p;
  }

  #pump(): void {
    while (this.#idle.length > 0 && this.#queue.length > 0) {
      const w = this.#idle.pop()!;
      const job = this.#queue.shift()!;
      w.postMessage(job, job.members.map((m) => m.buffer as ArrayBuffer));
    }
  }

  #done(w: Worker, msg: { id: number; members?: Uint8Array[]; error?: string }): void {
    this.#idle.push(w);
    const p = this.#pending.get(msg.id);
    this.#pending.delete(msg.id);
    if (p) {
      if (msg.error !== undefined) p.reject(new Error(`compression failed: ${msg.error}`));
      else p.resolve(msg.members!);
    }
    this.#pump();
  }

  /** Stops the workers. */
  close(): void {
    for (const w of this.#workers) w.terminate();
    this.#workers = [];
    this.#idle = [];
  }
}
