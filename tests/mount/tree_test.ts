/**
 * The whole tree through a real `crfs mount` against what `tar -x` makes of the same layers:
 * names, types, modes, owners, sizes, mtimes (nanoseconds), link targets, link counts, hardlink
 * groups, device numbers, xattrs and the sha256 of every file.
 *
 * - `layers/<registry>/…/N` (an eStargz image pushed to a real docker-registry) against each
 *   layer extracted by GNU tar and put in overlayfs form;
 * - `images/<registry>/…` against the layers applied the OCI way with tar (whiteouts, opaque
 *   directories, replaced directories);
 * - `layers/local/x.stargz` and `images/local/x.stargz` against the bottom layer;
 * - kernel overlayfs over crfs's layer directories against `images/`;
 * - the same node keeps one inode number across `layers/`, `images/`, tags and digests.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  applyLayer,
  assertSameTree,
  bash,
  type Entry,
  extractLayer,
  listTree,
  mountOverlay,
  pushImage,
  Registry,
  run,
  startMount,
  tarTree,
  toEStargz,
  toOverlayForm,
  unmountAllUnder,
  within,
} from "./helpers.ts";
import { buildTestImage } from "./image.ts";
import { requireRoot } from "../helpers/require_root.ts";

Deno.test({
  name: "crfs mount: whole trees equal tar -x of the same layers (registry and local stargz)",
  async fn(t) {
    requireRoot("FUSE mounts");
    const work = await Deno.makeTempDir({ prefix: "crfs-mount-tree-" });
    let reg: Registry | undefined;
    let stop: (() => Promise<unknown>) | undefined;
    try {
      const img = await buildTestImage(work);
      reg = await Registry.create();
      const digest = await pushImage(reg.host, "test/tree", "v1", img.layers);
      await Deno.mkdir(`${work}/local`);
      await Deno.copyFile(img.layers[0].blob, `${work}/local/base.stargz`);

      // Expected trees, from GNU tar alone.
      const layerTrees: Map<string, Entry>[] = [];
      for (let i = 0; i < img.layers.length; i++) {
        const dir = `${work}/expect-layer${i}`;
        await extractLayer(img.layers[i].tar, dir);
        await toOverlayForm(dir);
        layerTrees.push(await listTree(dir));
      }
      const mergedDir = `${work}/expect-merged`;
      await Deno.mkdir(mergedDir);
      for (let i = 0; i < img.layers.length; i++) {
        await applyLayer(mergedDir, img.layers[i].tar, `${work}/apply-stage`);
      }
      const merged = await listTree(mergedDir);
      // The image has what it is meant to exercise.
      const has = (m: Map<string, Entry>, p: string, pred: (e: Entry) => boolean) =>
        assert.ok(m.has(p) && pred(m.get(p)!), `expected tree: ${p}`);
      has(merged, "special/hello.txt", (e) => e.nlink === 3 && e.xattrs.length === 1);
      has(merged, "special/bigdev", (e) => e.type === "c" && e.rdev === "12c:11170");
      has(merged, "special/setuid", (e) => e.mode === "4755" && e.xattrs.length === 1);
      has(merged, "special/gone.txt", (e) => e.type === "d");
      has(merged, "special/replaced-dir", (e) => e.type === "f");
      has(merged, "special/was-file", (e) => e.type === "d");
      has(layerTrees[1], "usr/share/zoneinfo/Europe", (e) => e.type === "c");
      has(layerTrees[1], "usr/share/perl5", (e) => e.xattrs[0] === "trusted.overlay.opaque=0x79");
      assert.ok(!merged.has("usr/share/zoneinfo/Europe/Paris"));
      assert.ok(!merged.has("special/was-file/inside.txt"));
      assert.ok(merged.has("special/raw-\xff\xfe") && merged.has("special/caf\xe9"));
      assert.ok(merged.size > 1500, `merged tree has ${merged.size} paths`);

      const mnt = `${work}/mnt`;
      const m = await startMount(mnt, ["--local-dir", `${work}/local`]);
      stop = m.stop;
      const L = `${m.mnt}/layers/${reg.host}/test/tree`;
      const I = `${m.mnt}/images/${reg.host}/test/tree`;

      await t.step("the tag is a symlink to the manifest directory", async () => {
        const r = await run("readlink", [`${L}/v1`]);
        assert.equal(r.out.trim(), `sha256-${digest.slice(7)}`);
        for (let i = 0; i < img.layers.length; i++) {
          const l = await run("readlink", [`${L}/v1/${i}`]);
          assert.equal(l.out.trim(), `sha256-${img.layers[i].blobDigest.slice(7)}`);
        }
      });

      await t.step(
        "layers/<registry>/…/N equal tar -x of each layer in overlayfs form",
        async () => {
          for (let i = 0; i < img.layers.length; i++) {
            const got = await within(300_000, `list layer ${i}`, listTree(`${L}/v1/${i}`));
            assertSameTree(got, layerTrees[i], `layer ${i}`);
          }
        },
      );

      await t.step("images/<registry>/…:v1 equals the layers applied with tar -x", async () => {
        assertSameTree(await listTree(`${I}/v1`), merged, "images/ by tag");
        assertSameTree(await listTree(`${I}/sha256-${digest.slice(7)}`), merged, "by digest");
      });

      await t.step("layers/local and images/local equal tar -x of the local stargz", async () => {
        assertSameTree(
          await listTree(`${m.mnt}/layers/local/base.stargz`),
          layerTrees[0],
          "layers/local",
        );
        assertSameTree(
          await listTree(`${m.mnt}/images/local/base.stargz`),
          layerTrees[0],
          "images/local",
        );
      });

      await t.step("one node, one inode number, whichever way it is reached", async () => {
        const ino = async (p: string) => Number((await run("stat", ["-c", "%i", p])).out);
        const paths = [
          `${L}/v1/0/special/hello.txt`,
          `${L}/v1/0/special/hard1`,
          `${L}/v1/0/special/sub/hard2`,
          `${L}/sha256-${digest.slice(7)}/0/special/hello.txt`,
          `${L}/sha256-${digest.slice(7)}/sha256-${
            img.layers[0].blobDigest.slice(7)
          }/special/hard1`,
          `${I}/v1/special/hello.txt`,
          `${I}/sha256-${digest.slice(7)}/special/sub/hard2`,
        ];
        const inos = await Promise.all(paths.map(ino));
        assert.ok(inos[0] > 1);
        assert.deepEqual(inos, paths.map(() => inos[0]), paths.join("\n"));
        // A directory merged from several layers is a node of its own.
        assert.notEqual(await ino(`${I}/v1/special`), await ino(`${L}/v1/2/special`));
        assert.notEqual(await ino(`${L}/v1/1/special`), await ino(`${L}/v1/2/special`));
      });

      await t.step("kernel overlayfs over layers/…/2:1:0 equals images/", async () => {
        const ov = `${work}/ov`;
        try {
          const lowers = [`${L}/v1/2`, `${L}/v1/1`, `${L}/v1/0`];
          const got = await listTree(await mountOverlay(lowers, `${ov}/ro`, false));
          // overlayfs reports merged directories with one link; it answers xattrs itself.
          assertSameTree(
            got,
            merged,
            "overlayfs over crfs layers",
            (_p, f, a, e) => f === "nlink" && a.type === "d" && e.type === "d" && a.nlink === 1,
          );
          assertSameTree(
            got,
            await listTree(`${I}/v1`),
            "overlayfs vs images/",
            (_p, f, a) => f === "nlink" && a.type === "d" && a.nlink === 1,
          );
          // A writable copy: copy-up and whiteouts land in the upper directory.
          const mergedOv = await mountOverlay(lowers, `${ov}/rw`);
          await bash(
            `echo changed > "$1/special/hello.txt"; rm "$1/special/hard1"; ` +
              `cat "$1/special/sub/hard2"`,
            [mergedOv],
          );
          assert.equal(
            (await run("cat", [`${mergedOv}/special/hello.txt`])).out,
            "changed\n",
          );
          assert.equal((await run("cat", [`${I}/v1/special/hello.txt`])).out, "hello\n");
        } finally {
          await unmountAllUnder(ov);
        }
      });

      await t.step("stop: SIGTERM unmounts, exit code 0", async () => {
        const s = await m.stop();
        stop = undefined;
        assert.equal(s.code, 0, m.stderr());
        assert.match(m.stderr(), /crfs: unmounted /);
      });
    } finally {
      await unmountAllUnder(`${work}/ov`).catch(() => {});
      await stop?.();
      await reg?.close();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});

/**
 * Hardlinked names that an upper layer deletes or replaces: kernel overlayfs over the extracted
 * layers (how podman's overlay driver runs such an image) and crfs's images/ agree, link counts
 * included (they come from the layer the file lives in).
 */
