/**
 * The FUSE kernel protocol (`<linux/fuse.h>`, protocol 7.x on x86_64) as constants, struct sizes
 * and little-endian encoders/decoders over `DataView`s. Pure code: no FFI, no I/O, so it can be
 * unit-tested without a mount.
 *
 * Numbers that are u64 on the wire are JS numbers here (exact below 2^53, which node ids, file
 * handles, offsets and sizes of a read-only image never exceed).
 *
 * @module
 */

import { type FileAttr, rdevOf, statMode } from "../../format/file_attr.ts";

/** Protocol major version spoken here. */
export const KERNEL_MAJOR = 7;
/** Highest protocol minor version whose structs and semantics this codec implements. */
export const KERNEL_MINOR = 38;

/** Request opcodes (`enum fuse_opcode`). */
export const Op = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  NOTIFY_REPLY: 41,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
  SETUPMAPPING: 48,
  REMOVEMAPPING: 49,
  SYNCFS: 50,
  TMPFILE: 51,
  STATX: 52,
} as const;

const opNames = new Map<number, string>(Object.entries(Op).map(([k, v]) => [v, k]));

/** The name of an opcode for logs, e.g. `"LOOKUP"`, or `"OP<n>"` for an unknown one. */
export function opName(opcode: number): string {
  return opNames.get(opcode) ?? `OP${opcode}`;
}

/** Opcodes that modify the filesystem; a read-only filesystem answers them with EROFS. */
export const WRITE_OPS: ReadonlySet<number> = new Set([
  Op.SETATTR,
  Op.SYMLINK,
  Op.MKNOD,
  Op.MKDIR,
  Op.UNLINK,
  Op.RMDIR,
  Op.RENAME,
  Op.LINK,
  Op.WRITE,
  Op.SETXATTR,
  Op.REMOVEXATTR,
  Op.CREATE,
  Op.FALLOCATE,
  Op.RENAME2,
  Op.COPY_FILE_RANGE,
  Op.TMPFILE,
]);

/** Linux errno values (x86_64) used by the FUSE layer and filesystems built on it. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  EFBIG: 27,
  ENOSPC: 28,
  EROFS: 30,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENODATA: 61,
  EPROTO: 71,
  EOVERFLOW: 75,
  EOPNOTSUPP: 95,
  ECONNABORTED: 103,
  ENOTCONN: 107,
} as const;

export {
  DT_BLK,
  DT_CHR,
  DT_DIR,
  DT_FIFO,
  DT_LNK,
  DT_REG,
  DT_SOCK,
  DT_UNKNOWN,
  dtFromMode,
  makeDev,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
} from "../../format/file_attr.ts";

/** `FUSE_INIT` capability flags (first 32 bits). */
export const InitFlag = {
  ASYNC_READ: 1 << 0,
  POSIX_LOCKS: 1 << 1,
  ATOMIC_O_TRUNC: 1 << 3,
  EXPORT_SUPPORT: 1 << 4,
  BIG_WRITES: 1 << 5,
  DONT_MASK: 1 << 6,
  SPLICE_WRITE: 1 << 7,
  SPLICE_MOVE: 1 << 8,
  SPLICE_READ: 1 << 9,
  FLOCK_LOCKS: 1 << 10,
  HAS_IOCTL_DIR: 1 << 11,
  AUTO_INVAL_DATA: 1 << 12,
  DO_READDIRPLUS: 1 << 13,
  READDIRPLUS_AUTO: 1 << 14,
  ASYNC_DIO: 1 << 15,
  WRITEBACK_CACHE: 1 << 16,
  NO_OPEN_SUPPORT: 1 << 17,
  PARALLEL_DIROPS: 1 << 18,
  HANDLE_KILLPRIV: 1 << 19,
  POSIX_ACL: 1 << 20,
  ABORT_ERROR: 1 << 21,
  MAX_PAGES: 1 << 22,
  CACHE_SYMLINKS: 1 << 23,
  NO_OPENDIR_SUPPORT: 1 << 24,
  EXPLICIT_INVAL_DATA: 1 << 25,
  MAP_ALIGNMENT: 1 << 26,
  SUBMOUNTS: 1 << 27,
  HANDLE_KILLPRIV_V2: 1 << 28,
  SETXATTR_EXT: 1 << 29,
  INIT_EXT: 1 << 30,
  INIT_RESERVED: 2 ** 31,
} as const;

