/**
 * zstd:chunked (containers/storage; also stargz-snapshotter's `estargz/zstdchunked`): a
 * `.tar.zst` layer whose files' contents are zstd frames of their own, followed by skippable
 * frames holding the TOC ("manifest", the same JSON as eStargz plus `endOffset`/`chunkType`),
 * then — in newer writers — the zstd-compressed tar-split stream, then a footer.
 *
 * Layout facts (containers/storage pkg/chunked, estargz/zstdchunked 0.12, blobs written by
 * skopeo 1.9 here):
 * - The TOC is a skippable frame whose payload is a zstd frame of the JSON. Annotations
 *   `…zstd-chunked.manifest-position` = `offset:length:uncompressedLength:1` (offset of the
 *   payload, after the 8-byte skippable header; 1 = CRFS TOC) and `…manifest-checksum` =
 *   sha256 of those `length` payload bytes. The prefix is `io.containers.` (skopeo 1.9,
 *   estargz) or `io.github.containers.` (current containers/storage).
 * - Footer, the blob's last skippable frame: 40-byte payload (manifest offset, compressed
 *   length, uncompressed length, type, 8-byte magic `GnUlInUx`), or 64 bytes in current
 *   writers (the same four, then tar-split offset, compressed and uncompressed length, then the
 *   magic, there spelled `GNUlInUx`). All integers little-endian u64.
 *
 * @module
 */
import type { Footer } from "./footer.ts";
import { type LayerFormat, LayerFormatError, type TOCLocation } from "./layer_format.ts";
import { SKIPPABLE_HEADER_SIZE, SKIPPABLE_MAGIC } from "./zstd_frame.ts";

/** `zstd.ts` (`node:zlib`'s decoder), loaded by the first zstd:chunked TOC decoded. */
let zstd: typeof import("./zstd.ts") | undefined;

/** Media type of zstd (and zstd:chunked) OCI layers. */
export const ZSTD_LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+zstd";
/** The annotation prefixes in use: current containers/storage, then the older one. */
export const ZSTD_CHUNKED_PREFIXES = ["io.github.containers.", "io.containers."] as const;
/** Annotation (after a prefix): sha256 of the compressed manifest. */
export const MANIFEST_CHECKSUM_KEY = "zstd-chunked.manifest-checksum";
/** Annotation (after a prefix): `offset:length:uncompressedLength:type` of the manifest. */
export const MANIFEST_POSITION_KEY = "zstd-chunked.manifest-position";
/** Annotation (after a prefix): `offset:length:uncompressedLength` of the tar-split frame. */
export const TARSPLIT_POSITION_KEY = "zstd-chunked.tarsplit-position";
/** The only manifest type: a CRFS-style TOC. */
export const MANIFEST_TYPE_CRFS = 1;
/** Footer payload of estargz/zstdchunked and skopeo 1.9. */
export const FOOTER_V1_SIZE = 40;
/** Footer payload of current containers/storage (adds the tar-split frame). */
export const FOOTER_V2_SIZE = 64;
/** Footer magic of the 40-byte footer: `GnUlInUx`. */
export const MAGIC_V1 = new Uint8Array([0x47, 0x6e, 0x55, 0x6c, 0x49, 0x6e, 0x55, 0x78]);
/** Footer magic of current containers/storage: `GNUlInUx`. */
export const MAGIC_V2 = new Uint8Array([0x47, 0x4e, 0x55, 0x6c, 0x49, 0x6e, 0x55, 0x78]);

/** What a zstd:chunked footer says. */
export interface ZstdChunkedFooter {
  /** Offset of the compressed manifest (the skippable frame's payload). */
  manifestOffset: number;
  manifestLength: number;
  manifestUncompressed: number;
  /** The tar-split frame's payload, when the footer has one. */
  tarSplit?: { offset: number; length: number; uncompressed: number };
  /** Bytes the footer takes, skippable header included (48 or 72). */
  size: number;
}

function u64(dv: DataView, off: number): number | undefined {
  const v = dv.getUint32(off, true) + dv.getUint32(off + 4, true) * 2 ** 32;
  return Number.isSafeInteger(v) ? v : undefined;
}

function same(a: Uint8Array, off: number, b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (a[off + i] !== b[i]) return false;
  return true;
}

/** The footer at the end of `tail`, or undefined when there is none. */
export function parseZstdChunkedFooter(tail: Uint8Array): ZstdChunkedFooter | undefined {
  for (const payload of [FOOTER_V2_SIZE, FOOTER_V1_SIZE]) {
    const size = SKIPPABLE_HEADER_SIZE + payload;
    if (tail.length < size) continue;
    const f = tail.length - size;
    const dv = new DataView(tail.buffer, tail.byteOffset + f, size);
    if (dv.getUint32(0, true) !== SKIPPABLE_MAGIC || dv.getUint32(4, true) !== payload) continue;
    const magicAt = f + size - 8;
    if (!same(tail, magicAt, MAGIC_V1) && !same(tail, magicAt, MAGIC_V2)) continue;
    const p = SKIPPABLE_HEADER_SIZE;
    const manifestOffset = u64(dv, p);
    const manifestLength = u64(dv, p + 8);
    const manifestUncompressed = u64(dv, p + 16);
    if (manifestOffset === undefined || manifestLength === undefined) return undefined;
    if (manifestUncompressed === undefined || u64(dv, p + 24) !== MANIFEST_TYPE_CRFS) {
      return undefined;
    }
    const out: ZstdChunkedFooter = { manifestOffset, manifestLength, manifestUncompressed, size };
    if (payload === FOOTER_V2_SIZE) {
      const offset = u64(dv, p + 32);
      const length = u64(dv, p + 40);
      const uncompressed = u64(dv, p + 48);
      if (offset !== undefined && length !== undefined && uncompressed !== undefined && length) {
        out.tarSplit = { offset, length, uncompressed };
      }
    }
    return out;
  }
  return undefined;
}

