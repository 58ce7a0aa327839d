/**
 * Helpers for the `crfs mount` tests, which run everything for real: `crfs mount` as a
 * subprocess serving a FUSE mount, Debian's `docker-registry` (restartable on the same port and
 * data directory), images whose layers GNU tar makes from real directory trees of this machine,
 * and the expected trees made by `tar -x` of the same layers (applying whiteouts the OCI way for
 * the merged view, or turned into overlayfs form for a layer view).
 *
 * Trees are compared through real tools: `find -printf` (type, mode, owner, size, mtime with
 * nanoseconds, link count, link target, inode), `stat` for device numbers, `getfattr` for every
 * extended attribute and `sha256sum` of every file. Paths are kept as "binary strings" (one
 * char per byte), so names that are not UTF-8 compare exactly.
 *
 * @module
 */
import { basename, dirname } from "node:path";
import { defaultDrivers } from "../../drivers/mod.ts";
import { pushEStargzLayers } from "../../convert/push.ts";
import { writeEStargz } from "../../format/writer.ts";
import { readMountinfo } from "../../fs/fuse/mount.ts";
import { denoDir } from "../helpers/deno_dir.ts";
import { watchChild } from "../helpers/child.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const dec = new TextDecoder();

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Rejects with `what timed out` when `p` takes longer than `ms`. */
export async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, rej) => {
    timer = setTimeout(() => rej(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

/** What a child process gave. */
export interface Ran {
  code: number;
  /** Raw stdout. */
  bytes: Uint8Array;
  out: string;
  err: string;
  ms: number;
}

/** Runs a program (killed after `timeoutMs`); never throws on a non-zero exit. */
export async function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<Ran> {
  const t0 = performance.now();
  const child = new Deno.Command(cmd, {
    args,
    cwd: opts.cwd,
    env: opts.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
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
    bytes: o.stdout,
    out: dec.decode(o.stdout),
    err: dec.decode(o.stderr),
    ms: performance.now() - t0,
  };
}

/** Runs `bash -c script` with `$1…` = args; throws with its stderr when it fails. */
export async function bash(
  script: string,
  args: string[] = [],
  opts: { cwd?: string; timeoutMs?: number } = {},
): Promise<Ran> {
  const r = await run("bash", ["-c", `set -euo pipefail\n${script}`, "bash", ...args], opts);
  if (r.code !== 0) throw new Error(`bash failed (${r.code}): ${script.slice(0, 300)}\n${r.err}`);
  return r;
}

/** Drops the page cache, dentries and inodes (root only). */
export async function dropCaches(): Promise<void> {
  await bash("sync; echo 3 > /proc/sys/vm/drop_caches");
}

// ---- registry -----------------------------------------------------------------------------

/** A docker-registry that can be stopped and started again on the same port and data. */
export class Registry {
  readonly dir: string;
  readonly port: number;
  #child?: Deno.ChildProcess;
  #exited?: Promise<unknown>;
  #log: string[] = [];
  private constructor(dir: string, port: number) {
    this.dir = dir;
    this.port = port;
  }

  /** `127.0.0.1:PORT`. */
  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  static async create(): Promise<Registry> {
    const dir = await Deno.makeTempDir({ prefix: "crfs-mount-reg-" });
    for (let attempt = 0;; attempt++) {
      const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = (l.addr as Deno.NetAddr).port;
      l.close();
      const reg = new Registry(dir, port);
      await Deno.writeTextFile(
        `${dir}/config.yml`,
        `version: 0.1\nlog: {level: info, accesslog: {disabled: false}}\n` +
          `storage: {filesystem: {rootdirectory: ${dir}/data}, delete: {enabled: true}}\n` +
          `http: {addr: "127.0.0.1:${port}"}\n`,
      );
      try {
        await reg.start();
        return reg;
      } catch (e) {
        if (attempt >= 4) {
          await Deno.remove(dir, { recursive: true }).catch(() => {});
          throw e;
        }
      }
    }
  }

  /** Starts the registry (again); resolves when it answers. */
  async start(): Promise<void> {
    const child = new Deno.Command("docker-registry", {
      args: ["serve", `${this.dir}/config.yml`],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#child = child;
    let gone = false;
    this.#exited = Promise.all([
      child.status.then(() => gone = true),
      ...[child.stdout, child.stderr].map(async (s) => {
        let buf = "";
        for await (const t of s.pipeThrough(new TextDecoderStream())) {
          buf += t;
          const lines = buf.split("\n");
          buf = lines.pop()!;
          this.#log.push(...lines);
        }
      }),
    ]);
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (gone) throw new Error(`docker-registry exited:\n${this.#log.slice(-10).join("\n")}`);
      try {
        const r = await fetch(`http://${this.host}/v2/`, { signal: AbortSignal.timeout(1000) });
        await r.body?.cancel();
        if (r.ok) return;
      } catch {
        // not up yet
      }
      if (Date.now() > deadline) {
        await this.kill();
        throw new Error("docker-registry did not come up");
      }
      await sleep(50);
    }
  }

  /** Kills the registry process (the data stays). */
  async kill(): Promise<void> {
    if (!this.#child) return;
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // gone
    }
    await this.#exited;
    this.#child = undefined;
  }

  /** Number of blob GETs served (200/206) and their bytes, since log line `from`. */
  blobTraffic(from = 0): { requests: number; bytes: number } {
    let requests = 0;
    let bytes = 0;
    for (const line of this.#log.slice(from)) {
      const m = /"GET \/v2\/[^"]*\/blobs\/sha256:[0-9a-f]+ HTTP\/[0-9.]+" (\d+) (\d+)/.exec(line);
      if (m && (m[1] === "200" || m[1] === "206")) {
        requests++;
        bytes += Number(m[2]);
      }
    }
    return { requests, bytes };
  }

  /** Current position in the access log. */
  get mark(): number {
    return this.#log.length;
  }

  /** Kills the registry and removes its data. */
  async close(): Promise<void> {
    await this.kill();
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

// ---- layers and images ----------------------------------------------------------------------

/** A layer: its plain tar (what `tar -x` extracts) and its eStargz blob. */
export interface Layer {
  tar: string;
  blob: string;
  blobDigest: string;
  blobSize: number;
  diffId: string;
  tocDigest: string;
  uncompressedSize: number;
}

/** GNU tar of a whole directory tree (`-C dir .`), sorted, with xattrs and nanosecond times. */
export async function tarTree(dir: string, out: string): Promise<void> {
  await bash(
    `tar --create --file="$2" --directory="$1" --sort=name --format=pax --numeric-owner ` +
      `--xattrs --xattrs-include='*' .`,
    [dir, out],
  );
}

/** Converts a tar file with `writeEStargz` into `<tar>.estargz`. */
export async function toEStargz(tar: string): Promise<Layer> {
  const blob = `${tar}.estargz`;
  const out = await Deno.open(blob, { write: true, create: true, truncate: true });
  let r;
  try {
    using input = await Deno.open(tar);
    r = await writeEStargz(input.readable, async (b) => {
      for (let o = 0; o < b.length;) o += await out.write(b.subarray(o));
    });
  } finally {
    out.close();
  }
  return {
    tar,
    blob,
    blobDigest: r.blobDigest,
    blobSize: r.blobSize,
    diffId: r.diffId,
    tocDigest: r.tocDigest,
    uncompressedSize: r.uncompressedSize,
  };
}

/** Pushes eStargz layers as an OCI image `repo:tag` with the driver API; returns its digest. */
export function pushImage(
  host: string,
  repository: string,
  tag: string,
  layers: Layer[],
): Promise<string> {
  return pushEStargzLayers(
    defaultDrivers().forHost(host),
    { host, repository },
    tag,
    layers.map((l) => ({ blobPath: l.blob, result: l })),
    { config: { Cmd: ["/bin/sh"] } },
  );
}

/** `tar -x` of one layer as it is (whiteout files included) into a new directory. */
export async function extractLayer(tar: string, dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  await bash(
    `tar --extract --file="$1" --directory="$2" --same-permissions --same-owner ` +
      `--numeric-owner --xattrs --xattrs-include='*'`,
    [tar, dir],
  );
}

/**
 * Turns an extracted layer into overlayfs form, as crfs's layer view shows it: `.wh.x` becomes
 * a 0/0 character device `x` (mode 0, the whiteout's owner and mtime), `.wh..wh..opq` becomes
 * `trusted.overlay.opaque=y` on its directory; directory times are kept.
 */
export async function toOverlayForm(dir: string): Promise<void> {
  await bash(
    `cd "$1"
    find . -depth -name '.wh.*' -print0 | while IFS= read -r -d '' f; do
      d=$(dirname -- "$f"); b=$(basename -- "$f")
      dm=$(stat -c %.9Y -- "$d")
      if [ "$b" = .wh..wh..opq ]; then
        rm -- "$f"; setfattr -n trusted.overlay.opaque -v y -- "$d"
      else
        t="$d/\${b#.wh.}"
        read -r uid gid mt < <(stat -c '%u %g %.9Y' -- "$f")
        rm -- "$f"; mknod -- "$t" c 0 0; chmod 000 -- "$t"; chown -h "$uid:$gid" -- "$t"
        touch -h -d "@$mt" -- "$t"
      fi
      touch -h -d "@$dm" -- "$d"
    done`,
    [dir],
  );
}

/**
 * Applies a layer to `root` the OCI way (image-spec "Applying Changesets"): whiteouts delete
 * what they name, an opaque marker empties its directory, a non-directory replaces a directory
 * below it; then `tar -x` of the layer without its whiteout files. `stage` is scratch space.
 */
export async function applyLayer(root: string, tar: string, stage: string): Promise<void> {
  await extractLayer(tar, stage);
  await bash(
    `root=$1; cd "$2"
    find . -name .wh..wh..opq -print0 | while IFS= read -r -d '' f; do
      d=$(dirname -- "$f")
      if [ -d "$root/$d" ]; then find "$root/$d" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +; fi
    done
    find . -name '.wh.*' ! -name .wh..wh..opq -print0 | while IFS= read -r -d '' f; do
      d=$(dirname -- "$f"); b=$(basename -- "$f")
      rm -rf -- "$root/$d/\${b#.wh.}"
    done
    find . ! -type d -print0 | while IFS= read -r -d '' f; do
      if [ -d "$root/$f" ] && [ ! -L "$root/$f" ]; then rm -rf -- "$root/$f"; fi
    done
    tar --extract --file="$3" --directory="$root" --same-permissions --same-owner \\
      --numeric-owner --xattrs --xattrs-include='*' --exclude='.wh.*'`,
    [root, stage, tar],
  );
  await Deno.remove(stage, { recursive: true });
}

// ---- trees --------------------------------------------------------------------------------

/** One path of a tree as the tools see it. */
export interface Entry {
  /** find's %y: f d l c b p s. */
  type: string;
  /** Permission bits incl. setuid/setgid/sticky, octal. */
  mode: string;
  uid: number;
  gid: number;
  size: number;
  /** Seconds.nanoseconds. */
  mtime: string;
  nlink: number;
  /** Symlink target (binary string). */
  target: string;
  ino: number;
  /** "major:minor" (hex) for devices. */
  rdev?: string;
  sha256?: string;
  /** `name=0xhex` lines, sorted. */
  xattrs: string[];
}

/** Bytes as a binary string (one char per byte). */
export function binary(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 8192) {
    s += String.fromCharCode(...b.subarray(i, i + 8192));
  }
  return s;
}

/** A binary string as printable text for messages. */
export function printable(s: string): string {
  return JSON.stringify(dec.decode(Uint8Array.from(s, (c) => c.charCodeAt(0))));
}

function splitNul(b: Uint8Array): string[] {
  const parts = binary(b).split("\0");
  if (parts.at(-1) === "") parts.pop();
  return parts;
}

/**
 * Every path under `dir` ("" = the directory itself) with its attributes, device numbers,
 * content digest and xattrs, all through real tools run as child processes.
 */
export async function listTree(dir: string): Promise<Map<string, Entry>> {
  const t = 600_000;
  const [found, devs, sums, xattrs] = await Promise.all([
    bash(`cd "$1" && find . -printf '%P\\0%y\\0%m\\0%U\\0%G\\0%s\\0%T@\\0%n\\0%l\\0%i\\0'`, [
      dir,
    ], { timeoutMs: t }),
    bash(
      `cd "$1" && find . \\( -type c -o -type b \\) -exec stat --printf '%n\\0%t:%T\\0' {} +`,
      [dir],
      { timeoutMs: t },
    ),
    bash(`cd "$1" && find . -type f -exec sha256sum -z {} +`, [dir], { timeoutMs: t }),
    bash(`cd "$1" && getfattr -R -P -h -d -m - -e hex --absolute-names .`, [dir], {
      timeoutMs: t,
    }),
  ]);
  const out = new Map<string, Entry>();
  const f = splitNul(found.bytes);
  if (f.length % 10 !== 0) throw new Error(`find output of ${dir} is not in records of 10`);
  for (let i = 0; i < f.length; i += 10) {
    out.set(f[i], {
      type: f[i + 1],
      mode: f[i + 2],
      uid: Number(f[i + 3]),
      gid: Number(f[i + 4]),
      size: Number(f[i + 5]),
      mtime: f[i + 6],
      nlink: Number(f[i + 7]),
      target: f[i + 8],
      ino: Number(f[i + 9]),
      xattrs: [],
    });
  }
  const rel = (p: string) => p === "." ? "" : p.startsWith("./") ? p.slice(2) : p;
  const d = splitNul(devs.bytes);
  for (let i = 0; i < d.length; i += 2) out.get(rel(d[i]))!.rdev = d[i + 1];
  for (const line of splitNul(sums.bytes)) {
    const m = /^([0-9a-f]{64}) {2}([\s\S]*)$/.exec(line);
    if (!m) throw new Error(`sha256sum line ${printable(line)}`);
    out.get(rel(m[2]))!.sha256 = m[1];
  }
  let cur: Entry | undefined;
  for (const line of binary(xattrs.bytes).split("\n")) {
    if (line.startsWith("# file: ")) {
      // getfattr writes some bytes as \ooo.
      const name = line.slice(8).replace(
        /\\([0-7]{3})/g,
        (_, o) => String.fromCharCode(parseInt(o, 8)),
      );
      cur = out.get(rel(name));
      if (!cur) throw new Error(`getfattr names ${printable(name)}, which find did not list`);
    } else if (line.includes("=") && cur) cur.xattrs.push(line);
  }
  for (const e of out.values()) e.xattrs.sort();
  return out;
}

/** Fields `compareTrees` checks. */
export type Field =
  | "type"
  | "mode"
  | "uid"
  | "gid"
  | "size"
  | "mtime"
  | "nlink"
  | "target"
  | "rdev"
  | "sha256"
  | "xattrs"
  | "links";

const FIELDS: Field[] = [
  "type",
  "mode",
  "uid",
  "gid",
  "size",
  "mtime",
  "nlink",
  "target",
  "rdev",
  "sha256",
  "xattrs",
  "links",
];

/** The names sharing each non-directory's inode: path → sorted names (only when nlink > 1). */
function linkGroups(t: Map<string, Entry>): Map<string, string> {
  const byIno = new Map<number, string[]>();
  for (const [p, e] of t) {
    if (e.type === "d") continue;
    const l = byIno.get(e.ino) ?? [];
    l.push(p);
    byIno.set(e.ino, l);
  }
  const out = new Map<string, string>();
  for (const names of byIno.values()) {
    if (names.length < 2) continue;
    const key = names.sort().map(printable).join(",");
    for (const n of names) out.set(n, key);
  }
  return out;
}

/**
 * Differences between two trees, one line each: paths only in one of them, then every field
 * that differs (directory sizes are never compared: they are the filesystem's own). `skip`
 * leaves out a field of a path (e.g. overlayfs's link count of merged directories).
 */
export function compareTrees(
  actual: Map<string, Entry>,
  expected: Map<string, Entry>,
  skip: (path: string, field: Field, a: Entry, e: Entry) => boolean = () => false,
): string[] {
  const diffs: string[] = [];
  for (const p of expected.keys()) if (!actual.has(p)) diffs.push(`missing ${printable(p)}`);
  for (const p of actual.keys()) if (!expected.has(p)) diffs.push(`extra ${printable(p)}`);
  const la = linkGroups(actual);
  const le = linkGroups(expected);
  for (const [p, e] of expected) {
    const a = actual.get(p);
    if (!a) continue;
    for (const f of FIELDS) {
      if (skip(p, f, a, e)) continue;
      if (f === "size" && e.type === "d") continue;
      const av = f === "links" ? la.get(p) : f === "xattrs" ? a.xattrs.join(" ") : a[f];
      const ev = f === "links" ? le.get(p) : f === "xattrs" ? e.xattrs.join(" ") : e[f];
      if (av !== ev) diffs.push(`${printable(p)} ${f}: ${String(av)} != ${String(ev)} (expected)`);
    }
  }
  return diffs;
}

/** Throws listing (the first 40) differences, if any. */
export function assertSameTree(
  actual: Map<string, Entry>,
  expected: Map<string, Entry>,
  what: string,
  skip?: (path: string, field: Field, a: Entry, e: Entry) => boolean,
): void {
  const diffs = compareTrees(actual, expected, skip);
  if (diffs.length) {
    throw new Error(
      `${what}: ${diffs.length} differences (of ${expected.size} paths):\n  ` +
        diffs.slice(0, 40).join("\n  "),
    );
  }
  if (expected.size === 0) throw new Error(`${what}: empty tree`);
}

// ---- crfs mount as a process ----------------------------------------------------------------

/** A running `crfs mount`. */
export interface MountProcess {
  /** The mount point (absolute). */
  mnt: string;
  pid: number;
  /** The process's stderr so far. */
  stderr(): string;
  /** Resolves with the exit status. */
  status: Promise<Deno.CommandStatus>;
  kill(signal: Deno.Signal): void;
  /**
   * SIGTERM and wait (SIGKILL after 20 s); lazily unmounts what is left at the mount point and
   * removes the fresh HOME. Returns the exit status. Safe to call twice.
   */
  stop(): Promise<Deno.CommandStatus>;
}

/** FUSE mounts at `path` now. */
export async function fuseMountsAt(path: string): Promise<number> {
  return (await readMountinfo()).filter((m) => m.mountPoint === path && m.fsType.startsWith("fuse"))
    .length;
}

/**
 * Starts `crfs mount MNT ARGS` (`deno run -A main.ts`) with a fresh HOME and, unless ARGS name
 * one, a fresh `--cache-dir`; resolves once it says it has mounted. `denoArgs` go to `deno run`
 * (e.g. `--v8-flags=…`).
 */
export async function startMount(
  mnt: string,
  args: string[] = [],
  opts: { denoArgs?: string[]; env?: Record<string, string> } = {},
): Promise<MountProcess> {
  const home = await Deno.makeTempDir({ prefix: "crfs-mount-home-" });
  await Deno.mkdir(mnt, { recursive: true }).catch(() => {}); // (a stale mount is there)
  mnt = `${await Deno.realPath(dirname(mnt))}/${basename(mnt)}`;
  const cache = args.includes("--no-cache") || args.includes("--cache-dir")
    ? []
    : ["--cache-dir", `${home}/cache`];
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      ...(opts.denoArgs ?? []),
      `${ROOT}main.ts`,
      "mount",
      mnt,
      ...args,
      ...cache,
    ],
    cwd: ROOT,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: {
      ...opts.env,
      HOME: home,
      DOCKER_CONFIG: `${home}/docker`,
      NO_COLOR: "1",
      DENO_DIR: denoDir(),
    },
  }).spawn();
  const watched = watchChild(child);
  const { status } = watched;
  let stopped: Promise<Deno.CommandStatus> | undefined;
  const stop = () =>
    stopped ??= (async () => {
      const s = await watched.terminate();
      for (let i = 0; i < 4 && await fuseMountsAt(mnt) > 0; i++) {
        await run("umount", ["-l", mnt]);
      }
      await Deno.remove(home, { recursive: true }).catch(() => {});
      return s;
    })();
  const deadline = Date.now() + 60_000;
  while (!/crfs: mounted at /.test(watched.stderr())) {
    if (watched.exited() || Date.now() > deadline) {
      await stop();
      throw new Error(`crfs mount ${mnt} ${args.join(" ")} did not mount:\n${watched.stderr()}`);
    }
    await sleep(25);
  }
  return {
    mnt,
    pid: child.pid,
    stderr: watched.stderr,
    status,
    kill: (sig) => child.kill(sig),
    stop,
  };
}

