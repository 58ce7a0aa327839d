/**
 * The gzip layer formats, google/crfs stargz and eStargz: the TOC is the tar entry
 * `stargz.index.json` in the gzip member the footer points at, content chunks are gzip members.
 * Annotations never locate the TOC (the `toc.digest` annotation only checks it).
 *
 * @module
 */
import { parseFooter } from "./footer.ts";
import { inflateMemberFast } from "./gzip_member.ts";
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
  async decodeTOC(compressed: Uint8Array, _loc: TOCLocation, maxBytes: number) {
    const fast = inflateTOCFast(compressed, maxBytes + 4096);
    if (fast) return tocFromTar(fast);
    gzip ??= await import("./gzip.ts");
    return tocFromTar(inflateTOC(compressed, maxBytes + 4096));
  },
  decodeTOCAgain(compressed: Uint8Array, _loc: TOCLocation, maxBytes: number): Uint8Array {
    return tocFromTar(
      inflateTOCFast(compressed, maxBytes + 4096) ?? inflateTOC(compressed, maxBytes + 4096),
    );
  },
};

/** `gzip.ts` (`node:zlib`), loaded by the first TOC that libdeflate could not inflate. */
let gzip: typeof import("./gzip.ts") | undefined;

/**
 * The TOC member through libdeflate into one buffer of the size its trailer gives, when the
 * bytes are one member of at most `maxOutput` bytes that inflates cleanly; else undefined.
 */
function inflateTOCFast(compressed: Uint8Array, maxOutput: number): Uint8Array | undefined {
  if (compressed.length < 18) return undefined;
  const size = new DataView(compressed.buffer, compressed.byteOffset + compressed.length - 4, 4)
    .getUint32(0, true);
  if (size > maxOutput) return undefined;
  const r = inflateMemberFast(compressed, 0, size);
  return r && r.end === compressed.length ? r.data : undefined;
}

/** The TOC members through `node:zlib` (loaded by then), which says what is wrong with them. */
function inflateTOC(compressed: Uint8Array, maxOutput: number): Uint8Array {
  if (!gzip) throw new Error("stargz TOC decoded again before it was decoded");
  try {
    return gzip.inflateMembers(compressed, maxOutput);
  } catch (e) {
    throw new LayerFormatError(`cannot decompress the TOC: ${(e as Error).message}`);
  }
}

/** The TOC JSON from the decompressed TOC member: a tar entry named `stargz.index.json`. */
function tocFromTar(tocTar: Uint8Array): Uint8Array {
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
}
