/**
 * Exact byte names as JavaScript strings.
 *
 * Tar names and link targets are byte strings that need not be valid UTF-8. crfs carries them as
 * JS strings using the "surrogateescape" mapping (PEP 383): valid UTF-8 decodes as usual and every
 * byte of an invalid sequence becomes the lone surrogate U+DC80 + (byte − 0x80). Valid UTF-8 can
 * never produce a lone surrogate, so the mapping is a bijection between byte strings and the
 * strings it produces: two different byte names never become one string, and
 * {@link encodeName} gives back the exact bytes. In TOC JSON such a name appears as a `\udcXX`
 * escape: other readers see U+FFFD there (as they always did), crfs sees the original bytes.
 *
 * @module
 */

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();

/** Decodes bytes to a name string, escaping bytes that are not valid UTF-8. */
export function decodeName(bytes: Uint8Array): string {
  if (bytes.length < 256) {
    let ascii = true;
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i] >= 0x80) {
        ascii = false;
        break;
      }
    }
    // apply, not spread: spreading a typed array walks its iterator (4× slower on FUSE names).
    if (ascii) return String.fromCharCode.apply(null, bytes as unknown as number[]);
  }
  try {
    return utf8.decode(bytes);
  } catch {
    return decodeSlow(bytes);
  }
}

function decodeSlow(b: Uint8Array): string {
  let out = "";
  let i = 0;
  while (i < b.length) {
    const c = b[i];
    let n = 0;
    let cp = 0;
    if (c < 0x80) {
      out += String.fromCharCode(c);
      i++;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      cp = c & 0x07;
    }
    let ok = n > 0 && i + n < b.length;
    for (let k = 1; ok && k <= n; k++) {
      const cc = b[i + k];
      if ((cc & 0xc0) !== 0x80) ok = false;
      else cp = (cp << 6) | (cc & 0x3f);
    }
    // Reject overlong forms, surrogates and code points past U+10FFFF.
    if (
      ok &&
      ((n === 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (n === 3 && (cp < 0x10000 || cp > 0x10ffff)))
    ) ok = false;
    if (!ok) {
      out += String.fromCharCode(0xdc00 + c);
      i++;
      continue;
    }
    out += String.fromCodePoint(cp);
    i += n + 1;
  }
  return out;
}

/** Encodes a name string back to its exact bytes (the inverse of {@link decodeName}). */
export function encodeName(name: string): Uint8Array {
  if (!hasEscapes(name)) return encoder.encode(name);
  const parts: number[] = [];
  for (let i = 0; i < name.length; i++) {
    const u = name.charCodeAt(i);
    if (u >= 0xdc80 && u <= 0xdcff && !isLowOfPair(name, i)) {
      parts.push(u - 0xdc00);
    } else if (u >= 0xd800 && u <= 0xdbff && i + 1 < name.length) {
      const lo = name.charCodeAt(i + 1);
      if (lo >= 0xdc00 && lo <= 0xdfff) {
        parts.push(...encoder.encode(name.slice(i, i + 2)));
        i++;
      } else {
        parts.push(...encoder.encode(name[i]));
      }
    } else {
      parts.push(...encoder.encode(name[i]));
    }
  }
  return new Uint8Array(parts);
}

function isLowOfPair(s: string, i: number): boolean {
  if (i === 0) return false;
  const hi = s.charCodeAt(i - 1);
  return hi >= 0xd800 && hi <= 0xdbff;
}

/** True when the name holds escaped (non-UTF-8) bytes. */
export function hasEscapes(name: string): boolean {
  for (let i = 0; i < name.length; i++) {
    const u = name.charCodeAt(i);
    if (u >= 0xdc80 && u <= 0xdcff && !isLowOfPair(name, i)) return true;
  }
  return false;
}

/** The problem with a path, or null when it is acceptable (see {@link cleanPath}). */
export type PathProblem = "empty" | "dotdot" | "nul";

/**
 * Normalizes a tar or TOC path to crfs's canonical form: no leading `./` or `/`, no `.` or empty
 * components, no trailing `/`. The root directory is `""`. Returns an error string instead when
 * the name contains a `..` component or a NUL, which crfs never accepts.
 */
export function cleanPath(name: string): string | { problem: PathProblem } {
  if (name.includes("\0")) return { problem: "nul" };
  // Fast path: clean already, or clean but for the "./" and trailing "/" that tar writes (the
  // common cases: this runs for every entry of every TOC).
  let s = name;
  if (s.startsWith("./")) s = s.slice(2);
  if (s.endsWith("/")) s = s.slice(0, -1);
  if (
    s.length > 0 && s[0] !== "/" && s[s.length - 1] !== "/" && !s.startsWith("./") && s !== "." &&
    !s.includes("//") && !s.includes("/./") && !s.endsWith("/.") && !s.includes("..")
  ) return s;
  const out: string[] = [];
  for (const part of name.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") return { problem: "dotdot" };
    out.push(part);
  }
  return out.join("/");
}

/** The parent directory of a clean path (`""` for top-level names and for the root). */
export function parentOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? "" : path.slice(0, i);
}

/** The last component of a clean path. */
export function baseOf(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}
