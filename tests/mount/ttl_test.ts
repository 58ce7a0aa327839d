/**
 * Timeouts through a real `crfs mount`:
 *
 * - a tag re-pushed with another image shows up after `--tag-ttl`, without remounting, in
 *   `layers/` (the tag symlink) and in `images/` (the merged directory), with the default (long)
 *   entry timeouts for content under digests;
 * - kernel overlayfs stacked on `layers/…/2:1:0` keeps working while the kernel's entry and
 *   attribute timeouts expire again and again (`--entry-ttl 1`) and its dentry and inode caches
 *   are dropped (FORGETs): same tree, same inode numbers, a file held open keeps reading, no
 *   ESTALE — also after the tag it was mounted through moved to another image.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  assertSameTree,
  bash,
  dropCaches,
  listTree,
  mountOverlay,
  pushImage,
  Registry,
  run,
  sleep,
  startMount,
  tarTree,
  toEStargz,
  unmountAllUnder,
} from "./helpers.ts";
import { buildTestImage } from "./image.ts";
import { requireRoot } from "../helpers/require_root.ts";

/** A one-layer image whose file `which` says `name`. */
async function tinyLayer(work: string, name: string) {
  const dir = `${work}/tiny-${name}`;
  await Deno.mkdir(`${dir}/etc`, { recursive: true });
  await Deno.writeTextFile(`${dir}/which`, `${name}\n`);
  await Deno.writeTextFile(`${dir}/etc/only-in-${name}`, "x\n");
  await tarTree(dir, `${dir}.tar`);
  return await toEStargz(`${dir}.tar`);
}