Deno.test({
  name: "crfs mount: hardlinks hidden or replaced above agree with overlayfs over tar -x",
  async fn() {
    requireRoot("FUSE mounts");
    const work = await Deno.makeTempDir({ prefix: "crfs-mount-hl-" });
    let stop: (() => Promise<unknown>) | undefined;
    let reg: Registry | undefined;
    try {
      const scripts = [
        `cd "$1"; printf 'one\\n' > a; ln a b; ln a c; printf 'two\\n' > x; ln x y; mkdir d; ln x d/z`,
        `cd "$1"; : > .wh.b; printf 'new x\\n' > x; mkdir d; : > d/.wh.z`,
      ];
      const layers = [];
      for (let i = 0; i < scripts.length; i++) {
        await Deno.mkdir(`${work}/s${i}`);
        await bash(scripts[i], [`${work}/s${i}`]);
        await tarTree(`${work}/s${i}`, `${work}/l${i}.tar`);
        layers.push(await toEStargz(`${work}/l${i}.tar`));
      }
      await Deno.mkdir(`${work}/local`);
      const lowers = [];
      for (let i = layers.length - 1; i >= 0; i--) {
        const dir = `${work}/x${i}`;
        await extractLayer(layers[i].tar, dir);
        await toOverlayForm(dir);
        lowers.push(dir);
      }
      reg = await Registry.create();
      await pushImage(reg.host, "test/hardlinks", "v1", layers);
      await Deno.copyFile(layers[0].blob, `${work}/local/l0.stargz`);
      await Deno.copyFile(layers[1].blob, `${work}/local/l1.stargz`);
      const m = await startMount(`${work}/mnt`, ["--local-dir", `${work}/local`]);
      stop = m.stop;
      try {
        const ovTar = await mountOverlay(lowers, `${work}/ov-tar`, false);
        const ovCrfs = await mountOverlay(
          [
            `${m.mnt}/layers/local/l1.stargz`,
            `${m.mnt}/layers/local/l0.stargz`,
          ],
          `${work}/ov-crfs`,
          false,
        );
        const expected = await listTree(ovTar);
        assertSameTree(await listTree(ovCrfs), expected, "overlayfs over crfs vs over tar -x");
        const dirLinks = (_p: string, f: string, a: Entry, e: Entry) =>
          f === "nlink" && a.type === "d" && (a.nlink === 1 || e.nlink === 1);
        assertSameTree(
          await listTree(`${m.mnt}/images/${reg.host}/test/hardlinks/v1`),
          expected,
          "images/ vs overlayfs over tar -x",
          dirLinks,
        );
        assert.equal(expected.get("a")!.nlink, 3);
        assert.equal(expected.get("y")!.nlink, 3);
        assert.ok(!expected.has("b") && !expected.has("d/z"));
      } finally {
        await unmountAllUnder(`${work}/ov-crfs`);
        await unmountAllUnder(`${work}/ov-tar`);
      }
    } finally {
      await stop?.();
      await reg?.close();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});
