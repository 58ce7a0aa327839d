/**
 * Giving memory back while crfs serves, within one budget. Chunk bytes stream through the process
 * (a 4 MiB buffer per chunk read, fetched or decoded), and V8 collects such buffers only once
 * about 64 MiB of them have piled up, while glibc keeps freed memory for reuse: a mount that has
 * read a big file sat at several times the memory it uses, long after.
 *
 * The budget (`--memory-budget`, {@link DEFAULT_MEMORY_BUDGET}) is the resident memory a serving
 * process aims to stay under. Every `intervalMs`:
 *
 * - while chunks stream (external memory moved by 1 MiB since the last check) and the process
 *   is over budget, `malloc_trim(0)` gives the pages of freed buffers back, at most twice a
 *   second (a trim costs no collection; the pages fault in again when reused), and when
 *   `3 × slackBytes` of buffers piled up since the last collection (a fast cold read), a
 *   collection runs, at most once a second (measured: no loss on a 270 MB cold read);
 * - it collects once chunks stopped streaming (external memory still since the last check) with
 *   more than `slackBytes` of buffers piled up since the last collection, or after a burst of
 *   more than `slackBytes` streamed with a quarter of that above the lowest external memory
 *   seen since the last collection — under budget too: V8's own collections during a big read
 *   leave the tail of its dead buffers resident, and an idle process may not collect again for
 *   minutes (measured: 122 MB instead of 96 MB after a 270 MB cold read; checked every 0.1 s,
 *   so that the memory is back within about 0.2 s); or once the process has been idle for half
 *   a second (its V8 heap still too) and either it is over budget with resident memory grown by
 *   `slackBytes` since the last collection, or its heap holds `2 × slackBytes` more than it uses
 *   (fragmented: V8 does not compact on its own, and a heap near its limit was measured running
 *   a full collection every 0.1 s with 42 MB live in 91 MB held). Over budget, the memory caches
 *   registered with {@link reclaimable} are emptied first (the chunk cache: the disk cache
 *   serves those chunks again), then a full collection and a trim run. After that, nothing runs
 *   until the process has worked again. (A forced collection is V8's most thorough, two or more
 *   compacting full collections: 0.1–0.3 s for a 45 MB heap on this loaded VM; hence not while
 *   chunks stream, and not again for memory that stays live, such as the TOC indexes of many
 *   layers: a walk of many small files moves the heap but not external memory, and is not
 *   interrupted by collections of what it keeps.)
 *
 * It also limits glibc to 2 malloc arenas (by default one per thread that allocates, up to 8 per
 * core: chunk buffers made on I/O threads stayed in their arenas, out of reach of a trim). No
 * collection runs while chunks stream: collecting then (or glibc's mmap threshold fixed low so
 * that freed buffers go back at once) was measured to cut re-read speed 2–3×.
 *
 * The collector is V8's `gc`, exposed at run time (`--expose-gc` through `node:v8`, the function
 * from a fresh `node:vm` context); where that is not available the reclaimer only trims.
 * Those two modules (and Node's compatibility layer under them) are loaded on the reclaimer's
 * first round, not at start: a mount is up and serving sooner.
 *
 * @module
 */
import { after } from "../format/timers.ts";

let v8: { setFlagsFromString(flags: string): void } | undefined;
let vm: { runInNewContext(code: string): unknown } | undefined;
let collectorLoading: Promise<void> | undefined;
let collectorLoaded = false;

/** Whether `node:v8` and `node:vm` are loaded (or failed to); the first call starts loading. */
function collectorReady(): boolean {
  collectorLoading ??= Promise.all([import("node:v8"), import("node:vm")]).then(
    ([a, b]) => {
      v8 = a.default;
      vm = b.default;
    },
    () => {},
  ).finally(() => {
    collectorLoaded = true;
  });
  return collectorLoaded;
}

let collect: (() => void) | null | undefined;
let trim: (() => void) | null | undefined;

/** V8's full collection, or null where it cannot be had. */
function collector(): (() => void) | null {
  if (collect === undefined) {
    try {
      v8!.setFlagsFromString("--expose-gc");
      const gc = vm!.runInNewContext("gc");
      collect = typeof gc === "function" ? gc as () => void : null;
    } catch {
      collect = null;
    }
  }
  return collect;
}

/** glibc's `mallopt` parameter: the most arenas malloc makes. */
const M_ARENA_MAX = -8;

/** glibc's `malloc_trim(0)`, or null; the first call limits malloc to 2 arenas. */
function trimmer(): (() => void) | null {
  if (trim === undefined) {
    try {
      const lib = Deno.dlopen("libc.so.6", {
        malloc_trim: { parameters: ["usize"], result: "i32" },
        mallopt: { parameters: ["i32", "i32"], result: "i32" },
      });
      lib.symbols.mallopt(M_ARENA_MAX, 2);
      trim = () => void lib.symbols.malloc_trim(0n);
    } catch {
      trim = null;
    }
  }
  return trim;
}

/** The default resident-memory budget of a serving process: 128 MiB. */
export const DEFAULT_MEMORY_BUDGET = 128 << 20;

/** How long a process does no work before it counts as idle, in ms. */
const IDLE_MS = 500;

/** The least time between two collections while chunks stream, in ms. */
const BUSY_COLLECT_MS = 1000;

/** A memory cache the reclaimer may empty when the process is over its budget. */
export interface Reclaimable {
  /** Drops every entry. */
  clear(): void;
}

const caches = new Set<WeakRef<Reclaimable>>();
const registered = new WeakSet<Reclaimable>();

