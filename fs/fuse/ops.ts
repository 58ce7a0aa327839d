/**
 * What a read-only filesystem implements to be served over FUSE: the `FuseOps` interface, the
 * shapes of its replies, and `FuseError` for answering a request with an errno.
 *
 * Node ids are the filesystem's own numbers; the root directory is node 1. Names are raw bytes
 * (never assumed to be UTF-8). Every operation may answer with a value or a promise of one
 * (answering synchronously saves the request a few microtask turns), and may throw or reject
 * with `FuseError(errno)`; any other exception is answered with EIO. On hot paths (a lookup of
 * a missing name, an absent xattr) an operation may instead answer with a `FuseError`, returned
 * or resolved rather than thrown: the request is answered with its errno without the cost of an
 * exception passing through every wrapper (about a µs each, against a few µs per request).
 * `FuseError.of(errno)` is a shared instance for that (making an Error costs a µs as well).
 *
 * @module
 */
import { type Attr, Errno, type StatfsOut } from "./abi.ts";

export { type Attr, Errno, type StatfsOut } from "./abi.ts";

/** The node id of the root directory. */
export const ROOT_ID = 1;

/** An error carrying the errno the kernel should see (e.g. `new FuseError(Errno.ENOENT)`). */
export class FuseError extends Error {
  /** Positive errno value. */
  readonly errno: number;
  constructor(errno: number, message?: string) {
    // An expected answer (ENOENT, ENODATA, …), made thousands of times a second: no stack trace
    // (capturing one cost about a third of a request's time).
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(message ?? `errno ${errno}`);
    Error.stackTraceLimit = limit;
    this.name = "FuseError";
    this.errno = errno;
  }

  /** A shared `FuseError` for `errno`, cheap to throw on hot paths (do not modify it). */
  static of(errno: number): FuseError {
    let e = shared.get(errno);
    if (!e) {
      e = new FuseError(errno);
      shared.set(errno, e);
    }
    return e;
  }
}

/** A value or a promise of one: what an operation of `FuseOps` answers with. */
export type MaybePromise<T> = T | Promise<T>;

/** What a hot-path operation answers with: a value or an errno (`FuseError`), or a promise. */
export type Answer<T> = MaybePromise<T | FuseError>;

/**
 * The value of a settled answer, throwing it if it is a `FuseError`: for callers of `FuseOps`
 * other than the FUSE loop.
 *
 * @example
 * ```ts
 * const e = answered(await fs.lookup(ROOT_ID, new TextEncoder().encode("etc")));
 * ```
 */
export function answered<T>(a: T | FuseError): T {
  if (a instanceof FuseError) throw a;
  return a;
}

const shared = new Map<number, FuseError>();

/** The errno to answer for an exception: a `FuseError`'s own, EINTR for aborts, else EIO. */
export function errnoOf(err: unknown): number {
  if (err instanceof FuseError) return err.errno > 0 ? err.errno : Errno.EIO;
  if (err instanceof DOMException && err.name === "AbortError") return Errno.EINTR;
  return Errno.EIO;
}

/**
 * The answer to a lookup: the node and how long the kernel may cache the name and the attributes.
 * A `nodeId` of 0 is a negative entry: "no such name", cached for `entryTtlMs`.
 */
export interface EntryReply {
  /** The node's id, also its inode number (`st_ino`). */
  nodeId: number;
  attr: Attr;
  entryTtlMs: number;
  attrTtlMs: number;
  /** nodeId:generation must be unique for the filesystem's lifetime; 0 if not given. */
  generation?: number;
}

/** One directory entry. */
export interface DirItem {
  /** Raw name bytes. `.` and `..` may be included; READDIRPLUS gives them node id 0. */
  name: Uint8Array;
  /** DT_* type. */
  type: number;
  /** Inode number shown in `d_ino`. */
  ino: number;
  /** Directory offset of the NEXT item; must be stable and passed back to `readdir` unchanged. */
  next: number;
}

