/**
 * The layer store's timing against the TOC, over a stand-in image store whose layer opens when
 * the test says: a layer directory (info, diff/ and blob attributes) answers once the manifest and
 * config are in, before the TOC; what is under diff/ waits for it; a TOC that failed before the
 * answer declines the layer, one failing after makes diff/ EIO and the next lookup declines.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Descriptor, ImageManifest } from "../../drivers/manifest.ts";
import { BytesSource } from "../../format/range_source.ts";
import { StargzReader } from "../../format/reader.ts";
import { TOC_DIGEST_ANNOTATION } from "../../format/toc.ts";
import { writeEStargz } from "../../format/writer.ts";
import type { ImageStore } from "../../fs/image_store.ts";
import type { OpenLayer } from "../../fs/layer_open.ts";
import { encodeRefName, layerStoreRoot } from "../../fs/layer_store.ts";
import { type FsNode, NodeError } from "../../fs/node.ts";
import { tar } from "../helpers/images.ts";

const digest = (c: string) => `sha256:${c.repeat(64)}`;

async function reader(): Promise<StargzReader> {
  const parts: Uint8Array[] = [];
  await writeEStargz(
    (async function* () {
      yield tar({ "etc/": null, "etc/hostname": "box\n" });
    })(),
    (b) => void parts.push(b.slice()),
  );
  const blob = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) at += (blob.set(p, at), p.length);
  return await StargzReader.open(new BytesSource(blob));
}

/** An image store of one image with two eStargz layers; `layer()` settles when told. */
function standIn() {
  const layers: Descriptor[] = ["1", "2"].map((c) => ({
    mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
    digest: digest(c),
    size: 1000,
    annotations: { [TOC_DIGEST_ANNOTATION]: digest(c === "1" ? "a" : "b") },
  }));
  const opens = new Map<string, PromiseWithResolvers<OpenLayer>>();
  const open = (d: string) => {
    if (!opens.has(d)) opens.set(d, Promise.withResolvers<OpenLayer>());
    return opens.get(d)!;
  };
  const store = {
    log: () => {},
    resolveTag: () => Promise.resolve(digest("f")),
    imageManifest: () =>
      Promise.resolve({ digest: digest("f"), json: { layers } } as unknown as ImageManifest),
    config: () => Promise.resolve({ json: { rootfs: { diff_ids: [digest("c"), digest("d")] } } }),
    layer: (_repo: unknown, d: Descriptor) => open(d.digest).promise,
  } as unknown as ImageStore;
  return { store, open };
}

const settled = async (p: Promise<unknown>) => {
  let done = false;
  p.then(() => done = true, () => done = true);
  for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 0));
  return done;
};

Deno.test("layer store: a layer directory answers before its TOC; diff/ waits for it", async () => {
  const { store, open } = standIn();
  const ref = encodeRefName("127.0.0.1:5000/app:v1");
  const refDir = (await layerStoreRoot(store).lookup!(ref))!;
  const dir = (await refDir.lookup!(digest("1")))!;
  assert.ok(dir, "answered with the TOC still opening");
  const info = JSON.parse(
    new TextDecoder().decode(await (await dir.lookup!("info"))!.read!(0, 4096)),
  );
  assert.equal(info["diff-digest"], digest("c"));
  const diff = (await dir.lookup!("diff"))!;
  assert.equal(diff.attr().mode, 0o555);
  assert.equal((await dir.lookup!("blob"))!.attr().size, 1000);
  const etc = diff.lookup!("etc");
  assert.equal(await settled(etc), false, "diff/ waits for the TOC");
  open(digest("1")).resolve({ digest: digest("1"), reader: await reader() });
  const hostname = await ((await etc) as FsNode).lookup!("hostname");
  assert.equal(new TextDecoder().decode(await hostname!.read!(0, 100)), "box\n");
});

Deno.test("layer store: a TOC failed before the answer declines the layer; one failing after is EIO, then declined", async () => {
  const { store, open } = standIn();
  const ref = encodeRefName("127.0.0.1:5000/app:v1");
  const refDir = (await layerStoreRoot(store).lookup!(ref))!;
  open(digest("1")).reject(new Error("not stargz"));
  open(digest("1")).promise.catch(() => {});
  assert.equal(await refDir.lookup!(digest("1")), undefined, "declined: pulled the usual way");

  const dir = (await refDir.lookup!(digest("2")))!;
  assert.ok(dir);
  const diff = (await dir.lookup!("diff"))!;
  const look = diff.lookup!("etc");
  open(digest("2")).reject(new Error("TOC digest mismatch"));
  await assert.rejects(look, (e) => e instanceof NodeError && e.code === "EIO");
  await new Promise((r) => setTimeout(r, 0));
  // The store's layer open fails again (a stand-in keeps its rejected promise): declined now.
  assert.equal(await refDir.lookup!(digest("2")), undefined);
});
