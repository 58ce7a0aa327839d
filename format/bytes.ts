/**
 * Byte-array helpers shared by every layer of crfs: {@link concat} is the one place byte arrays
 * are joined, {@link base64} the one place they are written as base64 text.
 *
 * @module
 */

/**
 * Concatenates byte arrays into a fresh one (the only part itself when there is just one and
 * `copy` is false).
 *
 * @example
 * ```ts
 * concat([new Uint8Array([1]), new Uint8Array([2, 3])]); // Uint8Array [1, 2, 3]
 * ```
 */
export function concat(parts: readonly Uint8Array[], copy = true): Uint8Array {
  if (parts.length === 1 && !copy) return parts[0];
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * Standard base64 (with padding) of `bytes`, in pieces so that large arrays do not overflow the
 * argument list of `String.fromCharCode`.
 *
 * @example
 * ```ts
 * base64(new Uint8Array([1, 2, 3])); // "AQID"
 * ```
 */
export function base64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}
