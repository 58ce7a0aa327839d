/**
 * Building an eStargz image from layer tarballs and pushing it: each tar stream is converted
 * (through a temporary file, so the digest is that of exactly the bytes uploaded), then the
 * config (diff IDs) and an OCI manifest with the eStargz annotations. Used by `crfs demo`, the
 * benchmarks and the tests that need an image built from scratch (`crfs convert` handles
 * existing images).
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { Driver } from "../drivers/driver.ts";
import { MediaType } from "../drivers/manifest.ts";
import type { RepositoryName } from "../drivers/reference.ts";
import { TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION } from "../format/toc.ts";
import { writeEStargz, type WriteResult, type WriterOptions } from "../format/writer.ts";

const enc = new TextEncoder();
const sha256 = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/** What {@link pushEStargzImage} pushed. */
export interface PushedImage {
  /** Digest of the manifest. */
  digest: string;
  /** The layers as written. */
  layers: WriteResult[];
  /** Total size of the layer blobs. */
  size: number;
}

/**
 * Converts each tar stream to an eStargz layer and pushes the image as `repo:tag` (amd64/linux,
 * `config` merged into the image config).
 */
export async function pushEStargzImage(
  driver: Driver,
  repo: RepositoryName,
  tag: string,
  tars: ReadableStream<Uint8Array>[],
  opts: { writer?: WriterOptions; config?: Record<string, unknown> } = {},
): Promise<PushedImage> {
  const tmp = await Deno.makeTempDir({ prefix: "crfs-push-" });
  try {
    const layers: WriteResult[] = [];
    for (const [i, tar] of tars.entries()) {
      const path = `${tmp}/layer${i}`;
      const out = await Deno.open(path, { write: true, create: true, truncate: true });
      let r: WriteResult;
      try {
        r = await writeEStargz(tar, async (b) => {
          for (let o = 0; o < b.length;) o += await out.write(b.subarray(o));
        }, opts.writer);
      } finally {
        out.close();
      }
      const blob = await Deno.open(path);
      await driver.uploadBlob(repo, r.blobDigest, r.blobSize, blob.readable);
      layers.push(r);
    }
    const config = enc.encode(JSON.stringify({
      architecture: "amd64",
      os: "linux",
      ...opts.config,
      rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) },
    }));
    await driver.uploadBlob(repo, sha256(config), config.length, config);
    const manifest = enc.encode(JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OCI_MANIFEST,
      config: { mediaType: MediaType.OCI_CONFIG, digest: sha256(config), size: config.length },
      layers: layers.map((l) => ({
        mediaType: MediaType.OCI_LAYER_GZIP,
        digest: l.blobDigest,
        size: l.blobSize,
        annotations: {
          [TOC_DIGEST_ANNOTATION]: l.tocDigest,
          [UNCOMPRESSED_SIZE_ANNOTATION]: String(l.uncompressedSize),
        },
      })),
    }));
    const digest = await driver.putManifest(repo, tag, MediaType.OCI_MANIFEST, manifest);
    return { digest, layers, size: layers.reduce((a, l) => a + l.blobSize, 0) };
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}
