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
import { type Driver, pusher } from "../drivers/driver.ts";
import { MediaType } from "../drivers/manifest.ts";
import type { RepositoryName } from "../drivers/reference.ts";
import {
  type ConvertFormat,
  estargzLayerDescriptor,
  zstdChunkedLayerDescriptor,
} from "./layer_descriptor.ts";
import { writeEStargz, type WriteResult, type WriterOptions } from "../format/writer.ts";
import { writeZstdChunked, type ZstdChunkedWriteResult } from "../format/zstd_chunked_writer.ts";

const enc = new TextEncoder();
const sha256 = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/** What {@link pushEStargzImage} pushed. */
export interface PushedImage {
  /** Digest of the manifest. */
  digest: string;
  /** What the writer said of each layer (eStargz or zstd:chunked). */
  layers: (WriteResult | ZstdChunkedWriteResult)[];
  /** Total size of the layer blobs. */
  size: number;
}

/**
 * A converted layer to push: its blob (a file, opened when uploaded) and what the writer said.
 * `format` is `estargz` unless given; a zstd:chunked layer's `result` carries the writer's
 * `annotations`.
 */
export interface ConvertedLayer {
  blobPath: string;
  format?: ConvertFormat;
  result:
    & Pick<
      WriteResult,
      "blobDigest" | "blobSize" | "diffId" | "tocDigest" | "uncompressedSize"
    >
    & { annotations?: Record<string, string> };
}

/**
 * Pushes converted eStargz (or zstd:chunked) layers, then the image config (amd64/linux, `config` merged in, diff
 * IDs) and an OCI manifest carrying the TOC digest and uncompressed size annotations, as
 * `repo:tag`. Returns the manifest digest.
 */
export async function pushEStargzLayers(
  driver: Driver,
  repo: RepositoryName,
  tag: string,
  layers: ConvertedLayer[],
  config: Record<string, unknown> = {},
): Promise<string> {
  const push = pusher(driver, "push images");
  for (const { blobPath, result: r } of layers) {
    const blob = await Deno.open(blobPath);
    await push.uploadBlob(repo, r.blobDigest, r.blobSize, blob.readable);
  }
  const rs = layers.map((l) => l.result);
  const configBytes = enc.encode(JSON.stringify({
    architecture: "amd64",
    os: "linux",
    ...config,
    rootfs: { type: "layers", diff_ids: rs.map((l) => l.diffId) },
  }));
  await push.uploadBlob(repo, sha256(configBytes), configBytes.length, configBytes);
  const manifest = enc.encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.OCI_MANIFEST,
    config: {
      mediaType: MediaType.OCI_CONFIG,
      digest: sha256(configBytes),
      size: configBytes.length,
    },
    layers: layers.map(({ format, result: l }) =>
      format === "zstd:chunked"
        ? zstdChunkedLayerDescriptor({
          digest: l.blobDigest,
          size: l.blobSize,
          annotations: l.annotations ?? {},
        })
        : estargzLayerDescriptor({
          digest: l.blobDigest,
          size: l.blobSize,
          tocDigest: l.tocDigest,
          uncompressedSize: l.uncompressedSize,
        })
    ),
  }));
  return await push.putManifest(repo, tag, MediaType.OCI_MANIFEST, manifest);
}

/**
 * Converts each tar stream to an eStargz (or zstd:chunked) layer (through a temporary file) and
 * pushes the image with {@link pushEStargzLayers}.
 */
export async function pushEStargzImage(
  driver: Driver,
  repo: RepositoryName,
  tag: string,
  tars: ReadableStream<Uint8Array>[],
  opts: {
    writer?: WriterOptions;
    config?: Record<string, unknown>;
    /** Write zstd:chunked layers instead (the writer options' chunk size, level, workers). */
    format?: ConvertFormat;
  } = {},
): Promise<PushedImage> {
  const tmp = await Deno.makeTempDir({ prefix: "crfs-push-" });
  try {
    const layers: ConvertedLayer[] = [];
    for (const [i, tar] of tars.entries()) {
      const blobPath = `${tmp}/layer${i}`;
      const out = await Deno.open(blobPath, { write: true, create: true, truncate: true });
      try {
        const sink = async (b: Uint8Array) => {
          for (let o = 0; o < b.length;) o += await out.write(b.subarray(o));
        };
        if (opts.format === "zstd:chunked") {
          const w = opts.writer ?? {};
          const result = await writeZstdChunked(tar, sink, {
            chunkSize: w.chunkSize,
            level: w.level,
            workers: w.workers,
            pool: w.pool,
          });
          layers.push({ blobPath, format: "zstd:chunked", result });
        } else layers.push({ blobPath, result: await writeEStargz(tar, sink, opts.writer) });
      } finally {
        out.close();
      }
    }
    const digest = await pushEStargzLayers(driver, repo, tag, layers, opts.config);
    const results = layers.map((l) => l.result as PushedImage["layers"][number]);
    return { digest, layers: results, size: results.reduce((a, l) => a + l.blobSize, 0) };
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}