/** The footer (skippable header included) for a manifest and, for the 64-byte form, tar-split. */
export function zstdChunkedFooter(f: Omit<ZstdChunkedFooter, "size">, v2: boolean): Uint8Array {
  const payload = v2 ? FOOTER_V2_SIZE : FOOTER_V1_SIZE;
  const out = new Uint8Array(SKIPPABLE_HEADER_SIZE + payload);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, SKIPPABLE_MAGIC, true);
  dv.setUint32(4, payload, true);
  const put = (off: number, v: number) =>
    dv.setBigUint64(SKIPPABLE_HEADER_SIZE + off, BigInt(v), true);
  put(0, f.manifestOffset);
  put(8, f.manifestLength);
  put(16, f.manifestUncompressed);
  put(24, MANIFEST_TYPE_CRFS);
  if (v2) {
    put(32, f.tarSplit?.offset ?? 0);
    put(40, f.tarSplit?.length ?? 0);
    put(48, f.tarSplit?.uncompressed ?? 0);
  }
  out.set(v2 ? MAGIC_V2 : MAGIC_V1, out.length - 8);
  return out;
}

/** The value of annotation `key` under either prefix (the current one first). */
export function zstdChunkedAnnotation(
  annotations: Record<string, string>,
  key: string,
): string | undefined {
  for (const p of ZSTD_CHUNKED_PREFIXES) {
    const v = annotations[p + key];
    if (v !== undefined) return v;
  }
  return undefined;
}

/** Parses `a:b:c[:d]` of decimal integers; undefined when malformed. */
function position(text: string, parts: number): number[] | undefined {
  const fields = text.split(":");
  if (fields.length !== parts) return undefined;
  const out = fields.map((f) => (/^\d{1,16}$/.test(f) ? Number(f) : NaN));
  return out.every((n) => Number.isSafeInteger(n)) ? out : undefined;
}

function location(
  manifestOffset: number,
  length: number,
  uncompressed: number,
  footerSize: number,
  blobSize: number,
  checksum?: string,
): TOCLocation {
  if (manifestOffset < SKIPPABLE_HEADER_SIZE || length === 0) {
    throw new LayerFormatError(`zstd:chunked manifest at ${manifestOffset} (${length} bytes)`);
  }
  if (manifestOffset + length > blobSize - footerSize) {
    throw new LayerFormatError(
      `zstd:chunked manifest at ${manifestOffset} (${length} bytes) lies outside the blob`,
    );
  }
  const footer: Footer = {
    kind: "zstd:chunked",
    tocOffset: manifestOffset - SKIPPABLE_HEADER_SIZE,
    size: footerSize,
  };
  return {
    format: "zstd:chunked",
    footer,
    start: manifestOffset,
    end: manifestOffset + length,
    uncompressedSize: uncompressed,
    compressedDigest: checksum,
  };
}

/** zstd:chunked, located by annotations when the descriptor has them, else by its footer. */
export const ZSTD_CHUNKED: LayerFormat = {
  codec: "zstd",
  fromAnnotations(annotations: Record<string, string>, blobSize: number) {
    const pos = zstdChunkedAnnotation(annotations, MANIFEST_POSITION_KEY);
    if (pos === undefined) return undefined;
    const p = position(pos, 4);
    if (!p) {
      throw new LayerFormatError(`malformed zstd:chunked manifest position ${JSON.stringify(pos)}`);
    }
    if (p[3] !== MANIFEST_TYPE_CRFS) {
      throw new LayerFormatError(`unsupported zstd:chunked manifest type ${p[3]}`);
    }
    const checksum = zstdChunkedAnnotation(annotations, MANIFEST_CHECKSUM_KEY);
    if (checksum !== undefined && !/^sha256:[0-9a-f]{64}$/.test(checksum)) {
      throw new LayerFormatError(`malformed zstd:chunked manifest checksum`);
    }
    // The footer is not read on this path; 0 lets the manifest end anywhere in the blob.
    return location(p[0], p[1], p[2], 0, blobSize, checksum);
  },
  fromTail(tail: Uint8Array, blobSize: number) {
    const f = parseZstdChunkedFooter(tail);
    if (!f) return undefined;
    return location(f.manifestOffset, f.manifestLength, f.manifestUncompressed, f.size, blobSize);
  },
  async decodeTOC(compressed: Uint8Array, loc: TOCLocation, maxBytes: number) {
    zstd ??= await import("./zstd.ts");
    return ZSTD_CHUNKED.decodeTOCAgain(compressed, loc, maxBytes);
  },
  decodeTOCAgain(compressed: Uint8Array, loc: TOCLocation, maxBytes: number): Uint8Array {
    if (!zstd) throw new Error("zstd:chunked TOC decoded again before it was decoded");
    const limit = Math.min(maxBytes, loc.uncompressedSize ?? maxBytes);
    const json = zstd.unzstd(compressed, limit);
    if (loc.uncompressedSize !== undefined && json.length !== loc.uncompressedSize) {
      throw new LayerFormatError(
        `zstd:chunked manifest holds ${json.length} bytes, ${loc.uncompressedSize} announced`,
      );
    }
    return json;
  },
};
