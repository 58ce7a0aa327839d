/**
 * Byte-array helpers shared by every layer of crfs: {@link concat} is the one place byte arrays
 * are joined.
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
