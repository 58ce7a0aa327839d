/**
 * Unit tests of the FUSE protocol codec (fs/fuse/abi.ts): field offsets of every encoded
 * struct, u64 and negative-time handling, dirent padding and round trips, and — when a C
 * compiler is present — the struct sizes and offsets checked against `<linux/fuse.h>` itself.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  align8,
  type Attr,
  ATTR_OUT_SIZE,
  ATTR_SIZE,
  cstringAt,
  decodeAttr,
  decodeDirents,
  decodeDirentsPlus,
  decodeInHeader,
  decodeInitIn,
  DIRENT_NAME_OFFSET,
  DIRENTPLUS_NAME_OFFSET,
  direntPlusSize,
  direntSize,
  DT_DIR,
  DT_LNK,
  DT_REG,
  dtFromMode,
  encodeAttr,
  encodeAttrOut,
  encodeDirent,
  encodeEntryOut,
  encodeGetxattrOut,
  encodeInHeader,
  encodeInitOut,
  encodeOpenOut,
  encodeOutHeader,
  encodeStatfsOut,
  ENTRY_OUT_SIZE,
  getU64,
  IN_HEADER_SIZE,
  INIT_OUT_SIZE,
  makeDev,
  msToTimeout,
  Op,
  OPEN_OUT_SIZE,
  opName,
  OUT_HEADER_SIZE,
  READ_IN_SIZE,
  S_IFBLK,
  S_IFDIR,
  S_IFLNK,
  S_IFREG,
  setU64,
  STATFS_OUT_SIZE,
  type WireAttr,
} from "../../fs/fuse/abi.ts";

function view(n: number): [Uint8Array, DataView] {
  const b = new Uint8Array(n);
  return [b, new DataView(b.buffer)];
}

const ATTR: WireAttr = {
  ino: 2 ** 40 + 3,
  size: 2 ** 33 + 17,
  blocks: 12345,
  atimeSec: 1_600_000_000,
  atimeNsec: 1,
  mtimeSec: -86_400,
  mtimeNsec: 999_999_999,
  ctimeSec: 1_700_000_000,
  ctimeNsec: 3,
  mode: S_IFBLK | 0o4755,
  nlink: 7,
  uid: 65_534,
  gid: 4_000_000_000,
  rdev: makeDev(8, 300),
  blksize: 65_536,
};

/** The attributes whose wire form ATTR is. */
const INPUT: Attr = {
  type: "block",
  mode: 0o4755,
  uid: 65_534,
  gid: 4_000_000_000,
  userName: "",
  groupName: "",
  size: 2 ** 33 + 17,
  mtimeSec: -86_400,
  mtimeNsec: 999_999_999,
  linkName: "",
  devMajor: 8,
  devMinor: 300,
  nlink: 7,
  xattrs: new Map(),
  atimeSec: 1_600_000_000,
  atimeNsec: 1,
  ctimeSec: 1_700_000_000,
  ctimeNsec: 3,
  blocks: 12345,
  blksize: 65_536,
};

Deno.test("u64 helpers are exact up to 2^53 and little-endian", () => {
  const [b, dv] = view(8);
  for (const v of [0, 1, 0xffff_ffff, 2 ** 32, 2 ** 40 + 5, Number.MAX_SAFE_INTEGER]) {
    setU64(dv, 0, v);
    assert.equal(getU64(dv, 0), v);
    assert.equal(dv.getBigUint64(0, true), BigInt(v));
  }
  setU64(dv, 0, 0x0102_0304_0506);
  assert.deepEqual([...b], [6, 5, 4, 3, 2, 1, 0, 0]);
});

Deno.test("in/out headers", () => {
  const [, dv] = view(IN_HEADER_SIZE);
  const h = {
    len: 123,
    opcode: Op.LOOKUP,
    unique: 2 ** 35 + 2,
    nodeId: 99,
    uid: 1,
    gid: 2,
    pid: 3,
    totalExtlen: 0,
  };
  encodeInHeader(dv, 0, h);
  assert.deepEqual(decodeInHeader(dv), h);
  assert.equal(dv.getUint32(4, true), 1);
  assert.equal(dv.getUint32(32, true), 3);
  const [, o] = view(OUT_HEADER_SIZE);
  encodeOutHeader(o, 0, 16, 2, 77);
  assert.equal(o.getUint32(0, true), 16);
  assert.equal(o.getInt32(4, true), -2);
  assert.equal(getU64(o, 8), 77);
});

