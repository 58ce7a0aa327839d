/**
 * `crfs convert --format zstd:chunked` and `--min-chunk-size`, image and single-layer forms:
 * the converted layers are checked with skopeo (pull), the `zstd` and GNU tar tools (same tree
 * and bytes as the original layer), the reference Go readers (`estargz/zstdchunked`, `estargz`),
 * and `crfs ls` / `crfs cat` through the tree (registry image) and the local-file path. Plain
 * zstd (tar+zstd) layers convert as sources.
 *
 * @module
 */
import { assert, assertEquals, assertMatch } from "./helpers.ts";
import { startRegistry } from "../helpers/registry.ts";
import { sha256, skopeoCopy, writeOciLayout } from "../helpers/images.ts";
import { verifyWithReference } from "../helpers/reference.ts";
import { verifyZstdChunkedWithReference } from "../helpers/reference_zstd.ts";
import {
  buildTarImage,
  crfs,
  ESTARGZ_EXTRAS,
  extract,
  hex,
  Layout,
  mergedTree,
  pullToOci,
  run,
  snapshot,
  testLayers,
} from "./helpers.ts";
import { FileSource } from "../../format/range_source.ts";
import { StargzReader } from "../../format/reader.ts";
import { assertSameAsTarX } from "../format/helpers.ts";

const ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd";
const GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";
const CHECKSUM = "io.github.containers.zstd-chunked.manifest-checksum";
const POSITION = "io.github.containers.zstd-chunked.manifest-position";

async function convert(...args: string[]): Promise<string> {
  const r = await crfs(["convert", ...args]);
  assertEquals(r.code, 0, `crfs convert ${args.join(" ")} failed:\n${r.stderr}`);
  return r.stdout.split("\n")[0];
}

/** `zstd -dc` of a blob. */
async function unzstd(path: string): Promise<Uint8Array> {
  const out = await new Deno.Command("zstd", { args: ["-dc", path], stdout: "piped" }).output();
  assert(out.success, `zstd -dc ${path}`);
  return out.stdout;
}

