/**
 * A small pool of module workers running one kind of job: jobs queue until a worker is idle,
 * each job's transferable buffers move to the worker and back, and a job's promise settles with
 * its worker's answer. Used for compressing (writer) and decompressing (reader) gzip members off
 * the main thread. Workers start at the first job (not when the pool is made: starting one costs
 * tens of milliseconds and memory), and with `idleMs` all of them stop once the pool has been idle
 * that long; the next job starts them again. A worker says when it has loaded its module
 * ({@link WorkerPool.ready}), so that a caller in a hurry can do a job itself rather than wait for
 * a worker still starting.
 *
 * @module
 */

interface Pending<R> {
  resolve: (r: R) => void;
  reject: (e: Error) => void;
}

interface Envelope {
  id: number;
  result?: unknown;
  error?: string;
  /** Sent once by a worker whose module has loaded (no job). */
  ready?: true;
}

/** Options of a {@link WorkerPool}. */
export interface WorkerPoolOptions {
  /** Stop every worker after this many milliseconds without a job (default: keep them). */
  idleMs?: number;
  /** Called whenever the workers are stopped (idle, or {@link WorkerPool.close}). */
  onClose?: () => void;
}

/** Workers from `url` answering `{ id, job }` messages with `{ id, result }` or `{ id, error }`. */
export class WorkerPool<J, R> {
  readonly size: number;
  readonly #url: URL;
  readonly #idleMs?: number;
  readonly #onClose?: () => void;
  #workers: Worker[] = [];
  #idle: Worker[] = [];
  #queue: { id: number; job: J; transfer: Transferable[] }[] = [];
  #pending = new Map<number, Pending<R>>();
  #nextId = 1;
  #idleTimer?: number;
  #ready = new Set<Worker>();
  #waiters: (() => void)[] = [];

  /** A pool of up to `size` workers running the module at `url`, started on demand. */
  constructor(url: URL, size: number, opts: WorkerPoolOptions = {}) {
    this.size = Math.max(0, size);
    this.#url = url;
    this.#idleMs = opts.idleMs;
    this.#onClose = opts.onClose;
  }

  /** Workers running now. */
  get running(): number {
    return this.#workers.length;
  }

  /** Workers that have loaded their module and take jobs without delay. */
  get ready(): number {
    return this.#ready.size;
  }

  /**
   * Starts the workers not running yet (without a job); resolves once one of them is ready.
   * They stop again after `idleMs` without a job.
   */
  warm(): Promise<void> {
    while (this.#workers.length < this.size) this.#spawn();
    this.#armIdle();
    if (this.#ready.size > 0 || this.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  #spawn(): void {
    const w = new Worker(this.#url.href, { type: "module" });
    w.onmessage = (e: MessageEvent<Envelope>) => {
      if (e.data.ready) {
        if (!this.#workers.includes(w)) return;
        this.#ready.add(w);
        for (const f of this.#waiters.splice(0)) f();
      } else this.#done(w, e.data);
    };
    w.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      for (const p of this.#pending.values()) p.reject(new Error(`worker: ${e.message}`));
      this.#pending.clear();
    };
    this.#workers.push(w);
    this.#idle.push(w);
  }

  /** Runs `job` on a worker; `transfer` lists buffers handed over (do not use them after). */
  run(job: J, transfer: Transferable[] = []): Promise<R> {
    const id = this.#nextId++;
    const p = new Promise<R>((resolve, reject) => this.#pending.set(id, { resolve, reject }));
    this.#queue.push({ id, job, transfer });
    if (this.#idleTimer !== undefined) {
      clearTimeout(this.#idleTimer);
      this.#idleTimer = undefined;
    }
    if (this.#idle.length === 0 && this.#workers.length < this.size) this.#spawn();
    this.#pump();
    return p;
  }

  #pump(): void {
    while (this.#idle.length > 0 && this.#queue.length > 0) {
      const w = this.#idle.pop()!;
      const { id, job, transfer } = this.#queue.shift()!;
      w.postMessage({ id, job }, transfer);
    }
  }

  #done(w: Worker, msg: Envelope): void {
    this.#idle.push(w);
    const p = this.#pending.get(msg.id);
    this.#pending.delete(msg.id);
    if (p) {
      if (msg.error !== undefined) p.reject(new Error(msg.error));
      else p.resolve(msg.result as R);
    }
    this.#pump();
    this.#armIdle();
  }

  /** With `idleMs`, and nothing to do: stop every worker after that long. */
  #armIdle(): void {
    if (this.#idleMs !== undefined && this.#pending.size === 0 && this.#queue.length === 0) {
      if (this.#idleTimer !== undefined) clearTimeout(this.#idleTimer);
      const timer = setTimeout(() => {
        this.#idleTimer = undefined;
        if (this.#pending.size === 0 && this.#queue.length === 0) this.close();
      }, this.#idleMs) as unknown as number;
      Deno.unrefTimer(timer);
      this.#idleTimer = timer;
    }
  }

  /** Stops the workers (a later job starts them again). */
  close(): void {
    if (this.#idleTimer !== undefined) clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    for (const w of this.#workers) w.terminate();
    this.#workers = [];
    this.#idle = [];
    this.#ready.clear();
    for (const f of this.#waiters.splice(0)) f();
    this.#onClose?.();
  }
}

/** The worker side: answers each `{ id, job }` with `handle(job)` and its transfer list. */
export function serveJobs<J, R>(
  handle: (
    job: J,
  ) => Promise<{ result: R; transfer?: Transferable[] }> | { result: R; transfer?: Transferable[] },
): void {
  const scope = self as unknown as {
    onmessage: ((e: MessageEvent<{ id: number; job: J }>) => void) | null;
    postMessage(msg: unknown, transfer?: Transferable[]): void;
  };
  scope.onmessage = async (e) => {
    const { id, job } = e.data;
    try {
      const { result, transfer } = await handle(job);
      scope.postMessage({ id, result }, transfer ?? []);
    } catch (err) {
      scope.postMessage({ id, error: err instanceof Error ? err.message : String(err) });
    }
  };
  scope.postMessage({ id: 0, ready: true });
}