/** `fuse_open_out.open_flags`. */
export const FOPEN_DIRECT_IO = 1 << 0;
export const FOPEN_KEEP_CACHE = 1 << 1;
export const FOPEN_NONSEEKABLE = 1 << 2;
export const FOPEN_CACHE_DIR = 1 << 3;

/** Bit set in `fuse_in_header.unique` of INTERRUPT requests. */
export const INT_REQ_BIT = 1;

/** The kernel refuses `/dev/fuse` reads into buffers smaller than this. */
export const MIN_READ_BUFFER = 8192;

/** Struct sizes in bytes. */
export const IN_HEADER_SIZE = 40;
export const OUT_HEADER_SIZE = 16;
export const ATTR_SIZE = 88;
export const ENTRY_OUT_SIZE = 128;
export const ATTR_OUT_SIZE = 104;
export const OPEN_OUT_SIZE = 16;
export const INIT_OUT_SIZE = 64;
export const STATFS_OUT_SIZE = 80;
export const GETXATTR_OUT_SIZE = 8;
export const READ_IN_SIZE = 40;
export const DIRENT_NAME_OFFSET = 24;
export const DIRENTPLUS_NAME_OFFSET = ENTRY_OUT_SIZE + DIRENT_NAME_OFFSET;
/** Size of `fuse_write_in`; the read buffer must hold in_header + write_in + max_write. */
export const WRITE_IN_SIZE = 40;

/** Reads a u64 as a JS number (exact below 2^53). */
export function getU64(dv: DataView, off: number): number {
  return dv.getUint32(off, true) + dv.getUint32(off + 4, true) * 0x1_0000_0000;
}

/** Writes a non-negative integer below 2^64 as a u64. */
export function setU64(dv: DataView, off: number, v: number): void {
  dv.setUint32(off, v >>> 0, true);
  dv.setUint32(off + 4, Math.floor(v / 0x1_0000_0000) >>> 0, true);
}

/** Rounds up to the 8-byte alignment of variable-length records. */
export function align8(n: number): number {
  return (n + 7) & ~7;
}

/** Size of one `fuse_dirent` record (READDIR) with a name of `nameLen` bytes. */
export function direntSize(nameLen: number): number {
  return align8(DIRENT_NAME_OFFSET + nameLen);
}

/** Size of one `fuse_direntplus` record (READDIRPLUS) with a name of `nameLen` bytes. */
export function direntPlusSize(nameLen: number): number {
  return align8(DIRENTPLUS_NAME_OFFSET + nameLen);
}

/** `fuse_in_header`. */
export interface InHeader {
  len: number;
  opcode: number;
  unique: number;
  nodeId: number;
  uid: number;
  gid: number;
  pid: number;
  /** Length of request extensions in 8-byte units (only with extensions negotiated). */
  totalExtlen: number;
}

/** Decodes a `fuse_in_header` at `off`. */
export function decodeInHeader(dv: DataView, off = 0): InHeader {
  return {
    len: dv.getUint32(off, true),
    opcode: dv.getUint32(off + 4, true),
    unique: getU64(dv, off + 8),
    nodeId: getU64(dv, off + 16),
    uid: dv.getUint32(off + 24, true),
    gid: dv.getUint32(off + 28, true),
    pid: dv.getUint32(off + 32, true),
    totalExtlen: dv.getUint16(off + 36, true),
  };
}

/** Encodes a `fuse_in_header` (used by tests that play the kernel). */
export function encodeInHeader(dv: DataView, off: number, h: InHeader): void {
  dv.setUint32(off, h.len, true);
  dv.setUint32(off + 4, h.opcode, true);
  setU64(dv, off + 8, h.unique);
  setU64(dv, off + 16, h.nodeId);
  dv.setUint32(off + 24, h.uid, true);
  dv.setUint32(off + 28, h.gid, true);
  dv.setUint32(off + 32, h.pid, true);
  dv.setUint16(off + 36, h.totalExtlen, true);
  dv.setUint16(off + 38, 0, true);
}

