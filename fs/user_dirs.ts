/**
 * Where crfs keeps things when no flag says: the system directories for root (`/run`,
 * `/var/lib`, `/var/cache`), and for any other user the XDG base directories that stand for
 * them (`$XDG_RUNTIME_DIR`; `$XDG_DATA_HOME`, else `~/.local/share`; `$XDG_CACHE_HOME`, else
 * `~/.cache`), as podman and containerd's rootless mode do. The disk cache
 * (fs/disk_cache.ts `defaultCacheDir`) and `crfs snapshotter`'s socket and state take their
 * defaults from here.
 *
 * @module
 */

/** The base directories of one user. */
export interface UserDirs {
  /** `/run`, or `$XDG_RUNTIME_DIR` (undefined when a non-root user has none). */
  runtime?: string;
  /** Persistent state: `/var/lib`, or `$XDG_DATA_HOME` (default `~/.local/share`). */
  data: string;
  /** Caches: `/var/cache`, or `$XDG_CACHE_HOME` (default `~/.cache`). */
  cache: string;
}

/**
 * The base directories for `uid` (default: this process's) in environment `env`.
 *
 * @example
 * ```ts
 * userDirs(1000, (n) => ({ HOME: "/home/u", XDG_RUNTIME_DIR: "/run/user/1000" })[n]);
 * // { runtime: "/run/user/1000", data: "/home/u/.local/share", cache: "/home/u/.cache" }
 * ```
 */
export function userDirs(
  uid = Deno.uid() ?? 0,
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
): UserDirs {
  if (uid === 0) return { runtime: "/run", data: "/var/lib", cache: "/var/cache" };
  const dir = (name: string) => env(name)?.replace(/(.)\/+$/, "$1") || undefined;
  const home = dir("HOME") ?? "/tmp";
  return {
    runtime: dir("XDG_RUNTIME_DIR"),
    data: dir("XDG_DATA_HOME") ?? `${home}/.local/share`,
    cache: dir("XDG_CACHE_HOME") ?? `${home}/.cache`,
  };
}

/** `crfs snapshotter`'s default socket and state directory. */
export interface SnapshotterPaths {
  /**
   * The socket: `/run/crfs/snapshotter.sock` for root, else
   * `$XDG_RUNTIME_DIR/crfs-snapshotter/snapshotter.sock` (`$XDG_RUNTIME_DIR/crfs` is a non-root
   * `crfs mount`'s default mount point); undefined without a runtime directory.
   */
  address?: string;
  /** Snapshots and their metadata, kept across restarts: `DATA/crfs/snapshotter`. */
  root: string;
}

/** The default paths of `crfs snapshotter` for `uid` in `env` (as {@link userDirs}). */
export function snapshotterPaths(
  uid = Deno.uid() ?? 0,
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
): SnapshotterPaths {
  const dirs = userDirs(uid, env);
  const address = dirs.runtime === undefined
    ? undefined
    : uid === 0
    ? `${dirs.runtime}/crfs/snapshotter.sock`
    : `${dirs.runtime}/crfs-snapshotter/snapshotter.sock`;
  return { address, root: `${dirs.data}/crfs/snapshotter` };
}
