/**
 * Helpers for the rootless tests: a throw-away Unix user (made with `useradd`, removed with
 * `userdel -r` after its processes and mounts are gone), the machine settings non-root FUSE
 * needs (`/dev/fuse` mode 0666, `user_allow_other` in /etc/fuse.conf) set for one test and
 * restored afterwards whatever happens, and crfs run as that user (`setpriv`, so the process
 * signalled is crfs itself) with its own HOME, `$XDG_RUNTIME_DIR`, `$XDG_CACHE_HOME` and a copy
 * of the npm packages of the Deno cache (the user cannot read root's).
 *
 * These tests need root and the tools (useradd, setpriv, fusermount3); without them they fail.
 *
 * @module
 */
import { readMountinfo } from "../../fs/fuse/mount.ts";
import { FUSE_CONF } from "../../fs/fuse/unprivileged.ts";
import { requireRoot } from "../helpers/require_root.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
/** Held (flock) while a test has changed /dev/fuse or /etc/fuse.conf. */
const LOCK_FILE = "/tmp/crfs-rootless-tests.lock";
const dec = new TextDecoder();

/** Runs a program as root; throws with its output when it fails. */
export async function sh(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed (${out.code}):\n${dec.decode(out.stderr)}`);
  }
  return dec.decode(out.stdout);
}

/** The uids of processes alive now. */
async function processesOf(uid: number): Promise<number[]> {
  const pids: number[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const st = await Deno.readTextFile(`/proc/${e.name}/status`);
      const m = /^Uid:\s+(\d+)/m.exec(st);
      if (m && Number(m[1]) === uid) pids.push(Number(e.name));
    } catch {
      // gone
    }
  }
  return pids;
}

/** What a command run as the user gave. */
export interface UserRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** A user made for one test; `await using` removes it with everything it left. */
export class TestUser {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  readonly home: string;
  /** Its `$XDG_RUNTIME_DIR` (0700, its own). */
  readonly runtimeDir: string;

  private constructor(name: string, uid: number, gid: number, home: string) {
    this.name = name;
    this.uid = uid;
    this.gid = gid;
    this.home = home;
    this.runtimeDir = `${home}/run`;
  }

  /** Adds a user `crfsrl<random>` with a home, a runtime directory and the Deno npm cache. */
  static async create(): Promise<TestUser> {
    requireRoot("the rootless tests add a test user");
    const name = `crfsrl${crypto.randomUUID().slice(0, 8)}`;
    await sh("useradd", ["--create-home", "--shell", "/bin/sh", name]);
    const uid = Number((await sh("id", ["-u", name])).trim());
    const gid = Number((await sh("id", ["-g", name])).trim());
    const user = new TestUser(name, uid, gid, `/home/${name}`);
    try {
      await Deno.mkdir(user.runtimeDir, { mode: 0o700 });
      const denoDir = Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME")}/.cache/deno`;
      await Deno.mkdir(`${user.home}/.cache/deno`, { recursive: true });
      await sh("cp", ["-r", `${denoDir}/npm`, `${user.home}/.cache/deno/npm`]);
      await sh("chown", ["-R", `${uid}:${gid}`, user.home]);
    } catch (e) {
      await user.remove();
      throw e;
    }
    return user;
  }

  /** The environment crfs and podman get as this user. */
  env(extra: Record<string, string> = {}): Record<string, string> {
    return {
      HOME: this.home,
      USER: this.name,
      LOGNAME: this.name,
      PATH: "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
      XDG_RUNTIME_DIR: this.runtimeDir,
      XDG_CACHE_HOME: `${this.home}/.cache`,
      DENO_DIR: `${this.home}/.cache/deno`,
      NO_COLOR: "1",
      ...extra,
    };
  }

  /** A `Deno.Command` running `cmd args` as this user (setpriv: no process in between). */
  command(cmd: string, args: string[], opts: {
    env?: Record<string, string>;
    stdout?: "piped" | "null";
    stderr?: "piped" | "null";
    cwd?: string;
  } = {}): Deno.Command {
    return new Deno.Command("setpriv", {
      args: [
        `--reuid=${this.uid}`,
        `--regid=${this.gid}`,
        "--init-groups",
        "--reset-env",
        "--",
        "env",
        ...Object.entries(this.env(opts.env)).map(([k, v]) => `${k}=${v}`),
        cmd,
        ...args,
      ],
      cwd: opts.cwd ?? this.home,
      clearEnv: true,
      stdin: "null",
      stdout: opts.stdout ?? "piped",
      stderr: opts.stderr ?? "piped",
    });
  }

  /** Runs `cmd args` as the user to the end (killed after `timeoutMs`). */
  async run(
    cmd: string,
    args: string[],
    opts: { env?: Record<string, string>; timeoutMs?: number } = {},
  ): Promise<UserRun> {
    const child = this.command(cmd, args, { env: opts.env }).spawn();
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // exited
      }
    }, opts.timeoutMs ?? 120_000);
    const out = await child.output();
    clearTimeout(timer);
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  }

  /** Runs `crfs ARGS` as the user to the end. */
  crfs(args: string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}) {
    return this.run(Deno.execPath(), ["run", "-A", `${ROOT}main.ts`, ...args], opts);
  }

  /** Starts `crfs ARGS` as the user; resolves once every one of `mountpoints` is a FUSE mount. */
  async startCrfs(args: string[], mountpoints: string[]): Promise<UserCrfs> {
    const child = this.command(Deno.execPath(), ["run", "-A", `${ROOT}main.ts`, ...args], {
      stdout: "null",
      cwd: ROOT,
    }).spawn();
    return await UserCrfs.started(child, args, mountpoints);
  }

  /** Kills what the user still runs (by pid), unmounts what is under its home, removes it. */
  async remove(): Promise<void> {
    for (let round = 0; round < 5; round++) {
      const pids = await processesOf(this.uid);
      if (pids.length === 0) break;
      for (const pid of pids) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch {
          // gone
        }
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    const left = (await readMountinfo()).filter((m) => m.mountPoint.startsWith(this.home + "/"));
    for (const m of left.reverse()) {
      await new Deno.Command("umount", { args: ["-l", m.mountPoint] }).output().catch(() => {});
    }
    await sh("userdel", ["--remove", this.name]).catch(async () => {
      await sh("userdel", ["--force", "--remove", this.name]).catch(() => {});
    });
    await Deno.remove(this.home, { recursive: true }).catch(() => {});
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.remove();
  }
}

