/**
 * `crfs mount` as a non-root user made for the test, against a loopback docker-registry holding
 * an eStargz image pushed with convert/push.ts: libfuse mounts through fusermount3 (the mount
 * belongs to the user), the disk cache fills `$XDG_CACHE_HOME/crfs`, the default mount point is
 * `$XDG_RUNTIME_DIR/crfs`, SIGTERM and SIGINT unmount through `fusermount3 -u`, a mount left by a
 * SIGKILLed crfs is cleared by the user's next `crfs mount`, and `--allow-other` works once
 * /etc/fuse.conf has `user_allow_other`. The refusals each give one line naming the fix:
 * `/dev/fuse` not accessible (this VM's 0600), no fusermount3 on PATH, `--allow-other` without
 * `user_allow_other`, a mount point of another user.
 *
 * `/dev/fuse` is set to 0666 only inside each test and /etc/fuse.conf edited only where a test
 * says so; both are restored, and the user removed, even when a test fails.
 *
 * @module
 */
import { assert, assertEquals, assertMatch, materialize, run } from "../cmd/helpers.ts";
import { defaultDrivers } from "../../drivers/mod.ts";
import { pushEStargzImage } from "../../convert/push.ts";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { readMountinfo } from "../../fs/fuse/mount.ts";
import { fuseMountedAt, TestUser, withDevFuseMode, withUserAllowOther } from "./helpers.ts";

const HELLO = "hello from a rootless mount\n";

