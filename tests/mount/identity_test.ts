/**
 * Inode identity follows the file through a real mount: a layer written by the reference Go
 * `estargz.Writer` from a GNU tar made with `tar --append` (`a`, `b` hardlinked to it, then a
 * new `a`) holds two files; `layers/` and `images/` show them with two inode numbers and their
 * own bytes, whichever is read first and after the kernel forgot them.
 *
 * @module
 */
import assert from "node:assert/strict";
import { appendWithReference } from "../helpers/reference.ts";
import { appendedHardlinkTar } from "../helpers/hardlink_tar.ts";
import { bash, dropCaches, pushImage, Registry, run, startMount } from "./helpers.ts";
import { requireRoot } from "../helpers/require_root.ts";

Deno.test({
  name: "crfs mount: a hardlink's file and a new file under its first name are two inodes",
  async fn() {
    requireRoot("FUSE mounts");
    const work = await Deno.makeTempDir({ prefix: "crfs-mount-identity-" });
    let reg: Registry | undefined;
    let stop: (() => Promise<unknown>) | undefined;
    try {
      const tar = await appendedHardlinkTar(work);
      const blob = `${work}/layer.esgz`;
      const built = await appendWithReference(tar, blob);
      const uncompressed = Number((await bash(`gzip -dc < "$1" | wc -c`, [blob])).out.trim());
      reg = await Registry.create();
      await pushImage(reg.host, "test/identity", "v1", [{
        tar,
        blob,
        blobDigest: built.blobDigest,
        blobSize: built.size,
        diffId: built.diffID,
        tocDigest: built.tocDigest,
        uncompressedSize: uncompressed,
      }]);
      const m = await startMount(`${work}/mnt`);
      stop = m.stop;
      const stat = async (p: string) => (await run("stat", ["-c", "%i %s %h", p])).out.trim();
      const cat = async (p: string) => (await run("cat", [p])).out;
      for (
        const dir of [
          `layers/${reg.host}/test/identity/v1/0`,
          `images/${reg.host}/test/identity/v1`,
        ]
      ) {
        for (let round = 0; round < 2; round++) {
          const where = `${m.mnt}/${dir}`;
          // b first: the new a must not take b's number or bytes, nor the other way round.
          assert.equal(await cat(`${where}/b`), "old\n", `${dir}/b (round ${round})`);
          assert.equal(await cat(`${where}/a`), "newer-content\n", `${dir}/a (round ${round})`);
          const [ia, sa] = (await stat(`${where}/a`)).split(" ");
          const [ib, sb] = (await stat(`${where}/b`)).split(" ");
          assert.notEqual(ia, ib, `${dir}: a and b share inode ${ia}`);
          assert.deepEqual([sa, sb], ["14", "4"]);
          await dropCaches();
        }
      }
      assert.equal((await m.stop()).code, 0, m.stderr());
      stop = undefined;
    } finally {
      await stop?.();
      await reg?.close();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});