/** Result of `open`. */
export interface OpenReply {
  /** File handle passed back to `read`/`release`; 0 if not given. */
  fh?: number;
  /** Keep the page cache across opens (right for immutable content). */
  keepCache?: boolean;
  /** Bypass the page cache for this open file. */
  directIo?: boolean;
}

/** Result of `opendir`. */
export interface OpendirReply {
  fh?: number;
  /** Let the kernel cache this directory's entries. */
  cacheDir?: boolean;
  /** Keep cached entries across opens (with `cacheDir`). */
  keepCache?: boolean;
}

/**
 * A request to add or remove a name in a directory (CREATE, MKNOD, MKDIR, UNLINK, RMDIR), for
 * filesystems that answer some of them themselves (see `FuseOps.changeEntry`).
 */
export type EntryChange = "create" | "mknod" | "mkdir" | "unlink" | "rmdir";

/** Result of `getattr`. */
export interface AttrReply {
  attr: Attr;
  ttlMs: number;
}

/**
 * A read-only filesystem served by `mount()`. Optional methods fall back to sensible defaults
 * (no-op for `forget`/`release`/`releasedir`, handle 0 for `opendir`, ENOSYS for `access`,
 * plain READDIR when `readdirplusEntry` is absent). Write operations are answered with EROFS by
 * the session itself, except the name changes a filesystem takes with `changeEntry`.
 */
export interface FuseOps {
  /** Resolves `name` in directory `parent`. Each successful answer counts as one lookup. */
  lookup(parent: number, name: Uint8Array): Answer<EntryReply>;
  /** The kernel dropped `nlookup` lookups of `nodeId`. Never answered; must not throw. */
  forget?(nodeId: number, nlookup: number): void;
  getattr(nodeId: number): MaybePromise<AttrReply>;
  /** The target of a symlink, raw bytes. */
  readlink(nodeId: number): MaybePromise<Uint8Array>;
  open(nodeId: number, flags: number): MaybePromise<OpenReply>;
  /**
   * Reads up to `size` bytes at `offset`; shorter only at end of file. `signal` aborts when the
   * caller was interrupted. `into` is a scratch buffer of `size` bytes the implementation may
   * fill and return (a prefix of) to avoid allocating; it is valid until the promise settles.
   */
  read(
    nodeId: number,
    fh: number,
    offset: number,
    size: number,
    signal?: AbortSignal,
    into?: Uint8Array,
  ): MaybePromise<Uint8Array>;
  release?(nodeId: number, fh: number): void;
  opendir?(nodeId: number): MaybePromise<OpendirReply>;
  /**
   * Items starting at directory offset `offset` (0 = the beginning), in a stable order. The
   * session sends as many as fit; `limit` is an upper bound on how many can fit, so returning
   * more is wasted work. An empty array means end of directory.
   */
  readdir(nodeId: number, fh: number, offset: number, limit?: number): MaybePromise<DirItem[]>;
  /**
   * The entry of `item` for READDIRPLUS; called only for items actually sent (not for `.`/`..`),
   * and each one sent counts as a lookup exactly like `lookup`. If absent, plain READDIR is used.
   */
  readdirplusEntry?(parent: number, item: DirItem): MaybePromise<EntryReply>;
  releasedir?(nodeId: number, fh: number): void;
  /** The value of extended attribute `name`; `FuseError(ENODATA)` (returned or thrown) if absent. */
  getxattr(nodeId: number, name: Uint8Array): Answer<Uint8Array>;
  /** Names of all extended attributes (without NUL terminators). */
  listxattr(nodeId: number): MaybePromise<Uint8Array[]>;
  statfs(nodeId: number): MaybePromise<StatfsOut>;
  /** Permission check; only asked without `default_permissions`. */
  access?(nodeId: number, mask: number): MaybePromise<void>;
  /**
   * Creating or removing `name` in directory `parent` (which the kernel asks only of a mount
   * made without `ro`). Reject with `FuseError(errno)` to refuse, e.g. ENOENT; resolving means
   * success, which only `unlink` and `rmdir` can report (the others are then answered EROFS).
   * Without this op all of them are answered EROFS.
   */
  changeEntry?(change: EntryChange, parent: number, name: Uint8Array): MaybePromise<void>;
}
