/**
 * `crfs snapshotter` as a command: help, usage errors, a state directory it cannot use (one
 * line, exit 1), and SIGTERM ending it with its FUSE tree unmounted and its socket removed (the
 * helper's stop() checks both).
 *
 * @module
 */
import { assert, assertEquals, assertMatch, crfs } from "../cmd/helpers.ts";
import { denoDir, startSnapshotter } from "./helpers.ts";

const env = { DENO_DIR: denoDir() };

Deno.test("crfs snapshotter: help, usage errors, an unusable root", async () => {
  const help = await crfs(["snapshotter", "--help"], { env });
  assertEquals(help.code, 0);
  assertMatch(help.stdout, /\[proxy_plugins\.crfs\]/);
  assertMatch(help.stdout, /--address SOCKET/);
  assertMatch(help.stdout, /--verify POLICY/);
  const extra = await crfs(["snapshotter", "surplus"], { env });
  assertEquals(extra.code, 2);
  assertMatch(extra.stderr, /takes no arguments/);
  const file = await Deno.makeTempFile({ prefix: "crfs-snap-notadir-" });
  try {
    const bad = await crfs(
      ["snapshotter", "--root", `${file}/root`, "--address", `${file}.sock`, "--no-cache"],
      { env },
    );
    assertEquals(bad.code, 1);
    assertMatch(bad.stderr, /cannot start the snapshotter/);
    assertEquals(bad.stderr.trim().split("\n").length, 1, bad.stderr);
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("crfs snapshotter: SIGTERM unmounts its tree and removes its socket; state stays", async () => {
  const dir = await Deno.makeTempDir({ prefix: "crfs-snap-cmd-" });
  try {
    const sn = await startSnapshotter(`${dir}/root`, `${dir}/run/s.sock`);
    const st = await Deno.lstat(`${dir}/run/s.sock`);
    assert(st.isSocket, "serves a unix socket");
    assertMatch(await Deno.readTextFile(`${dir}/root/fuse/README-crfs.txt`), /crfs/);
    await sn.stop();
    assert((await Deno.stat(`${dir}/root/snapshots`)).isDirectory, "the state directory stays");
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
