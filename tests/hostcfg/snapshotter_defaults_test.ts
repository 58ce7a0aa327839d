/**
 * Default paths for root and for other users (fs/user_dirs.ts): the system directories for
 * root, the XDG base directories otherwise — the disk cache and `crfs snapshotter`'s socket and
 * state. Then `crfs snapshotter` started by a user the test creates (through the rootless tests'
 * TestUser, /dev/fuse at 0666 and user_allow_other for the test), with no path flag: it serves its socket under the
 * user's `$XDG_RUNTIME_DIR`, keeps its state under `~/.local/share`, its cache under
 * `$XDG_CACHE_HOME`, and SIGTERM removes the socket and unmounts its tree; without a runtime
 * directory it says to give `--address`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { defaultCacheDir } from "../../fs/disk_cache.ts";
import { snapshotterPaths, userDirs } from "../../fs/user_dirs.ts";
import {
  fuseMountedAt,
  TestUser,
  withDevFuseMode,
  withUserAllowOther,
} from "../rootless/helpers.ts";
import { watchChild } from "../helpers/child.ts";

const envOf = (vars: Record<string, string>) => (name: string) => vars[name];

Deno.test("default directories: system ones for root, XDG base directories for other users", () => {
  const all = envOf({
    HOME: "/home/u",
    XDG_RUNTIME_DIR: "/run/user/1000/",
    XDG_DATA_HOME: "/d",
    XDG_CACHE_HOME: "/c",
  });
  assert.deepEqual(userDirs(0, all), { runtime: "/run", data: "/var/lib", cache: "/var/cache" });
  assert.deepEqual(userDirs(1000, all), { runtime: "/run/user/1000", data: "/d", cache: "/c" });
  assert.deepEqual(userDirs(1000, envOf({ HOME: "/home/u", XDG_CACHE_HOME: "" })), {
    runtime: undefined,
    data: "/home/u/.local/share",
    cache: "/home/u/.cache",
  });
  assert.deepEqual(snapshotterPaths(0, all), {
    address: "/run/crfs/snapshotter.sock",
    root: "/var/lib/crfs/snapshotter",
  });
  assert.deepEqual(snapshotterPaths(1000, all), {
    address: "/run/user/1000/crfs-snapshotter/snapshotter.sock",
    root: "/d/crfs/snapshotter",
  });
  assert.deepEqual(snapshotterPaths(1000, envOf({ HOME: "/home/u" })), {
    address: undefined,
    root: "/home/u/.local/share/crfs/snapshotter",
  });
  // The disk cache's default is the same function's.
  assert.equal(defaultCacheDir(), `${userDirs().cache}/crfs`);
});

Deno.test("crfs snapshotter as a non-root user: socket in $XDG_RUNTIME_DIR, state in ~/.local/share, cache in $XDG_CACHE_HOME", async () => {
  await using user = await TestUser.create();
  // Its tree is mounted allow_other (containers run as other uids): user_allow_other.
  await withDevFuseMode(0o666, () =>
    withUserAllowOther(async () => {
      const socket = `${user.runtimeDir}/crfs-snapshotter/snapshotter.sock`;
      const root = `${user.home}/.local/share/crfs/snapshotter`;
      const cache = `${user.home}/xdg-cache`;
      const child = user.command(Deno.execPath(), [
        "run",
        "-A",
        new URL("../../main.ts", import.meta.url).pathname,
        "snapshotter",
      ], { env: { XDG_CACHE_HOME: cache }, stdout: "null" }).spawn();
      const watched = watchChild(child);
      const err = watched.stderr;
      try {
        const deadline = Date.now() + 60_000;
        while (!/snapshotter serving/.test(err())) {
          assert.ok(
            !watched.exited() && Date.now() < deadline,
            `crfs snapshotter did not start:\n${err()}`,
          );
          await new Promise((r) => setTimeout(r, 50));
        }
        assert.match(err(), new RegExp(`serving ${socket} \\(state in ${root};`));
        const st = await Deno.lstat(socket);
        assert.ok(st.isSocket && st.uid === user.uid, "the user's socket");
        assert.ok(await fuseMountedAt(`${root}/fuse`), "its FUSE tree under the state directory");
        assert.equal((await Deno.stat(root)).uid, user.uid);
        assert.ok((await Deno.stat(`${cache}/crfs`)).isDirectory, "the cache under XDG_CACHE_HOME");
        // Nothing in the system directories.
        for (const p of ["/run/crfs/snapshotter.sock", "/var/lib/crfs/snapshotter"]) {
          const there = await Deno.lstat(p).then((s) => s.uid === user.uid, () => false);
          assert.ok(!there, p);
        }
      } finally {
        const s = await watched.terminate();
        assert.equal(s.code, 0, err());
      }
      assert.ok(!(await fuseMountedAt(`${root}/fuse`)), "unmounted on SIGTERM");
      assert.ok(!(await Deno.lstat(socket).then(() => true, () => false)), "socket removed");

      // Without a runtime directory there is no default socket.
      const none = await user.crfs(["snapshotter"], { env: { XDG_RUNTIME_DIR: "" } });
      assert.equal(none.code, 2, none.stderr);
      assert.match(none.stderr, /no \$XDG_RUNTIME_DIR for the default socket: give --address/);
    }));
});
