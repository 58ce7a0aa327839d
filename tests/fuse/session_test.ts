/**
 * Unit tests of the request loop (fs/fuse/session.ts) without a mount: a fake `/dev/fuse` plays
 * the kernel, feeding encoded requests and collecting replies. Checks INIT negotiation, exactly
 * one reply per request whatever the op does (and none for FORGET/BATCH_FORGET/INTERRUPT),
 * ENOSYS/EROFS for unsupported and write ops, the xattr size protocol, READDIR/READDIRPLUS
 * packing and offsets, READ replies in place and from other buffers, INTERRUPT, and shutdown.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  decodeDirents,
  decodeDirentsPlus,
  direntPlusSize,
  direntSize,
  encodeInHeader,
  Errno,
  getU64,
  IN_HEADER_SIZE,
  InitFlag,
  Op,
  setU64,
} from "../../fs/fuse/abi.ts";
import { type DirItem, type EntryReply, FuseError, type FuseOps } from "../../fs/fuse/ops.ts";
import { type FuseIo, FuseSession } from "../../fs/fuse/session.ts";
import { MemFs, Pattern } from "./memfs.ts";

const enc = new TextEncoder();

/** A fake `/dev/fuse`: requests pushed in, replies collected (copied) out. */
class FakeDev implements FuseIo {
  #queue: Uint8Array[] = [];
  #readable = Promise.withResolvers<void>();
  ended = false;
  replies: Uint8Array[] = [];
  #changed = Promise.withResolvers<void>();

  push(req: Uint8Array): void {
    this.#queue.push(req);
    this.#readable.resolve();
  }

  end(): void {
    this.ended = true;
    this.#readable.resolve();
  }

  readNow(buf: Uint8Array<ArrayBuffer>): number {
    const q = this.#queue.shift();
    if (q) {
      buf.set(q);
      return q.length;
    }
    if (this.ended) return -Errno.ENODEV;
    this.#readable = Promise.withResolvers<void>();
    return -Errno.EAGAIN;
  }

  async wait(timeoutMs: number): Promise<void> {
    if (timeoutMs === 0) return await Promise.resolve();
    await this.#readable.promise;
  }

