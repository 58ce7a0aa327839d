/**
 * Shared pieces of the benchmarks: timing commands, printing tables, locating the Deno binary
 * and crfs's entry point, and a scratch directory under `bench/out/`.
 *
 * @module
 */

/** The directory benchmarks write scratch files to (gitignored). */
export const OUT = new URL("./out/", import.meta.url).pathname;
/** crfs's entry point. */
export const MAIN = new URL("../main.ts", import.meta.url).pathname;
/** The Deno binary running this benchmark. */
export const DENO = Deno.execPath();

/** Runs a command, returns its wall time in seconds; throws on failure. */
export async function timeCommand(
  cmd: string,
  args: string[],
  opts: { stdoutFile?: string; cwd?: string } = {},
): Promise<number> {
  const t = performance.now();
  const child = new Deno.Command(cmd, {
    args,
    cwd: opts.cwd,
    stdout: opts.stdoutFile ? "piped" : "null",
    stderr: "piped",
  }).spawn();
  let write: Promise<void> | undefined;
  if (opts.stdoutFile) {
    const f = await Deno.open(opts.stdoutFile, { write: true, create: true, truncate: true });
    write = child.stdout.pipeTo(f.writable);
  }
  const [status, err] = await Promise.all([child.status, new Response(child.stderr).text()]);
  await write;
  if (!status.success) throw new Error(`${cmd} ${args.join(" ")} failed: ${err}`);
  return (performance.now() - t) / 1000;
}

/** Best of `n` runs. */
export async function best(n: number, f: () => Promise<number>): Promise<number> {
  let b = Infinity;
  for (let i = 0; i < n; i++) b = Math.min(b, await f());
  return b;
}

/** True when `cmd` is on the PATH. */
export async function have(cmd: string): Promise<boolean> {
  try {
    const s = await new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" })
      .output();
    return s.success;
  } catch {
    return false;
  }
}

/** Prints a Markdown table. */
export function table(title: string, head: string[], rows: (string | number)[][]): void {
  console.log(`\n### ${title}\n`);
  console.log(`| ${head.join(" | ")} |`);
  console.log(`| ${head.map(() => "---").join(" | ")} |`);
  for (const r of rows) console.log(`| ${r.join(" | ")} |`);
}

/** MB (10^6 bytes) per second. */
export function mbps(bytes: number, secs: number): string {
  return (bytes / 1e6 / secs).toFixed(1);
}
