/**
 * The one place the manifest descriptor of a converted layer is built. eStargz: OCI gzip layer
 * media type, the blob's digest and size, and the annotations
 * `containerd.io/snapshot/stargz/toc.digest` (TOC digest) and
 * `io.containers.estargz.uncompressed-size` (decimal) that stargz snapshotters and crfs use to
 * find the TOC without reading the blob. zstd:chunked: OCI zstd layer media type and the
 * manifest checksum and position annotations the writer returns (both prefixes).
 *
 * @module
 */
import { type Descriptor, MediaType } from "../drivers/manifest.ts";
import { TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION } from "../format/toc.ts";
import { ZSTD_CHUNKED_PREFIXES, ZSTD_LAYER_MEDIA_TYPE } from "../format/zstd_chunked.ts";

/** The lazy formats `crfs convert` writes. */
export type ConvertFormat = "estargz" | "zstd:chunked";

/** What a descriptor needs of a written eStargz layer. */
export interface EStargzLayerFacts {
  /** `sha256:…` of the blob. */
  digest: string;
  /** Blob size in bytes. */
  size: number;
  /** `sha256:…` of the TOC JSON. */
  tocDigest: string;
  /** Size of the uncompressed tar. */
  uncompressedSize: number;
}

/**
 * The descriptor of an eStargz layer; `extra` annotations (kept from the source layer) come
 * first and the two eStargz annotations always win (stale zstd:chunked ones are dropped).
 *
 * @example
 * ```ts
 * const r = await writeEStargz(tar, write);
 * const desc = estargzLayerDescriptor({
 *   digest: r.blobDigest, size: r.blobSize, tocDigest: r.tocDigest, uncompressedSize: r.uncompressedSize,
 * });
 * ```
 */
export function estargzLayerDescriptor(
  layer: EStargzLayerFacts,
  extra?: Record<string, string>,
): Descriptor {
  const annotations = withoutZstdChunked(extra);
  annotations[TOC_DIGEST_ANNOTATION] = layer.tocDigest;
  annotations[UNCOMPRESSED_SIZE_ANNOTATION] = String(layer.uncompressedSize);
  return {
    mediaType: MediaType.OCI_LAYER_GZIP,
    digest: layer.digest,
    size: layer.size,
    annotations,
  };
}

/** What a descriptor needs of a written zstd:chunked layer. */
export interface ZstdChunkedLayerFacts {
  /** `sha256:…` of the blob. */
  digest: string;
  /** Blob size in bytes. */
  size: number;
  /** The annotations the writer returned (`writeZstdChunked`'s `annotations`). */
  annotations: Record<string, string>;
}

/**
 * The descriptor of a zstd:chunked layer; `extra` annotations (kept from the source layer) come
 * first and the writer's always win. Stale eStargz annotations of the source are dropped.
 *
 * @example
 * ```ts
 * const r = await writeZstdChunked(tar, write);
 * const desc = zstdChunkedLayerDescriptor({
 *   digest: r.blobDigest, size: r.blobSize, annotations: r.annotations,
 * });
 * ```
 */
export function zstdChunkedLayerDescriptor(
  layer: ZstdChunkedLayerFacts,
  extra?: Record<string, string>,
): Descriptor {
  const annotations = withoutZstdChunked(extra);
  delete annotations[TOC_DIGEST_ANNOTATION];
  delete annotations[UNCOMPRESSED_SIZE_ANNOTATION];
  Object.assign(annotations, layer.annotations);
  return {
    mediaType: ZSTD_LAYER_MEDIA_TYPE,
    digest: layer.digest,
    size: layer.size,
    annotations,
  };
}

/** `extra` without the `…zstd-chunked.*` annotations of a source layer (they name its bytes). */
function withoutZstdChunked(extra?: Record<string, string>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(extra ?? {}).filter(([k]) =>
      !ZSTD_CHUNKED_PREFIXES.some((p) => k.startsWith(`${p}zstd-chunked.`))
    ),
  );
}
