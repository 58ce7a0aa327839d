/**
 * Listing a repository through a real mount lists its tags by name: no manifest or blob
 * request, so a tag that is not eStargz (`my/app:1`, plain gzip, beside `my/app:1-esgz`
 * converted — the README's example) does not fail the listing. That tag fails on its own (EIO
 * when its directory is used, the reason in crfs's log); the others serve their files.
 *
 * @module
 */
import assert from "node:assert/strict";
import { startRegistry } from "../helpers/registry.ts";
import { pushImage, tar } from "../helpers/images.ts";
import { convert } from "../unit/tree_helpers.ts";
import { run, startMount } from "./helpers.ts";
import { requireRoot } from "../helpers/require_root.ts";

Deno.test({
  name: "crfs mount: a repository lists its tags without opening images; a bad tag fails alone",
  async fn() {
    requireRoot("FUSE mounts");
    const work = await Deno.makeTempDir({ prefix: "crfs-mount-replist-" });
    await using reg = await startRegistry();
    let stop: (() => Promise<unknown>) | undefined;
    try {
      await pushImage(reg, "my/app", "1", { files: { "hello.txt": "plain gzip\n" } });
      const { blob } = await convert(tar({ "hello.txt": "from estargz\n" }));
      await pushImage(reg, "my/app", "1-esgz", { layers: [], rawLayers: [blob] });
      const m = await startMount(`${work}/mnt`, ["--prefetch", "off"]);
      stop = m.stop;
      const repo = `${m.mnt}/images/${reg.host}/my/app`;

      reg.clearLog();
      const ls = await run("ls", [`${repo}/`]);
      assert.equal(ls.code, 0, ls.err + m.stderr());
      assert.deepEqual(ls.out.split("\n").filter(Boolean), ["1", "1-esgz"]);
      const long = await run("ls", ["-l", `${repo}/`]);
      assert.equal(long.code, 0, long.err);
      const log = await reg.accessLog();
      const costly = log.filter((e) => /\/(manifests|blobs)\//.test(e.path));
      assert.deepEqual(costly, [], "listing the repository fetched manifests or blobs");

      const good = await run("cat", [`${repo}/1-esgz/hello.txt`]);
      assert.equal(good.out, "from estargz\n", good.err + m.stderr());
      const bad = await run("ls", [`${repo}/1/`]);
      assert.notEqual(bad.code, 0);
      assert.match(bad.err, /Input\/output error/);
      const badFile = await run("cat", [`${repo}/1/hello.txt`]);
      assert.notEqual(badFile.code, 0);
      assert.match(badFile.err, /Input\/output error/);
      // The reason is in the log, naming the repository.
      assert.match(m.stderr(), new RegExp(`crfs: .*${reg.host}/my/app.*`));
      // The listing still works, and the good tag still serves.
      assert.equal((await run("ls", [`${repo}/`])).code, 0);
      assert.equal((await run("cat", [`${repo}/1-esgz/hello.txt`])).out, "from estargz\n");
      assert.equal((await m.stop()).code, 0, m.stderr());
      stop = undefined;
    } finally {
      await stop?.();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});
