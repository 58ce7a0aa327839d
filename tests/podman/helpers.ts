/**
 * Helpers for the podman tests: a runnable test image made of this machine's own binaries
 * (dash, coreutils, find and their libraries) plus layers exercising whiteouts, an opaque
 * directory, hardlinks and a setuid file; podman with its state in a temporary directory
 * (`--root`/`--runroot`, runc, the flags this machine needs), always reset and removed; and
 * `crfs store` running as a real subprocess serving a real FUSE mount.
 *
 * @module
 */
import { readMountinfo } from "../../fs/fuse/mount.ts";
import type { Spec } from "../cmd/helpers.ts";
import { denoDir } from "../helpers/deno_dir.ts";
import { randomBytes } from "../helpers/images.ts";
import { watchChild } from "../helpers/child.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const dec = new TextDecoder();

/** The programs the test image carries, from this machine. */
const PROGRAMS = ["sh", "cat", "ls", "stat", "id", "find", "sort", "sha256sum", "readlink"];

/** Runs a program; throws with its output when it fails. */
async function output(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed:\n${dec.decode(out.stderr)}`);
  }
  return dec.decode(out.stdout);
}

/**
 * The base layer: this machine's programs in `usr/bin` and their shared libraries under `usr/`,
 * with Debian's `bin`, `lib`, `lib64` symlinks, and `etc/passwd`/`etc/group` naming a user 1000.
 */
export async function baseLayer(): Promise<Record<string, Spec>> {
  const layer: Record<string, Spec> = {
    "bin": { symlink: "usr/bin" },
    "lib": { symlink: "usr/lib" },
    "lib64": { symlink: "usr/lib64" },
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/:/bin/sh\n",
    "etc/group": "root:x:0:\nuser:x:1000:\n",
  };
  const libs = new Set<string>();
  for (const p of PROGRAMS) {
    const path = (await output("sh", ["-c", `command -v ${p}`])).trim();
    const real = (await output("readlink", ["-f", path])).trim();
    layer[`usr/bin/${p}`] = { file: await Deno.readFile(real), mode: 0o755 };
    for (const m of (await output("ldd", [real])).matchAll(/(\/\S+) \(0x/g)) libs.add(m[1]);
  }
  for (const lib of libs) {
    // /lib/x86_64-linux-gnu/libc.so.6 → usr/lib/x86_64-linux-gnu/libc.so.6 (merged /usr).
    const at = lib.startsWith("/usr/") ? lib.slice(1) : `usr${lib}`;
    layer[at] = { file: await Deno.readFile(await Deno.realPath(lib)), mode: 0o755 };
  }
  return layer;
}

/**
 * The layers of the test image, bottom first: programs, then files (a 6 MiB file spanning
 * chunks, hardlinks, a setuid copy of `id`, a directory and files to delete), then whiteouts of
 * a file and of a directory, an opaque directory, a changed file and a new hardlink pair.
 */
export async function testImageLayers(): Promise<Record<string, Spec>[]> {
  const id = await Deno.readFile(
    (await output("readlink", ["-f", (await output("sh", ["-c", "command -v id"])).trim()]))
      .trim(),
  );
  return [
    await baseLayer(),
    {
      "etc/hello.txt": "hello\n",
      "etc/gone.txt": "to be deleted\n",
      "etc/link": { symlink: "hello.txt" },
      "usr/bin/tool": { file: "#!/bin/sh\necho tool says hi\n", mode: 0o755 },
      "usr/bin/tool-hard": { hardlink: "usr/bin/tool" },
      "usr/bin/id-suid": { file: id, mode: 0o4755 },
      "data/big.bin": randomBytes((6 << 20) + 77, 3),
      "data/small.txt": "small\n",
      "opaque/old.txt": "old\n",
      "opaque/sub/deep.txt": "deep\n",
      "dir-gone/x.txt": "x\n",
    },
    {
      "etc/gone.txt": { whiteout: true },
      "dir-gone": { whiteout: true },
      "etc/hello.txt": "hello again\n",
      "opaque": { opaque: true },
      "opaque/new.txt": "new\n",
      "pair/a": "same inode\n",
      "pair/b": { hardlink: "pair/a" },
    },
  ];
}

/** What a podman command gave. */
export interface PodmanRun {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Options of {@link Podman}. */
export interface PodmanOptions {
  /** An additional layer store used through `--storage-opt …=DIR:ref`. */
  storeFlag?: string;
  /** An additional layer store configured in a storage.conf (CONTAINERS_STORAGE_CONF). */
  storeConf?: string;
  /** Environment variables every podman command gets (over this process's own). */
  env?: Record<string, string>;
}

/**
 * podman with all of its state under a temporary directory. Use `await using`, or call
 * `close()`: it resets podman (unmounting what it mounted) and removes the directory.
 */
export class Podman {
  readonly dir: string;
  readonly #opts: PodmanOptions;
  private constructor(dir: string, opts: PodmanOptions) {
    this.dir = dir;
    this.#opts = opts;
  }

  static async create(opts: PodmanOptions = {}): Promise<Podman> {
    const dir = await Deno.makeTempDir({ prefix: "crfs-podman-" });
    if (opts.storeConf) {
      await Deno.writeTextFile(
        `${dir}/storage.conf`,
        `[storage]\ndriver = "overlay"\ngraphroot = "${dir}/root"\nrunroot = "${dir}/run"\n\n` +
          `[storage.options]\nadditionallayerstores = ["${opts.storeConf}:ref"]\n`,
      );
    }
    return new Podman(dir, opts);
  }

  /** Global flags of every podman command. */
  get flags(): string[] {
    // Its own libpod state directory (not the global /run/libpod another podman may reset).
    const f = ["--runtime", "runc", "--tmpdir", `${this.dir}/libpod-tmp`];
    // With --root/--runroot podman 4.3 ignores storage.conf's driver options: the paths are in
    // the storage.conf then.
    if (!this.#opts.storeConf) f.push("--root", `${this.dir}/root`, "--runroot", `${this.dir}/run`);
    if (this.#opts.storeFlag) {
      f.push(
        "--storage-driver",
        "overlay",
        "--storage-opt",
        `overlay.additionallayerstore=${this.#opts.storeFlag}:ref`,
      );
    }
    return f;
  }

  /** Runs `podman FLAGS ARGS` (never throws on failure). */
  async run(args: string[], timeoutMs = 120_000): Promise<PodmanRun> {
    const t = performance.now();
    const env: Record<string, string> = { ...this.#opts.env, TMPDIR: `${this.dir}` };
    if (this.#opts.storeConf) env.CONTAINERS_STORAGE_CONF = `${this.dir}/storage.conf`;
    const child = new Deno.Command("podman", {
      args: [...this.flags, ...args],
      stdout: "piped",
      stderr: "piped",
      env,
    }).spawn();
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // exited
      }
    }, timeoutMs);
    const out = await child.output();
    clearTimeout(timer);
    return {
      code: out.code,
      stdout: dec.decode(out.stdout),
      stderr: dec.decode(out.stderr),
      ms: performance.now() - t,
    };
  }

  /** Runs a podman command that must succeed; returns its stdout. */
  async ok(args: string[]): Promise<string> {
    const r = await this.run(args);
    if (r.code !== 0) throw new Error(`podman ${args.join(" ")} failed (${r.code}):\n${r.stderr}`);
    return r.stdout;
  }

  /** `podman run --rm` with this machine's required flags, then `args` (options, image, …). */
  runArgs(...args: string[]): string[] {
    return [
      "run",
      "--rm",
      "--network",
      "none",
      "--ulimit",
      "nofile=1024:1024",
      "--ulimit",
      "nproc=1000:1000",
      "--tls-verify=false",
      ...args,
    ];
  }

  /** Resets podman, unmounts anything left under its directory and removes it. */
  async close(): Promise<void> {
    await this.run(["system", "reset", "-f"], 60_000).catch(() => {});
    const left = (await readMountinfo()).filter((m) => m.mountPoint.startsWith(this.dir + "/"));
    for (const m of left.reverse()) {
      await new Deno.Command("umount", { args: ["-l", m.mountPoint] }).output().catch(() => {});
    }
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** A crfs subprocess serving FUSE mounts. */
export interface StoreProcess {
  /** The store's directory (the first mount point waited for). */
  dir: string;
  /** What crfs wrote to stderr so far. */
  stderr(): string;
  /** SIGTERM, wait for the exit; throws if a mount is still there afterwards. */
  stop(): Promise<void>;
}

/**
 * Starts `crfs store DIR ...extra` with a fresh HOME and cache (and `env` over this process's
 * environment); resolves once it is mounted.
 */
export function startStore(
  dir: string,
  extra: string[] = [],
  env: Record<string, string> = {},
): Promise<StoreProcess> {
  return startCrfs(["store", dir, ...extra], [dir], env);
}

/**
 * Starts `crfs ARGS --cache-dir <fresh>` with a fresh HOME (and `env`); resolves once FUSE mounts
 * are at every one of `mountpoints` (absolute paths).
 */
export async function startCrfs(
  args: string[],
  mountpoints: string[],
  env: Record<string, string> = {},
): Promise<StoreProcess> {
  const home = await Deno.makeTempDir({ prefix: "crfs-store-home-" });
  for (const m of mountpoints) await Deno.mkdir(m, { recursive: true });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}main.ts`, ...args, "--cache-dir", `${home}/cache`],
    cwd: ROOT,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: {
      ...env,
      HOME: home,
      DOCKER_CONFIG: `${home}/docker`,
      NO_COLOR: "1",
      DENO_DIR: denoDir(),
    },
  }).spawn();
  const watched = watchChild(child);
  const mounted = async () => {
    const table = await readMountinfo();
    return mountpoints.filter((p) =>
      table.some((m) => m.mountPoint === p && m.fsType.startsWith("fuse"))
    );
  };
  const stop = async () => {
    await watched.terminate();
    await Deno.remove(home, { recursive: true }).catch(() => {});
    const left = await mounted();
    for (const p of left) await new Deno.Command("umount", { args: ["-l", p] }).output();
    if (left.length) throw new Error(`crfs left its mounts at ${left.join(", ")}`);
  };
  const deadline = Date.now() + 30_000;
  while ((await mounted()).length < mountpoints.length) {
    if (watched.exited() || Date.now() > deadline) {
      await stop().catch(() => {});
      throw new Error(
        `crfs ${args.join(" ")} did not mount ${mountpoints.join(", ")}:\n${watched.stderr()}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { dir: mountpoints[0], stderr: watched.stderr, stop };
}

/** What the check script prints about the container's tree (podman's own mounts left out). */
export const TREE_SCRIPT =
  `set -e; cd / && find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /run \
-o -path /etc/hosts -o -path /etc/hostname -o -path /etc/resolv.conf \\) -prune -o \
\\( -type d -printf '%p d %m %U:%G\\n' \\) -o -printf '%p %y %m %U:%G %s %n %T@ %l\\n' | sort
echo ---
find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /run \\) -prune -o -type f \
! -path /etc/hosts ! -path /etc/hostname ! -path /etc/resolv.conf -exec sha256sum {} + | sort
echo ---
for p in /usr/bin/tool:/usr/bin/tool-hard /pair/a:/pair/b; do
  a=$(stat -c %i "\${p%%:*}"); b=$(stat -c %i "\${p#*:}"); [ "$a" = "$b" ] && echo "$p same inode"
done
`;
