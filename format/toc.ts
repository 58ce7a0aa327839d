/**
 * The stargz table of contents (TOC): the JSON document stored as `stargz.index.json` at the end
 * of every stargz/eStargz blob. This module holds its model, its parsing (with shape checks) and
 * its deterministic serialization in the key order the reference Go writers use.
 *
 * Names travel as surrogate-escaped strings (see names.ts): the JSON text is decoded with
 * {@link decodeName}, so raw non-UTF-8 bytes in a TOC survive, and names holding such bytes are
 * written as `\udcXX` escapes.
 *
 * @module
 */
import type { FileType } from "./file_attr.ts";
import { decodeName } from "./names.ts";
import { base64 } from "./bytes.ts";
import type { TarHeader } from "./tar_header.ts";

/** The file name of the TOC inside the blob's tar stream. */
export const TOC_TAR_NAME = "stargz.index.json";
/** eStargz landmark: the files before it are to be prefetched. */
export const PREFETCH_LANDMARK = ".prefetch.landmark";
/** eStargz landmark: nothing is to be prefetched. */
export const NO_PREFETCH_LANDMARK = ".no.prefetch.landmark";
/** The content of a landmark file. */
export const LANDMARK_CONTENT = 0x0f;
/** Manifest layer annotation carrying the TOC digest. */
export const TOC_DIGEST_ANNOTATION = "containerd.io/snapshot/stargz/toc.digest";
/** Manifest layer annotation carrying the uncompressed size of the blob. */
export const UNCOMPRESSED_SIZE_ANNOTATION = "io.containers.estargz.uncompressed-size";

/** Entry types in a TOC: the file types tar has, hardlinks, and the extra chunks of a file. */
export type TOCEntryType = Exclude<FileType, "socket"> | "hardlink" | "chunk";

const TYPES = new Set(["dir", "reg", "symlink", "hardlink", "char", "block", "fifo", "chunk"]);

/** One TOC entry, as in the JSON (optional fields omitted when zero). */
export interface TOCEntry {
  name: string;
  type: TOCEntryType;
  size?: number;
  /** RFC 3339 time. */
  modtime?: string;
  linkName?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  userName?: string;
  groupName?: string;
  offset?: number;
  innerOffset?: number;
  devMajor?: number;
  devMinor?: number;
  /** Extended attributes: name → base64 of the value. */
  xattrs?: Record<string, string>;
  /** `sha256:…` of the whole file (on `reg` entries). */
  digest?: string;
  chunkOffset?: number;
  chunkSize?: number;
  /** `sha256:…` of this chunk's uncompressed bytes (eStargz). */
  chunkDigest?: string;
  /** zstd:chunked: end of the file's last compressed frame (on `reg` entries). */
  endOffset?: number;
  /** zstd:chunked: `zeros` for a chunk of zero bytes; absent for data. */
  chunkType?: string;
}

/** A whole TOC. */
export interface TOC {
  version: number;
  entries: TOCEntry[];
  /** zstd:chunked: `sha256:…` of the compressed tar-split frame. */
  tarSplitDigest?: string;
}

/** A TOC that is not well-formed. */
export class TOCError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TOCError";
  }
}

/** Largest size or offset crfs accepts in a TOC (2^50 bytes). */
export const MAX_TOC_NUMBER = 2 ** 50;

const NUMBER_FIELDS = [
  "size",
  "mode",
  "uid",
  "gid",
  "offset",
  "innerOffset",
  "devMajor",
  "devMinor",
  "chunkOffset",
  "chunkSize",
  "endOffset",
] as const;
const STRING_FIELDS = [
  "modtime",
  "linkName",
  "userName",
  "groupName",
  "digest",
  "chunkDigest",
  "chunkType",
] as const;
const SHA256_DIGEST = /^sha256:[0-9a-f]{64}$/;

/**
 * A well-formed `sha256:<64 lowercase hex>` digest. A regular expression, not a loop over the
 * characters: this runs for every entry of a TOC on the way to a first byte, mostly before the
 * JIT has compiled anything, and the regex engine runs native code from the first call.
 */
export function isSha256Digest(d: string): boolean {
  return d.length === 71 && SHA256_DIGEST.test(d);
}

/**
 * Parses and shape-checks TOC JSON bytes. Unknown keys (such as google/crfs's `NumLink`) are
 * ignored; wrong types, unknown entry types, negative or huge numbers and malformed digests are
 * rejected with a {@link TOCError} naming the entry.
 */
export function parseTOC(json: Uint8Array): TOC {
  const toc = parseTOCUnchecked(json);
  const entries = toc.entries as unknown[];
  for (let i = 0; i < entries.length; i++) checkTOCEntry(entries[i], i);
  return toc;
}

