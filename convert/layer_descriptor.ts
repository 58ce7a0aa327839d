/**
 * The one place the manifest descriptor of an eStargz layer is built: OCI gzip layer media
 * type, the blob's digest and size, and the annotations `containerd.io/snapshot/stargz/toc.digest`
 * (TOC digest) and `io.containers.estargz.uncompressed-size` (decimal) that stargz snapshotters
 * and crfs use to find the TOC without reading the blob.
 *
 * @module
 */
import { type Descriptor, MediaType } from "../drivers/manifest.ts";
import { TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION } from "../format/toc.ts";

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
 * first and the two eStargz annotations always win.
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
  const annotations = { ...(extra ?? {}) };
  annotations[TOC_DIGEST_ANNOTATION] = layer.tocDigest;
  annotations[UNCOMPRESSED_SIZE_ANNOTATION] = String(layer.uncompressedSize);
  return {
    mediaType: MediaType.OCI_LAYER_GZIP,
    digest: layer.digest,
    size: layer.size,
    annotations,
  };
}
