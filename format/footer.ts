/**
 * Stargz footers: the empty gzip member at the end of a blob that records where the TOC member
 * starts. Two forms exist: the 47-byte legacy footer of google/crfs and the 51-byte eStargz
 * footer of containerd/stargz-snapshotter (the same payload inside a proper RFC 1952 extra
 * subfield `SG`).
 *
 * @module
 */

/** Size of the legacy google/crfs footer. */
export const LEGACY_FOOTER_SIZE = 47;
/** Size of the eStargz footer. */
export const ESTARGZ_FOOTER_SIZE = 51;

/** What a footer says. */
export interface Footer {
  /** Offset of the gzip member holding the TOC. */
  tocOffset: number;
  /** Which footer form was found (`zstd:chunked`: see zstd_chunked.ts). */
  kind: "estargz" | "legacy" | "zstd:chunked";
  /** The footer's size in bytes. */
  size: number;
}

const MAGIC = "STARGZ";

function payload(tocOffset: number): Uint8Array {
  if (!Number.isSafeInteger(tocOffset) || tocOffset < 0) throw new RangeError("bad TOC offset");
  const hex = tocOffset.toString(16).padStart(16, "0");
  return new TextEncoder().encode(hex + MAGIC);
}

function build(tocOffset: number, estargz: boolean): Uint8Array {
  const size = estargz ? ESTARGZ_FOOTER_SIZE : LEGACY_FOOTER_SIZE;
  const out = new Uint8Array(size);
  out.set([0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff]);
  let p = 10;
  const xlen = estargz ? 26 : 22;
  out[p++] = xlen;
  out[p++] = 0;
  if (estargz) {
    out.set([0x53, 0x47, 22, 0], p); // 'S' 'G', LEN = 22
    p += 4;
  }
  out.set(payload(tocOffset), p);
  p += 22;
  out.set([1, 0, 0, 0xff, 0xff], p); // final empty stored block; CRC32 and ISIZE stay 0
  return out;
}

/** The 51-byte eStargz footer pointing at `tocOffset`. */
export function estargzFooter(tocOffset: number): Uint8Array {
  return build(tocOffset, true);
}

/** The 47-byte legacy (google/crfs) footer pointing at `tocOffset`. */
export function legacyFooter(tocOffset: number): Uint8Array {
  return build(tocOffset, false);
}

function parsePayload(b: Uint8Array): number | undefined {
  const text = new TextDecoder().decode(b);
  if (!text.endsWith(MAGIC)) return undefined;
  const hex = text.slice(0, 16);
  if (!/^[0-9a-fA-F]{16}$/.test(hex)) return undefined;
  const v = Number.parseInt(hex, 16);
  return Number.isSafeInteger(v) ? v : undefined;
}

function sameBytes(a: Uint8Array, off: number, b: number[]): boolean {
  for (let i = 0; i < b.length; i++) if (a[off + i] !== b[i]) return false;
  return true;
}

/**
 * Finds the footer at the end of `tail` (the last bytes of a blob). Tries the eStargz form first,
 * then the legacy one. Returns undefined when neither is there.
 */
export function parseFooter(tail: Uint8Array): Footer | undefined {
  const n = tail.length;
  const trailer = [1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];
  if (n >= ESTARGZ_FOOTER_SIZE) {
    const f = n - ESTARGZ_FOOTER_SIZE;
    if (
      sameBytes(tail, f, [0x1f, 0x8b, 8]) && (tail[f + 3] & 4) &&
      tail[f + 10] === 26 && tail[f + 11] === 0 &&
      sameBytes(tail, f + 12, [0x53, 0x47, 22, 0]) && sameBytes(tail, f + 38, trailer)
    ) {
      const off = parsePayload(tail.subarray(f + 16, f + 38));
      if (off !== undefined) return { tocOffset: off, kind: "estargz", size: ESTARGZ_FOOTER_SIZE };
    }
  }
  if (n >= LEGACY_FOOTER_SIZE) {
    const f = n - LEGACY_FOOTER_SIZE;
    if (
      sameBytes(tail, f, [0x1f, 0x8b, 8]) && (tail[f + 3] & 4) &&
      tail[f + 10] === 22 && tail[f + 11] === 0 && sameBytes(tail, f + 34, trailer)
    ) {
      const off = parsePayload(tail.subarray(f + 12, f + 34));
      if (off !== undefined) return { tocOffset: off, kind: "legacy", size: LEGACY_FOOTER_SIZE };
    }
  }
  return undefined;
}