Deno.test("fuse_attr fields sit at the kernel's offsets; negative times round-trip", () => {
  const [, dv] = view(ATTR_SIZE);
  encodeAttr(dv, 0, ATTR.ino, INPUT);
  assert.equal(getU64(dv, 0), ATTR.ino);
  assert.equal(getU64(dv, 8), ATTR.size);
  assert.equal(getU64(dv, 16), 12345);
  assert.equal(getU64(dv, 24), 1_600_000_000);
  assert.equal(dv.getBigInt64(32, true), -86_400n);
  assert.equal(getU64(dv, 40), 1_700_000_000);
  assert.equal(dv.getUint32(48, true), 1);
  assert.equal(dv.getUint32(52, true), 999_999_999);
  assert.equal(dv.getUint32(56, true), 3);
  assert.equal(dv.getUint32(60, true), S_IFBLK | 0o4755);
  assert.equal(dv.getUint32(64, true), 7);
  assert.equal(dv.getUint32(68, true), 65_534);
  assert.equal(dv.getUint32(72, true), 4_000_000_000);
  assert.equal(dv.getUint32(76, true), makeDev(8, 300));
  assert.equal(dv.getUint32(80, true), 65_536);
  assert.equal(dv.getUint32(84, true), 0);
  assert.deepEqual(decodeAttr(dv, 0), ATTR);
});

Deno.test("fuse_attr defaults: atime/ctime = mtime, 512-byte blocks, blksize 4096, rdev only for devices", () => {
  const [, dv] = view(ATTR_SIZE);
  const {
    atimeSec: _,
    atimeNsec: _n,
    ctimeSec: _c,
    ctimeNsec: _cn,
    blocks: _b,
    blksize: _s,
    ...plain
  } = INPUT;
  encodeAttr(dv, 0, 5, { ...plain, type: "reg", size: 1025 });
  assert.deepEqual(decodeAttr(dv, 0), {
    ...ATTR,
    ino: 5,
    size: 1025,
    blocks: 3,
    atimeSec: -86_400,
    atimeNsec: 999_999_999,
    ctimeSec: -86_400,
    ctimeNsec: 999_999_999,
    mode: S_IFREG | 0o4755,
    rdev: 0,
    blksize: 4096,
  });
});

