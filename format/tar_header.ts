/**
 * Tar header blocks: the 512-byte ustar/GNU header, its numeric fields (octal and base-256),
 * checksums, and PAX extended-header records. Encoding and decoding of single blocks; streaming
 * lives in `tar_reader.ts` and `tar_writer.ts`.
 *
 * @module
 */
import type { FileType } from "./file_attr.ts";
import { decodeName, encodeName } from "./names.ts";
import { concat } from "./bytes.ts";

/** Concatenates byte arrays (see format/bytes.ts). */
export { concat };

/** Size of one tar block. */
export const BLOCK = 512;

/** Tar type flags crfs understands. */
export const TarType = {
  Reg: "0",
  RegOld: "\0",
  Link: "1",
  Symlink: "2",
  Char: "3",
  Block: "4",
  Dir: "5",
  Fifo: "6",
  Contiguous: "7",
  PaxHeader: "x",
  PaxGlobal: "g",
  GnuLongName: "L",
  GnuLongLink: "K",
  GnuSparse: "S",
  GnuVolume: "V",
  GnuDumpDir: "D",
} as const;

/** The kind of a tar entry after extension headers are applied: a file type or a hardlink. */
export type EntryKind = Exclude<FileType, "socket"> | "hardlink";

/** A fully resolved tar entry header (extension headers applied). */
export interface TarHeader {
  /** The name as written (surrogate-escaped bytes, see names.ts), not cleaned. */
  name: string;
  kind: EntryKind;
  /** Permission and special bits (no file type bits). */
  mode: number;
  uid: number;
  gid: number;
  /** Content size in bytes (0 for everything but regular files). */
  size: number;
  /** Modification time: whole seconds since the epoch (may be negative) … */
  mtimeSec: number;
  /** … and nanoseconds (0–999,999,999). */
  mtimeNsec: number;
  /** Symlink or hardlink target (surrogate-escaped), "" if none. */
  linkName: string;
  uname: string;
  gname: string;
  devMajor: number;
  devMinor: number;
  /** Extended attributes from `SCHILY.xattr.*` PAX records, name → raw value. */
  xattrs: Map<string, Uint8Array>;
}

/**
 * A header with the given fields and zero/empty values for the rest (a regular file, mode 0644
 * unless said otherwise).
 */
export function tarHeader(fields: Partial<TarHeader> & { name: string }): TarHeader {
  return {
    kind: "reg",
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: 0,
    mtimeSec: 0,
    mtimeNsec: 0,
    linkName: "",
    uname: "",
    gname: "",
    devMajor: 0,
    devMinor: 0,
    xattrs: new Map(),
    ...fields,
  };
}

/** A malformed tar stream. */
export class TarError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TarError";
  }
}

const latin1 = new TextDecoder("latin1");

/** Reads a NUL-terminated field as raw bytes. */
export function fieldBytes(block: Uint8Array, off: number, len: number): Uint8Array {
  const f = block.subarray(off, off + len);
  const z = f.indexOf(0);
  return z < 0 ? f : f.subarray(0, z);
}

/**
 * Parses a numeric field: octal ASCII (NUL/space padded) or GNU base-256 (high bit of the first
 * byte set). Throws on garbage or values past 2^53.
 */
export function parseNumeric(block: Uint8Array, off: number, len: number, what: string): number {
  const f = block.subarray(off, off + len);
  if (f[0] & 0x80) {
    // GNU base-256: big-endian two's complement; 0x80 marks positive, 0xff negative.
    let v = 0n;
    for (const b of f) v = (v << 8n) | BigInt(b);
    const bits = BigInt(8 * f.length);
    v = f[0] === 0xff ? v - (1n << bits) : v & ((1n << (bits - 1n)) - 1n);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw new TarError(`tar header: ${what} out of range`);
    }
    return Number(v);
  }
  let v = 0;
  let i = 0;
  while (i < f.length && (f[i] === 0x20 || f[i] === 0)) i++;
  if (i === f.length) return 0;
  for (; i < f.length; i++) {
    const c = f[i];
    if (c === 0 || c === 0x20) break;
    if (c < 0x30 || c > 0x37) throw new TarError(`tar header: bad ${what} field`);
    v = v * 8 + (c - 0x30);
  }
  if (!Number.isSafeInteger(v)) throw new TarError(`tar header: ${what} out of range`);
  return v;
}

