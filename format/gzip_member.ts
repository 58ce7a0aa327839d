/**
 * One gzip member (RFC 1952) without Node's compatibility layer: its header, the errors, and
 * whole-member decompression through libdeflate (`libdeflate.ts`) into a buffer of a known size,
 * CRC-32 and length checked. What that cannot do (no libdeflate, a member bigger than the
 * buffer, bad data, whose error message comes from `node:zlib`) is left to `gzip.ts`, which
 * callers import only then.
 *
 * @module
 */
import { crc32 } from "./crc32.ts";
import { inflateRawInto } from "./libdeflate.ts";

/** A malformed or corrupt gzip stream. */
export class GzipError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GzipError";
  }
}

/** Decompressed output exceeded the caller's limit. */
export class GzipLimitError extends GzipError {
  constructor(limit: number) {
    super(`gzip: member decompresses to more than ${limit} bytes`);
    this.name = "GzipLimitError";
  }
}

/** Length of the gzip header at `off`, or throws when it is not one. */
export function gzipHeaderLength(buf: Uint8Array, off = 0): number {
  if (buf.length - off < 10) throw new GzipError("gzip: truncated header");
  if (buf[off] !== 0x1f || buf[off + 1] !== 0x8b || buf[off + 2] !== 8) {
    throw new GzipError("gzip: bad magic (not a gzip member)");
  }
  const flg = buf[off + 3];
  let p = off + 10;
  if (flg & 4) {
    if (p + 2 > buf.length) throw new GzipError("gzip: truncated header");
    p += 2 + (buf[p] | (buf[p + 1] << 8));
  }
  for (const bit of [8, 16]) {
    if (flg & bit) {
      const z = buf.indexOf(0, p);
      if (z < 0) throw new GzipError("gzip: truncated header");
      p = z + 1;
    }
  }
  if (flg & 2) p += 2;
  if (p > buf.length) throw new GzipError("gzip: truncated header");
  return p - off;
}

/** True when the bytes start like a gzip stream. */
export function isGzip(head: Uint8Array): boolean {
  return head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b;
}

/**
 * The gzip member at `off` decompressed through libdeflate into a new buffer of `capacity`
 * bytes, its CRC-32 and length checked: the data (a view from the buffer's start) and the offset
 * just past the member. Undefined whenever that does not work — no libdeflate, a bad header,
 * more than `capacity` bytes, bad deflate data, a truncated or mismatching trailer — for the
 * caller to inflate with `gzip.ts`, which then says what is wrong.
 */
export function inflateMemberFast(
  buf: Uint8Array,
  off: number,
  capacity: number,
): { data: Uint8Array; end: number } | undefined {
  let start: number;
  try {
    start = off + gzipHeaderLength(buf, off);
  } catch {
    return undefined;
  }
  const out = new Uint8Array(capacity);
  const r = inflateRawInto(buf.subarray(start), out);
  if (!r) return undefined;
  const trailer = start + r.read;
  if (trailer + 8 > buf.length) return undefined;
  const data = out.subarray(0, r.written);
  const dv = new DataView(buf.buffer, buf.byteOffset + trailer, 8);
  if (dv.getUint32(0, true) !== crc32(data) || dv.getUint32(4, true) !== (data.length >>> 0)) {
    return undefined;
  }
  return { data, end: trailer + 8 };
}
