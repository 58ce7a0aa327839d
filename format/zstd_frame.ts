/**
 * Zstandard frames (RFC 8878) walked without decompressing them: the magic numbers, the errors,
 * every frame's extent from its header and block headers (so truncated frames and frames that
 * lie about their size are caught before a decoder sees them), and skippable frames for
 * metadata. Nothing of Node's here: `zstd.ts` (which loads `node:zlib`'s decoder) re-exports
 * all of it, and code on every layer's path imports this file instead.
 *
 * @module
 */

/** Magic number of a zstd data frame (little-endian on disk: `28 b5 2f fd`). */
export const ZSTD_MAGIC = 0xfd2fb528;
/** First of the 16 skippable-frame magic numbers (`50 2a 4d 18` … `5f 2a 4d 18`). */
export const SKIPPABLE_MAGIC = 0x184d2a50;
/** Bytes before a skippable frame's payload: magic and payload length. */
export const SKIPPABLE_HEADER_SIZE = 8;

/** A malformed or corrupt zstd stream. */
export class ZstdError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ZstdError";
  }
}

/** Decompressed output would exceed the caller's limit. */
export class ZstdLimitError extends ZstdError {
  constructor(limit: number) {
    super(`zstd: frame decompresses to more than ${limit} bytes`);
    this.name = "ZstdLimitError";
  }
}

/** Where one frame lies in a buffer. */
export interface ZstdFrame {
  /** Offset of the frame's magic number. */
  start: number;
  /** Offset just past the frame. */
  end: number;
  /** True for skippable frames (metadata the decoder ignores). */
  skippable: boolean;
  /** Skippable frames: offset of the payload. */
  payloadStart?: number;
  /** Data frames: the content size the header declares, if it declares one. */
  contentSize?: number;
}

/** True when `b` starts with a zstd data frame or a skippable frame. */
export function isZstd(b: Uint8Array): boolean {
  if (b.length < 4) return false;
  const m = (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
  return m === ZSTD_MAGIC || (m & 0xfffffff0) === SKIPPABLE_MAGIC;
}

/**
 * The frame starting at `off` in `buf`, found by reading its header and block headers only.
 * Throws {@link ZstdError} when the bytes there are not one whole frame.
 */
export function zstdFrameAt(buf: Uint8Array, off: number): ZstdFrame {
  if (off < 0 || buf.length - off < 8) throw new ZstdError("zstd: truncated frame header");
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magic = dv.getUint32(off, true);
  if ((magic & 0xfffffff0) === SKIPPABLE_MAGIC) {
    const size = dv.getUint32(off + 4, true);
    const end = off + SKIPPABLE_HEADER_SIZE + size;
    if (end > buf.length) throw new ZstdError("zstd: skippable frame runs past the data");
    return { start: off, end, skippable: true, payloadStart: off + SKIPPABLE_HEADER_SIZE };
  }
  if (magic !== ZSTD_MAGIC) throw new ZstdError("zstd: bad magic (not a zstd frame)");
  const fhd = buf[off + 4];
  if (fhd & 0x08) throw new ZstdError("zstd: reserved bit set in frame header");
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd >> 5) & 1;
  const checksum = (fhd >> 2) & 1;
  const dictFlag = fhd & 3;
  let p = off + 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][dictFlag];
  const fcsBytes = [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag];
  if (p + fcsBytes > buf.length) throw new ZstdError("zstd: truncated frame header");
  let contentSize: number | undefined;
  if (fcsBytes === 1) contentSize = buf[p];
  else if (fcsBytes === 2) contentSize = dv.getUint16(p, true) + 256;
  else if (fcsBytes === 4) contentSize = dv.getUint32(p, true);
  else if (fcsBytes === 8) {
    contentSize = dv.getUint32(p, true) + dv.getUint32(p + 4, true) * 2 ** 32;
  }
  p += fcsBytes;
  for (;;) {
    if (p + 3 > buf.length) throw new ZstdError("zstd: frame truncated (block header)");
    const h = buf[p] | (buf[p + 1] << 8) | (buf[p + 2] << 16);
    p += 3;
    const last = h & 1;
    const type = (h >> 1) & 3;
    const size = h >>> 3;
    if (type === 3) throw new ZstdError("zstd: reserved block type");
    if (size > 128 << 10) throw new ZstdError("zstd: block larger than 128 KiB");
    p += type === 1 ? 1 : size;
    if (p > buf.length) throw new ZstdError("zstd: frame truncated (block data)");
    if (last) break;
  }
  if (checksum) p += 4;
  if (p > buf.length) throw new ZstdError("zstd: frame truncated (checksum)");
  return { start: off, end: p, skippable: false, contentSize };
}

/** Every frame of `buf`, which must hold whole frames only. */
export function zstdFrames(buf: Uint8Array): ZstdFrame[] {
  const out: ZstdFrame[] = [];
  for (let off = 0; off < buf.length;) {
    const f = zstdFrameAt(buf, off);
    out.push(f);
    off = f.end;
  }
  return out;
}

/** `payload` wrapped in a skippable frame (magic `50 2a 4d 18`). */
export function skippableFrame(payload: Uint8Array): Uint8Array {
  if (payload.length > 0xffffffff) throw new RangeError("skippable frame payload too big");
  const out = new Uint8Array(SKIPPABLE_HEADER_SIZE + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, SKIPPABLE_MAGIC, true);
  dv.setUint32(4, payload.length, true);
  out.set(payload, SKIPPABLE_HEADER_SIZE);
  return out;
}
