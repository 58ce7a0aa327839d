/**
 * The attributes of one file, as every layer of crfs speaks of them: the TOC tree's nodes are
 * {@link FileAttr}s, the mounted tree's nodes answer with one, FUSE encodes one into the kernel's
 * `fuse_attr`, and `crfs ls` prints one. Also the POSIX numbers that go with it: the `S_IF*`
 * file type bits of `st_mode`, the `DT_*` directory entry types and the kernel's device number
 * encoding.
 *
 * @module
 */

/** The type of a file: directory, regular file, symlink, device, FIFO or socket. */
export type FileType = "dir" | "reg" | "symlink" | "char" | "block" | "fifo" | "socket";

/** What is known about one file (its content and name live elsewhere). */
export interface FileAttr {
  type: FileType;
  /** Permission and setuid/setgid/sticky bits (0o7777, no file type bits). */
  mode: number;
  uid: number;
  gid: number;
  /** Owner names, `""` where unknown. */
  userName: string;
  groupName: string;
  /** Content size (regular files), link target length (symlinks), 0 otherwise. */
  size: number;
  /** Modification time: whole seconds since the epoch (may be negative) and nanoseconds. */
  mtimeSec: number;
  mtimeNsec: number;
  /** Symlink target (surrogate-escaped bytes, see names.ts), `""` for other types. */
  linkName: string;
  /** Device numbers (character and block devices), 0 otherwise. */
  devMajor: number;
  devMinor: number;
  /** Link count: names for files, 2 + subdirectories for directories. */
  nlink: number;
  /** Extended attributes, name → raw bytes. */
  xattrs: Map<string, Uint8Array>;
}

/** The xattrs of files that have none (shared; never modified). */
export const NO_XATTRS: Map<string, Uint8Array> = new Map();

/** File type bits of `st_mode`. */
export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

/** Directory entry types (`d_type`). */
export const DT_UNKNOWN = 0;
export const DT_FIFO = 1;
export const DT_CHR = 2;
export const DT_DIR = 4;
export const DT_BLK = 6;
export const DT_REG = 8;
export const DT_LNK = 10;
export const DT_SOCK = 12;

const TYPE_BITS: Record<FileType, number> = {
  dir: S_IFDIR,
  reg: S_IFREG,
  symlink: S_IFLNK,
  char: S_IFCHR,
  block: S_IFBLK,
  fifo: S_IFIFO,
  socket: S_IFSOCK,
};

/** The `S_IF*` file type bits of a file type. */
export function typeBits(type: FileType): number {
  return TYPE_BITS[type];
}

/** The full `st_mode` of `a`: its file type bits and its permission bits. */
export function statMode(a: FileAttr): number {
  return TYPE_BITS[a.type] | (a.mode & 0o7777);
}

/** The file type of a mode's `S_IF*` bits (regular file for unknown bits). */
export function typeFromMode(mode: number): FileType {
  switch (mode & S_IFMT) {
    case S_IFDIR:
      return "dir";
    case S_IFLNK:
      return "symlink";
    case S_IFCHR:
      return "char";
    case S_IFBLK:
      return "block";
    case S_IFIFO:
      return "fifo";
    case S_IFSOCK:
      return "socket";
    default:
      return "reg";
  }
}

/** The `d_type` for a mode's file type bits (it is simply `(mode & S_IFMT) >> 12`). */
export function dtFromMode(mode: number): number {
  return (mode & S_IFMT) >>> 12;
}

/** The `d_type` of a file type. */
export function dtOf(type: FileType): number {
  return TYPE_BITS[type] >>> 12;
}

/** A device number in the kernel's 32-bit `new_encode_dev` form (`st_rdev` as FUSE sends it). */
export function makeDev(major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

/** The device number of `a` in `new_encode_dev` form: 0 unless it is a device. */
export function rdevOf(a: FileAttr): number {
  return a.type === "char" || a.type === "block" ? makeDev(a.devMajor, a.devMinor) : 0;
}