/** Computes the header checksum (sum of bytes with the checksum field read as spaces). */
export function checksum(block: Uint8Array): { unsigned: number; signed: number } {
  let u = 0;
  let s = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : block[i];
    u += b;
    s += b > 127 ? b - 256 : b;
  }
  return { unsigned: u, signed: s };
}

/** True when the block is all zeros (end-of-archive marker). */
export function isZeroBlock(block: Uint8Array): boolean {
  for (let i = 0; i < BLOCK; i++) if (block[i] !== 0) return false;
  return true;
}

/** The raw fields of one header block before extension headers are applied. */
export interface RawHeader {
  name: Uint8Array;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkName: Uint8Array;
  uname: Uint8Array;
  gname: Uint8Array;
  devMajor: number;
  devMinor: number;
  /** "ustar" (POSIX), "gnu" (GNU `ustar  `), or "v7" (no magic). */
  format: "ustar" | "gnu" | "v7";
}

/** Decodes one header block; throws {@link TarError} on a bad checksum. */
export function decodeHeaderBlock(block: Uint8Array): RawHeader {
  let stored: number;
  try {
    stored = parseNumeric(block, 148, 8, "checksum");
  } catch {
    throw new TarError("tar header: no valid checksum (not a tar stream, or corrupt)");
  }
  const sum = checksum(block);
  if (stored !== sum.unsigned && stored !== sum.signed) {
    throw new TarError("tar header: checksum mismatch (not a tar stream, or corrupt)");
  }
  const magic = latin1.decode(block.subarray(257, 265));
  const format = magic === "ustar  \0" ? "gnu" : magic.startsWith("ustar") ? "ustar" : "v7";
  let name = fieldBytes(block, 0, 100);
  if (format === "ustar") {
    const prefix = fieldBytes(block, 345, 155);
    if (prefix.length > 0) {
      const joined = new Uint8Array(prefix.length + 1 + name.length);
      joined.set(prefix);
      joined[prefix.length] = 0x2f;
      joined.set(name, prefix.length + 1);
      name = joined;
    }
  }
  const hasDev = format !== "v7";
  return {
    name,
    mode: parseNumeric(block, 100, 8, "mode"),
    uid: parseNumeric(block, 108, 8, "uid"),
    gid: parseNumeric(block, 116, 8, "gid"),
    size: parseNumeric(block, 124, 12, "size"),
    mtime: parseNumeric(block, 136, 12, "mtime"),
    typeflag: String.fromCharCode(block[156]),
    linkName: fieldBytes(block, 157, 100),
    uname: hasDev ? fieldBytes(block, 265, 32) : new Uint8Array(),
    gname: hasDev ? fieldBytes(block, 297, 32) : new Uint8Array(),
    devMajor: hasDev ? parseNumeric(block, 329, 8, "devmajor") : 0,
    devMinor: hasDev ? parseNumeric(block, 337, 8, "devminor") : 0,
    format,
  };
}

/** One PAX record: the key (ASCII/UTF-8) and the raw value bytes. */
export type PaxRecords = Map<string, Uint8Array>;

/** Parses the body of a PAX extended header (`"%d %s=%s\n"` records). */
export function parsePaxRecords(body: Uint8Array, into: PaxRecords = new Map()): PaxRecords {
  let i = 0;
  while (i < body.length) {
    if (body[i] === 0) break; // trailing padding some writers leave
    const sp = body.indexOf(0x20, i);
    if (sp < 0 || sp - i > 20) throw new TarError("tar PAX header: malformed record length");
    const len = Number(latin1.decode(body.subarray(i, sp)));
    if (!Number.isSafeInteger(len) || len <= sp - i + 1 || i + len > body.length) {
      throw new TarError("tar PAX header: bad record length");
    }
    const rec = body.subarray(sp + 1, i + len);
    if (rec[rec.length - 1] !== 0x0a) throw new TarError("tar PAX header: record without newline");
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) throw new TarError("tar PAX header: record without key");
    const key = new TextDecoder().decode(rec.subarray(0, eq));
    const value = rec.subarray(eq + 1, rec.length - 1);
    if (value.length === 0) into.delete(key); // an empty value deletes (POSIX)
    else into.set(key, value.slice());
    i += len;
  }
  return into;
}

