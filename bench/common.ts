/**
 * Shared pieces of the benchmarks: timing commands, printing tables, locating the Deno binary
 * and crfs's entry point, and a scratch directory under `bench/out/`.
 *
 * @module
 */
import type { TestRegistry } from "../tests/helpers/registry.ts";

/** The directory benchmarks write scratch files to (gitignored). */
export const OUT = new URL("./out/", import.meta.url).pathname;
/** crfs's entry point. */
export const MAIN = new URL("../main.ts", import.meta.url).pathname;
/** The Deno binary running this benchmark. */
export const DENO = Deno.execPath();

/**
 * The flags `deno run` gets before crfs's entry point in `deno task crfs` (deno.json):
 * permissions and V8 flags, so that a benchmark runs crfs the way users do (the compiled binary
 * has the same V8 flags built in).
 */
const CRFS_FLAGS: string[] = (() => {
  const task: string = JSON.parse(
    Deno.readTextFileSync(new URL("../deno.json", import.meta.url)),
  ).tasks.crfs;
  const words = task.split(/\s+/);
  return words.slice(words.indexOf("run") + 1, words.indexOf("main.ts"));
})();

/** Arguments of {@link DENO} that run `crfs ARGS` as `deno task crfs` does. */
export function crfsArgs(...args: string[]): string[] {
  return ["run", ...CRFS_FLAGS, MAIN, ...args];
}

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

/** Drops the page cache, dentries and inodes (root only; a no-op otherwise). */
export async function dropCaches(): Promise<void> {
  await new Deno.Command("sh", { args: ["-c", "sync; echo 3 > /proc/sys/vm/drop_caches"] })
    .output();
}

/** Runs `bash -c script` with `$1…` = args; returns its wall time in seconds; throws on failure. */
export async function timeBash(script: string, ...args: string[]): Promise<number> {
  return await timeCommand("bash", ["-c", script, "bash", ...args]);
}

/** A running FUSE server started by {@link startMountServer}. */
export interface MountServer {
  pid: number;
  /** Stops it (the signal it was started with), waits for its exit, then runs `afterStop`. */
  stop(): Promise<void>;
  /** What it wrote to stderr so far. */
  log(): string;
}

/**
 * Spawns `cmd args` (a FUSE server for `mnt`, created if missing) and resolves once its stderr
 * says "mounted at"; throws with its stderr when it exits or is silent for 60 s first.
 */
export async function startMountServer(
  cmd: string,
  args: string[],
  mnt: string,
  opts: {
    /** How {@link MountServer.stop} ends it. */
    signal: Deno.Signal;
    /** How often stderr is looked at while waiting, in ms. */
    pollMs: number;
    /** What the error calls it. */
    what: string;
    /** Run after the process has exited (e.g. a lazy unmount). */
    afterStop?: () => Promise<void>;
  },
): Promise<MountServer> {
  await Deno.mkdir(mnt, { recursive: true });
  const child = new Deno.Command(cmd, { args, stdin: "null", stdout: "null", stderr: "piped" })
    .spawn();
  let text = "";
  let exited = false;
  const status = child.status.then(() => exited = true);
  const pump = (async () => {
    for await (const c of child.stderr.pipeThrough(new TextDecoderStream())) text += c;
  })();
  const stop = async () => {
    if (!exited) child.kill(opts.signal);
    await status;
    await pump;
    await opts.afterStop?.();
  };
  const deadline = Date.now() + 60_000;
  while (!text.includes("mounted at")) {
    if (exited || Date.now() > deadline) {
      await stop();
      throw new Error(`${opts.what} did not come up: ${text}`);
    }
    await new Promise((r) => setTimeout(r, opts.pollMs));
  }
  return { pid: child.pid, stop, log: () => text };
}

/**
 * Starts `crfs mount MNT ARGS` as its own process; resolves once it has mounted, with a function
 * that stops it (SIGTERM, which unmounts) and waits for its exit.
 */
export async function mountCrfs(mnt: string, args: string[] = []): Promise<() => Promise<void>> {
  const server = await startMountServer(
    DENO,
    crfsArgs("mount", mnt, ...args),
    mnt,
    {
      signal: "SIGTERM",
      pollMs: 10,
      what: `crfs mount ${mnt}`,
    },
  );
  return server.stop;
}

/** Pull and run times of an image, with the registry traffic of both. */
export interface PullRunMeasure {
  pullS: number;
  runS: number;
  bytes: number;
  requests: number;
  /** What the run printed. */
  output: string;
}

/**
 * Times `pull()` and then `run()` (which resolves to what the container printed), counting the
 * requests and bytes `reg` served for both.
 */
export async function measurePullRun(
  reg: TestRegistry,
  pull: () => Promise<unknown>,
  run: () => Promise<string>,
): Promise<PullRunMeasure> {
  reg.clearLog();
  const t0 = performance.now();
  await pull();
  const t1 = performance.now();
  const output = await run();
  const t2 = performance.now();
  const log = await reg.accessLog();
  return {
    pullS: (t1 - t0) / 1000,
    runS: (t2 - t1) / 1000,
    bytes: log.reduce((n, e) => n + e.bytes, 0),
    requests: log.length,
    output,
  };
}

/** Bytes as MB (10^6), one decimal. */
export const mb = (n: number): string => (n / 1e6).toFixed(1);

/** The peers `../shared/peers/` builds from Debian's stargz-snapshotter library. */
export type Peer = "stargz-store" | "stargz-grpc";

/**
 * The peer's binary in bench/out/, built once by `../shared/peers/NAME/build.sh` (15–30 s).
 */
export async function peerBinary(name: Peer): Promise<string> {
  const bin = `${OUT}${name}`;
  try {
    await Deno.stat(bin);
    return bin;
  } catch { /* build it */ }
  await Deno.mkdir(OUT, { recursive: true });
  console.error(`bench: building ${name} from Debian's Go library (once)`);
  const build = new URL(`../../shared/peers/${name}/build.sh`, import.meta.url).pathname;
  await timeCommand("bash", [build, bin]);
  return bin;
}
