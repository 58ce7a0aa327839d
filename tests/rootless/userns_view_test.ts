/**
 * The pieces of rootless support that need no user or mount: the user-namespace view of a
 * filesystem (ids shifted as rootless podman maps them, `user.overlay.*` answered from
 * `trusted.overlay.*`), /etc/subuid parsing, and the checks and defaults of fs/fuse/unprivileged.ts
 * with their inputs given (device, fuse.conf, PATH, uid).
 *
 * @module
 */
import { assert, assertEquals, assertMatch } from "../cmd/helpers.ts";
import type { Attr, FuseOps } from "../../fs/fuse/ops.ts";
import { answered, Errno, FuseError } from "../../fs/fuse/ops.ts";
import {
  type IdMaps,
  OVERFLOW_ID,
  rootlessIdMaps,
  subordinateRange,
  toHost,
  userNamespaceView,
} from "../../fs/fuse/userns_view.ts";
import {
  checkUnprivilegedMount,
  defaultMountpoint,
  findOnPath,
  UnprivilegedMountError,
  userAllowOther,
} from "../../fs/fuse/unprivileged.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function attr(uid: number, gid: number): Attr {
  return {
    type: "reg",
    mode: 0o644,
    uid,
    gid,
    userName: "",
    groupName: "",
    size: 1,
    mtimeSec: 0,
    mtimeNsec: 0,
    linkName: "",
    nlink: 1,
    devMajor: 0,
    devMinor: 0,
    xattrs: new Map(),
  };
}

/** Node 2: uid/gid 0; node 3: 1000/1000; node 4: 70000 (beyond the range). */
function fakeOps(): FuseOps & { shared: Map<number, Attr> } {
  const shared = new Map([[2, attr(0, 0)], [3, attr(1000, 1000)], [4, attr(70000, 5)]]);
  const get = (id: number) => {
    const a = shared.get(id);
    if (!a) throw new FuseError(Errno.ENOENT);
    return a;
  };
  return {
    shared,
    lookup: (_p, name) => {
      const id = Number(dec.decode(name));
      if (id === 9) {
        return Promise.resolve({ nodeId: 0, attr: attr(0, 0), entryTtlMs: 1, attrTtlMs: 1 });
      }
      return Promise.resolve({ nodeId: id, attr: get(id), entryTtlMs: 1, attrTtlMs: 1 });
    },
    getattr: (id) => Promise.resolve({ attr: get(id), ttlMs: 1 }),
    readlink: () => Promise.reject(new FuseError(Errno.EINVAL)),
    open: () => Promise.resolve({}),
    read: () => Promise.resolve(enc.encode("data")),
    readdir: () => Promise.resolve([]),
    readdirplusEntry: (_p, item) =>
      Promise.resolve({ nodeId: item.ino, attr: get(item.ino), entryTtlMs: 1, attrTtlMs: 1 }),
    getxattr: (_id, name) => {
      if (dec.decode(name) === "trusted.overlay.opaque") return Promise.resolve(enc.encode("y"));
      return Promise.reject(new FuseError(Errno.ENODATA));
    },
    listxattr: () => Promise.resolve([enc.encode("trusted.overlay.opaque"), enc.encode("user.x")]),
    statfs: () => Promise.reject(new FuseError(Errno.ENOSYS)),
  };
}

const MAPS: IdMaps = {
  uids: [{ inside: 0, outside: 1001, count: 1 }, { inside: 1, outside: 100000, count: 65536 }],
  gids: [{ inside: 0, outside: 1002, count: 1 }, { inside: 1, outside: 200000, count: 65536 }],
};

Deno.test("userNamespaceView: owners shifted as rootless podman maps them, the inner tree untouched", async () => {
  const ops = fakeOps();
  const view = userNamespaceView(ops, MAPS);
  assertEquals((await view.getattr(2)).attr.uid, 1001);
  assertEquals((await view.getattr(2)).attr.gid, 1002);
  const e = answered(await view.lookup(1, enc.encode("3")));
  assertEquals([e.attr.uid, e.attr.gid], [100999, 200999]);
  const far = await view.getattr(4);
  assertEquals([far.attr.uid, far.attr.gid], [OVERFLOW_ID, 200004]);
  const plus = await view.readdirplusEntry!(1, { name: enc.encode("x"), type: 8, ino: 3, next: 1 });
  assertEquals(plus.attr.uid, 100999);
  // A negative entry stays negative; the filesystem's own attributes are not changed.
  assertEquals(answered(await view.lookup(1, enc.encode("9"))).nodeId, 0);
  assertEquals(ops.shared.get(2)!.uid, 0);
  assertEquals(ops.shared.get(3)!.uid, 1000);
  // Everything else goes to the filesystem as is.
  assertEquals(dec.decode(await view.read(3, 0, 0, 4)), "data");
  let code = 0;
  await Promise.resolve().then(() => view.readlink(3)).catch((e: FuseError) => code = e.errno);
  assertEquals(code, Errno.EINVAL);
});

