/**
 * Helpers for the snapshotter tests, which run everything for real: Debian's containerd 1.6 as
 * a plain process (root, state and sockets in a temporary directory, crfs named as a proxy
 * snapshotter plugin, CRI off unless asked for), `ctr` and `ctr-remote` against it, and
 * `crfs snapshotter` as a subprocess. Closing a containerd kills its tasks and shims (by pid),
 * unmounts whatever is still mounted under its directory and removes it; stopping the
 * snapshotter checks that it left no mount and no socket.
 *
 * @module
 */
import { readMountinfo } from "../../fs/fuse/mount.ts";
import { watchChild } from "../helpers/child.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const dec = new TextDecoder();

/** What a program gave. */
export interface Ran {
  code: number;
  out: string;
  err: string;
  ms: number;
}

/** Runs a program (killed after `timeoutMs`); never throws on a non-zero exit. */
export async function run(
  cmd: string,
  args: string[],
  opts: { timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<Ran> {
  const t0 = performance.now();
  const child = new Deno.Command(cmd, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: opts.env,
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // exited
    }
  }, opts.timeoutMs ?? 120_000);
  const o = await child.output();
  clearTimeout(timer);
  return {
    code: o.code,
    out: dec.decode(o.stdout),
    err: dec.decode(o.stderr),
    ms: performance.now() - t0,
  };
}