/** Writes a `fuse_out_header`: total length, `-errno` (0 for success) and the request's unique. */
export function encodeOutHeader(
  dv: DataView,
  off: number,
  len: number,
  errno: number,
  unique: number,
): void {
  dv.setUint32(off, len, true);
  dv.setInt32(off + 4, -errno, true);
  setU64(dv, off + 8, unique);
}

/** `fuse_init_in` (the fields used here). */
export interface InitIn {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
  /** Upper 32 capability bits; only meaningful when `flags` has INIT_EXT. */
  flags2: number;
}

/** Decodes `fuse_init_in` from the request body of `bodyLen` bytes at `off`. */
export function decodeInitIn(dv: DataView, off: number, bodyLen: number): InitIn {
  return {
    major: dv.getUint32(off, true),
    minor: dv.getUint32(off + 4, true),
    maxReadahead: bodyLen >= 12 ? dv.getUint32(off + 8, true) : 0,
    flags: bodyLen >= 16 ? dv.getUint32(off + 12, true) : 0,
    flags2: bodyLen >= 20 ? dv.getUint32(off + 16, true) : 0,
  };
}

/** `fuse_init_out`. */
export interface InitOut {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
  maxBackground: number;
  congestionThreshold: number;
  maxWrite: number;
  timeGran: number;
  maxPages: number;
  flags2: number;
}

/** Writes `fuse_init_out` (64 bytes) at `off`. */
export function encodeInitOut(dv: DataView, off: number, o: InitOut): void {
  for (let i = 0; i < INIT_OUT_SIZE; i += 4) dv.setUint32(off + i, 0, true);
  dv.setUint32(off, o.major, true);
  dv.setUint32(off + 4, o.minor, true);
  dv.setUint32(off + 8, o.maxReadahead, true);
  dv.setUint32(off + 12, o.flags >>> 0, true);
  dv.setUint16(off + 16, o.maxBackground, true);
  dv.setUint16(off + 18, o.congestionThreshold, true);
  dv.setUint32(off + 20, o.maxWrite, true);
  dv.setUint32(off + 24, o.timeGran, true);
  dv.setUint16(off + 28, o.maxPages, true);
  dv.setUint32(off + 32, o.flags2 >>> 0, true);
}

/**
 * A node's attributes as FUSE takes them: a {@link FileAttr} (its type and permission bits make
 * `st_mode`, its device numbers `st_rdev`; `st_ino` is the node id) and, where a filesystem has
 * them, the rest of `fuse_attr`: atime and ctime default to mtime, blocks to the 512-byte blocks
 * of `size`, blksize to 4096.
 */
export interface Attr extends FileAttr {
  atimeSec?: number;
  atimeNsec?: number;
  ctimeSec?: number;
  ctimeNsec?: number;
  /** Number of 512-byte blocks. */
  blocks?: number;
  /** Preferred I/O size (st_blksize). */
  blksize?: number;
}

/**
 * Writes the `fuse_attr` (88 bytes) of node `ino` with attributes `a` at `off`: the one place
 * attributes become their wire form. Times before 1970 are written as two's complement.
 */
export function encodeAttr(dv: DataView, off: number, ino: number, a: Attr): void {
  setU64(dv, off, ino);
  setU64(dv, off + 8, a.size);
  setU64(dv, off + 16, a.blocks ?? Math.ceil(a.size / 512));
  setTime(dv, off + 24, a.atimeSec ?? a.mtimeSec);
  setTime(dv, off + 32, a.mtimeSec);
  setTime(dv, off + 40, a.ctimeSec ?? a.mtimeSec);
  dv.setUint32(off + 48, a.atimeNsec ?? a.mtimeNsec, true);
  dv.setUint32(off + 52, a.mtimeNsec, true);
  dv.setUint32(off + 56, a.ctimeNsec ?? a.mtimeNsec, true);
  dv.setUint32(off + 60, statMode(a), true);
  dv.setUint32(off + 64, a.nlink, true);
  dv.setUint32(off + 68, a.uid, true);
  dv.setUint32(off + 72, a.gid, true);
  dv.setUint32(off + 76, rdevOf(a), true);
  dv.setUint32(off + 80, a.blksize ?? 4096, true);
  dv.setUint32(off + 84, 0, true);
}

