/**
 * Tests of the shared attribute record's helpers: file type ↔ `S_IF*` bits, `d_type`, the full
 * `st_mode` and device numbers.
 *
 * @module
 */
import assert from "node:assert/strict";
import * as fa from "../../format/file_attr.ts";
import type { FileAttr, FileType } from "../../format/file_attr.ts";

const TYPES: [FileType, number, number][] = [
  ["dir", fa.S_IFDIR, fa.DT_DIR],
  ["reg", fa.S_IFREG, fa.DT_REG],
  ["symlink", fa.S_IFLNK, fa.DT_LNK],
  ["char", fa.S_IFCHR, fa.DT_CHR],
  ["block", fa.S_IFBLK, fa.DT_BLK],
  ["fifo", fa.S_IFIFO, fa.DT_FIFO],
  ["socket", fa.S_IFSOCK, fa.DT_SOCK],
];

/** A file of `type` and `mode` with device 8/300, everything else zero or empty. */
const attr = (type: FileType, mode: number): FileAttr => ({
  ...{ type, mode, uid: 0, gid: 0, userName: "", groupName: "", size: 0, linkName: "" },
  ...{ mtimeSec: 0, mtimeNsec: 0, devMajor: 8, devMinor: 300, nlink: 1, xattrs: fa.NO_XATTRS },
});

Deno.test("file types, S_IF* bits and d_type agree in both directions", () => {
  for (const [type, bits, dt] of TYPES) {
    assert.equal(fa.typeBits(type), bits, type);
    assert.equal(fa.typeFromMode(bits | 0o644), type, type);
    assert.equal(fa.dtOf(type), dt, type);
    assert.equal(fa.dtFromMode(bits | 0o755), dt, type);
  }
  assert.equal(fa.typeFromMode(0o644), "reg", "no type bits read as a regular file");
});

Deno.test("statMode adds the type bits and drops anything above 0o7777", () => {
  assert.equal(fa.statMode(attr("dir", 0o1755)), fa.S_IFDIR | 0o1755);
  assert.equal(fa.statMode(attr("reg", fa.S_IFLNK | 0o4644)), fa.S_IFREG | 0o4644);
});

Deno.test("rdevOf: new_encode_dev for devices only", () => {
  assert.equal(fa.rdevOf(attr("char", 0)), fa.makeDev(8, 300));
  assert.equal(fa.rdevOf(attr("block", 0)), (300 & 0xff) | (8 << 8) | ((300 & ~0xff) << 12));
  assert.equal(fa.rdevOf(attr("reg", 0)), 0);
  assert.equal(fa.makeDev(1, 3), 259);
});