/** Encodes PAX records (key → value bytes) into an extended header body. */
export function encodePaxRecords(records: Iterable<[string, Uint8Array]>): Uint8Array {
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [];
  for (const [key, value] of records) {
    const keyBytes = enc.encode(key);
    const base = keyBytes.length + value.length + 3; // ' ', '=', '\n'
    let len = base + String(base).length;
    if (String(len).length !== String(base).length) len = base + String(len).length;
    const rec = new Uint8Array(len);
    const head = enc.encode(`${len} `);
    rec.set(head);
    rec.set(keyBytes, head.length);
    rec[head.length + keyBytes.length] = 0x3d;
    rec.set(value, head.length + keyBytes.length + 1);
    rec[len - 1] = 0x0a;
    parts.push(rec);
  }
  return concat(parts);
}

/** Parses a PAX time value (`"1234.5678"`, possibly negative) into seconds and nanoseconds. */
export function parsePaxTime(text: string): { sec: number; nsec: number } {
  const m = /^(-?)(\d+)(?:\.(\d*))?$/.exec(text);
  if (!m) throw new TarError(`tar PAX header: bad time ${JSON.stringify(text)}`);
  const whole = Number(m[2]);
  const frac = Number(((m[3] ?? "") + "000000000").slice(0, 9));
  if (!Number.isSafeInteger(whole)) throw new TarError("tar PAX header: time out of range");
  if (m[1] !== "-") return { sec: whole, nsec: frac };
  return frac === 0 ? { sec: -whole, nsec: 0 } : { sec: -whole - 1, nsec: 1e9 - frac };
}

/** Formats seconds and nanoseconds as a PAX time value. */
export function formatPaxTime(sec: number, nsec: number): string {
  if (nsec === 0) return String(sec);
  let s = sec;
  let n = nsec;
  let sign = "";
  if (s < 0) {
    sign = "-";
    s = -s - 1;
    n = 1e9 - n;
  }
  return `${sign}${s}.${String(n).padStart(9, "0").replace(/0+$/, "")}`;
}

const KINDS: Record<string, EntryKind> = {
  "0": "reg",
  "\0": "reg",
  "7": "reg",
  "1": "hardlink",
  "2": "symlink",
  "3": "char",
  "4": "block",
  "5": "dir",
  "6": "fifo",
  "D": "dir",
};

/** Maps a typeflag to an entry kind, or undefined for flags that are not entries. */
export function kindOf(typeflag: string): EntryKind | undefined {
  return KINDS[typeflag];
}

/**
 * Applies PAX records and GNU long names to a raw header, producing the entry header.
 * `pax` holds the global records overlaid with the entry's own.
 */
export function resolveHeader(
  raw: RawHeader,
  pax: PaxRecords,
  longName: Uint8Array | undefined,
  longLink: Uint8Array | undefined,
): TarHeader {
  const kind = kindOf(raw.typeflag);
  if (kind === undefined) {
    throw new TarError(`tar: unsupported entry type ${JSON.stringify(raw.typeflag)}`);
  }
  const text = (k: string) => {
    const v = pax.get(k);
    return v === undefined ? undefined : new TextDecoder().decode(v);
  };
  const num = (k: string, fallback: number) => {
    const t = text(k);
    if (t === undefined) return fallback;
    if (!/^\d+$/.test(t) || !Number.isSafeInteger(Number(t))) {
      throw new TarError(`tar PAX header: bad ${k} ${JSON.stringify(t)}`);
    }
    return Number(t);
  };
  const nameBytes = pax.get("path") ?? longName ?? raw.name;
  const linkBytes = pax.get("linkpath") ?? longLink ?? raw.linkName;
  let mtimeSec = raw.mtime;
  let mtimeNsec = 0;
  const mt = text("mtime");
  if (mt !== undefined) ({ sec: mtimeSec, nsec: mtimeNsec } = parsePaxTime(mt));
  const xattrs = new Map<string, Uint8Array>();
  for (const [k, v] of pax) {
    // Only SCHILY records: `LIBARCHIVE.xattr.*` ones are ignored by the container runtimes'
    // extraction (Go archive/tar) and by the reference eStargz and zstd:chunked writers.
    if (k.startsWith("SCHILY.xattr.")) xattrs.set(k.slice(13), v);
  }
  if (text("GNU.sparse.major") !== undefined || text("GNU.sparse.size") !== undefined) {
    throw new TarError("tar: sparse files are not supported");
  }
  const size = num("size", raw.size);
  return {
    name: decodeName(stripTrailingNul(nameBytes)),
    kind,
    mode: raw.mode & 0o7777,
    uid: num("uid", raw.uid),
    gid: num("gid", raw.gid),
    size: kind === "reg" ? size : 0,
    mtimeSec,
    mtimeNsec,
    linkName: decodeName(stripTrailingNul(linkBytes)),
    uname: decodeName(pax.get("uname") ?? raw.uname),
    gname: decodeName(pax.get("gname") ?? raw.gname),
    devMajor: num("SCHILY.devmajor", raw.devMajor),
    devMinor: num("SCHILY.devminor", raw.devMinor),
    xattrs,
  };
}

