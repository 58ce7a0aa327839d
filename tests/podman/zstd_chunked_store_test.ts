/**
 * A real zstd:chunked image — the test image written by `skopeo copy --dest-compress-format
 * zstd:chunked` into an OCI layout, then copied unchanged to docker-registry — mounted with
 * `crfs mount` and read lazily (registry access log), and pulled and run by podman 4.3 through
 * `crfs store` with the same tree and output as a normal pull of the original gzip image.
 *
 * @module
 */
import { assert, assertEquals, buildTarImage } from "../cmd/helpers.ts";
import { skopeoCopy, writeOciLayout } from "../helpers/images.ts";
import { blobGets, startRegistry } from "../helpers/registry.ts";
import { encodeRefName } from "../../fs/layer_store.ts";
import { run } from "../format/helpers.ts";
import { Podman, startCrfs, startStore, testImageLayers, TREE_SCRIPT } from "./helpers.ts";

const ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd";
const CHECKSUM = "io.containers.zstd-chunked.manifest-checksum";

interface Layer {
  mediaType: string;
  digest: string;
  size: number;
  annotations: Record<string, string>;
}

Deno.test("a skopeo zstd:chunked image: crfs mount reads it lazily, podman runs it through crfs store as after a normal pull", async () => {
  const reg = await startRegistry();
  const work = await Deno.makeTempDir({ prefix: "crfs-zstd-store-" });
  try {
    const image = await buildTarImage(await testImageLayers(), work);
    await writeOciLayout(`${work}/src`, [...image.layers, image.config, image.manifest], {
      v1: image.manifest,
    });
    // skopeo writes zstd:chunked into a layout first: pushed straight to a registry that holds
    // the gzip blobs, it would reuse those.
    await run("skopeo", [
      "copy",
      "--quiet",
      "--dest-compress-format",
      "zstd:chunked",
      `oci:${work}/src:v1`,
      `oci:${work}/zst:v1`,
    ]);
    const src = `${reg.host}/src/img:v1`;
    const dst = `${reg.host}/zst/img:v1`;
    await skopeoCopy(`oci:${work}/src:v1`, `docker://${src}`);
    await skopeoCopy(`oci:${work}/zst:v1`, `docker://${dst}`);
    const accept = "application/vnd.oci.image.manifest.v1+json";
    const manifest = await (await fetch(`${reg.url}/v2/zst/img/manifests/v1`, {
      headers: { accept },
    })).json();
    const config = await (await fetch(`${reg.url}/v2/zst/img/blobs/${manifest.config.digest}`))
      .json();
    const layers = manifest.layers as Layer[];
    for (const l of layers) {
      assertEquals(l.mediaType, ZSTD);
      assert(/^sha256:/.test(l.annotations[CHECKSUM]), "skopeo annotated the manifest checksum");
    }
    const digests = layers.map((l) => l.digest);
    const big = layers[1];

    // crfs mount: a small file of the data layer costs far less than its blob.
    {
      const mnt = `${work}/mnt`;
      const m = await startCrfs(["mount", mnt, "--prefetch", "off"], [mnt]);
      try {
        reg.clearLog();
        const I = `${mnt}/images/${reg.host}/zst/img/v1`;
        assertEquals(await Deno.readTextFile(`${I}/data/small.txt`), "small\n");
        assertEquals(await Deno.readTextFile(`${I}/etc/hello.txt`), "hello again\n");
        const reqs = blobGets(await reg.accessLog(), [big.digest]);
        assert(reqs.length > 0, "the data layer was read from the registry");
        assertEquals(reqs.filter((e) => e.status !== 206), [], "only range requests");
        const fetched = reqs.reduce((n, e) => n + e.bytes, 0);
        assert(fetched < big.size / 10, `fetched ${fetched} of ${big.size} bytes`);
        // The whole big file reads right (6 MiB + 77 over several zstd frames).
        const bin = await Deno.readFile(`${I}/data/big.bin`);
        assertEquals(bin.length, (6 << 20) + 77);
      } finally {
        await m.stop();
      }
    }

    // crfs store: info says zstd and names the TOC by its manifest checksum.
    const s = await startStore(`${work}/store`);
    try {
      const refDir = `${s.dir}/${encodeRefName(dst)}`;
      const info = JSON.parse(await Deno.readTextFile(`${refDir}/${big.digest}/info`));
      assertEquals(info, {
        "compressed-diff-digest": big.digest,
        "compressed-size": big.size,
        "diff-digest": config.rootfs.diff_ids[1],
        compression: 4,
        "toc-digest": big.annotations[CHECKSUM],
      });
      assertEquals(
        JSON.parse(await Deno.readTextFile(`${refDir}/${big.annotations[CHECKSUM]}/info`)),
        info,
      );

      await using lazy = await Podman.create({ storeFlag: s.dir });
      await using normal = await Podman.create();
      reg.clearLog();
      await lazy.ok(["pull", "--quiet", "--tls-verify=false", dst]);
      const out = await lazy.ok(lazy.runArgs("--entrypoint", "/bin/cat", dst, "/etc/hello.txt"));
      assertEquals(out, "hello again\n");
      const reqs = blobGets(await reg.accessLog(), digests);
      assertEquals(reqs.filter((e) => e.status !== 206), [], "no layer blob was downloaded whole");
      const fetched = reqs.reduce((n, e) => n + e.bytes, 0);
      const total = layers.reduce((n, l) => n + l.size, 0);
      assert(fetched < total / 2, `fetched ${fetched} of ${total} layer bytes`);
      assertEquals(await lazy.ok(lazy.runArgs(dst)), "tool says hi\n");

      const check = (ref: string) => ["--entrypoint", "/bin/sh", ref, "-c", TREE_SCRIPT];
      const withoutMtab = (t: string) =>
        t.split("\n").filter((l) => !l.startsWith("/etc/mtab ")).join("\n");
      const viaCrfs = withoutMtab(await lazy.ok(lazy.runArgs(...check(dst))));
      await normal.ok(["pull", "--quiet", "--tls-verify=false", src]);
      const viaPull = withoutMtab(await normal.ok(normal.runArgs(...check(src))));
      assertEquals(viaCrfs, viaPull);
      assert(viaCrfs.includes("/data/big.bin"), "the tree was listed");
      // podman's layers point into the store: nothing was extracted into its own storage.
      const diffLinks = (await run("find", [
        `${lazy.dir}/root/overlay`,
        "-maxdepth",
        "2",
        "-name",
        "diff",
        "-type",
        "l",
      ])).trim().split("\n").filter(Boolean);
      assertEquals(diffLinks.length, layers.length, "each image layer links into the store");
    } finally {
      await s.stop();
    }
  } finally {
    await reg.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
});
