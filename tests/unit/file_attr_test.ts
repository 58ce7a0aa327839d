/**
 * Tests of the shared attribute record's helpers: file type ↔ `S_IF*` bits, `d_type`, the full
 * `st_mode` and device numbers.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  DT_BLK,
  DT_CHR,
  DT_DIR,
  DT_FIFO,
  DT_LNK,
  DT_REG,
  DT_SOCK,
  dtFromMode,
  dtOf,
  type FileAttr,
  type FileType,
  makeDev,
  NO_XATTRS,
  rdevOf,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFREG,
  S_IFSOCK,
  statMode,
  typeBits,
  typeFromMode,
} from "../../format/file_attr.ts";

const TYPES: [FileType, number, number][] = [
  ["dir", S_IFDIR, DT_DIR],
  ["reg", S_IFREG, DT_REG],
  ["symlink", S_IFLNK, DT_LNK],
  ["char", S_IFCHR, DT_CHR],
  ["block", S_IFBLK, DT_BLK],
  ["fifo", S_IFIFO, DT_FIFO],
  ["socket", S_IFSOCK, DT_SOCK],
];

const attr = (type: FileType, mode: number): FileAttr => ({
  type,
  mode,
  uid: 0,
  gid: 0,
  userName: "",
  groupName: "",
  size: 0,
  mtimeSec: 0,
  mtimeNsec: 0,
  linkName: "",
  devMajor: 8,
  devMinor: 300,
  nlink: 1,
  xattrs: NO_XATTRS,
});

Deno.test("file types, S_IF* bits and d_type agree in both directions", () => {
  for (const [type, bits, dt] of TYPES) {
    assert.equal(typeBits(type), bits, type);
    assert.equal(typeFromMode(bits | 0o644), type, type);
    assert.equal(dtOf(type), dt, type);
    assert.equal(dtFromMode(bits | 0o755), dt, type);
  }
  assert.equal(typeFromMode(0o644), "reg", "no type bits read as a regular file");
});

Deno.test("statMode adds the type bits and drops anything above 0o7777", () => {
  assert.equal(statMode(attr("dir", 0o1755)), S_IFDIR | 0o1755);
  assert.equal(statMode(attr("reg", S_IFLNK | 0o4644)), S_IFREG | 0o4644);
});

Deno.test("rdevOf: new_encode_dev for devices only", () => {
  assert.equal(rdevOf(attr("char", 0)), makeDev(8, 300));
  assert.equal(rdevOf(attr("block", 0)), (300 & 0xff) | (8 << 8) | ((300 & ~0xff) << 12));
  assert.equal(rdevOf(attr("reg", 0)), 0);
  assert.equal(makeDev(1, 3), 259);
});