function setTime(dv: DataView, off: number, sec: number): void {
  if (sec >= 0) setU64(dv, off, sec);
  else dv.setBigInt64(off, BigInt(Math.trunc(sec)), true);
}

/** A `fuse_attr` as decoded from the wire (for tests). */
export type WireAttr = Record<
  | "ino"
  | "size"
  | "blocks"
  | "atimeSec"
  | "atimeNsec"
  | "mtimeSec"
  | "mtimeNsec"
  | "ctimeSec"
  | "ctimeNsec"
  | "mode"
  | "nlink"
  | "uid"
  | "gid"
  | "rdev"
  | "blksize",
  number
>;

/** Decodes a `fuse_attr` (for tests). */
export function decodeAttr(dv: DataView, off: number): WireAttr {
  return {
    ino: getU64(dv, off),
    size: getU64(dv, off + 8),
    blocks: getU64(dv, off + 16),
    atimeSec: Number(dv.getBigInt64(off + 24, true)),
    mtimeSec: Number(dv.getBigInt64(off + 32, true)),
    ctimeSec: Number(dv.getBigInt64(off + 40, true)),
    atimeNsec: dv.getUint32(off + 48, true),
    mtimeNsec: dv.getUint32(off + 52, true),
    ctimeNsec: dv.getUint32(off + 56, true),
    mode: dv.getUint32(off + 60, true),
    nlink: dv.getUint32(off + 64, true),
    uid: dv.getUint32(off + 68, true),
    gid: dv.getUint32(off + 72, true),
    rdev: dv.getUint32(off + 76, true),
    blksize: dv.getUint32(off + 80, true),
  };
}

/** Splits a timeout in milliseconds into whole seconds and nanoseconds (negative → 0). */
export function msToTimeout(ms: number): [number, number] {
  if (!(ms > 0)) return [0, 0];
  const sec = Math.floor(ms / 1000);
  const nsec = Math.min(999_999_999, Math.round((ms - sec * 1000) * 1e6));
  return [sec, nsec];
}

/**
 * Writes a whole `fuse_entry_out` (128 bytes) at `off`: node id, generation, the entry and
 * attribute timeouts, then the node's `fuse_attr`.
 */
export function encodeEntryOut(
  dv: DataView,
  off: number,
  nodeId: number,
  generation: number,
  entryTtlMs: number,
  attrTtlMs: number,
  attr: Attr,
): void {
  const [es, ens] = msToTimeout(entryTtlMs);
  const [as, ans] = msToTimeout(attrTtlMs);
  setU64(dv, off, nodeId);
  setU64(dv, off + 8, generation);
  setU64(dv, off + 16, es);
  setU64(dv, off + 24, as);
  dv.setUint32(off + 32, ens, true);
  dv.setUint32(off + 36, ans, true);
  encodeAttr(dv, off + 40, nodeId, attr);
}

/** Writes the `fuse_attr_out` (104 bytes) of node `ino` at `off`. */
export function encodeAttrOut(
  dv: DataView,
  off: number,
  ttlMs: number,
  ino: number,
  attr: Attr,
): void {
  const [s, ns] = msToTimeout(ttlMs);
  setU64(dv, off, s);
  dv.setUint32(off + 8, ns, true);
  dv.setUint32(off + 12, 0, true);
  encodeAttr(dv, off + 16, ino, attr);
}

/** Writes a `fuse_open_out` (16 bytes) at `off`. */
export function encodeOpenOut(dv: DataView, off: number, fh: number, openFlags: number): void {
  setU64(dv, off, fh);
  dv.setUint32(off + 8, openFlags, true);
  dv.setUint32(off + 12, 0, true);
}

