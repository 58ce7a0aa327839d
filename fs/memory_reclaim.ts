/**
 * Giving memory back while crfs serves. Chunk bytes stream through the process (a 4 MiB buffer per
 * chunk read, fetched or decoded), and V8 collects such buffers only once about 64 MiB of them
 * have piled up, while glibc keeps freed memory for reuse: a mount that has read a big file sat at
 * several times the memory it uses. The reclaimer fixes glibc's mmap threshold at 1 MiB (by
 * default it rises to the size of the biggest buffer freed, after which chunk buffers come from
 * the heap and stay there), so a freed chunk buffer goes back to the system at once; while chunks
 * stream, a young-generation collection runs when `slackBytes` of buffers have piled up since
 * the last; once the process has gone quiet (its external memory did not move between two
 * checks), a full collection and `malloc_trim(0)`.
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

/** glibc's `malloc_trim(0)`, or null; the first call fixes the mmap threshold. */
function trimmer(): (() => void) | null {
  if (trim === undefined) {
    try {
      const lib = Deno.dlopen("libc.so.6", {
        malloc_trim: { parameters: ["usize"], result: "i32" },
        mallopt: { parameters: ["i32", "i32"], result: "i32" },
      });
      lib.symbols.mallopt(M_MMAP_THRESHOLD, 1 << 20);
      trim = () => void lib.symbols.malloc_trim(0n);
    } catch {
      trim = null;
    }
  }
  return trim;
}

/** glibc's `M_MMAP_THRESHOLD` parameter of `mallopt`. */
const M_MMAP_THRESHOLD = -3;

/** Options of {@link startMemoryReclaim}. */
export interface MemoryReclaimOptions {
  /** How often the process is looked at, in ms. Default 250. */
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
  let young = floor;
  const timer = setInterval(() => {
    const now = Deno.memoryUsage().external;
    const quiet = Math.abs(now - last) < 1 << 20;
    last = now;
    if (now - floor < slack) return;
    if (!quiet) {
      // Streaming: the dead buffers of the last moments are young; collecting them is cheap.
      if (now - young >= 2 * slack) {
        (collector() as ((o?: { type: string }) => void) | null)?.({ type: "minor" });
        young = Deno.memoryUsage().external;
      }
      return;
    }
    collector()?.();
    trimmer()?.();
    floor = last = young = Deno.memoryUsage().external;
  }, opts.intervalMs ?? 250) as unknown as number;
  Deno.unrefTimer(timer);
  return () => clearInterval(timer);
}
