/**
 * Which lazily readable format a layer descriptor announces, from its annotations alone (no
 * request): eStargz carries `containerd.io/snapshot/stargz/toc.digest`, zstd:chunked its
 * `…zstd-chunked.manifest-position` (either prefix). A layer with neither may still be stargz
 * (the footer tells); callers that must not make a request decline it.
 *
 * @module
 */
import type { LayerFormatName } from "./layer_format.ts";
import { TOC_DIGEST_ANNOTATION } from "./toc.ts";
import {
  MANIFEST_CHECKSUM_KEY,
  MANIFEST_POSITION_KEY,
  zstdChunkedAnnotation,
} from "./zstd_chunked.ts";

/** What a descriptor's annotations say about its lazy format and the digest naming its TOC. */
export interface AnnouncedLayer {
  format: Extract<LayerFormatName, "estargz" | "zstd:chunked">;
  /**
   * The annotation digest that names the layer's TOC: the TOC digest (eStargz) or the
   * manifest checksum (zstd:chunked; absent when the descriptor has none).
   */
  tocKey?: string;
}

/**
 * The lazy format `annotations` announce, or undefined.
 *
 * @example
 * ```ts
 * const kind = announcedLayer(desc.annotations);
 * if (kind) reader = await StargzReader.open(source, { annotations: desc.annotations });
 * ```
 */
export function announcedLayer(
  annotations: Record<string, string> | undefined,
): AnnouncedLayer | undefined {
  if (!annotations) return undefined;
  if (zstdChunkedAnnotation(annotations, MANIFEST_POSITION_KEY) !== undefined) {
    return {
      format: "zstd:chunked",
      tocKey: zstdChunkedAnnotation(annotations, MANIFEST_CHECKSUM_KEY),
    };
  }
  const toc = annotations[TOC_DIGEST_ANNOTATION];
  return toc !== undefined ? { format: "estargz", tocKey: toc } : undefined;
}