/** `fuse_kstatfs` contents: what a filesystem answers to `statfs`. */
export interface StatfsOut {
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  bsize: number;
  namelen: number;
  frsize: number;
}

/** Writes a `fuse_statfs_out` (80 bytes) at `off`. */
export function encodeStatfsOut(dv: DataView, off: number, s: StatfsOut): void {
  setU64(dv, off, s.blocks);
  setU64(dv, off + 8, s.bfree);
  setU64(dv, off + 16, s.bavail);
  setU64(dv, off + 24, s.files);
  setU64(dv, off + 32, s.ffree);
  dv.setUint32(off + 40, s.bsize, true);
  dv.setUint32(off + 44, s.namelen, true);
  dv.setUint32(off + 48, s.frsize, true);
  for (let i = 52; i < STATFS_OUT_SIZE; i += 4) dv.setUint32(off + i, 0, true);
}

/** Writes a `fuse_getxattr_out` (8 bytes) at `off`: the size a value or name list needs. */
export function encodeGetxattrOut(dv: DataView, off: number, size: number): void {
  dv.setUint32(off, size, true);
  dv.setUint32(off + 4, 0, true);
}

/**
 * Writes one `fuse_dirent` at `off` in `buf` and returns the offset after it (8-aligned,
 * padding zeroed). `next` is the directory offset of the entry after this one.
 */
export function encodeDirent(
  buf: Uint8Array,
  dv: DataView,
  off: number,
  ino: number,
  next: number,
  type: number,
  name: Uint8Array,
): number {
  setU64(dv, off, ino);
  setU64(dv, off + 8, next);
  dv.setUint32(off + 16, name.length, true);
  dv.setUint32(off + 20, type, true);
  buf.set(name, off + DIRENT_NAME_OFFSET);
  const end = off + DIRENT_NAME_OFFSET + name.length;
  const padded = align8(end - off) + off;
  buf.fill(0, end, padded);
  return padded;
}

/** Decoded `fuse_dirent` (for tests). */
export interface DecodedDirent {
  ino: number;
  off: number;
  type: number;
  name: Uint8Array;
}

function decodeDirentAt(body: Uint8Array, dv: DataView, off: number): DecodedDirent {
  const namelen = dv.getUint32(off + 16, true);
  return {
    ino: getU64(dv, off),
    off: getU64(dv, off + 8),
    type: dv.getUint32(off + 20, true),
    name: body.slice(off + DIRENT_NAME_OFFSET, off + DIRENT_NAME_OFFSET + namelen),
  };
}

/** Decodes a READDIR reply body (for tests). */
export function decodeDirents(body: Uint8Array): DecodedDirent[] {
  const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const out: DecodedDirent[] = [];
  for (let off = 0; off + DIRENT_NAME_OFFSET <= body.length;) {
    const e = decodeDirentAt(body, dv, off);
    out.push(e);
    off += direntSize(e.name.length);
  }
  return out;
}

/** Decoded `fuse_direntplus` (for tests). */
export interface DecodedDirentPlus extends DecodedDirent {
  nodeId: number;
  attr: WireAttr;
}

/** Decodes a READDIRPLUS reply body (for tests). */
export function decodeDirentsPlus(body: Uint8Array): DecodedDirentPlus[] {
  const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const out: DecodedDirentPlus[] = [];
  for (let off = 0; off + DIRENTPLUS_NAME_OFFSET <= body.length;) {
    const e = decodeDirentAt(body, dv, off + ENTRY_OUT_SIZE);
    out.push({ nodeId: getU64(dv, off), attr: decodeAttr(dv, off + 40), ...e });
    off += direntPlusSize(e.name.length);
  }
  return out;
}

/** The bytes of a NUL-terminated string starting at `off`, ending at most at `end` (copied). */
export function cstringAt(buf: Uint8Array, off: number, end: number): Uint8Array {
  const nul = buf.indexOf(0, off);
  return buf.slice(off, nul < 0 || nul > end ? Math.max(off, end) : nul);
}