  #got(b: Uint8Array): number {
    this.replies.push(b);
    this.#changed.resolve();
    this.#changed = Promise.withResolvers<void>();
    return b.length;
  }

  write(buf: Uint8Array<ArrayBuffer>, len: number): number {
    return this.#got(buf.slice(0, len));
  }

  write2(a: Uint8Array<ArrayBuffer>, alen: number, b: Uint8Array, blen: number): number {
    const out = new Uint8Array(alen + blen);
    out.set(a.subarray(0, alen));
    out.set(b.subarray(0, blen), alen);
    return this.#got(out);
  }

  gone(): boolean {
    return this.ended;
  }

  /** All replies to `unique`, after waiting (up to 2 s) for at least one. */
  async repliesTo(unique: number): Promise<Reply[]> {
    const end = Date.now() + 2000;
    for (;;) {
      const r = this.replies.map(parse).filter((x) => x.unique === unique);
      if (r.length) {
        // Give a wrong second reply a chance to show up.
        await new Promise((res) => setTimeout(res, 5));
        return this.replies.map(parse).filter((x) => x.unique === unique);
      }
      if (Date.now() > end) return [];
      await Promise.race([this.#changed.promise, new Promise((res) => setTimeout(res, 20))]);
    }
  }
}

interface Reply {
  unique: number;
  errno: number;
  body: Uint8Array;
}

function parse(b: Uint8Array): Reply {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  assert.equal(dv.getUint32(0, true), b.length, "out header length matches");
  return { unique: getU64(dv, 8), errno: -dv.getInt32(4, true) || 0, body: b.subarray(16) };
}

let nextUnique = 100;

function request(opcode: number, nodeId: number, body: Uint8Array = new Uint8Array(0)) {
  const unique = (nextUnique += 2);
  const b = new Uint8Array(IN_HEADER_SIZE + body.length);
  encodeInHeader(new DataView(b.buffer), 0, {
    len: b.length,
    opcode,
    unique,
    nodeId,
    uid: 0,
    gid: 0,
    pid: 1,
    totalExtlen: 0,
  });
  b.set(body, IN_HEADER_SIZE);
  return { unique, bytes: b };
}

function body(n: number, fill: (dv: DataView, b: Uint8Array) => void): Uint8Array {
  const b = new Uint8Array(n);
  fill(new DataView(b.buffer), b);
  return b;
}

function hex(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

function cstr(s: string | Uint8Array): Uint8Array {
  const b = typeof s === "string" ? enc.encode(s) : s;
  const out = new Uint8Array(b.length + 1);
  out.set(b);
  return out;
}

function initBody(minor: number, flags: number, major = 7): Uint8Array {
  return body(64, (dv) => {
    dv.setUint32(0, major, true);
    dv.setUint32(4, minor, true);
    dv.setUint32(8, 131072, true);
    dv.setUint32(12, flags >>> 0, true);
  });
}

function readBody(fh: number, offset: number, size: number): Uint8Array {
  return body(40, (dv) => {
    setU64(dv, 0, fh);
    setU64(dv, 8, offset);
    dv.setUint32(16, size, true);
  });
}

/** Starts a session over a fake device and completes INIT. */
async function started(ops: FuseOps, kernelFlags = 0x73fffffb, minor = 45) {
  const dev = new FakeDev();
  const s = new FuseSession(dev, ops, { readers: 3, onError: () => {} });
  const started = s.start();
  const init = request(Op.INIT, 0, initBody(minor, kernelFlags));
  dev.push(init.bytes);
  const info = await started;
  const [r] = await dev.repliesTo(init.unique);
  const call = async (opcode: number, nodeId: number, b?: Uint8Array) => {
    const q = request(opcode, nodeId, b);
    dev.push(q.bytes);
    const rs = await dev.repliesTo(q.unique);
    assert.equal(rs.length, 1, `exactly one reply to ${opcode}`);
    return rs[0];
  };
  const stop = async () => {
    dev.end();
    await s.closed;
  };
  return { dev, s, info, initReply: r, call, stop };
}

const OP_NAMES = [
  "lookup",
  "forget",
  "getattr",
  "readlink",
  "open",
  "read",
  "release",
  "opendir",
  "readdir",
  "readdirplusEntry",
  "releasedir",
  "getxattr",
  "listxattr",
  "statfs",
  "access",
];

/** The ops of `fs` (bound), with some replaced. */
function opsOf(fs: MemFs, over: Partial<FuseOps> = {}): FuseOps {
  const o: Record<string, unknown> = {};
  for (const k of OP_NAMES) {
    const f = (fs as unknown as Record<string, unknown>)[k];
    if (typeof f === "function") o[k] = f.bind(fs);
  }
  return Object.assign(o, over) as unknown as FuseOps;
}

function sampleFs(): MemFs {
  const fs = new MemFs();
  fs.addFile(1, "a", "alpha", { xattrs: { "user.k": "value!", "user.e": "" } });
  fs.addFile(1, "big", new Pattern(3 << 20, 9));
  const d = fs.addDir(1, "d");
  for (let i = 0; i < 300; i++) fs.addFile(d, `n${i}${"x".repeat(i % 40)}`, "");
  fs.addFile(d, new Uint8Array([0xff, 0x01, 0x80]), "");
  return fs;
}

Deno.test("INIT: flags masked with the kernel's offer, minor capped, max_pages for 1 MiB", async () => {
  const t = await started(sampleFs());
  try {
    const dv = new DataView(t.initReply.body.buffer, t.initReply.body.byteOffset);
    assert.equal(t.initReply.errno, 0);
    assert.equal(t.initReply.body.length, 64);
    assert.equal(dv.getUint32(0, true), 7);
    assert.equal(dv.getUint32(4, true), 38);
    const want = InitFlag.ASYNC_READ | InitFlag.PARALLEL_DIROPS | InitFlag.MAX_PAGES |
      InitFlag.CACHE_SYMLINKS | InitFlag.ABORT_ERROR | InitFlag.DO_READDIRPLUS;
    assert.equal(dv.getUint32(12, true), want);
    assert.equal(dv.getUint32(12, true) & InitFlag.READDIRPLUS_AUTO, 0);
    assert.equal(dv.getUint32(8, true), 131072, "readahead echoed (INIT can only lower it)");
    assert.equal(dv.getUint16(28, true), 256);
    assert.ok(dv.getUint32(20, true) >= 4096);
    assert.equal(t.info.flags, want);
  } finally {
    await t.stop();
  }
  const fs = sampleFs();
  fs.readdirplusEntry = undefined;
  const t2 = await started(
    fs,
    InitFlag.ASYNC_READ | InitFlag.DO_READDIRPLUS | InitFlag.FLOCK_LOCKS,
    31,
  );
  try {
    const dv = new DataView(t2.initReply.body.buffer, t2.initReply.body.byteOffset);
    assert.equal(dv.getUint32(4, true), 31);
    assert.equal(dv.getUint32(12, true), InitFlag.ASYNC_READ, "no readdirplus without the op");
  } finally {
    await t2.stop();
  }
});

Deno.test("INIT with another major version is refused", async () => {
  const dev = new FakeDev();
  const s = new FuseSession(dev, sampleFs(), { onError: () => {} });
  const p = s.start();
  const init = request(Op.INIT, 0, initBody(0, 0, 8));
  dev.push(init.bytes);
  await assert.rejects(p, /unsupported FUSE protocol 8/);
  assert.equal((await dev.repliesTo(init.unique))[0].errno, Errno.EPROTO);
  dev.end();
  await s.closed;
});

Deno.test("exactly one reply whatever an op does; none for FORGET and INTERRUPT", async () => {
  const forgets: [number, number][] = [];
  const errors: string[] = [];
  const ops: FuseOps = opsOf(sampleFs(), {
    lookup(_p, name) {
      const n = new TextDecoder().decode(name);
      if (n === "sync-throw") throw new Error("sync");
      if (n === "reject") return Promise.reject(new RangeError("async"));
      if (n === "fuseerr") return Promise.reject(new FuseError(Errno.ENAMETOOLONG));
      if (n === "string") return Promise.reject("a string");
      // Answered, not thrown: synchronously, or as what a promise resolves to.
      if (n === "sync-errno") return FuseError.of(Errno.ENOENT);
      if (n === "async-errno") return Promise.resolve(FuseError.of(Errno.ENOTDIR));
      if (n === "sync-fuseerr") throw FuseError.of(Errno.ELOOP);
      if (n === "sync-neg") {
        return { nodeId: 0, attr: sampleFs().attr(1), entryTtlMs: 7000, attrTtlMs: 0 };
      }
      if (n === "sync-bad-attr") return { nodeId: 5, attr: null } as never;
      if (n === "bad-attr") {
        return Promise.resolve({ nodeId: 5, attr: null, entryTtlMs: 1, attrTtlMs: 1 } as never);
      }
      if (n === "neg") {
        return Promise.resolve({
          nodeId: 0,
          attr: sampleFs().attr(1),
          entryTtlMs: 5000,
          attrTtlMs: 0,
        } as EntryReply);
      }
      return Promise.reject(new FuseError(Errno.ENOENT));
    },
    getattr: () => Promise.reject(new FuseError(-3)),
    forget: (id, n) => {
      forgets.push([id, n]);
      if (id === 13) throw new Error("forget threw");
    },
    readlink: () => new Promise(() => {}) as never, // never settles: no reply, by design
    statfs() {
      throw new FuseError(Errno.EACCES);
    },
  });
  const dev = new FakeDev();
  const s = new FuseSession(dev, ops, { onError: (e, op) => errors.push(`${op}:${e}`) });
  const p = s.start();
  const init = request(Op.INIT, 0, initBody(45, 0xffffffff));
  dev.push(init.bytes);
  await p;
  const call = async (opcode: number, nodeId: number, b?: Uint8Array) => {
    const q = request(opcode, nodeId, b);
    dev.push(q.bytes);
    const rs = await dev.repliesTo(q.unique);
    assert.equal(rs.length, 1, `one reply to op ${opcode}`);
    return rs[0];
  };
  try {
    assert.equal((await call(Op.LOOKUP, 1, cstr("sync-throw"))).errno, Errno.EIO);
    assert.equal((await call(Op.LOOKUP, 1, cstr("reject"))).errno, Errno.EIO);
    assert.equal((await call(Op.LOOKUP, 1, cstr("fuseerr"))).errno, Errno.ENAMETOOLONG);
    assert.equal((await call(Op.LOOKUP, 1, cstr("string"))).errno, Errno.EIO);
    assert.equal((await call(Op.LOOKUP, 1, cstr("bad-attr"))).errno, Errno.EIO);
    assert.equal((await call(Op.LOOKUP, 1, cstr("nope"))).errno, Errno.ENOENT);
    assert.equal((await call(Op.LOOKUP, 1, cstr("sync-errno"))).errno, Errno.ENOENT);
    assert.equal((await call(Op.LOOKUP, 1, cstr("async-errno"))).errno, Errno.ENOTDIR);
    assert.equal((await call(Op.LOOKUP, 1, cstr("sync-fuseerr"))).errno, Errno.ELOOP);
    assert.equal((await call(Op.LOOKUP, 1, cstr("sync-bad-attr"))).errno, Errno.EIO);
    const sneg = await call(Op.LOOKUP, 1, cstr("sync-neg"));
    assert.equal(sneg.errno, 0);
    assert.equal(getU64(new DataView(sneg.body.buffer, sneg.body.byteOffset), 0), 0);
    assert.equal(getU64(new DataView(sneg.body.buffer, sneg.body.byteOffset), 16), 7);
    const neg = await call(Op.LOOKUP, 1, cstr("neg"));
    assert.equal(neg.errno, 0);
    assert.equal(getU64(new DataView(neg.body.buffer, neg.body.byteOffset), 0), 0);
    assert.equal(getU64(new DataView(neg.body.buffer, neg.body.byteOffset), 16), 5);
    assert.equal((await call(Op.GETATTR, 1)).errno, Errno.EIO, "FuseError(-3) → EIO");
    assert.equal((await call(Op.STATFS, 1)).errno, Errno.EACCES);

    const before = dev.replies.length;
    const f = request(Op.FORGET, 12, body(8, (dv) => setU64(dv, 0, 3)));
    const f2 = request(Op.FORGET, 13, body(8, (dv) => setU64(dv, 0, 1)));
    const bf = request(
      Op.BATCH_FORGET,
      0,
      body(8 + 32, (dv) => {
        dv.setUint32(0, 2, true);
        setU64(dv, 8, 20);
        setU64(dv, 16, 1);
        setU64(dv, 24, 21);
        setU64(dv, 32, 2 ** 33);
      }),
    );
    const intr = request(Op.INTERRUPT, 0, body(8, (dv) => setU64(dv, 0, 999_999)));
    const nr = request(Op.NOTIFY_REPLY, 0);
    for (const q of [f, f2, bf, intr, nr]) dev.push(q.bytes);
    await call(Op.STATFS, 1); // a later request has been answered, so the above were handled
    assert.equal(dev.replies.length, before + 1, "no replies to FORGET/BATCH_FORGET/INTERRUPT");
    assert.deepEqual(forgets, [[12, 3], [13, 1], [20, 1], [21, 2 ** 33]]);

    // Each reply went to its own request: no unique got two replies.
    const counts = new Map<number, number>();
    for (const r of dev.replies.map(parse)) counts.set(r.unique, (counts.get(r.unique) ?? 0) + 1);
    assert.ok([...counts.values()].every((n) => n === 1));
    assert.ok(errors.some((e) => e.startsWith("LOOKUP:Error: sync")));
    assert.ok(errors.some((e) => e.startsWith("FORGET:")));
    assert.ok(!errors.some((e) => e.includes("ENAMETOOLONG") || e.includes("FuseError")));

    // A request whose op never settles stays in flight (and gets no reply) until shutdown.
    const stuck = request(Op.READLINK, 3);
    dev.push(stuck.bytes);
    await call(Op.STATFS, 1);
    assert.equal(s.inFlight, 1);
  } finally {
    dev.end();
    await s.closed;
  }
});

Deno.test("unsupported ops get ENOSYS, write ops EROFS, access ENOSYS without the op", async () => {
  const t = await started(sampleFs());
  try {
    for (const op of [Op.FLUSH, Op.FSYNC, Op.FSYNCDIR, Op.GETLK, Op.BMAP, Op.IOCTL, Op.POLL]) {
      assert.equal((await t.call(op, 2, new Uint8Array(64))).errno, Errno.ENOSYS, `op ${op}`);
    }
    for (const op of [Op.LSEEK, Op.STATX, Op.SYNCFS, 999]) {
      assert.equal((await t.call(op, 2, new Uint8Array(64))).errno, Errno.ENOSYS, `op ${op}`);
    }
    for (
      const op of [
        Op.SETATTR,
        Op.MKDIR,
        Op.MKNOD,
        Op.SYMLINK,
        Op.UNLINK,
        Op.RMDIR,
        Op.RENAME,
        Op.RENAME2,
        Op.LINK,
        Op.WRITE,
        Op.CREATE,
        Op.SETXATTR,
        Op.REMOVEXATTR,
        Op.FALLOCATE,
        Op.COPY_FILE_RANGE,
        Op.TMPFILE,
      ]
    ) {
      assert.equal((await t.call(op, 2, new Uint8Array(64))).errno, Errno.EROFS, `op ${op}`);
    }
    assert.equal((await t.call(Op.ACCESS, 2, new Uint8Array(8))).errno, Errno.ENOSYS);
    assert.equal((await t.call(Op.DESTROY, 0)).errno, 0);
  } finally {
    await t.stop();
  }
});

Deno.test("name changes go to changeEntry when the filesystem has it: names after the fixed part, errnos passed on", async () => {
  const seen: string[] = [];
  const t = await started(opsOf(sampleFs(), {
    changeEntry(change, parent, name) {
      const text = new TextDecoder().decode(name);
      seen.push(`${change} ${parent} ${text}`);
      if (text === "use") return Promise.reject(new FuseError(Errno.ENOENT));
      if (text === "boom") return Promise.reject(new Error("unexpected"));
      return Promise.resolve();
    },
  }));
  const named = (fixed: number, name: string) => {
    const b = new Uint8Array(fixed + name.length + 1).fill(0x41, 0, fixed);
    b.set(enc.encode(name), fixed);
    return b;
  };
  try {
    assert.equal((await t.call(Op.CREATE, 5, named(16, "use"))).errno, Errno.ENOENT);
    assert.equal((await t.call(Op.MKNOD, 5, named(16, "use"))).errno, Errno.ENOENT);
    assert.equal((await t.call(Op.MKDIR, 5, named(8, "use"))).errno, Errno.ENOENT);
    assert.equal((await t.call(Op.UNLINK, 5, named(0, "use"))).errno, Errno.ENOENT);
    assert.equal((await t.call(Op.RMDIR, 3, named(0, "sha256:x"))).errno, 0, "rmdir succeeds");
    assert.equal((await t.call(Op.UNLINK, 3, named(0, "f"))).errno, 0, "unlink succeeds");
    assert.equal((await t.call(Op.CREATE, 3, named(16, "f"))).errno, Errno.EROFS, "no entry reply");
    assert.equal((await t.call(Op.RMDIR, 3, named(0, "boom"))).errno, Errno.EIO);
    // Other writes still never reach the filesystem.
    for (const op of [Op.SETATTR, Op.WRITE, Op.RENAME, Op.SYMLINK, Op.LINK, Op.SETXATTR]) {
      assert.equal((await t.call(op, 2, new Uint8Array(64))).errno, Errno.EROFS, `op ${op}`);
    }
    assert.deepEqual(seen, [
      "create 5 use",
      "mknod 5 use",
      "mkdir 5 use",
      "unlink 5 use",
      "rmdir 3 sha256:x",
      "unlink 3 f",
      "create 3 f",
      "rmdir 3 boom",
    ]);
  } finally {
    await t.stop();
  }
});

Deno.test("xattrs: size 0 asks for the length, too small is ERANGE, empty values work", async () => {
  const t = await started(sampleFs());
  const get = (name: string, size: number) =>
    t.call(
      Op.GETXATTR,
      2,
      body(8 + name.length + 1, (dv, b) => {
        dv.setUint32(0, size, true);
        b.set(enc.encode(name), 8);
      }),
    );
  const list = (size: number) =>
    t.call(Op.LISTXATTR, 2, body(8, (dv) => dv.setUint32(0, size, true)));
  try {
    let r = await get("user.k", 0);
    assert.equal(r.errno, 0);
    assert.equal(new DataView(r.body.buffer, r.body.byteOffset).getUint32(0, true), 6);
    assert.equal(r.body.length, 8);
    assert.equal((await get("user.k", 5)).errno, Errno.ERANGE);
    r = await get("user.k", 6);
    assert.equal(new TextDecoder().decode(r.body), "value!");
    r = await get("user.k", 4096);
    assert.equal(new TextDecoder().decode(r.body), "value!");
    r = await get("user.e", 10);
    assert.equal(r.errno, 0);
    assert.equal(r.body.length, 0);
    assert.equal((await get("user.nope", 10)).errno, Errno.ENODATA);
    const names = "user.k\0user.e\0";
    r = await list(0);
    assert.equal(new DataView(r.body.buffer, r.body.byteOffset).getUint32(0, true), names.length);
    assert.equal((await list(names.length - 1)).errno, Errno.ERANGE);
    r = await list(names.length);
    assert.equal(new TextDecoder().decode(r.body), names);
  } finally {
    await t.stop();
  }
});

Deno.test("READDIR packs what fits; offsets resume exactly; names are raw", async () => {
  const fs = sampleFs();
  fs.readdirplusEntry = undefined;
  const t = await started(fs);
  try {
    const open = await t.call(Op.OPENDIR, 4, new Uint8Array(8));
    const fh = getU64(new DataView(open.body.buffer, open.body.byteOffset), 0);
    const seen: string[] = [];
    let offset = 0;
    for (let rounds = 0; rounds < 1000; rounds++) {
      const r = await t.call(Op.READDIR, 4, readBody(fh, offset, 1000));
      assert.equal(r.errno, 0);
      assert.ok(r.body.length <= 1000);
      const ents = decodeDirents(r.body);
      if (ents.length === 0) break;
      // Everything that fits is sent: the next entry would not have fit.
      const more = await fs.readdir(4, 7, ents.at(-1)!.off, 1);
      if (more.length) assert.ok(r.body.length + direntSize(more[0].name.length) > 1000);
      for (const e of ents) seen.push(hex(e.name));
      offset = ents.at(-1)!.off;
    }
    const all = (await fs.readdir(4, 7, 0)).map((i) => hex(i.name));
    assert.deepEqual(seen, all);
    assert.equal(seen.length, 303);
    assert.equal(seen.at(-1), "ff0180");
  } finally {
    await t.stop();
  }
});

Deno.test("READDIRPLUS: dots get node 0, entries count as lookups, failures cut the reply", async () => {
  const fs = sampleFs();
  const t = await started(fs);
  try {
    const r = await t.call(Op.READDIRPLUS, 4, readBody(7, 0, 4096));
    const ents = decodeDirentsPlus(r.body);
    assert.equal(ents[0].nodeId, 0);
    assert.equal(ents[1].nodeId, 0);
    assert.equal(new TextDecoder().decode(ents[1].name), "..");
    const total = ents.reduce((s, e) => s + direntPlusSize(e.name.length), 0);
    assert.equal(total, r.body.length);
    for (const e of ents.slice(2)) {
      assert.equal(e.nodeId, e.ino);
      assert.equal(fs.lookups.get(e.nodeId), 1);
      assert.equal(e.attr.ino, e.nodeId);
    }
    assert.equal(fs.calls.get("readdirplusEntry"), ents.length - 2);
  } finally {
    await t.stop();
  }

  // Entry 3 fails: entries 0-2 are sent, the lookups of later ones that succeeded are undone.
  const forgot: number[] = [];
  const items: DirItem[] = [0, 1, 2, 3, 4, 5].map((i) => ({
    name: enc.encode(`f${i}`),
    type: 8,
    ino: 10 + i,
    next: i + 1,
  }));
  const ops: FuseOps = opsOf(sampleFs(), {
    readdir: (_n, _fh, off) => Promise.resolve(items.slice(off)),
    readdirplusEntry: (_p, it) =>
      it.ino === 13 ? Promise.reject(new Error("x")) : Promise.resolve({
        nodeId: it.ino,
        attr: fs.attr(2),
        entryTtlMs: 1,
        attrTtlMs: 1,
      }),
    forget: (id) => forgot.push(id),
  });
  const t2 = await started(ops);
  try {
    const r = await t2.call(Op.READDIRPLUS, 1, readBody(0, 0, 8192));
    assert.deepEqual(decodeDirentsPlus(r.body).map((e) => e.nodeId), [10, 11, 12]);
    assert.deepEqual(forgot.sort(), [14, 15]);
    const r2 = await t2.call(Op.READDIRPLUS, 1, readBody(0, 3, 8192));
    assert.equal(r2.errno, Errno.EIO, "first entry failing fails the request");
  } finally {
    await t2.stop();
  }
});

Deno.test("READ: in-place and copied replies, EOF, oversized requests", async () => {
  const fs = sampleFs();
  const p = new Pattern(3 << 20, 9);
  const t = await started(fs);
  try {
    for (
      const [node, off, size] of [
        [3, 0, 4096],
        [3, 12345, 1 << 20],
        [3, (3 << 20) - 100, 4096],
        [3, 3 << 20, 4096],
        [3, 1, 2 << 20], // more than max_pages allows: served from a one-off buffer
        [2, 1, 100],
        [2, 0, 5],
      ]
    ) {
      const r = await t.call(Op.READ, node, readBody(node * 10, off, size));
      assert.equal(r.errno, 0);
      const want = node === 3 ? p.slice(off, size) : enc.encode("alpha").slice(off, off + size);
      assert.deepEqual(r.body, want, `read ${node} @${off}+${size}`);
    }
  } finally {
    await t.stop();
  }
});

Deno.test("INTERRUPT aborts the op's signal; the read is answered EINTR", async () => {
  let seen: AbortSignal | undefined;
  const ops: FuseOps = opsOf(sampleFs(), {
    read: (_n, _fh, _o, _s, signal) =>
      new Promise((_, rej) => {
        seen = signal;
        signal!.addEventListener("abort", () => rej(signal!.reason));
      }),
  });
  const t = await started(ops);
  try {
    const q = request(Op.READ, 2, readBody(20, 0, 10));
    t.dev.push(q.bytes);
    while (!seen) await new Promise((r) => setTimeout(r, 1));
    t.dev.push(request(Op.INTERRUPT, 0, body(8, (dv) => setU64(dv, 0, q.unique))).bytes);
    const rs = await t.dev.repliesTo(q.unique);
    assert.equal(rs.length, 1);
    assert.equal(rs[0].errno, Errno.EINTR);
  } finally {
    await t.stop();
  }
});

Deno.test("shutdown: closed resolves, start rejects without INIT, no writes after the end", async () => {
  const dev = new FakeDev();
  const s = new FuseSession(dev, sampleFs(), { readers: 4 });
  const p = s.start();
  dev.end();
  await assert.rejects(p, /ended before INIT/);
  await s.closed;

  const late = Promise.withResolvers<Uint8Array>();
  const ops = opsOf(sampleFs(), { readlink: () => late.promise });
  const t = await started(ops);
  const q = request(Op.READLINK, 2);
  t.dev.push(q.bytes);
  await new Promise((r) => setTimeout(r, 10));
  const n = t.dev.replies.length;
  await t.stop();
  late.resolve(enc.encode("too late"));
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(t.dev.replies.length, n, "nothing written to a closed descriptor");
});