/** True when a FUSE mount is at `path` now. */
export async function fuseMountedAt(path: string): Promise<boolean> {
  return (await readMountinfo()).some((m) => m.mountPoint === path && m.fsType.startsWith("fuse"));
}

/** A crfs process running as a test user. */
export class UserCrfs {
  readonly child: Deno.ChildProcess;
  readonly status: Promise<Deno.CommandStatus>;
  #err = "";
  #pump: Promise<void>;
  #exited = false;

  private constructor(child: Deno.ChildProcess) {
    this.child = child;
    this.#pump = (async () => {
      for await (const t of child.stderr.pipeThrough(new TextDecoderStream())) this.#err += t;
    })();
    this.status = child.status.then((s) => {
      this.#exited = true;
      return s;
    });
  }

  static async started(
    child: Deno.ChildProcess,
    args: string[],
    mountpoints: string[],
  ): Promise<UserCrfs> {
    const c = new UserCrfs(child);
    const deadline = Date.now() + 60_000;
    for (;;) {
      // Ready when crfs says so for the last mount point and every one is in the table (a stale
      // mount left at the same place is in the table before crfs has replaced it).
      const table = await readMountinfo();
      const all = mountpoints.every((p) =>
        table.some((m) => m.mountPoint === p && m.fsType.startsWith("fuse"))
      );
      if (all && /mounted at|layer store at/.test(c.#err)) return c;
      if (c.#exited || Date.now() > deadline) {
        await c.kill("SIGKILL");
        throw new Error(
          `crfs ${args.join(" ")} did not mount ${mountpoints.join(", ")}:\n${c.#err}`,
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** What crfs wrote to stderr so far. */
  stderr(): string {
    return this.#err;
  }

  /** Sends `signal` and waits for the exit (SIGKILL after 20 s); returns the exit code. */
  async kill(signal: Deno.Signal = "SIGTERM"): Promise<number> {
    if (!this.#exited) {
      try {
        this.child.kill(signal);
      } catch {
        // gone
      }
    }
    const timer = setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // gone
      }
    }, 20_000);
    const s = await this.status;
    clearTimeout(timer);
    await this.#pump;
    return s.code;
  }
}

/**
 * Runs `fn` with `/dev/fuse` at `mode` (this VM has 0600, under which no non-root user can use
 * FUSE), restoring the device's mode afterwards, whatever happens.
 */
export async function withDevFuseMode<T>(mode: number, fn: () => Promise<T>): Promise<T> {
  // One test file at a time (they run in parallel): each sees its own mode and restores the
  // machine's, not another test's.
  const lock = await Deno.open(LOCK_FILE, { read: true, write: true, create: true });
  await lock.lock(true);
  try {
    const before = (await Deno.stat("/dev/fuse")).mode! & 0o7777;
    await Deno.chmod("/dev/fuse", mode);
    try {
      return await fn();
    } finally {
      await Deno.chmod("/dev/fuse", before);
    }
  } finally {
    await lock.unlock();
    lock.close();
  }
}

/**
 * Runs `fn` with a `user_allow_other` line in /etc/fuse.conf (added when missing), restoring the
 * file's exact contents (or its absence) afterwards, whatever happens. Call it inside
 * {@link withDevFuseMode}, which serializes the tests that change these files.
 */
export async function withUserAllowOther<T>(fn: () => Promise<T>): Promise<T> {
  let before: string | undefined;
  try {
    before = await Deno.readTextFile(FUSE_CONF);
  } catch {
    before = undefined;
  }
  const text = before ?? "";
  await Deno.writeTextFile(
    FUSE_CONF,
    `${text}${text && !text.endsWith("\n") ? "\n" : ""}user_allow_other\n`,
  );
  try {
    return await fn();
  } finally {
    if (before === undefined) await Deno.remove(FUSE_CONF);
    else await Deno.writeTextFile(FUSE_CONF, before);
  }
}
