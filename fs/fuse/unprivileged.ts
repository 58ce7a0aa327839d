/**
 * What is different when crfs mounts as a non-root user. libfuse then mounts through the setuid
 * helper `fusermount3` (after opening `/dev/fuse` as the user), and unmounting goes through
 * `fusermount3 -u` (umount2 needs privilege; `detachUnmount` in mount.ts falls back to it). When
 * that would fail, libfuse and fusermount3 print their own lines and crfs could only add "see
 * stderr"; {@link checkUnprivilegedMount} finds the usual causes first and names what to change,
 * in one line:
 *
 * - `/dev/fuse` missing, or not readable and writable by the user (mode 0600: non-root FUSE needs
 *   0666, the mode most distributions give it);
 * - no `fusermount3` on PATH, or one that is not setuid root;
 * - `allow_other` asked for without `user_allow_other` in `/etc/fuse.conf`;
 * - a mount point the user neither owns nor may write (fusermount3 refuses those, and sticky
 *   directories owned by someone else).
 *
 * Also the non-root default mount point, `$XDG_RUNTIME_DIR/crfs` (state lives under the runtime
 * directory; the disk cache's default is `$XDG_CACHE_HOME/crfs`, see fs/disk_cache.ts).
 *
 * @module
 */

/** `/etc/fuse.conf`, where `user_allow_other` lets non-root users mount with `allow_other`. */
export const FUSE_CONF = "/etc/fuse.conf";

/** Options of {@link checkUnprivilegedMount}. */
export interface UnprivilegedCheckOptions {
  /** The mount asks for `allow_other`. */
  allowOther?: boolean;
  /** The FUSE device. Default `/dev/fuse`. */
  device?: string;
  /** The fuse configuration file. Default {@link FUSE_CONF}. */
  fuseConf?: string;
  /** The search path for fusermount3. Default `$PATH`. */
  path?: string;
  /** The user's uid and groups (default: this process's). */
  uid?: number;
  gids?: number[];
}

/** A non-root mount that cannot work; the message says what to change. */
export class UnprivilegedMountError extends Error {
  override name = "UnprivilegedMountError";
}

/** The absolute path of `prog` on `searchPath`, if an executable file is there. */
export async function findOnPath(prog: string, searchPath: string): Promise<string | undefined> {
  for (const dir of searchPath.split(":")) {
    if (!dir) continue;
    const p = `${dir.replace(/\/+$/, "")}/${prog}`;
    try {
      const st = await Deno.stat(p);
      if (st.isFile && ((st.mode ?? 0) & 0o111) !== 0) return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** True when `/etc/fuse.conf` (or `file`) has a `user_allow_other` line (comments aside). */
export async function userAllowOther(file = FUSE_CONF): Promise<boolean> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch {
    return false;
  }
  return text.split("\n").some((line) => line.replace(/#.*/, "").trim() === "user_allow_other");
}

/** The groups of this process (from /proc/self/status). */
async function ownGroups(): Promise<number[]> {
  try {
    const status = await Deno.readTextFile("/proc/self/status");
    const line = status.split("\n").find((l) => l.startsWith("Groups:")) ?? "";
    return line.slice(7).trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Whether mode bits `bits` (e.g. 0o6 = read+write) are granted to (uid, gids) by `st`. */
function granted(st: Deno.FileInfo, uid: number, gids: number[], bits: number): boolean {
  const mode = st.mode ?? 0;
  if (st.uid === uid) return ((mode >> 6) & bits) === bits;
  if (st.gid !== null && gids.includes(st.gid)) return ((mode >> 3) & bits) === bits;
  return (mode & bits) === bits;
}

/**
 * Checks that a non-root user can mount FUSE at `mountpoint` (an existing directory) through
 * fusermount3; throws an {@link UnprivilegedMountError} naming the cause and its fix otherwise.
 * Root needs none of this (crfs mounts with mount(2) then).
 */
export async function checkUnprivilegedMount(
  mountpoint: string,
  options: UnprivilegedCheckOptions = {},
): Promise<void> {
  const uid = options.uid ?? Deno.uid() ?? 0;
  const gids = options.gids ?? [Deno.gid() ?? 0, ...await ownGroups()];
  const device = options.device ?? "/dev/fuse";
  let dev: Deno.FileInfo;
  try {
    dev = await Deno.stat(device);
  } catch {
    throw new UnprivilegedMountError(
      `${device} does not exist: load the fuse module (modprobe fuse), or in a container pass ` +
        `the device (--device /dev/fuse)`,
    );
  }
  if (!granted(dev, uid, gids, 0o6)) {
    const mode = ((dev.mode ?? 0) & 0o777).toString(8).padStart(4, "0");
    throw new UnprivilegedMountError(
      `${device} is mode ${mode}, not readable and writable by uid ${uid}: mounting FUSE as a ` +
        `non-root user needs it 0666 (chmod 0666 ${device}, or a udev rule), or run crfs as root`,
    );
  }
  const helper = await findOnPath("fusermount3", options.path ?? Deno.env.get("PATH") ?? "");
  if (!helper) {
    throw new UnprivilegedMountError(
      "fusermount3 is not on PATH: non-root FUSE mounts need it (Debian/Ubuntu: apt-get install " +
        "fuse3), or run crfs as root",
    );
  }
  const hs = await Deno.stat(helper);
  if (hs.uid !== 0 || ((hs.mode ?? 0) & 0o4000) === 0) {
    throw new UnprivilegedMountError(
      `${helper} is not setuid root (chown root ${helper}; chmod u+s ${helper}), so it cannot ` +
        `mount for uid ${uid}`,
    );
  }
  const conf = options.fuseConf ?? FUSE_CONF;
  if (options.allowOther && !await userAllowOther(conf)) {
    throw new UnprivilegedMountError(
      `--allow-other as a non-root user needs a line 'user_allow_other' in ${conf} (fusermount3 ` +
        `refuses allow_other without it)`,
    );
  }
  const mp = await Deno.stat(mountpoint);
  if (!mp.isDirectory) {
    throw new UnprivilegedMountError(`${mountpoint} is not a directory`);
  }
  const sticky = ((mp.mode ?? 0) & 0o1000) !== 0;
  if (mp.uid !== uid && (sticky || !granted(mp, uid, gids, 0o3))) {
    throw new UnprivilegedMountError(
      `${mountpoint} belongs to uid ${mp.uid}: fusermount3 mounts only on a directory the user ` +
        `owns or may write; use one of your own (e.g. under $HOME or $XDG_RUNTIME_DIR)`,
    );
  }
}

/**
 * The default mount point of `crfs mount`: `/crfs` for root, `$XDG_RUNTIME_DIR/crfs` for other
 * users; undefined when a non-root user has no `$XDG_RUNTIME_DIR` (then a mount point must be
 * given).
 */
export function defaultMountpoint(
  uid = Deno.uid() ?? 0,
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
): string | undefined {
  if (uid === 0) return "/crfs";
  const run = env("XDG_RUNTIME_DIR")?.replace(/\/+$/, "");
  return run ? `${run}/crfs` : undefined;
}