Deno.test({
  name: "crfs mount: a re-pushed tag shows its new image after --tag-ttl (layers/ and images/)",
  async fn() {
    requireRoot("FUSE mounts");
    const work = await Deno.makeTempDir({ prefix: "crfs-mount-tag-" });
    let reg: Registry | undefined;
    let stop: (() => Promise<unknown>) | undefined;
    try {
      reg = await Registry.create();
      const a = await tinyLayer(work, "a");
      const b = await tinyLayer(work, "b");
      const da = await pushImage(reg.host, "tags/app", "v1", [a]);
      const m = await startMount(`${work}/mnt`, ["--tag-ttl", "1"]);
      stop = m.stop;
      const L = `${m.mnt}/layers/${reg.host}/tags/app`;
      const I = `${m.mnt}/images/${reg.host}/tags/app`;
      const cat = async (p: string) => (await run("cat", [p])).out;
      assert.equal((await run("readlink", [`${L}/v1`])).out.trim(), `sha256-${da.slice(7)}`);
      assert.equal(await cat(`${I}/v1/which`), "a\n");
      assert.equal((await run("ls", [`${I}/v1/etc`])).out, "only-in-a\n");
      // A reader holding a file of the old image open keeps it.
      const held = await Deno.open(`${I}/v1/which`);
      try {
        const db = await pushImage(reg.host, "tags/app", "v1", [b]);
        await sleep(2500);
        assert.equal((await run("readlink", [`${L}/v1`])).out.trim(), `sha256-${db.slice(7)}`);
        assert.equal(await cat(`${L}/v1/0/which`), "b\n");
        assert.equal(await cat(`${I}/v1/which`), "b\n", "images/…/v1 follows the tag");
        assert.equal((await run("ls", [`${I}/v1/etc`])).out, "only-in-b\n");
        const buf = new Uint8Array(16);
        assert.equal(await held.read(buf), 2);
        assert.equal(new TextDecoder().decode(buf.subarray(0, 2)), "a\n");
        // The old image stays reachable by digest, with the same inode numbers.
        assert.equal(await cat(`${I}/sha256-${da.slice(7)}/which`), "a\n");
        const st = await held.stat();
        const again = await Deno.stat(`${I}/sha256-${da.slice(7)}/which`);
        assert.equal(again.ino, st.ino);
        // And back again.
        await pushImage(reg.host, "tags/app", "v1", [a]);
        await sleep(2500);
        assert.equal(await cat(`${I}/v1/which`), "a\n");
        assert.equal((await Deno.stat(`${I}/v1/which`)).ino, st.ino);
      } finally {
        held.close();
      }
    } finally {
      await stop?.();
      await reg?.close();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "crfs mount: overlayfs stacked on layers/ survives expiring entry timeouts and FORGETs",
  async fn() {
    requireRoot("FUSE mounts");
    const work = await Deno.makeTempDir({ prefix: "crfs-mount-ttl-" });
    let reg: Registry | undefined;
    let stop: (() => Promise<unknown>) | undefined;
    let reader: Deno.ChildProcess | undefined;
    try {
      const img = await buildTestImage(work);
      reg = await Registry.create();
      await pushImage(reg.host, "ttl/img", "v1", img.layers);
      const m = await startMount(`${work}/mnt`, ["--entry-ttl", "1", "--tag-ttl", "1"]);
      stop = m.stop;
      const L = `${m.mnt}/layers/${reg.host}/ttl/img/v1`;
      const I = `${m.mnt}/images/${reg.host}/ttl/img/v1`;
      const merged = await mountOverlay([`${L}/2`, `${L}/1`, `${L}/0`], `${work}/ov`, false);
      const skipDirLinks = (_p: string, f: string, a: { type: string; nlink: number }) =>
        f === "nlink" && a.type === "d" && a.nlink === 1;
      const expected = await listTree(I);
      assertSameTree(await listTree(merged), expected, "overlayfs at start", skipDirLinks);
      const probe = [
        "special/hello.txt",
        "special/sub/hard2",
        "usr/lib/real-big.bin",
        "special/gone.txt/again",
        "etc/hostname",
      ];
      const inos = async (root: string) =>
        (await run("stat", ["-c", "%i", ...probe.map((p) => `${root}/${p}`)])).out;
      const inosOv = await inos(merged);
      const inosImg = await inos(I);
      // A reader that keeps one file of the overlay open and rereads it every 200 ms.
      reader = new Deno.Command("bash", {
        args: [
          "-c",
          `exec 3< "$1"; while true; do cat /proc/self/fd/3 > /dev/null || exit 3; ` +
          `sha256sum < "$1" > /dev/null || exit 4; sleep 0.2; done`,
          "bash",
          `${merged}/usr/lib/real-big.bin`,
        ],
        stdout: "null",
        stderr: "piped",
      }).spawn();
      const rounds = 6;
      for (let i = 0; i < rounds; i++) {
        await sleep(1500); // past the 1 s entry and attribute timeouts
        if (i % 2 === 1) await dropCaches(); // dentries and inodes go: the kernel sends FORGETs
        if (i === 3) {
          // The tag the overlay was mounted through moves: the overlay keeps its layers.
          const t = await tinyLayer(work, "moved");
          await pushImage(reg.host, "ttl/img", "v1", [t]);
        }
        const got = await listTree(merged);
        assertSameTree(got, expected, `overlayfs, round ${i}`, skipDirLinks);
        assert.equal(await inos(merged), inosOv, `overlay inode numbers, round ${i}`);
        if (i < 3) assert.equal(await inos(I), inosImg, `crfs inode numbers, round ${i}`);
        await bash(`cd "$1/special/sub" && cat hard2 > /dev/null && ls -la > /dev/null`, [merged]);
      }
      try {
        reader.kill("SIGTERM");
      } catch {
        // it failed already: its status says how
      }
      const st = await reader.status;
      const err = await new Response(reader.stderr).text();
      reader = undefined;
      assert.equal(st.signal, "SIGTERM", `the reader stopped on its own (${st.code}): ${err}`);
      assert.doesNotMatch(err, /stale/i);
      // After the tag moved, images/…/v1 is the new image; the overlay still the old one.
      await sleep(1200);
      assert.equal((await run("cat", [`${I}/which`])).out, "moved\n");
      assert.equal((await run("cat", [`${merged}/special/hello.txt`])).out, "hello\n");
    } finally {
      if (reader) {
        try {
          reader.kill("SIGKILL");
        } catch {
          // gone
        }
        await reader.status;
        await reader.stderr.cancel().catch(() => {});
      }
      await unmountAllUnder(`${work}/ov`).catch(() => {});
      await stop?.();
      await reg?.close();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});
