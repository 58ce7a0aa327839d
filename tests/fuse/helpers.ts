/**
 * Helpers for the FUSE mount tests: run real tools as child processes (never sync calls into the
 * mount from the serving process), mount a filesystem at a fresh temporary directory and always
 * clean up, and inspect the mount table.
 *
 * @module
 */
import { type FuseMount, mount, type MountOptions, readMountinfo } from "../../fs/fuse/mount.ts";
import type { FuseOps } from "../../fs/fuse/ops.ts";

/** Result of a child process. */
export interface RunResult {
  code: number;
  stdout: Uint8Array;
  out: string;
  err: string;
}

const dec = new TextDecoder();

/** Runs a command to completion (async, so the mount keeps being served meanwhile). */
export async function run(cmd: string, args: string[], timeoutMs = 60_000): Promise<RunResult> {
  const child = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // gone
    }
  }, timeoutMs);
  try {
    const o = await child.output();
    return { code: o.code, stdout: o.stdout, out: dec.decode(o.stdout), err: dec.decode(o.stderr) };
  } finally {
    clearTimeout(timer);
  }
}

/** Runs `sh -c script` with positional parameters `$1...`. */
export function sh(script: string, ...args: string[]): Promise<RunResult> {
  return run("sh", ["-c", script, "sh", ...args]);
}

/** Like `sh` but fails the test on a non-zero exit. */
export async function shOk(script: string, ...args: string[]): Promise<RunResult> {
  const r = await sh(script, ...args);
  if (r.code !== 0) throw new Error(`sh failed (${r.code}): ${script}\n${r.err}`);
  return r;
}

/** FUSE mounts currently at `path` in this namespace. */
export async function fuseMountsAt(path: string): Promise<number> {
  return (await readMountinfo()).filter((m) => m.mountPoint === path && m.fsType.startsWith("fuse"))
    .length;
}

/**
 * Mounts `ops` at `<tmp>/mnt`, runs `fn`, and always detach-unmounts, waits for the connection
 * to end and removes the temporary directory.
 */
export async function withMount(
  ops: FuseOps,
  fn: (mp: string, m: FuseMount) => Promise<void>,
  options: MountOptions = {},
): Promise<void> {
  const tmp = await Deno.makeTempDir({ prefix: "crfs-fuse-test-" });
  let m: FuseMount | undefined;
  try {
    m = await mount(`${tmp}/mnt`, ops, { onError: () => {}, ...options });
    await fn(m.mountpoint, m);
  } finally {
    if (m) await m.unmount({ graceMs: 2000 });
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A promise plus its resolver, for gating slow reads. */
export function gate(): { promise: Promise<void>; open: () => void } {
  const { promise, resolve } = Promise.withResolvers<void>();
  return { promise, open: () => resolve() };
}

/** Byte-for-byte equality with a useful message. */
export function sameBytes(a: Uint8Array, b: Uint8Array, what: string): void {
  if (a.length !== b.length) throw new Error(`${what}: length ${a.length} != ${b.length}`);
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) throw new Error(`${what}: first difference at byte ${i}`);
  }
}
