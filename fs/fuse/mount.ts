/**
 * Public entry of the FUSE layer: `mount()` serves a `FuseOps` filesystem read-only at a
 * directory and returns a `FuseMount` handle; `installSignalUnmount()` detach-unmounts on
 * SIGINT/SIGTERM and exits. Before mounting, a stale mount left at the mountpoint by a killed
 * server (every access fails with ENOTCONN) is detected and lazily unmounted.
 *
 * The mount shows in /proc/mounts as `<fsName> <mountpoint> fuse.<subtype> ro,...` and uses
 * `default_permissions` (the kernel checks modes itself). After INIT the mount's readahead is
 * raised through `/sys/class/bdi/<dev>/read_ahead_kb` (INIT can only lower it).
 *
 * @module
 */
import { timeout } from "../../format/timers.ts";
import { type KernelMount, kernelMount, umountDetach } from "./libfuse.ts";
import type { FuseOps } from "./ops.ts";
import { FuseSession, type InitInfo, type SessionStats } from "./session.ts";

/** Options of `mount()`. */
export interface MountOptions {
  /** Receives one line per request and reply (like libfuse's `-d`). */
  debug?: (line: string) => void;
  /** Receives exceptions thrown by ops that are not `FuseError`s (answered EIO). Default: stderr. */
  onError?: (err: unknown, op: string) => void;
  /** Let users other than the mounting one access the mount (`allow_other`). */
  allowOther?: boolean;
  /**
   * Mount without `ro`, so that name changes reach the filesystem's `changeEntry` (all other
   * writes are still answered EROFS by the session). Default false.
   */
  writable?: boolean;
  /** Source shown in /proc/mounts. Default "crfs". */
  fsName?: string;
  /** Filesystem subtype: the type shows as `fuse.<subtype>`. Default "crfs". */
  subtype?: string;
  /** Readahead of the mount in KiB, set after INIT; 0 leaves the kernel default. Default 1024. */
  readAheadKb?: number;
  /** Ignored (one non-blocking reader serves all requests); kept for callers that pass it. */
  readers?: number;
  /** Largest READ request in bytes. Default 1 MiB. */
  maxRead?: number;
  /** How long to wait for the kernel's INIT. Default 10 s. */
  initTimeoutMs?: number;
  /** How long a FUSE mount already at the mountpoint may take to answer before it counts as hung
   * (and is cleared). Default 3 s. */
  staleProbeMs?: number;
}

/** Options of `FuseMount.unmount()`. */
export interface UnmountOptions {
  /**
   * After the detach, how long files still held open may keep the connection alive before it
   * is aborted (their users then get ENOTCONN). Default 5000 ms; `Infinity` waits for them.
   */
  graceMs?: number;
}

/** A served mount. */
export interface FuseMount {
  /** Absolute path of the mountpoint (symlinks in its parent resolved). */
  readonly mountpoint: string;
  /** Device number of the mount, "major:minor" (also the name of its bdi in sysfs). */
  readonly device: string;
  /** What INIT negotiated. */
  readonly init: InitInfo;
  /** Counters of the request loop (requests read, waits for the descriptor). */
  readonly stats: Readonly<SessionStats>;
  /** Resolves when the kernel connection has ended and the descriptor is closed. */
  readonly closed: Promise<void>;
  /**
   * Detach-unmounts (new accesses fail at once; open files keep working), waits for the
   * connection to end, aborting it after `graceMs`. Resolves when `closed` has.
   */
  unmount(options?: UnmountOptions): Promise<void>;
  /** Aborts the connection at once through fusectl (root only); pending requests fail. */
  abort(): Promise<void>;
}

/** One line of /proc/self/mountinfo. */
export interface MountInfo {
  device: string;
  mountPoint: string;
  fsType: string;
  source: string;
}

/** The mount table of this process's namespace, in mount order. */
export async function readMountinfo(): Promise<MountInfo[]> {
  const text = await Deno.readTextFile("/proc/self/mountinfo");
  const out: MountInfo[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    const f = line.split(" ");
    const sep = f.indexOf("-", 6);
    if (sep < 0) continue;
    out.push({
      device: f[2],
      mountPoint: unescapeMount(f[4]),
      fsType: f[sep + 1],
      source: unescapeMount(f[sep + 2] ?? ""),
    });
  }
  return out;
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
}

/** Escapes a value for a libfuse `-o` option list. */
function optValue(s: string): string {
  return s.replace(/[\\,]/g, (ch) => "\\" + ch);
}

/** `path` made absolute (from the working directory) with `.`, `..` and repeated `/` gone. */
function absolutePath(path: string): string {
  const parts: string[] = [];
  for (const p of (path.startsWith("/") ? path : `${Deno.cwd()}/${path}`).split("/")) {
    if (p === "..") parts.pop();
    else if (p !== "" && p !== ".") parts.push(p);
  }
  return "/" + parts.join("/");
}