Deno.test("convert --format zstd:chunked: registry → registry, pulled by skopeo, equal to tar -x, verified by the Go reader, ls and cat", async () => {
  const reg = await startRegistry();
  const work = await Deno.makeTempDir({ prefix: "crfs-convert-zstd-" });
  try {
    const image = await buildTarImage(testLayers(), work);
    await writeOciLayout(`${work}/src`, [...image.layers, image.config, image.manifest], {
      v1: image.manifest,
    });
    const ref = `${reg.host}/src/img:v1`;
    await skopeoCopy(`oci:${work}/src:v1`, `docker://${ref}`);
    const dst = `${reg.host}/dst/zstd:v1`;
    const out = await convert("--format", "zstd:chunked", ref, dst);
    assertMatch(out, /@sha256:[0-9a-f]{64}$/);

    const layout = await pullToOci(dst, `${work}/pulled`);
    const top = await layout.top("pulled");
    assertEquals(top.digest, out.split("@")[1]);
    const config = await layout.json(top.json.config.digest);
    const diffIds: string[] = [];
    for (let i = 0; i < top.json.layers.length; i++) {
      const l = top.json.layers[i];
      assertEquals(l.mediaType, ZSTD);
      assertMatch(l.annotations[CHECKSUM], /^sha256:[0-9a-f]{64}$/);
      assertMatch(l.annotations[POSITION], /^\d+:\d+:\d+:1$/);
      assertEquals(
        l.annotations["io.containers.zstd-chunked.manifest-checksum"],
        l.annotations[CHECKSUM],
      );
      assertEquals(l.annotations["containerd.io/snapshot/stargz/toc.digest"], undefined);
      const tar = await unzstd(layout.blobPath(l.digest));
      diffIds.push(await sha256(tar));
      const report = await verifyZstdChunkedWithReference(layout.blobPath(l.digest));
      assert(report.entries.length > 0);
      const a = await extract(image.layers[i].tar, work);
      const b = await extract(tar, work);
      assertEquals(await snapshot(b), await snapshot(a));
      // crfs opens it from the annotations and checks the manifest checksum.
      const src = await FileSource.open(layout.blobPath(l.digest));
      try {
        const r = await StargzReader.open(src, { annotations: l.annotations });
        assertEquals(r.format, "zstd:chunked");
        assertEquals(r.openRequests, 1);
      } finally {
        src.close();
      }
    }
    assertEquals(config.rootfs.diff_ids, diffIds);

    const merged = mergedTree(testLayers());
    const ls = await crfs(["ls", "--no-cache", "-R", "--json", "--verify", "require", dst]);
    assertEquals(ls.code, 0, ls.stderr);
    const listed = JSON.parse(ls.stdout) as { path: string; type: string }[];
    const kinds: Record<string, string> = { reg: "reg", dir: "dir", symlink: "symlink" };
    assertEquals(
      listed.map((e) => `${e.path} ${e.type}`).sort(),
      [...merged].map(([p, n]) => `${p} ${kinds[n.type]}`).sort(),
    );
    for (const [path, n] of merged) {
      if (n.type !== "reg") continue;
      const cat = await crfs(["cat", "--no-cache", `${dst}/${path}`]);
      assertEquals(cat.code, 0, `${path}: ${cat.stderr}`);
      assertEquals(hex(cat.stdoutBytes), hex(n.bytes!), path);
    }
  } finally {
    await reg.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
});

Deno.test("convert: a plain tar+zstd image → eStargz with --min-chunk-size (innerOffset), read byte-exact", async () => {
  const work = await Deno.makeTempDir({ prefix: "crfs-convert-zstd-" });
  try {
    const image = await buildTarImage(testLayers(), work);
    // The same image with plain zstd layers (not chunked), as `zstd` writes them.
    const layers = [];
    for (const l of image.layers) {
      await Deno.writeFile(`${work}/l.tar`, l.tar);
      await run("zstd", ["-q", "-f", "-3", `${work}/l.tar`, "-o", `${work}/l.tar.zst`]);
      const bytes = await Deno.readFile(`${work}/l.tar.zst`);
      layers.push({ bytes, digest: await sha256(bytes), mediaType: ZSTD });
    }
    const manifest = JSON.parse(new TextDecoder().decode(image.manifest.bytes));
    manifest.layers = layers.map((l) => ({
      mediaType: l.mediaType,
      digest: l.digest,
      size: l.bytes.length,
    }));
    const mbytes = new TextEncoder().encode(JSON.stringify(manifest));
    const m = { bytes: mbytes, digest: await sha256(mbytes), mediaType: manifest.mediaType };
    await writeOciLayout(`${work}/src`, [...layers, image.config, m], { v1: m });

    await convert("--min-chunk-size", "1M", `oci:${work}/src:v1`, `oci:${work}/packed:v1`);
    await convert(`oci:${work}/src:v1`, `oci:${work}/plain:v1`);
    const packed = new Layout(`${work}/packed`);
    const plain = new Layout(`${work}/plain`);
    const pm = (await packed.top("v1")).json;
    const qm = (await plain.top("v1")).json;
    let shared = 0;
    for (let i = 0; i < pm.layers.length; i++) {
      const l = pm.layers[i];
      assertEquals(l.mediaType, GZIP);
      // Debian's Go estargz (0.12) predates innerOffset: the unpacked conversion is checked.
      const q = qm.layers[i];
      const report = await verifyWithReference(
        plain.blobPath(q.digest),
        q.annotations["containerd.io/snapshot/stargz/toc.digest"],
      );
      assert(report.entries.length > 0);
      const a = await extract(image.layers[i].tar, work);
      const b = await extract(await packed.blob(l.digest), work);
      assertEquals(await snapshot(b, ESTARGZ_EXTRAS), await snapshot(a));
      const src = await FileSource.open(packed.blobPath(l.digest));
      try {
        const r = await StargzReader.open(src, { annotations: l.annotations });
        shared += r.toc.entries.filter((e) => (e.innerOffset ?? 0) > 0).length;
        await Deno.writeFile(`${work}/l.tar`, image.layers[i].tar);
        await assertSameAsTarX(r, `${work}/l.tar`, work, ESTARGZ_EXTRAS);
      } finally {
        src.close();
      }
      assert(l.size <= qm.layers[i].size, `layer ${i}: packed ${l.size} > ${qm.layers[i].size}`);
    }
    assert(shared > 0, "small files share gzip members");
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
});

Deno.test("convert IN OUT --format zstd:chunked: a layer file, then crfs ls and cat of it; flag errors", async () => {
  const work = await Deno.makeTempDir({ prefix: "crfs-convert-zstd-" });
  try {
    const image = await buildTarImage(testLayers(), work);
    await Deno.writeFile(`${work}/layer0.tar.gz`, image.layers[0].bytes);
    const out = await convert(
      "--format",
      "zstd:chunked",
      `${work}/layer0.tar.gz`,
      `${work}/layer0.zst`,
    );
    const annotations = JSON.parse(out);
    assertMatch(annotations[CHECKSUM], /^sha256:[0-9a-f]{64}$/);
    assertEquals(await sha256(await unzstd(`${work}/layer0.zst`)), image.layers[0].diffId);

    const merged = mergedTree([testLayers()[0]]);
    const ls = await crfs(["ls", "-R", "--json", `${work}/layer0.zst`]);
    assertEquals(ls.code, 0, ls.stderr);
    const listed = JSON.parse(ls.stdout) as { path: string }[];
    assertEquals(listed.map((e) => e.path).sort(), [...merged.keys()].sort());
    for (const [path, n] of merged) {
      if (n.type !== "reg") continue;
      const cat = await crfs(["cat", `${work}/layer0.zst:/${path}`]);
      assertEquals(cat.code, 0, `${path}: ${cat.stderr}`);
      assertEquals(hex(cat.stdoutBytes), hex(n.bytes!), path);
    }

    // The zstd:chunked file as an image source (a tar+zstd layer) converts back to eStargz.
    await convert(`${work}/layer0.zst`, `oci:${work}/back:v1`);
    const back = new Layout(`${work}/back`);
    const bm = (await back.top("v1")).json;
    assertEquals(bm.layers.length, 1);
    assertEquals(bm.layers[0].mediaType, GZIP);
    const a = await extract(image.layers[0].tar, work);
    const b = await extract(await back.blob(bm.layers[0].digest), work);
    assertEquals(await snapshot(b, ESTARGZ_EXTRAS), await snapshot(a));

    for (
      const args of [
        ["--format", "zstd"],
        ["--format", "zstd:chunked", "--min-chunk-size", "1M"],
        ["--format", "zstd:chunked", "--prioritize", "/etc/hello.txt"],
        ["--level", "12"],
      ]
    ) {
      const r = await crfs(["convert", ...args, `${work}/layer0.tar.gz`, `${work}/x`]);
      assertEquals(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    }
    const r = await crfs([
      "convert",
      "--format",
      "zstd:chunked",
      "--level",
      "19",
      `${work}/layer0.tar.gz`,
      `${work}/l19.zst`,
    ]);
    assertEquals(r.code, 0, r.stderr);
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
});