Deno.test("userNamespaceView: user.overlay.* answered from trusted.overlay.*, and listed", async () => {
  const view = userNamespaceView(fakeOps(), MAPS);
  assertEquals(
    dec.decode(answered(await view.getxattr(2, enc.encode("user.overlay.opaque")))),
    "y",
  );
  assertEquals(
    dec.decode(answered(await view.getxattr(2, enc.encode("trusted.overlay.opaque")))),
    "y",
  );
  let code = 0;
  await Promise.resolve().then(() => view.getxattr(2, enc.encode("user.overlay.redirect"))).catch((
    e: FuseError,
  ) => code = e.errno);
  assertEquals(code, Errno.ENODATA);
  assertEquals(
    (await view.listxattr(2)).map((n) => dec.decode(n)),
    ["trusted.overlay.opaque", "user.x", "user.overlay.opaque"],
  );
});

Deno.test("subordinate ranges: by name or uid, first valid line; rootlessIdMaps from files", async () => {
  const text = "other:100000:65536\n# no\nbad:x:y\nalice:165536:65536\n1001:231072:1000\n";
  assertEquals(subordinateRange(text, { name: "alice", id: 7 }), { start: 165536, count: 65536 });
  assertEquals(subordinateRange(text, { name: "bob", id: 1001 }), { start: 231072, count: 1000 });
  assertEquals(subordinateRange(text, { name: "bad", id: 5 }), undefined);
  assertEquals(toHost(MAPS.uids, 0), 1001);
  assertEquals(toHost(MAPS.uids, 65536), 165535);
  assertEquals(toHost(MAPS.uids, 65537), OVERFLOW_ID);
  const dir = await Deno.makeTempDir({ prefix: "crfs-subid-" });
  try {
    await Deno.writeTextFile(`${dir}/subuid`, "4242:300000:10\n");
    await Deno.writeTextFile(`${dir}/subgid`, "");
    const maps = await rootlessIdMaps(4242, 4343, {
      subuid: `${dir}/subuid`,
      subgid: `${dir}/subgid`,
    });
    assertEquals(maps.uids, [
      { inside: 0, outside: 4242, count: 1 },
      { inside: 1, outside: 300000, count: 10 },
    ]);
    // No range: only root maps (to the user).
    assertEquals(maps.gids, [{ inside: 0, outside: 4343, count: 1 }]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("unprivileged checks: fuse.conf, PATH, device mode, mount point owner, default mount point", async () => {
  const dir = await Deno.makeTempDir({ prefix: "crfs-unpriv-" });
  try {
    const conf = `${dir}/fuse.conf`;
    await Deno.writeTextFile(conf, "# user_allow_other\n#user_allow_other\nmount_max = 5\n");
    assert(!await userAllowOther(conf), "a commented-out line counts");
    await Deno.writeTextFile(conf, "mount_max = 5\n  user_allow_other  # yes\n");
    assert(await userAllowOther(conf));
    assert(!await userAllowOther(`${dir}/missing`));
    assertEquals(await findOnPath("fusermount3", `/nonexistent::${dir}`), undefined);
    assertEquals(await findOnPath("sh", "/nonexistent:/bin"), "/bin/sh");

    // A device file stand-in: mode decides (uid 4242 is neither owner nor in the group).
    const dev = `${dir}/fuse`;
    await Deno.writeTextFile(dev, "");
    const mnt = `${dir}/mnt`;
    await Deno.mkdir(mnt);
    const check = (o: Record<string, unknown>, path = mnt) =>
      checkUnprivilegedMount(path, { device: dev, fuseConf: conf, uid: 4242, gids: [4242], ...o })
        .then(() => "ok", (e) => (assert(e instanceof UnprivilegedMountError), e.message));
    await Deno.chmod(dev, 0o600);
    assertMatch(await check({}), /is mode 0600, not readable and writable by uid 4242/);
    await Deno.chmod(dev, 0o666);
    assertMatch(await check({ device: `${dir}/none` }), /does not exist: load the fuse module/);
    assertMatch(await check({ path: "/nonexistent" }), /fusermount3 is not on PATH/);
    await Deno.writeTextFile(conf, "");
    assertMatch(await check({ allowOther: true }), /needs a line 'user_allow_other' in/);
    // The mount point is root's and 0755: refused; 0777 without sticky: allowed; sticky: refused.
    await Deno.chmod(mnt, 0o755);
    assertMatch(await check({}), /belongs to uid 0: fusermount3 mounts only on a directory/);
    await Deno.chmod(mnt, 0o777);
    assertEquals(await check({}), "ok");
    await Deno.chmod(mnt, 0o1777);
    assertMatch(await check({}), /belongs to uid 0/);
    assertEquals(await check({ uid: 0 }), "ok");
    await Deno.chmod(mnt, 0o755);
    assertMatch(await check({}, dev), /is not a directory/);

    assertEquals(defaultMountpoint(0, () => "/run/user/0"), "/crfs");
    assertEquals(defaultMountpoint(1000, () => "/run/user/1000/"), "/run/user/1000/crfs");
    assertEquals(defaultMountpoint(1000, () => undefined), undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