Deno.test("entry_out, attr_out, open_out, statfs_out, getxattr_out, init_out", () => {
  assert.deepEqual(msToTimeout(1500), [1, 500_000_000]);
  assert.deepEqual(msToTimeout(0), [0, 0]);
  assert.deepEqual(msToTimeout(-5), [0, 0]);
  assert.deepEqual(msToTimeout(0.001), [0, 1000]);
  assert.deepEqual(msToTimeout(86_400_000), [86_400, 0]);

  const [, e] = view(ENTRY_OUT_SIZE);
  encodeEntryOut(e, 0, 42, 7, 2500, 60_000, INPUT);
  assert.equal(getU64(e, 0), 42);
  assert.equal(getU64(e, 8), 7);
  assert.equal(getU64(e, 16), 2);
  assert.equal(getU64(e, 24), 60);
  assert.equal(e.getUint32(32, true), 500_000_000);
  assert.equal(e.getUint32(36, true), 0);
  assert.deepEqual(decodeAttr(e, 40), { ...ATTR, ino: 42 });

  const [, a] = view(ATTR_OUT_SIZE);
  encodeAttrOut(a, 0, 1001, ATTR.ino, INPUT);
  assert.equal(getU64(a, 0), 1);
  assert.equal(a.getUint32(8, true), 1_000_000);
  assert.deepEqual(decodeAttr(a, 16), ATTR);

  const [, o] = view(OPEN_OUT_SIZE);
  encodeOpenOut(o, 0, 2 ** 40, 3);
  assert.equal(getU64(o, 0), 2 ** 40);
  assert.equal(o.getUint32(8, true), 3);

  const [, s] = view(STATFS_OUT_SIZE);
  s.setUint32(60, 0xdead, true);
  encodeStatfsOut(s, 0, {
    blocks: 1,
    bfree: 2,
    bavail: 3,
    files: 4,
    ffree: 5,
    bsize: 6,
    namelen: 7,
    frsize: 8,
  });
  assert.deepEqual([0, 8, 16, 24, 32].map((off) => getU64(s, off)), [1, 2, 3, 4, 5]);
  assert.deepEqual([40, 44, 48, 60].map((off) => s.getUint32(off, true)), [6, 7, 8, 0]);

  const [, g] = view(8);
  encodeGetxattrOut(g, 0, 1234);
  assert.equal(g.getUint32(0, true), 1234);

  const [, i] = view(INIT_OUT_SIZE);
  encodeInitOut(i, 0, {
    major: 7,
    minor: 38,
    maxReadahead: 131072,
    flags: 2 ** 31 + 1,
    maxBackground: 64,
    congestionThreshold: 48,
    maxWrite: 1 << 20,
    timeGran: 1,
    maxPages: 256,
    flags2: 5,
  });
  assert.deepEqual(
    [0, 4, 8, 12, 20, 24, 32].map((off) => i.getUint32(off, true)),
    [7, 38, 131072, 2 ** 31 + 1, 1 << 20, 1, 5],
  );
  assert.deepEqual([16, 18, 28].map((off) => i.getUint16(off, true)), [64, 48, 256]);
});

Deno.test("init_in decoding tolerates short bodies", () => {
  const [, dv] = view(64);
  [7, 45, 131072, 0x73fffffb, 3].forEach((v, k) => dv.setUint32(k * 4, v, true));
  assert.deepEqual(decodeInitIn(dv, 0, 64), {
    major: 7,
    minor: 45,
    maxReadahead: 131072,
    flags: 0x73fffffb,
    flags2: 3,
  });
  assert.deepEqual(decodeInitIn(dv, 0, 8), {
    major: 7,
    minor: 45,
    maxReadahead: 0,
    flags: 0,
    flags2: 0,
  });
});

Deno.test("dirents are 8-aligned with zeroed padding and round-trip", () => {
  assert.equal(direntSize(1), 32);
  assert.equal(direntSize(8), 32);
  assert.equal(direntSize(9), 40);
  assert.equal(direntPlusSize(1), 160);
  assert.equal(direntPlusSize(9), 168);
  assert.equal(align8(0), 0);
  assert.equal(align8(17), 24);
  const [b, dv] = view(200);
  b.fill(0xee);
  let off = encodeDirent(b, dv, 0, 5, 1, DT_REG, new Uint8Array([0x61]));
  assert.equal(off, 32);
  assert.deepEqual([...b.subarray(25, 32)], [0, 0, 0, 0, 0, 0, 0]);
  const raw = new Uint8Array([0xff, 0x80, 0x2e, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46]);
  off = encodeDirent(b, dv, off, 2 ** 41, 2 ** 50, DT_DIR, raw);
  assert.equal(off, 72);
  const d = decodeDirents(b.subarray(0, off));
  assert.equal(d.length, 2);
  assert.deepEqual(d[0], { ino: 5, off: 1, type: DT_REG, name: new Uint8Array([0x61]) });
  assert.deepEqual(d[1], { ino: 2 ** 41, off: 2 ** 50, type: DT_DIR, name: raw });

  const [p, pdv] = view(400);
  encodeEntryOut(pdv, 0, 9, 0, 1000, 1000, INPUT);
  const end = encodeDirent(p, pdv, ENTRY_OUT_SIZE, 9, 3, DT_LNK, new TextEncoder().encode("lnk"));
  assert.equal(end, direntPlusSize(3));
  const dp = decodeDirentsPlus(p.subarray(0, end));
  assert.equal(dp[0].nodeId, 9);
  assert.equal(dp[0].off, 3);
  assert.deepEqual(dp[0].attr, { ...ATTR, ino: 9 });
  assert.equal(new TextDecoder().decode(dp[0].name), "lnk");
});