/** A registry with `rl/app:v1`: one eStargz layer with `etc/hello.txt` and a 3 MiB file. */
async function registryWithImage(): Promise<TestRegistry> {
  const reg = await startRegistry();
  const work = await Deno.makeTempDir({ prefix: "crfs-rootless-img-" });
  try {
    const big = new Uint8Array(3 << 20).map((_, i) => (i * 31 + (i >> 9)) & 0xff);
    // The layer's own tree, its root directory included, is readable by everyone (a temporary
    // directory's 0700 would keep the user out of the whole image).
    const tree = `${work}/tree`;
    await materialize(tree, { "etc/hello.txt": HELLO, "data/big.bin": big });
    await Deno.chmod(tree, 0o755);
    await run("tar", [
      "--owner=0",
      "--group=0",
      "--numeric-owner",
      "-cf",
      `${work}/l.tar`,
      "-C",
      tree,
      ".",
    ]);
    const tar = await Deno.readFile(`${work}/l.tar`);
    await pushEStargzImage(
      defaultDrivers().forHost(reg.host),
      { host: reg.host, repository: "rl/app" },
      "v1",
      [ReadableStream.from([tar])],
    );
    return reg;
  } catch (e) {
    await reg.stop();
    throw e;
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

/** Files under `dir` (recursively), 0 when it does not exist. */
async function countFiles(dir: string): Promise<number> {
  let n = 0;
  try {
    for await (const e of Deno.readDir(dir)) {
      n += e.isDirectory ? await countFiles(`${dir}/${e.name}`) : 1;
    }
  } catch {
    // missing
  }
  return n;
}

Deno.test("rootless crfs mount: through fusermount3 as the user, cache under $XDG_CACHE_HOME, SIGTERM and SIGINT unmount", async () => {
  await using reg = await registryWithImage();
  await using user = await TestUser.create();
  await withDevFuseMode(0o666, async () => {
    for (const signal of ["SIGTERM", "SIGINT"] as const) {
      const mnt = `${user.home}/mnt-${signal}`;
      const crfs = await user.startCrfs(["mount", mnt], [mnt]);
      try {
        const m = (await readMountinfo()).find((x) => x.mountPoint === mnt)!;
        assertEquals(m.fsType, "fuse.crfs");
        // The mount is the user's (fusermount3 records the owner), not root's.
        const opts = await Deno.readTextFile("/proc/self/mounts");
        const line = opts.split("\n").find((l) => l.split(" ")[1] === mnt) ?? "";
        assertMatch(line, new RegExp(`user_id=${user.uid},group_id=${user.gid}`));
        const file = `${mnt}/images/${reg.host}/rl/app/v1/etc/hello.txt`;
        const cat = await user.run("cat", [file]);
        assertEquals(cat.code, 0, cat.stderr);
        assertEquals(cat.stdout, HELLO);
        const sum = await user.run("sha256sum", [
          `${mnt}/images/${reg.host}/rl/app/v1/data/big.bin`,
        ]);
        assertEquals(sum.code, 0, sum.stderr);
        // Without --allow-other the kernel keeps everyone else out, root included.
        const byRoot = await new Deno.Command("cat", { args: [file], stderr: "piped" }).output();
        assert(!byRoot.success, "root read a mount made without allow_other");
      } finally {
        const code = await crfs.kill(signal);
        assertEquals(code, 0, crfs.stderr());
      }
      assertMatch(crfs.stderr(), /unmounted/);
      assert(!await fuseMountedAt(mnt), `${signal} left the mount at ${mnt}`);
    }
    // What was fetched is in the user's cache, owned by the user.
    const cache = `${user.home}/.cache/crfs`;
    assert(await countFiles(cache) > 0, `nothing cached under ${cache}`);
    assertEquals((await Deno.stat(cache)).uid, user.uid);
  });
});

Deno.test("rootless crfs mount: default mount point $XDG_RUNTIME_DIR/crfs", async () => {
  await using reg = await registryWithImage();
  await using user = await TestUser.create();
  await withDevFuseMode(0o666, async () => {
    const mnt = `${user.runtimeDir}/crfs`;
    const crfs = await user.startCrfs(["mount"], [mnt]);
    try {
      assertMatch(crfs.stderr(), new RegExp(`mounted at ${mnt} `));
      const cat = await user.run("cat", [`${mnt}/images/${reg.host}/rl/app/v1/etc/hello.txt`]);
      assertEquals(cat.stdout, HELLO, cat.stderr);
    } finally {
      assertEquals(await crfs.kill("SIGTERM"), 0, crfs.stderr());
    }
    assert(!await fuseMountedAt(mnt));
    // Without a runtime directory there is no default: a usage error, one line.
    const r = await user.crfs(["mount"], { env: { XDG_RUNTIME_DIR: "" } });
    assertEquals(r.code, 2, r.stderr);
    assertMatch(r.stderr.trim(), /^crfs: no \$XDG_RUNTIME_DIR for the default mount point/);
  });
});

Deno.test("rootless crfs mount: a mount left by a SIGKILLed crfs is cleared by the user's next mount", async () => {
  await using reg = await registryWithImage();
  await using user = await TestUser.create();
  await withDevFuseMode(0o666, async () => {
    const mnt = `${user.home}/mnt`;
    const first = await user.startCrfs(["mount", mnt], [mnt]);
    await first.kill("SIGKILL");
    // Dead: the mount is still in the table and every access fails.
    assert(await fuseMountedAt(mnt), "the killed crfs's mount is gone already");
    const dead = await user.run("ls", [mnt]);
    assert(dead.code !== 0);
    assertMatch(dead.stderr, /not connected/i);
    const second = await user.startCrfs(["mount", mnt], [mnt]);
    try {
      const cat = await user.run("cat", [`${mnt}/images/${reg.host}/rl/app/v1/etc/hello.txt`]);
      assertEquals(cat.stdout, HELLO, cat.stderr);
      // Exactly one mount there: the stale one was unmounted, not buried.
      const at = (await readMountinfo()).filter((m) => m.mountPoint === mnt);
      assertEquals(at.length, 1);
    } finally {
      assertEquals(await second.kill("SIGTERM"), 0, second.stderr());
    }
    assert(!await fuseMountedAt(mnt));
  });
});

Deno.test("rootless crfs mount --allow-other: refused in one line without user_allow_other, works with it", async () => {
  await using reg = await registryWithImage();
  await using user = await TestUser.create();
  await withDevFuseMode(0o666, async () => {
    const mnt = `${user.home}/mnt`;
    const conf = await Deno.readTextFile("/etc/fuse.conf").catch(() => "");
    assert(!/^\s*user_allow_other\s*$/m.test(conf), "/etc/fuse.conf already allows allow_other");
    const refused = await user.crfs(["mount", "--allow-other", mnt]);
    assertEquals(refused.code, 1, refused.stderr);
    assertEquals(refused.stderr.trim().split("\n").length, 1, refused.stderr);
    assertMatch(refused.stderr, /needs a line 'user_allow_other' in \/etc\/fuse\.conf/);
    assert(!await fuseMountedAt(mnt));
    await withUserAllowOther(async () => {
      const crfs = await user.startCrfs(["mount", "--allow-other", mnt], [mnt]);
      try {
        // allow_other: root (another user here) reads the user's mount.
        const text = await Deno.readTextFile(
          `${mnt}/images/${reg.host}/rl/app/v1/etc/hello.txt`,
        );
        assertEquals(text, HELLO);
      } finally {
        assertEquals(await crfs.kill("SIGTERM"), 0, crfs.stderr());
      }
    });
    assert(!await fuseMountedAt(mnt));
  });
});

Deno.test("rootless crfs mount: /dev/fuse not accessible, no fusermount3, another user's mount point — one line each", async () => {
  await using user = await TestUser.create();
  const mnt = `${user.home}/mnt`;
  const oneLine = (r: { code: number; stderr: string }, re: RegExp) => {
    assertEquals(r.code, 1, r.stderr);
    assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
    assertMatch(r.stderr, re);
  };
  // This VM's own mode: no non-root FUSE at all; the error says which mode is needed.
  await withDevFuseMode(0o600, async () => {
    oneLine(
      await user.crfs(["mount", mnt]),
      /\/dev\/fuse is mode 0600, not readable and writable by uid \d+: .*chmod 0666 \/dev\/fuse/,
    );
  });
  await withDevFuseMode(0o666, async () => {
    // fusermount3 missing: PATH without it (crfs itself runs from an absolute path).
    oneLine(
      await user.crfs(["mount", mnt], { env: { PATH: "/nonexistent" } }),
      /fusermount3 is not on PATH: .*apt-get install fuse3/,
    );
    // A directory of root's (mode 0755) that the user may not mount on.
    const foreign = await Deno.makeTempDir({ prefix: "crfs-rootless-foreign-" });
    try {
      await Deno.chmod(foreign, 0o755);
      oneLine(
        await user.crfs(["mount", foreign]),
        /belongs to uid 0: fusermount3 mounts only on a directory the user owns or may write/,
      );
      assert(!await fuseMountedAt(foreign));
    } finally {
      await Deno.remove(foreign, { recursive: true });
    }
  });
  assert(!await fuseMountedAt(mnt));
});