/** Escapes a path for an overlayfs `lowerdir` list (`:` and `\`, and `,` for the option list). */
export function overlayEscape(path: string): string {
  return path.replace(/[\\:,]/g, (c) => `\\${c}`);
}

/**
 * Mounts kernel overlayfs over `lowers` (top first) at `<work>/merged`: writable with an upper
 * and work directory under `work` (the root then takes the upper directory's attributes), or
 * read-only over the lower directories alone (at least two). Returns the merged directory.
 */
export async function mountOverlay(
  lowers: string[],
  work: string,
  writable = true,
): Promise<string> {
  const merged = `${work}/merged`;
  for (const d of writable ? ["upper", "work", "merged"] : ["merged"]) {
    await Deno.mkdir(`${work}/${d}`, { recursive: true });
  }
  let opts = `lowerdir=${lowers.map(overlayEscape).join(":")}`;
  if (writable) opts += `,upperdir=${work}/upper,workdir=${work}/work`;
  const r = await run("mount", ["-t", "overlay", "overlay", "-o", opts, merged]);
  if (r.code !== 0) throw new Error(`mount -t overlay -o ${opts}: ${r.err}`);
  return merged;
}

/** Unmounts everything mounted at or below `dir` (deepest first), lazily if need be. */
export async function unmountAllUnder(dir: string): Promise<void> {
  const mine = (await readMountinfo()).filter((m) =>
    m.mountPoint === dir || m.mountPoint.startsWith(`${dir}/`)
  );
  for (const m of mine.reverse()) {
    const r = await run("umount", [m.mountPoint], { timeoutMs: 10_000 });
    if (r.code !== 0) await run("umount", ["-l", m.mountPoint], { timeoutMs: 10_000 });
  }
}
