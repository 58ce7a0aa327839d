/**
 * The node model of crfs's file tree: what every file, directory and link in the mount (and in
 * `crfs ls`) is. Nodes are created lazily by their parents and carry a stable key from which the
 * inode table gives them a number for their whole life.
 *
 * @module
 */
import { type FileAttr, NO_XATTRS } from "../format/file_attr.ts";

/**
 * How long the kernel may cache what it learns about a node: content under digests never
 * changes; tags and listings for the tag TTL; volatile nodes (status files) not at all.
 */
export type Volatility = "immutable" | "tag" | "listing" | "volatile";

/** A node of the tree. */
export interface FsNode {
  /**
   * Identity across lookups: two nodes with the same key are the same file (same inode). Keys
   * are built from immutable names (digests, paths), e.g. `layer:sha256:…:/etc/passwd`; the
   * files of a layer's TOC have numbers (see `tocFileKey`), one per file rather than a string.
   */
  readonly key: string | number;
  /** Current attributes (a symlink's target is their `linkName`, its xattrs their `xattrs`). */
  attr(): FileAttr;
  /** How cacheable the node is (content under digests never changes). */
  readonly volatility: Volatility;
  /** Directories: the child called `name`, or undefined. */
  lookup?(name: string): Promise<FsNode | undefined>;
  /** Directories: all children, in a stable order. */
  list?(): Promise<[string, FsNode][]>;
  /**
   * Directories held in memory: what {@link list} gives, answered at once (a cold walk then
   * needs no promise per directory).
   */
  listNow?(): [string, FsNode][];
  /**
   * Regular files: bytes `[offset, offset+length)` (fewer only at the end). `into`, a scratch
   * buffer of `length` bytes, may be filled and returned (a prefix) to avoid allocating; it is
   * the caller's again once the promise settles.
   */
  read?(
    offset: number,
    length: number,
    signal?: AbortSignal,
    into?: Uint8Array<ArrayBuffer>,
  ): Promise<Uint8Array>;
  /**
   * Directories on a writable mount: a program creates (`create`, `mknod`, `mkdir`) or removes
   * (`unlink`, `rmdir`) `name` here. Throw a {@link NodeError} to refuse; resolving means a
   * removal happened. Without it such requests are refused with EROFS.
   */
  change?(change: "create" | "mknod" | "mkdir" | "unlink" | "rmdir", name: string): Promise<void>;
  /**
   * Content that changes (status files): each lookup takes a snapshot, a node of its own with
   * fixed bytes and a fresh key, so the kernel never serves stale cached pages.
   */
  snapshot?(): Promise<FsNode>;
  /** The node's path inside its image or layer, for recording what a workload reads. */
  readonly path?: string;
}

/** A node error carrying an errno name (`ENOENT`, `EIO`, …) for the FUSE layer. */
export class NodeError extends Error {
  /** POSIX error name. */
  readonly code: "ENOENT" | "EIO" | "ENOTDIR" | "EISDIR" | "EINVAL" | "EACCES" | "EROFS";
  constructor(code: NodeError["code"], message: string) {
    super(message);
    this.name = "NodeError";
    this.code = code;
  }
}

const NOW = Math.floor(Date.now() / 1000);

/** Attributes for a synthetic directory (crfs's own hierarchy). */
export function dirAttr(nlink = 2, mtimeSec = NOW): FileAttr {
  return {
    type: "dir",
    mode: 0o555,
    uid: 0,
    gid: 0,
    userName: "root",
    groupName: "root",
    size: 0,
    mtimeSec,
    mtimeNsec: 0,
    linkName: "",
    nlink,
    devMajor: 0,
    devMinor: 0,
    xattrs: NO_XATTRS,
  };
}

/** A synthetic symlink node. */
export function symlinkNode(
  key: string,
  target: string,
  volatility: Volatility = "immutable",
): FsNode {
  const size = new TextEncoder().encode(target).length;
  return {
    key,
    volatility,
    attr: () => ({ ...dirAttr(1), type: "symlink", mode: 0o777, size, linkName: target }),
  };
}

/** A synthetic read-only file with fixed content. */
export function bytesNode(
  key: string,
  bytes: Uint8Array,
  volatility: Volatility = "immutable",
): FsNode {
  return {
    key,
    volatility,
    attr: () => ({ ...dirAttr(1), type: "reg", mode: 0o444, size: bytes.length }),
    read: (offset, length) => Promise.resolve(bytes.subarray(offset, offset + length)),
  };
}

/** A synthetic directory over a fixed map of children. */
export function staticDir(key: string, children: [string, FsNode][]): FsNode {
  const map = new Map(children);
  const subdirs = children.filter(([, n]) => n.attr().type === "dir").length;
  return {
    key,
    volatility: "immutable",
    attr: () => dirAttr(2 + subdirs),
    lookup: (name) => Promise.resolve(map.get(name)),
    list: () => Promise.resolve(children),
    listNow: () => children,
  };
}