function stripTrailingNul(b: Uint8Array): Uint8Array {
  const z = b.indexOf(0);
  return z < 0 ? b : b.subarray(0, z);
}

function writeString(block: Uint8Array, off: number, len: number, bytes: Uint8Array): void {
  block.set(bytes.subarray(0, len), off);
}

function writeOctal(block: Uint8Array, off: number, len: number, value: number): boolean {
  // len-1 octal digits plus a NUL terminator.
  const digits = value.toString(8);
  if (value < 0 || digits.length > len - 1) return false;
  writeString(block, off, len, new TextEncoder().encode(digits.padStart(len - 1, "0")));
  return true;
}

function writeBase256(block: Uint8Array, off: number, len: number, value: number): void {
  let v = BigInt(value);
  for (let i = len - 1; i >= 0; i--) {
    block[off + i] = Number(BigInt.asUintN(8, v));
    v >>= 8n;
  }
  block[off] = value < 0 ? 0xff : 0x80 | block[off];
}

/** Options for {@link encodeHeader}. */
export interface EncodeOptions {
  /** How to carry what ustar cannot: PAX records (default) or GNU long name/link + base-256. */
  format?: "pax" | "gnu";
}

/** The bytes of a header's ustar/GNU block plus any extension headers, padded to blocks. */
export function encodeHeader(h: TarHeader, opts: EncodeOptions = {}): Uint8Array {
  const gnu = opts.format === "gnu";
  const pax = new Map<string, Uint8Array>();
  const enc = new TextEncoder();
  const blocks: Uint8Array[] = [];
  const name = encodeName(h.name);
  const link = encodeName(h.linkName);
  const block = new Uint8Array(BLOCK);

  let nameField: Uint8Array = name;
  let prefixField: Uint8Array = new Uint8Array();
  if (name.length > 100) {
    const split = gnu ? -1 : findPrefixSplit(name);
    if (split > 0) {
      prefixField = name.subarray(0, split);
      nameField = name.subarray(split + 1);
    } else if (gnu) {
      blocks.push(gnuLong("L", name));
      nameField = name.subarray(0, 100);
    } else {
      pax.set("path", name);
      nameField = name.subarray(0, 100);
    }
  }
  if (link.length > 100) {
    if (gnu) blocks.push(gnuLong("K", link));
    else pax.set("linkpath", link);
  }
  writeString(block, 0, 100, nameField);
  writeString(block, 345, 155, prefixField);
  const numbers: [number, number, number, string][] = [
    [100, 8, h.mode, "mode"],
    [108, 8, h.uid, "uid"],
    [116, 8, h.gid, "gid"],
    [124, 12, h.size, "size"],
    [329, 8, h.devMajor, "SCHILY.devmajor"],
    [337, 8, h.devMinor, "SCHILY.devminor"],
  ];
  for (const [off, len, value, key] of numbers) {
    if (!writeOctal(block, off, len, value)) {
      if (gnu || key === "mode") writeBase256(block, off, len, value);
      else pax.set(key, enc.encode(String(value)));
    }
  }
  if (!writeOctal(block, 136, 12, Math.max(h.mtimeSec, 0))) {
    writeBase256(block, 136, 12, h.mtimeSec);
  }
  if (!gnu && (h.mtimeNsec !== 0 || h.mtimeSec < 0)) {
    pax.set("mtime", enc.encode(formatPaxTime(h.mtimeSec, h.mtimeNsec)));
  }
  const typeflag = {
    reg: "0",
    hardlink: "1",
    symlink: "2",
    char: "3",
    block: "4",
    dir: "5",
    fifo: "6",
  }[h.kind];
  block[156] = typeflag.charCodeAt(0);
  writeString(block, 157, 100, link);
  writeString(block, 257, 8, enc.encode(gnu ? "ustar  \0" : "ustar\x0000"));
  const uname = encodeName(h.uname);
  const gname = encodeName(h.gname);
  if (uname.length > 32 && !gnu) pax.set("uname", uname);
  if (gname.length > 32 && !gnu) pax.set("gname", gname);
  writeString(block, 265, 32, uname);
  writeString(block, 297, 32, gname);
  for (const [k, v] of [...h.xattrs].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    pax.set(`SCHILY.xattr.${k}`, v);
  }
  if (gnu && pax.size > 0) {
    throw new TarError("tar: GNU format cannot carry sub-second times or xattrs");
  }
  finishChecksum(block);
  if (pax.size > 0) {
    const body = encodePaxRecords(pax);
    const ph = new Uint8Array(BLOCK);
    const paxName = enc.encode(`PaxHeaders.0/${baseName(name)}`).subarray(0, 100);
    writeString(ph, 0, 100, paxName);
    writeOctal(ph, 100, 8, 0o644);
    writeOctal(ph, 108, 8, 0);
    writeOctal(ph, 116, 8, 0);
    writeOctal(ph, 124, 12, body.length);
    writeOctal(ph, 136, 12, 0);
    ph[156] = 0x78; // 'x'
    writeString(ph, 257, 8, enc.encode("ustar\x0000"));
    finishChecksum(ph);
    blocks.push(ph, padToBlock(body));
  }
  blocks.push(block);
  return concat(blocks);
}