/**
 * Registers `cache` to be emptied first when a quiet process is over its memory budget (held
 * weakly: a cache nothing else uses is forgotten). Registering it again does nothing.
 */
export function reclaimable(cache: Reclaimable): void {
  if (registered.has(cache)) return;
  registered.add(cache);
  caches.add(new WeakRef(cache));
}

/** Empties every registered cache still alive. */
function clearCaches(): void {
  for (const ref of caches) {
    const cache = ref.deref();
    if (cache) cache.clear();
    else caches.delete(ref);
  }
}

/** Options of {@link startMemoryReclaim}. */
export interface MemoryReclaimOptions {
  /** How often the process is looked at, in ms. Default 100. */
  intervalMs?: number;
  /**
   * The first look waits this long, in ms. Default 1000: the reclaimer's interval timer is a
   * `setInterval`, whose first use loads Node's timers (format/timers.ts) — not on the way
   * from the start of a mount to its first byte. Nothing is due that soon.
   */
  startDelayMs?: number;
  /** Bytes of external memory above the last collection tolerated under budget. Default 16 MiB. */
  slackBytes?: number;
  /** The resident memory aimed at, in bytes. Default {@link DEFAULT_MEMORY_BUDGET}. */
  budgetBytes?: number;
}

/**
 * Starts reclaiming memory in the background (an interval timer that keeps no process alive,
 * after a start delay that does, as a `setTimeout` would); returns the function that stops it.
 *
 * @example
 * ```ts
 * const stop = startMemoryReclaim({ budgetBytes: 128 << 20 });
 * // … serve the mount …
 * stop();
 * ```
 */
export function startMemoryReclaim(opts: MemoryReclaimOptions = {}): () => void {
  const slack = opts.slackBytes ?? 16 << 20;
  const budget = opts.budgetBytes ?? DEFAULT_MEMORY_BUDGET;
  const intervalMs = opts.intervalMs ?? 100;
  // Checks without work before the process counts as idle: about half a second.
  const idleChecks = Math.max(2, Math.ceil(IDLE_MS / intervalMs));
  trimmer();
  let floor = Deno.memoryUsage().external;
  let last = floor;
  let quietChecks = 0;
  let streamQuiet = 0;
  let busySinceCollect = true;
  let lastTrim = 0;
  let lastBusyCollect = 0;
  let rssAfter = 0;
  let lastHeap = 0;
  // External memory moved while chunks streamed since the last collection (a burst's size), and
  // the lowest it was since then (what lies above it may be the burst's dead buffers).
  let streamed = 0;
  let low = floor;
  const round = () => {
    if (!collectorReady()) return; // the first round only starts loading the collector
    const { external, rss, heapUsed, heapTotal } = Deno.memoryUsage();
    const streaming = Math.abs(external - last) >= 1 << 20;
    const working = streaming || Math.abs(heapUsed - lastHeap) >= 1 << 20;
    streamQuiet = streaming ? 0 : streamQuiet + 1;
    if (streaming) streamed += Math.abs(external - last);
    low = Math.min(low, external);
    quietChecks = working ? 0 : quietChecks + 1;
    last = external;
    lastHeap = heapUsed;
    if (working) busySinceCollect = true;
    const over = rss > budget;
    if (streamQuiet < 1) {
      const now = Date.now();
      if (over && external - floor >= 3 * slack && now - lastBusyCollect >= BUSY_COLLECT_MS) {
        // Dead chunk buffers pile up faster than V8 collects them: collect now and then.
        collector()?.();
        trimmer()?.();
        floor = last = Deno.memoryUsage().external;
        lastBusyCollect = lastTrim = now;
      } else if (over && now - lastTrim >= Math.max(500, intervalMs)) {
        trimmer()?.();
        lastTrim = now;
      }
      return;
    }
    // Dead chunk buffers piled up (chunks stopped streaming), or, with the process idle, over
    // budget and grown since the last collection: what is live above the budget (TOC indexes of
    // many layers) is not collected again and again.
    const piled = external - floor >= slack;
    // A burst of chunks (a big read) has just ended: its dead buffers stay resident until V8's
    // next collection, which an idle process may not have for minutes. Collect once, under
    // budget too, as soon as the burst is over.
    const burst = streamQuiet === 1 && streamed >= slack && external - low >= slack / 4;
    const idle = quietChecks >= idleChecks;
    const grown = over && idle && rss >= rssAfter + slack;
    // A heap that holds much more than it uses: V8 does not compact it on its own, and with a
    // heap limit it then runs a full collection every 0.1 s for nothing (see soak_test.ts).
    const fragmented = idle && heapTotal - heapUsed >= 2 * slack;
    if (!busySinceCollect || !(piled || burst || grown || fragmented)) return;
    if (over) clearCaches();
    collector()?.();
    trimmer()?.();
    const usage = Deno.memoryUsage();
    floor = last = usage.external;
    lastHeap = usage.heapUsed;
    rssAfter = usage.rss;
    quietChecks = streamQuiet = 0;
    streamed = 0;
    low = usage.external;
    busySinceCollect = false;
  };
  let timer: number | undefined;
  let stopped = false;
  const start = () => {
    if (stopped) return;
    timer = setInterval(round, intervalMs) as unknown as number;
    Deno.unrefTimer(timer);
  };
  const startDelayMs = opts.startDelayMs ?? 1000;
  const cancelStart = startDelayMs > 0 ? after(startDelayMs, start) : (start(), () => {});
  return () => {
    stopped = true;
    cancelStart();
    if (timer !== undefined) clearInterval(timer);
  };
}
