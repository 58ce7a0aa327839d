/**
 * A spawned test process (crfs mount, store, snapshotter) watched the same way everywhere: its
 * stderr collected as text, its exit noticed, and one way to end it (SIGTERM, then SIGKILL after
 * a grace period, then its stderr drained).
 *
 * @module
 */

/** A child process with its stderr collected and its exit watched. */
export interface WatchedChild {
  /** The process (spawned with `stderr: "piped"`). */
  readonly child: Deno.ChildProcess;
  /** Everything it wrote to stderr so far. */
  stderr(): string;
  /** True once it has exited. */
  exited(): boolean;
  /** Its exit status. */
  readonly status: Promise<Deno.CommandStatus>;
  /**
   * Sends SIGTERM (unless it has exited), SIGKILL if it is still there after `graceMs`, and
   * resolves with its status once its stderr is read to the end. Calling it again is harmless.
   */
  terminate(graceMs?: number): Promise<Deno.CommandStatus>;
}

/**
 * Watches `child` (spawned with `stderr: "piped"`).
 *
 * @example
 * ```ts
 * const w = watchChild(new Deno.Command("crfs", { args, stderr: "piped" }).spawn());
 * while (!w.stderr().includes("mounted at")) await new Promise((r) => setTimeout(r, 25));
 * await w.terminate();
 * ```
 */
export function watchChild(child: Deno.ChildProcess): WatchedChild {
  let err = "";
  const pump = (async () => {
    for await (const t of child.stderr.pipeThrough(new TextDecoderStream())) err += t;
  })();
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  const kill = (signal: Deno.Signal) => {
    try {
      child.kill(signal);
    } catch {
      // gone meanwhile
    }
  };
  let ending: Promise<Deno.CommandStatus> | undefined;
  return {
    child,
    stderr: () => err,
    exited: () => exited,
    status,
    terminate: (graceMs = 20_000) =>
      ending ??= (async () => {
        if (!exited) kill("SIGTERM");
        const timer = setTimeout(() => kill("SIGKILL"), graceMs);
        try {
          return await status;
        } finally {
          clearTimeout(timer);
          await pump;
        }
      })(),
  };
}