function baseName(name: Uint8Array): string {
  const s = new TextDecoder().decode(name).replace(/\/+$/, "");
  return s.slice(s.lastIndexOf("/") + 1).replace(/[^\x20-\x7e]/g, "_");
}

function findPrefixSplit(name: Uint8Array): number {
  // ustar: prefix (≤155) + "/" + name (≤100).
  for (let i = Math.max(0, name.length - 101); i < Math.min(name.length, 156); i++) {
    if (name[i] === 0x2f && i > 0 && name.length - i - 1 <= 100 && name.length - i - 1 > 0) {
      return i;
    }
  }
  return -1;
}

function gnuLong(flag: "L" | "K", value: Uint8Array): Uint8Array {
  const h = new Uint8Array(BLOCK);
  writeString(h, 0, 100, new TextEncoder().encode("././@LongLink"));
  writeOctal(h, 100, 8, 0);
  writeOctal(h, 108, 8, 0);
  writeOctal(h, 116, 8, 0);
  writeOctal(h, 124, 12, value.length + 1);
  writeOctal(h, 136, 12, 0);
  h[156] = flag.charCodeAt(0);
  writeString(h, 257, 8, new TextEncoder().encode("ustar  \0"));
  finishChecksum(h);
  const body = new Uint8Array(value.length + 1);
  body.set(value);
  return concat([h, padToBlock(body)]);
}

function finishChecksum(block: Uint8Array): void {
  block.fill(0x20, 148, 156);
  const { unsigned } = checksum(block);
  const digits = unsigned.toString(8).padStart(6, "0");
  writeString(block, 148, 8, new TextEncoder().encode(digits + "\0 "));
}

/** Pads bytes with zeros to a whole number of blocks. */
export function padToBlock(bytes: Uint8Array): Uint8Array {
  const padded = Math.ceil(bytes.length / BLOCK) * BLOCK;
  if (padded === bytes.length) return bytes;
  const out = new Uint8Array(padded);
  out.set(bytes);
  return out;
}

/** Number of padding bytes after `size` content bytes. */
export function paddingFor(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/** The tar end-of-archive marker: two zero blocks. */
export const END_OF_ARCHIVE: Uint8Array = new Uint8Array(2 * BLOCK);
