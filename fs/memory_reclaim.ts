/**
 * Giving memory back while crfs serves. Chunk bytes stream through the process (a 4 MiB buffer per
 * chunk read, fetched or decoded), and V8 collects such buffers only once about 64 MiB of them
 * have piled up, while glibc keeps freed memory for reuse: a mount that has read a big file sat at
 * several times the memory it uses, long after. Once the process has gone quiet (its external
 * memory did not move over two checks in a row) with more than `slackBytes` above what was live
 * after the last collection, this runs a full collection and `malloc_trim(0)`. It also limits glibc
 * to 2 malloc arenas (by default one per thread that allocates, up to 8 per core: chunk buffers
 * made on I/O threads stayed in their arenas, out of reach of a trim). Nothing runs while
 * chunks stream: collecting then (young-generation collections, or glibc's mmap threshold fixed
 * low so that freed buffers go back at once) was measured to cut re-read speed 2–3×.
 *
 * The collector is V8's `gc`, exposed at run time (`--expose-gc` through `node:v8`, the function
 * from a fresh `node:vm` context); where that is not available the reclaimer only trims.
 *
 * @module
 */
import v8 from "node:v8";
import vm from "node:vm";

let collect: (() => void) | null | undefined;
let trim: (() => void) | null | undefined;

/** V8's full collection, or null where it cannot be had. */
function collector(): (() => void) | null {
  if (collect === undefined) {
    try {
      v8.setFlagsFromString("--expose-gc");
      const gc = vm.runInNewContext("gc");
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

/** Options of {@link startMemoryReclaim}. */
export interface MemoryReclaimOptions {
  /** How often the process is looked at, in ms. Default 500. */
  intervalMs?: number;
  /** Bytes of external memory above the last collection's tolerated. Default 16 MiB. */
  slackBytes?: number;
}

/**
 * Starts reclaiming memory in the background (a timer that keeps no process alive); returns
 * the function that stops it.
 *
 * @example
 * ```ts
 * const stop = startMemoryReclaim();
 * // … serve the mount …
 * stop();
 * ```
 */
export function startMemoryReclaim(opts: MemoryReclaimOptions = {}): () => void {
  const slack = opts.slackBytes ?? 16 << 20;
  trimmer();
  let floor = Deno.memoryUsage().external;
  let last = floor;
  let quietChecks = 0;
  const timer = setInterval(() => {
    const now = Deno.memoryUsage().external;
    quietChecks = Math.abs(now - last) < 1 << 20 ? quietChecks + 1 : 0;
    last = now;
    if (quietChecks < 2 || now - floor < slack) return;
    collector()?.();
    trimmer()?.();
    floor = last = Deno.memoryUsage().external;
    quietChecks = 0;
  }, opts.intervalMs ?? 500) as unknown as number;
  Deno.unrefTimer(timer);
  return () => clearInterval(timer);
}
