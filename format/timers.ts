/**
 * Timers built on the web platform's `AbortSignal.timeout` rather than `setTimeout` and
 * `setInterval`. In Deno 2.9 a process's first `setTimeout` or `setInterval` loads Node's
 * timers and the part of the Node compatibility layer under them (5–10 ms with warm caches,
 * about 40 ms from a cold page cache), and crfs set one on the way from `crfs mount` to its
 * first byte (request timeouts, the memory reclaimer, the mount's INIT timeout);
 * `AbortSignal.timeout` loads nothing. Like `setTimeout`, a timer keeps the process alive until
 * it fires or is cancelled (a signal with a listener does); there is no unref'd variant.
 *
 * @module
 */

/** Stops a timer (harmless after it fired or was stopped). */
export type Cancel = () => void;

/** A timer that never fires (for an infinite delay). */
const NEVER: Cancel = () => {};

/**
 * Calls `f` once after `ms` milliseconds, unless cancelled first.
 *
 * @example
 * ```ts
 * const cancel = after(5000, () => controller.abort());
 * try { await work(); } finally { cancel(); }
 * ```
 */
export function after(ms: number, f: () => void): Cancel {
  if (!Number.isFinite(ms)) return NEVER;
  const signal = AbortSignal.timeout(Math.max(0, Math.floor(ms)));
  signal.addEventListener("abort", f, { once: true });
  return () => signal.removeEventListener("abort", f);
}

/** A promise resolving to `"timeout"` after `ms` milliseconds, and the function that stops it. */
export function timeout(ms: number): { promise: Promise<"timeout">; cancel: Cancel } {
  let cancel = NEVER;
  const promise = new Promise<"timeout">((resolve) => {
    cancel = after(ms, () => resolve("timeout"));
  });
  return { promise, cancel };
}