/** Runs a program; throws with its output unless it exits 0. */
export async function ok(cmd: string, args: string[], timeoutMs?: number): Promise<Ran> {
  const r = await run(cmd, args, { timeoutMs });
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(" ")} exited ${r.code}:\n${r.out}\n${r.err}`);
  }
  return r;
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `f` every 50 ms until it is true; throws `what` after `ms`. */
export async function waitFor(what: string, f: () => Promise<boolean>, ms = 30_000) {
  const end = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Mount points at or under `dir`, deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  return (await readMountinfo()).map((m) => m.mountPoint)
    .filter((p) => p === dir || p.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

/** Processes whose command line contains `needle` (the shims of one containerd). */
async function processesWith(needle: string): Promise<number[]> {
  const out: number[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name) || Number(e.name) === Deno.pid) continue;
    try {
      const cmd = (await Deno.readTextFile(`/proc/${e.name}/cmdline`)).replaceAll("\0", " ");
      if (cmd.includes(needle)) out.push(Number(e.name));
    } catch {
      // gone
    }
  }
  return out;
}

/** Held (flock) by the test containerd that runs: see {@link Containerd.start}. */
const CONTAINERD_LOCK = "/tmp/crfs-containerd-tests.lock";

/** Options of {@link Containerd.start}. */
export interface ContainerdOptions {
  /** The crfs snapshotter's socket (a proxy plugin `crfs`), if any. */
  crfsSocket?: string;
  /** A second proxy plugin `stargz` at this socket (the peer, for the bench). */
  stargzSocket?: string;
  /** Enable the CRI plugin with this snapshotter (and remote-snapshot annotations). */
  cri?: { snapshotter: string; plainHttp?: string[] };
}

/** containerd 1.6 with everything in a temporary directory. */
export class Containerd {
  readonly dir: string;
  readonly address: string;
  #child!: Deno.ChildProcess;
  #log = "";
  #pump!: Promise<void>;
  #exited = false;
  #lock?: Deno.FsFile;
  #status!: Promise<Deno.CommandStatus>;

  private constructor(dir: string) {
    this.dir = dir;
    this.address = `${dir}/containerd.sock`;
  }

  #spawn(): void {
    const child = new Deno.Command("containerd", {
      args: ["--config", `${this.dir}/config.toml`],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.#child = child;
    this.#exited = false;
    this.#pump = (async () => {
      for await (const t of child.stderr.pipeThrough(new TextDecoderStream())) this.#log += t;
    })();
    this.#status = child.status.then((s) => {
      this.#exited = true;
      return s;
    });
  }

  async #ready(): Promise<void> {
    await waitFor("containerd's socket", async () => {
      if (this.#exited) throw new Error(`containerd exited:\n${this.#log}`);
      return await exists(this.address) &&
        (await run("ctr", ["--address", this.address, "version"])).code === 0;
    });
  }

  async #stopProcess(): Promise<void> {
    try {
      this.#child.kill("SIGTERM");
    } catch {
      // exited
    }
    const timer = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch {
        // exited
      }
    }, 15_000);
    await this.#status;
    clearTimeout(timer);
    await this.#pump.catch(() => {});
  }

  /** Stops containerd (tasks and shims keep running, as on a real node) and starts it again. */
  async restart(): Promise<void> {
    await this.#stopProcess();
    this.#spawn();
    await this.#ready();
  }

  /** Starts containerd and waits for its socket. */
  static async start(opts: ContainerdOptions = {}): Promise<Containerd> {
    const dir = await Deno.makeTempDir({ prefix: "crfs-ctrd-" });
    const proxies = [
      opts.crfsSocket
        ? `[proxy_plugins.crfs]\n  type = "snapshot"\n  address = "${opts.crfsSocket}"\n`
        : "",
      opts.stargzSocket
        ? `[proxy_plugins.stargz]\n  type = "snapshot"\n  address = "${opts.stargzSocket}"\n`
        : "",
    ].join("");
    const cri = opts.cri
      ? `[plugins."io.containerd.grpc.v1.cri"]\n` +
        `  sandbox_image = "registry.invalid/pause:3.6"\n` +
        `  [plugins."io.containerd.grpc.v1.cri".containerd]\n` +
        `    snapshotter = "${opts.cri.snapshotter}"\n` +
        `    disable_snapshot_annotations = false\n` +
        (opts.cri.plainHttp ?? []).map((h) =>
          `  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."${h}"]\n` +
          `    endpoint = ["http://${h}"]\n`
        ).join("") +
        `  [plugins."io.containerd.grpc.v1.cri".cni]\n` +
        `    bin_dir = "${dir}/cni-bin"\n    conf_dir = "${dir}/cni-conf"\n`
      : "";
    const config = `version = 2\nroot = "${dir}/root"\nstate = "${dir}/state"\n` +
      `disabled_plugins = [${opts.cri ? "" : `"io.containerd.grpc.v1.cri", `}` +
      `"io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", ` +
      `"io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]\n` +
      `[grpc]\n  address = "${dir}/containerd.sock"\n` +
      `[ttrpc]\n  address = "${dir}/containerd.sock.ttrpc"\n` +
      `[debug]\n  level = "info"\n` +
      `[plugins."io.containerd.internal.v1.opt"]\n  path = "${dir}/opt"\n` +
      proxies + cri;
    await Deno.writeTextFile(`${dir}/config.toml`, config);
    const c = new Containerd(dir);
    // One test containerd at a time on the machine: containerd, ctr and the shims share
    // /run/containerd (fifo, s, runc) whatever the config says, and parallel test files met there.
    c.#lock = await Deno.open(CONTAINERD_LOCK, { read: true, write: true, create: true });
    await c.#lock.lock(true);
    c.#spawn();
    try {
      await c.#ready();
    } catch (e) {
      await c.close();
      throw e;
    }
    return c;
  }

  /** containerd's log so far. */
  log(): string {
    return this.#log;
  }

  /** `ctr --address SOCK ARGS` (never throws on a non-zero exit). */
  ctr(args: string[], timeoutMs?: number): Promise<Ran> {
    return run("ctr", ["--address", this.address, ...args], { timeoutMs });
  }

  /** `ctr-remote --address SOCK ARGS`. */
  ctrRemote(args: string[], timeoutMs?: number): Promise<Ran> {
    return run("ctr-remote", ["--address", this.address, ...args], { timeoutMs });
  }

  /** Like {@link ctr}, throwing unless it exits 0. */
  async ctrOk(args: string[], timeoutMs?: number): Promise<Ran> {
    const r = await this.ctr(args, timeoutMs);
    if (r.code !== 0) throw new Error(`ctr ${args.join(" ")} exited ${r.code}:\n${r.out}${r.err}`);
    return r;
  }

  /**
   * Kills its tasks, stops containerd, kills leftover shims, unmounts what is mounted under
   * its directory, removes the directory.
   */
  async close(): Promise<void> {
    if (!this.#exited) {
      const tasks = await this.ctr(["tasks", "ls", "-q"]).catch(() => undefined);
      for (const id of tasks?.out.split("\n").filter(Boolean) ?? []) {
        await this.ctr(["tasks", "kill", "-s", "SIGKILL", id]);
      }
    }
    await this.#stopProcess();
    for (const pid of await processesWith(this.address)) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch {
        // gone
      }
    }
    for (const m of await mountsUnder(this.dir)) {
      await run("umount", ["-l", m]);
    }
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
    if (this.#lock) {
      await this.#lock.unlock();
      this.#lock.close();
      this.#lock = undefined;
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** The Deno cache directory of this process (where the npm packages are). */
export function denoDir(): string {
  return Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME") ?? "/root"}/.cache/deno`;
}

/** A `crfs snapshotter` subprocess. */
export interface SnapshotterProcess {
  root: string;
  address: string;
  stderr(): string;
  /** SIGTERM, wait; throws if its FUSE mount or socket is still there afterwards. */
  stop(): Promise<void>;
  /** SIGKILL, wait for the exit (a crash: its mount and socket stay behind). */
  crash(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Starts `crfs snapshotter --root ROOT --address ADDRESS ...extra` with a fresh HOME; resolves
 * once the socket answers and the FUSE tree is mounted. The cache directory is `cacheDir` when
 * given (kept across restarts), else one inside HOME.
 */
export async function startSnapshotter(
  root: string,
  address: string,
  opts: { extra?: string[]; cacheDir?: string } = {},
): Promise<SnapshotterProcess> {
  const home = await Deno.makeTempDir({ prefix: "crfs-snap-home-" });
  const fuse = `${root}/fuse`;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${ROOT}main.ts`,
      "snapshotter",
      "--root",
      root,
      "--address",
      address,
      "--cache-dir",
      opts.cacheDir ?? `${home}/cache`,
      ...(opts.extra ?? []),
    ],
    cwd: ROOT,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    // The npm packages (gRPC) stay in this user's Deno cache, not fetched again into HOME.
    env: { HOME: home, DOCKER_CONFIG: `${home}/docker`, NO_COLOR: "1", DENO_DIR: denoDir() },
  }).spawn();
  const watched = watchChild(child);
  const err = watched.stderr;
  const stop = async () => {
    await watched.terminate();
    await Deno.remove(home, { recursive: true }).catch(() => {});
    const left = (await readMountinfo()).filter((m) => m.mountPoint === fuse);
    for (const _ of left) await run("umount", ["-l", fuse]);
    if (left.length) throw new Error(`crfs snapshotter left its mount at ${fuse}:\n${err()}`);
    if (await exists(address)) throw new Error(`crfs snapshotter left its socket ${address}`);
  };
  try {
    await waitFor("crfs snapshotter's socket and mount", async () => {
      if (watched.exited()) throw new Error(`crfs snapshotter exited:\n${err()}`);
      const mounted = (await readMountinfo()).some((m) =>
        m.mountPoint === fuse && m.fsType.startsWith("fuse")
      );
      // The line it prints once mounted and bound (a crashed predecessor's dead mount and
      // socket may still be there until then).
      return mounted && err().includes("snapshotter serving") && await exists(address);
    });
  } catch (e) {
    await stop().catch(() => {});
    throw new Error(`${(e as Error).message}; its stderr:\n${err()}`);
  }
  const crash = async () => {
    if (!watched.exited()) child.kill("SIGKILL");
    await watched.terminate();
    await Deno.remove(home, { recursive: true }).catch(() => {});
  };
  return { root, address, stderr: err, stop, crash, [Symbol.asyncDispose]: stop };
}
