/**
 * `crfs mount` of a mixed image, a zstd:chunked layer under a gzip eStargz layer, from a real
 * docker-registry: `layers/` shows each layer as `tar -x` extracts it (overlayfs form),
 * `images/` the layers applied, a small file is read lazily (registry access log), and
 * `--verify require` takes the zstd:chunked manifest checksum as the TOC digest annotation.
 *
 * @module
 */
import assert from "node:assert/strict";
import { defaultDrivers } from "../../drivers/mod.ts";
import { pushEStargzLayers } from "../../convert/push.ts";
import { writeZstdChunked } from "../../format/zstd_chunked_writer.ts";
import {
  applyLayer,
  assertSameTree,
  bash,
  type Entry,
  extractLayer,
  listTree,
  Registry,
  run,
  startMount,
  tarTree,
  toEStargz,
  toOverlayForm,
  within,
} from "./helpers.ts";
import { requireRoot } from "../helpers/require_root.ts";

/** Writes `<tar>.zst` (zstd:chunked) and returns what the writer said. */
async function toZstdChunked(tar: string) {
  const blob = `${tar}.zst`;
  const out = await Deno.open(blob, { write: true, create: true, truncate: true });
  try {
    using input = await Deno.open(tar);
    const r = await writeZstdChunked(input.readable, async (b) => {
      for (let o = 0; o < b.length;) o += await out.write(b.subarray(o));
    });
    return { blob, r };
  } finally {
    out.close();
  }
}

Deno.test({
  name: "crfs mount: a mixed image (zstd:chunked + eStargz) equals tar -x, read lazily",
  async fn(t) {
    requireRoot("FUSE mounts");
    const work = await Deno.makeTempDir({ prefix: "crfs-mount-zstd-" });
    let reg: Registry | undefined;
    const stops: (() => Promise<unknown>)[] = [];
    try {
      await bash(
        `d=$1; mkdir -p "$d/etc" "$d/usr/lib" "$d/gone-dir/sub" "$d/opaque"; cd "$d"
        printf 'hello zstd\\n' > etc/hello.txt; ln etc/hello.txt etc/hard
        ln -s hello.txt etc/link; setfattr -n user.k -v v etc/hello.txt
        head -c 6000000 /dev/urandom > usr/lib/big.bin
        for i in $(seq 1 200); do printf 'small %d\\n' $i > "usr/lib/s$i"; done
        printf 'x\\n' > gone-dir/sub/x; printf 'old\\n' > opaque/old;
        touch -d '@1500000000.5' etc/hello.txt`,
        [`${work}/t0`],
      );
      await bash(
        `d=$1; mkdir -p "$d/etc" "$d/opaque"; cd "$d"
        : > .wh.gone-dir; : > opaque/.wh..wh..opq; printf 'new\\n' > opaque/new
        printf 'upper\\n' > etc/upper.txt`,
        [`${work}/t1`],
      );
      await tarTree(`${work}/t0`, `${work}/l0.tar`);
      await tarTree(`${work}/t1`, `${work}/l1.tar`);
      const zst = await toZstdChunked(`${work}/l0.tar`);
      const gz = await toEStargz(`${work}/l1.tar`);

      reg = await Registry.create();
      const host = reg.host;
      await pushEStargzLayers(
        defaultDrivers().forHost(host),
        { host, repository: "mixed/img" },
        "v1",
        [
          { blobPath: zst.blob, format: "zstd:chunked", result: zst.r },
          { blobPath: gz.blob, result: gz },
        ],
      );

      // A zstd:chunked layer whose descriptor lacks the manifest checksum.
      const other = await toZstdChunked(`${work}/l1.tar`);
      const bare = {
        ...other.r,
        annotations: Object.fromEntries(
          Object.entries(other.r.annotations).filter(([k]) => !k.endsWith("manifest-checksum")),
        ),
      };
      await pushEStargzLayers(
        defaultDrivers().forHost(host),
        { host, repository: "mixed/bare" },
        "v1",
        [{ blobPath: other.blob, format: "zstd:chunked", result: bare }],
      );

      const layerTrees: Map<string, Entry>[] = [];
      for (const i of [0, 1]) {
        await extractLayer(`${work}/l${i}.tar`, `${work}/x${i}`);
        await toOverlayForm(`${work}/x${i}`);
        layerTrees.push(await listTree(`${work}/x${i}`));
      }
      await Deno.mkdir(`${work}/merged`);
      for (const i of [0, 1]) await applyLayer(`${work}/merged`, `${work}/l${i}.tar`, `${work}/st`);
      const merged = await listTree(`${work}/merged`);
      assert.ok(merged.has("opaque/new") && !merged.has("opaque/old") && !merged.has("gone-dir"));

      const m = await startMount(`${work}/mnt`, ["--verify", "require", "--prefetch", "off"]);
      stops.push(m.stop);
      const I = `${m.mnt}/images/${host}/mixed/img/v1`;
      const L = `${m.mnt}/layers/${host}/mixed/img/v1`;

      await t.step("a small file of the zstd:chunked layer is read lazily", async () => {
        const mark = reg!.mark;
        const r = await run("cat", [`${I}/etc/hello.txt`]);
        assert.equal(r.code, 0, r.err + m.stderr());
        assert.equal(r.out, "hello zstd\n");
        const traffic = reg!.blobTraffic(mark);
        assert.ok(traffic.requests > 0, "the blobs were read from the registry");
        assert.ok(
          traffic.bytes < zst.r.blobSize / 4,
          `fetched ${traffic.bytes} bytes of a ${zst.r.blobSize}-byte zstd:chunked blob`,
        );
      });

      await t.step("layers/ equal tar -x of each layer (overlayfs form)", async () => {
        for (const i of [0, 1]) {
          assertSameTree(
            await within(120_000, `layer ${i}`, listTree(`${L}/${i}`)),
            layerTrees[i],
            `layer ${i}`,
          );
        }
      });

      await t.step("images/ equals the layers applied with tar -x", async () => {
        assertSameTree(await listTree(I), merged, "images/");
      });

      await t.step(
        "--verify require refuses a zstd:chunked layer without its checksum",
        async () => {
          const r = await run("cat", [`${m.mnt}/images/${host}/mixed/bare/v1/etc/upper.txt`]);
          assert.notEqual(r.code, 0, "read without the manifest checksum under --verify require");
          assert.match(m.stderr(), /manifest-checksum annotation \(--verify require\)/);
        },
      );
    } finally {
      for (const s of stops.reverse()) await s();
      await reg?.close();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});