/** The absolute mountpoint with its parent's symlinks resolved (the path itself is not touched). */
async function canonicalMountpoint(path: string): Promise<string> {
  const abs = absolutePath(path);
  if (abs === "/") throw new Error("refusing to mount on /");
  const slash = abs.lastIndexOf("/");
  const parent = abs.slice(0, slash) || "/";
  await Deno.mkdir(parent, { recursive: true });
  const real = await Deno.realPath(parent);
  return `${real === "/" ? "" : real}/${abs.slice(slash + 1)}`;
}

function isDisconnected(err: unknown): boolean {
  const msg = err instanceof Error ? err.message : String(err);
  return /os error (107|103)\b|not connected|connection abort/i.test(msg);
}

/**
 * Asks for statfs of the mount in a child process: unlike stat, which the kernel may answer from
 * cached attributes, statfs always reaches the server. A hung server makes the child hang; it is
 * killed after `timeoutMs` and the mount counts as dead.
 */
async function probeFuseMount(path: string, timeoutMs: number): Promise<"live" | "dead"> {
  const child = new Deno.Command("stat", {
    args: ["-f", "-c", "%t", "--", path],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  const collect = (async () => {
    let text = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return text;
      text += value;
    }
  })();
  const timedOut = timeout(timeoutMs);
  const res = await Promise.race([child.status, timedOut.promise]);
  timedOut.cancel();
  if (res === "timeout") {
    // A request already taken by a hung server keeps even a killed child waiting: let it go.
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    child.unref();
    await reader.cancel().catch(() => {});
    await collect.catch(() => "");
    return "dead";
  }
  const err = await collect;
  if (res.success) return "live";
  return isDisconnected(err) ? "dead" : "live";
}

async function run(cmd: string, args: string[]): Promise<boolean> {
  try {
    const r = await new Deno.Command(cmd, { args, stdout: "null", stderr: "null" }).output();
    return r.success;
  } catch {
    return false;
  }
}

/** Lazily unmounts the topmost mount at `path`: umount2(MNT_DETACH), else fusermount3, else umount. */
export async function detachUnmount(path: string): Promise<void> {
  if (await umountDetach(path)) return;
  if (await run("fusermount3", ["-u", "-z", "--", path])) return;
  if (await run("umount", ["-l", "--", path])) return;
  throw new Error(`could not unmount ${path}`);
}

/**
 * Clears dead FUSE mounts at `path` (left by a killed server: stat fails with ENOTCONN, or the
 * server hangs). A live FUSE mount there is an error; other kinds of mounts are left alone
 * (mounting on top of them is fine). Returns how many mounts were cleared.
 */
export async function clearStaleMount(
  path: string,
  probeTimeoutMs = 3000,
): Promise<number> {
  let cleared = 0;
  for (let i = 0; i < 16; i++) {
    const top = (await readMountinfo()).filter((m) => m.mountPoint === path).at(-1);
    let dead: boolean;
    if (top?.fsType.startsWith("fuse")) {
      if (await probeFuseMount(path, probeTimeoutMs) === "live") {
        throw new Error(`${path} already has a live ${top.fsType} mount (${top.source})`);
      }
      dead = true;
    } else if (top) {
      return cleared;
    } else {
      // Not in the table under this name; a disconnected mount still shows as ENOTCONN.
      try {
        await Deno.lstat(path);
        dead = false;
      } catch (err) {
        dead = isDisconnected(err);
      }
    }
    if (!dead) return cleared;
    await detachUnmount(path);
    cleared++;
  }
  throw new Error(`could not clear stale mounts at ${path}`);
}

async function findDevice(path: string): Promise<string | undefined> {
  const mine = (await readMountinfo()).filter((m) =>
    m.mountPoint === path && m.fsType.startsWith("fuse")
  );
  return mine.at(-1)?.device;
}

/** "major:minor" of a Linux `st_dev`. */
function devName(dev: number): string {
  const major = (Math.floor(dev / 256) & 0xfff) | (Math.floor(dev / 2 ** 32) & ~0xfff);
  const minor = (dev & 0xff) | (Math.floor(dev / 4096) & ~0xff);
  return `${major}:${minor}`;
}

async function abortConnection(device: string): Promise<void> {
  const minor = device.split(":")[1];
  const dir = "/sys/fs/fuse/connections";
  let entries = 0;
  for await (const _ of Deno.readDir(dir)) entries++;
  // fusectl is usually mounted by systemd; if not, mount it for the moment.
  const mounted = entries === 0 && await run("mount", ["-t", "fusectl", "fusectl", dir]);
  try {
    await Deno.writeTextFile(`${dir}/${minor}/abort`, "1");
  } finally {
    if (mounted) await run("umount", [dir]);
  }
}

async function waitClosed(closed: Promise<void>, ms: number): Promise<boolean> {
  if (ms === Infinity) {
    await closed;
    return true;
  }
  const t = timeout(ms);
  const r = await Promise.race([closed.then(() => "closed" as const), t.promise]);
  t.cancel();
  return r === "closed";
}

/**
 * Mounts `ops` (read-only unless `writable`) at `mountpoint` (created if missing; a stale mount
 * there is cleared) and serves it until unmounted. Resolves once the kernel's INIT has been answered.
 */
export async function mount(
  mountpoint: string,
  ops: FuseOps,
  options: MountOptions = {},
): Promise<FuseMount> {
  const mp = await canonicalMountpoint(mountpoint);
  await clearStaleMount(mp, options.staleProbeMs);
  await Deno.mkdir(mp, { recursive: true });
  // As non-root libfuse mounts through fusermount3: name what would stop it, in one line.
  // (Loaded only then: root mounts without that code.)
  if (Deno.uid() !== 0) {
    const { checkUnprivilegedMount } = await import("./unprivileged.ts");
    await checkUnprivilegedMount(mp, { allowOther: options.allowOther });
  }
  const opts = [
    ...(options.writable ? [] : ["ro"]),
    "default_permissions",
    `fsname=${optValue(options.fsName ?? "crfs")}`,
    `subtype=${optValue(options.subtype ?? "crfs")}`,
  ];
  if (options.allowOther) opts.push("allow_other");
  const km: KernelMount = await kernelMount(mp, opts);
  const session = new FuseSession(km.io, ops, {
    debug: options.debug,
    onError: options.onError,
    readers: options.readers,
    maxRead: options.maxRead,
  });
  const closed = session.closed.then(() => km.destroy());
  let init: InitInfo;
  try {
    const initTimer = timeout(options.initTimeoutMs ?? 10_000);
    const r = await Promise.race([session.start(), initTimer.promise]).finally(initTimer.cancel);
    if (r === "timeout") throw new Error(`no FUSE INIT from the kernel for ${mp}`);
    init = r;
  } catch (err) {
    await detachUnmount(mp).catch(() => {});
    if (!await waitClosed(closed, 2000)) {
      const dev = await findDevice(mp);
      if (dev) await abortConnection(dev).catch(() => {});
    }
    throw err;
  }
  const device = (await findDevice(mp)) ?? devName((await Deno.stat(mp)).dev);
  const raKb = options.readAheadKb ?? 1024;
  if (device && raKb > 0) {
    try {
      await Deno.writeTextFile(`/sys/class/bdi/${device}/read_ahead_kb`, `${raKb}\n`);
    } catch (err) {
      options.debug?.(`could not set read_ahead_kb: ${err}`);
    }
  }

  let done = false;
  closed.then(() => done = true);
  const abort = async () => {
    if (done) return;
    await abortConnection(device);
  };
  const unmount = async (uo: UnmountOptions = {}) => {
    if (done) return;
    // Detach our mount (and anything stacked on top of it) from the tree.
    for (let i = 0; i < 16 && !done; i++) {
      const ours = (await readMountinfo()).filter((m) => m.device === device);
      if (ours.length === 0) break; // already unmounted
      // After one detach, stop unless we are still mounted at the mountpoint (a foreign mount
      // stacked on top was removed first); the path may also be spelled differently there.
      if (i > 0 && !ours.some((m) => m.mountPoint === mp)) break;
      await detachUnmount(mp);
    }
    if (await waitClosed(closed, uo.graceMs ?? 5000)) return;
    await abort();
    if (!await waitClosed(closed, 10_000)) throw new Error(`FUSE connection ${device} did not end`);
  };
  return { mountpoint: mp, device, init, stats: session.stats, closed, unmount, abort };
}

/** Options of `installSignalUnmount()`. */
export interface SignalUnmountOptions {
  /** Signals to handle. Default SIGINT and SIGTERM. */
  signals?: Deno.Signal[];
  /** Exit the process after unmounting. Default true. */
  exit?: boolean;
  /** Exit code. Default 0. */
  exitCode?: number;
  /** Passed to `unmount()`. */
  graceMs?: number;
  /** Called when a signal arrives, before unmounting. */
  onSignal?: (signal: Deno.Signal) => void;
}

/**
 * On SIGINT/SIGTERM, detach-unmounts `mounts`, waits for their connections to end, and exits
 * (a second signal exits at once). Returns a function that removes the handlers.
 */
export function installSignalUnmount(
  mounts: FuseMount | FuseMount[],
  options: SignalUnmountOptions = {},
): () => void {
  const list = Array.isArray(mounts) ? mounts : [mounts];
  const signals = options.signals ?? ["SIGINT", "SIGTERM"];
  const exitCode = options.exitCode ?? 0;
  let fired = false;
  const handlers = new Map<Deno.Signal, () => void>();
  const remove = () => {
    for (const [sig, h] of handlers) Deno.removeSignalListener(sig, h);
    handlers.clear();
  };
  for (const sig of signals) {
    const h = () => {
      if (fired) Deno.exit(exitCode);
      fired = true;
      options.onSignal?.(sig);
      Promise.allSettled(list.map((m) => m.unmount({ graceMs: options.graceMs }))).then(() => {
        if (options.exit ?? true) Deno.exit(exitCode);
        remove();
      });
    };
    handlers.set(sig, h);
    Deno.addSignalListener(sig, h);
  }
  return remove;
}