Deno.test("small helpers: opName, dtFromMode, makeDev, cstringAt", () => {
  assert.equal(opName(Op.READDIRPLUS), "READDIRPLUS");
  assert.equal(opName(4242), "OP4242");
  assert.equal(dtFromMode(S_IFDIR | 0o755), DT_DIR);
  assert.equal(dtFromMode(S_IFLNK | 0o777), DT_LNK);
  assert.equal(makeDev(1, 3), 259);
  assert.equal(makeDev(8, 300), (300 & 0xff) | (8 << 8) | ((300 & ~0xff) << 12));
  const b = new Uint8Array([0x61, 0x62, 0, 0x63]);
  assert.deepEqual(cstringAt(b, 0, 4), new Uint8Array([0x61, 0x62]));
  assert.deepEqual(cstringAt(b, 3, 4), new Uint8Array([0x63]));
});

const C_PROBE = `
#include <stdio.h>
#include <stddef.h>
#include <linux/fuse.h>
#define S(t) printf(#t " %zu\\n", sizeof(struct t))
#define O(t, f) printf(#t "." #f " %zu\\n", offsetof(struct t, f))
int main(void) {
  S(fuse_in_header); S(fuse_out_header); S(fuse_attr); S(fuse_entry_out); S(fuse_attr_out);
  S(fuse_open_out); S(fuse_init_out); S(fuse_kstatfs); S(fuse_read_in); S(fuse_getxattr_out);
  O(fuse_init_out, max_write); O(fuse_init_out, max_pages); O(fuse_init_out, flags2);
  O(fuse_attr, blksize); O(fuse_attr, rdev); O(fuse_entry_out, attr); O(fuse_attr_out, attr);
  O(fuse_kstatfs, frsize); O(fuse_dirent, name); O(fuse_direntplus, dirent.name);
  printf("MIN_READ_BUFFER %d\\n", FUSE_MIN_READ_BUFFER);
  return 0;
}
`;

Deno.test("struct layout matches <linux/fuse.h> (a probe compiled with cc)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "crfs-abi-" });
  try {
    await Deno.writeTextFile(`${dir}/p.c`, C_PROBE);
    // The C side is the point of the test: no compiler or headers is a failure, not a skip.
    const cc = await new Deno.Command("cc", { args: ["-o", `${dir}/p`, `${dir}/p.c`] }).output()
      .catch((e) => {
        throw new Error(`this test needs a C compiler (cc, from ./dev setup's gcc): ${e.message}`);
      });
    assert.ok(
      cc.success,
      `cc could not build the <linux/fuse.h> probe: ${new TextDecoder().decode(cc.stderr)}`,
    );
    const out = new TextDecoder().decode((await new Deno.Command(`${dir}/p`).output()).stdout);
    const got = Object.fromEntries(out.trim().split("\n").map((l) => l.split(" ")));
    assert.deepEqual(got, {
      fuse_in_header: String(IN_HEADER_SIZE),
      fuse_out_header: String(OUT_HEADER_SIZE),
      fuse_attr: String(ATTR_SIZE),
      fuse_entry_out: String(ENTRY_OUT_SIZE),
      fuse_attr_out: String(ATTR_OUT_SIZE),
      fuse_open_out: String(OPEN_OUT_SIZE),
      fuse_init_out: String(INIT_OUT_SIZE),
      fuse_kstatfs: String(STATFS_OUT_SIZE),
      fuse_read_in: String(READ_IN_SIZE),
      fuse_getxattr_out: "8",
      "fuse_init_out.max_write": "20",
      "fuse_init_out.max_pages": "28",
      "fuse_init_out.flags2": "32",
      "fuse_attr.blksize": "80",
      "fuse_attr.rdev": "76",
      "fuse_entry_out.attr": "40",
      "fuse_attr_out.attr": "16",
      "fuse_kstatfs.frsize": "48",
      "fuse_dirent.name": String(DIRENT_NAME_OFFSET),
      "fuse_direntplus.dirent.name": String(DIRENTPLUS_NAME_OFFSET),
      MIN_READ_BUFFER: "8192",
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