/**
 * Parses TOC JSON bytes and checks the document (version, entries array, tarSplitDigest) but
 * not its entries: each must pass {@link checkTOCEntry} before use. For a reader that checks
 * every entry as it indexes it (one pass over the entries on the way to a first byte).
 */
export function parseTOCUnchecked(json: Uint8Array): TOC {
  let doc: unknown;
  try {
    doc = JSON.parse(tocText(json));
  } catch (e) {
    throw new TOCError(`TOC is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
    throw new TOCError("TOC is not a JSON object");
  }
  const { version, entries, tarSplitDigest } = doc as {
    version?: unknown;
    entries?: unknown;
    tarSplitDigest?: unknown;
  };
  if (version !== 1) throw new TOCError(`unsupported TOC version ${JSON.stringify(version)}`);
  if (!Array.isArray(entries)) throw new TOCError("TOC has no entries array");
  const toc: TOC = { version: 1, entries };
  if (tarSplitDigest !== undefined && tarSplitDigest !== "") {
    if (typeof tarSplitDigest !== "string" || !isSha256Digest(tarSplitDigest)) {
      throw new TOCError("TOC: malformed tarSplitDigest");
    }
    toc.tarSplitDigest = tarSplitDigest;
  }
  return toc;
}

/** UTF-8 that replaces bad bytes by U+FFFD instead of throwing (and keeps a BOM, as names do). */
const lenientUtf8 = new TextDecoder("utf-8", { ignoreBOM: true });

/**
 * The text of TOC JSON bytes, as {@link decodeName} gives it. Most TOCs are valid UTF-8 (mostly
 * ASCII): decoded without the strict decoder's checks, four times faster than it, which counts
 * for a TOC of megabytes on the way to a first byte. Without a U+FFFD in the text the bytes were
 * valid UTF-8, so it is what `decodeName` gives; with one (a replaced bad byte, or a real one),
 * `decodeName` decodes them again.
 */
function tocText(json: Uint8Array): string {
  const text = lenientUtf8.decode(json);
  return text.includes("\uFFFD") ? decodeName(json) : text;
}

/** A TOC number: an integer in [0, {@link MAX_TOC_NUMBER}] (undefined when absent). */
function badNumber(v: unknown): boolean {
  return v !== undefined &&
    (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > MAX_TOC_NUMBER);
}

function badString(v: unknown): boolean {
  return v !== undefined && typeof v !== "string";
}

function badDigest(v: unknown): boolean {
  return v !== undefined && v !== "" && !isSha256Digest(v as string);
}

function badXattrs(x: unknown): boolean {
  if (x === undefined || x === null) return false;
  if (typeof x !== "object" || Array.isArray(x)) return true;
  for (const v of Object.values(x)) if (typeof v !== "string") return true;
  return false;
}

/** The last digest {@link checkTOCEntry} found well-formed. */
let lastGoodDigest = "";

/**
 * Checks the shape of entry `i` (throws a {@link TOCError} naming it). Only the fields the entry
 * has are looked at (a loop over its own keys: an entry holds a third of the known fields, and
 * this runs for every entry of every TOC on the way to a container's first byte, mostly before
 * the JIT has compiled it); the first failure found is reported by {@link entryProblem}.
 */
export function checkTOCEntry(e: unknown, i: number): TOCEntry {
  if (typeof e !== "object" || e === null || Array.isArray(e)) {
    throw new TOCError(`TOC entry ${i} is not an object`);
  }
  const o = e as Record<string, unknown>;
  let ok = typeof o.name === "string" && typeof o.type === "string" && TYPES.has(o.type);
  if (ok) {
    for (const k in o) {
      const v = o[k];
      if (v === undefined) continue;
      switch (k) {
        case "size":
        case "mode":
        case "uid":
        case "gid":
        case "offset":
        case "innerOffset":
        case "devMajor":
        case "devMinor":
        case "chunkOffset":
        case "chunkSize":
        case "endOffset":
          ok = typeof v === "number" && v >= 0 && v <= MAX_TOC_NUMBER && Number.isInteger(v);
          break;
        case "modtime":
          ok = typeof v === "string" && (v === "" || cachedModTime(v) !== null);
          break;
        case "digest":
        case "chunkDigest":
          // A file of one chunk carries its digest twice: checked once.
          if (v !== lastGoodDigest) {
            ok = typeof v === "string" && (v === "" || isSha256Digest(v));
            if (ok) lastGoodDigest = v as string;
          }
          break;
        case "linkName":
        case "userName":
        case "groupName":
        case "chunkType":
          ok = typeof v === "string";
          break;
        case "xattrs":
          ok = !badXattrs(v);
          break;
      }
      if (!ok) break;
    }
  }
  if (!ok) entryProblem(o, i);
  return e as TOCEntry;
}

/** Throws the {@link TOCError} of the first problem of entry `i`, if it has one. */
function entryProblem(o: Record<string, unknown>, i: number): void {
  const where = () => `TOC entry ${i} (${JSON.stringify(String(o.name).slice(0, 200))})`;
  if (typeof o.name !== "string") throw new TOCError(`TOC entry ${i} has no name`);
  if (typeof o.type !== "string" || !TYPES.has(o.type)) {
    throw new TOCError(`${where()}: unknown type ${JSON.stringify(o.type)}`);
  }
  for (const k of NUMBER_FIELDS) {
    if (badNumber(o[k])) {
      // uid/gid may legitimately be large but never negative or fractional.
      throw new TOCError(`${where()}: bad ${k} ${JSON.stringify(o[k])}`);
    }
  }
  for (const k of STRING_FIELDS) {
    if (badString(o[k])) throw new TOCError(`${where()}: ${k} is not a string`);
  }
  for (const k of ["digest", "chunkDigest"] as const) {
    if (badDigest(o[k])) throw new TOCError(`${where()}: malformed ${k}`);
  }
  if (badXattrs(o.xattrs)) {
    if (typeof o.xattrs !== "object" || Array.isArray(o.xattrs)) {
      throw new TOCError(`${where()}: xattrs is not an object`);
    }
    throw new TOCError(`${where()}: xattr value is not base64`);
  }
  if (o.modtime !== undefined && o.modtime !== "" && cachedModTime(o.modtime as string) === null) {
    throw new TOCError(`${where()}: bad modtime ${JSON.stringify(o.modtime)}`);
  }
}

const RFC3339 =
  /^(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)$/;

const modTimes = new Map<string, { sec: number; nsec: number } | null>();
let lastModText = "";
let lastModTime: { sec: number; nsec: number } | null = null;

/**
 * {@link parseModTime} remembering recent answers: most entries of a layer share a handful of
 * times, entries of one directory often one, and this runs for every entry of every TOC (twice:
 * checked, then indexed).
 */
export function cachedModTime(text: string): { sec: number; nsec: number } | null {
  if (text === lastModText) return lastModTime;
  let t = modTimes.get(text);
  if (t === undefined) {
    if (modTimes.size > 4096) modTimes.clear();
    t = parseModTime(text);
    modTimes.set(text, t);
  }
  lastModText = text;
  lastModTime = t;
  return t;
}

/** The value of the two decimal digits at `i` of `s`, or NaN. */
function twoDigits(s: string, i: number): number {
  const a = s.charCodeAt(i) - 48;
  const b = s.charCodeAt(i + 1) - 48;
  return a >= 0 && a <= 9 && b >= 0 && b <= 9 ? a * 10 + b : NaN;
}

/**
 * Seconds since the epoch of `YYYY-MM-DDTHH:MM:SSZ` (what writers put in TOCs), with
 * `Date.UTC`'s arithmetic (fields past their range carry over), or NaN for any other text.
 * Integer arithmetic on the characters: no match array, no substrings, no `Date` call.
 */
function plainUtcSeconds(s: string): number {
  const c = s.charCodeAt(19);
  if (
    s.length !== 20 || (c !== 90 && c !== 122) || s.charCodeAt(4) !== 45 ||
    s.charCodeAt(7) !== 45 || s.charCodeAt(13) !== 58 || s.charCodeAt(16) !== 58
  ) return NaN;
  const t = s.charCodeAt(10);
  if (t !== 84 && t !== 116) return NaN;
  let y = twoDigits(s, 0) * 100 + twoDigits(s, 2);
  // Date.UTC reads years 0–99 as 1900–1999: leave those to the general parser.
  if (!(y >= 100)) return NaN;
  const mo = twoDigits(s, 5);
  const d = twoDigits(s, 8);
  const h = twoDigits(s, 11);
  const mi = twoDigits(s, 14);
  const sec = twoDigits(s, 17);
  if (Number.isNaN(mo + d + h + mi + sec)) return NaN;
  // Month 0 or past 12 carries into the year, as Date.UTC does.
  let m = mo - 1;
  y += Math.floor(m / 12);
  m -= Math.floor(m / 12) * 12;
  // Days from 1970-01-01 to the first of month m+1 of year y (proleptic Gregorian).
  const yy = m < 2 ? y - 1 : y;
  const era = Math.floor(yy / 400);
  const yoe = yy - era * 400;
  const doy = Math.floor((153 * (m < 2 ? m + 10 : m - 2) + 2) / 5);
  const days = era * 146097 + yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy -
    719468 + d - 1;
  return days * 86400 + h * 3600 + mi * 60 + sec;
}

/** Parses an RFC 3339 time into seconds and nanoseconds, or null when malformed. */
export function parseModTime(text: string): { sec: number; nsec: number } | null {
  const plain = plainUtcSeconds(text);
  if (!Number.isNaN(plain)) return { sec: plain, nsec: 0 };
  const m = RFC3339.exec(text);
  if (!m) return null;
  const [, y, mo, d, h, mi, s, frac, zone] = m;
  let ms = Date.UTC(+y, +mo - 1, +d, +h, +mi, +s);
  if (Number.isNaN(ms)) return null;
  if (zone !== "Z" && zone !== "z") {
    const sign = zone[0] === "-" ? -1 : 1;
    ms -= sign * (Number(zone.slice(1, 3)) * 60 + Number(zone.slice(4, 6))) * 60_000;
  }
  const sec = Math.floor(ms / 1000);
  const nsec = frac ? Number(frac.padEnd(9, "0")) : 0;
  return { sec, nsec };
}

/** Formats seconds and nanoseconds as RFC 3339 in UTC, with a fraction only when non-zero. */
export function formatModTime(sec: number, nsec: number): string {
  const d = new Date(sec * 1000);
  const year = d.getUTCFullYear();
  if (year < 0 || year > 9999) return "";
  const base = d.toISOString().slice(0, 19);
  const frac = nsec === 0 ? "" : "." + String(nsec).padStart(9, "0").replace(/0+$/, "");
  return `${base}${frac}Z`;
}

const KEY_ORDER: (keyof TOCEntry)[] = [
  "name",
  "type",
  "size",
  "modtime",
  "linkName",
  "mode",
  "uid",
  "gid",
  "userName",
  "groupName",
  "offset",
  "innerOffset",
  "devMajor",
  "devMinor",
  "xattrs",
  "digest",
  "chunkOffset",
  "chunkSize",
  "chunkDigest",
  "endOffset",
  "chunkType",
];

/**
 * Serializes a TOC deterministically: keys in the reference writer's order, zero values
 * omitted (name and type always present). Compact, unlike the Go writers' tab-indented output:
 * a third smaller, which is time saved fetching, decompressing and parsing it on every open.
 */
export function serializeTOC(toc: TOC): Uint8Array {
  const entries = toc.entries.map((e) => {
    const o: Record<string, unknown> = {};
    for (const k of KEY_ORDER) {
      const v = e[k];
      if (k === "name" || k === "type") o[k] = v;
      else if (v === undefined || v === 0 || v === "") continue;
      else if (k === "xattrs") {
        const x = v as Record<string, string>;
        if (Object.keys(x).length === 0) continue;
        o[k] = Object.fromEntries(Object.keys(x).sort().map((n) => [n, x[n]]));
      } else o[k] = v;
    }
    return o;
  });
  const doc: Record<string, unknown> = { version: toc.version, entries };
  if (toc.tarSplitDigest) doc.tarSplitDigest = toc.tarSplitDigest;
  return new TextEncoder().encode(JSON.stringify(doc));
}

/**
 * The TOC entry a writer records for the tar header `h` under `name`: kind, times (zero times
 * left out, as the reference writer does), mode, owner, link target, device numbers and xattrs
 * (base64). Size, offsets and digests are the writer's to add.
 *
 * @example
 * ```ts
 * const entry = tocEntryFromHeader(header, header.name);
 * ```
 */
export function tocEntryFromHeader(h: TarHeader, name: string): TOCEntry {
  const e: TOCEntry = {
    name,
    type: h.kind,
    modtime: h.mtimeSec || h.mtimeNsec
      ? formatModTime(h.mtimeSec, h.mtimeNsec) || undefined
      : undefined,
    mode: h.mode,
    uid: h.uid,
    gid: h.gid,
    // eStargz elides repeated user names once its TOC is final. Group names are written every
    // time: the reference reader fills a missing one from its user-name map (keyed by gid),
    // which would be wrong.
    userName: h.uname || undefined,
    groupName: h.gname || undefined,
  };
  if (h.kind === "hardlink" || h.kind === "symlink") e.linkName = h.linkName;
  if (h.kind === "char" || h.kind === "block") {
    e.devMajor = h.devMajor;
    e.devMinor = h.devMinor;
  }
  if (h.xattrs.size > 0) {
    e.xattrs = {};
    for (const [k, v] of h.xattrs) e.xattrs[k] = base64(v);
  }
  return e;
}
