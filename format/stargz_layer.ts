/**
 * The gzip layer formats, google/crfs stargz and eStargz: the TOC is the tar entry
 * `stargz.index.json` in the gzip member the footer points at, content chunks are gzip members.
 * Annotations never locate the TOC (the `toc.digest` annotation only checks it).
 *
 * @module
 */
import { parseFooter } from "./footer.ts";
import { inflateMembers } from "./gzip.ts";
import { type LayerFormat, LayerFormatError, type TOCLocation } from "./layer_format.ts";
import { cleanPath, decodeName } from "./names.ts";
import { decodeHeaderBlock } from "./tar_header.ts";
import { TOC_TAR_NAME } from "./toc.ts";

/** Legacy stargz and eStargz (the footer tells them apart). */
export const GZIP_STARGZ: LayerFormat = {
  codec: "gzip",
  fromAnnotations(): undefined {
    return undefined;
  },
  fromTail(tail: Uint8Array, blobSize: number): TOCLocation | undefined {
    const footer = parseFooter(tail);
    if (!footer) return undefined;
    return {
      format: footer.kind === "legacy" ? "stargz" : "estargz",
      footer,
      start: footer.tocOffset,
      end: blobSize - footer.size,
    };
  },
  decodeTOC(compressed: Uint8Array, _loc: TOCLocation, maxBytes: number): Uint8Array {
    let tocTar: Uint8Array;
    try {
      tocTar = inflateMembers(compressed, maxBytes + 4096);
    } catch (e) {
      throw new LayerFormatError(`cannot decompress the TOC: ${(e as Error).message}`);
    }
    if (tocTar.length < 512) throw new LayerFormatError("TOC member holds no tar header");
    let header;
    try {
      header = decodeHeaderBlock(tocTar.subarray(0, 512));
    } catch (e) {
      throw new LayerFormatError(`TOC tar header: ${(e as Error).message}`);
    }
    const tocName = cleanPath(decodeName(header.name));
    if (tocName !== TOC_TAR_NAME) {
      throw new LayerFormatError(
        `TOC member holds ${JSON.stringify(tocName)}, not ${TOC_TAR_NAME}`,
      );
    }
    if (header.size > tocTar.length - 512) throw new LayerFormatError("TOC truncated");
    return tocTar.subarray(512, 512 + header.size);
  },
};
