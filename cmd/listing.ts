/**
 * Printing file listings for `crfs ls`: the `ls -l` long format, recursive walks and JSON of
 * {@link FileAttr}s, the attributes both a single stargz blob and the mounted tree provide.
 *
 * @module
 */
import type { FileAttr, FileType } from "../format/file_attr.ts";
import { encodeName } from "../format/names.ts";
import { concat } from "../format/tar_header.ts";

/** A directory's entries, loaded on demand. */
export type Children = () => Promise<ListItem[]>;

/** A file to list: its name, attributes, content digest where known, and children (directories). */
export interface ListItem {
  name: string;
  attr: FileAttr;
  /** `sha256:…` of the content, printed in JSON listings when known. */
  digest?: string;
  children?: Children;
}

const TYPE_CHAR: Record<FileType, string> = {
  dir: "d",
  reg: "-",
  symlink: "l",
  char: "c",
  block: "b",
  fifo: "p",
  socket: "s",
};

/** `drwxr-xr-x`-style mode string, with setuid/setgid/sticky letters. */
export function modeString(type: FileType, mode: number): string {
  const rwx = (bits: number, special: boolean, letter: string) =>
    (bits & 4 ? "r" : "-") + (bits & 2 ? "w" : "-") +
    (special ? (bits & 1 ? letter : letter.toUpperCase()) : bits & 1 ? "x" : "-");
  return TYPE_CHAR[type] + rwx((mode >> 6) & 7, (mode & 0o4000) !== 0, "s") +
    rwx((mode >> 3) & 7, (mode & 0o2000) !== 0, "s") + rwx(mode & 7, (mode & 0o1000) !== 0, "t");
}

function timeString(sec: number): string {
  const d = new Date(sec * 1000);
  if (Number.isNaN(d.getTime())) return "????-??-?? ??:??";
  return d.toISOString().slice(0, 16).replace("T", " ");
}

/** One `ls -l` line (without the newline). */
export function longLine(name: string, n: FileAttr): string {
  const owner = n.userName || String(n.uid);
  const group = n.groupName || String(n.gid);
  const size = n.type === "char" || n.type === "block"
    ? `${n.devMajor}, ${n.devMinor}`
    : String(n.size);
  const target = n.type === "symlink" ? ` -> ${n.linkName}` : "";
  return `${modeString(n.type, n.mode)} ${String(n.nlink).padStart(3)} ${owner.padEnd(8)} ${
    group.padEnd(8)
  } ${size.padStart(10)} ${timeString(n.mtimeSec)} ${name}${target}`;
}

/** The JSON form of a file's attributes (with its content digest, when given). */
export function jsonNode(path: string, n: FileAttr, digest?: string): Record<string, unknown> {
  const o: Record<string, unknown> = {
    path,
    type: n.type,
    mode: n.mode,
    nlink: n.nlink,
    uid: n.uid,
    gid: n.gid,
    user: n.userName || undefined,
    group: n.groupName || undefined,
    size: n.size,
    mtime: new Date(n.mtimeSec * 1000 + Math.floor(n.mtimeNsec / 1e6)).toISOString(),
  };
  if (n.type === "symlink") o.linkName = n.linkName;
  if (n.type === "char" || n.type === "block") {
    o.devMajor = n.devMajor;
    o.devMinor = n.devMinor;
  }
  if (digest) o.digest = digest;
  if (n.xattrs.size > 0) {
    o.xattrs = Object.fromEntries(
      [...n.xattrs].map(([k, v]) => [k, btoa(String.fromCharCode(...v))]),
    );
  }
  return o;
}

/** Options of a listing. */
export interface ListOptions {
  long: boolean;
  recursive: boolean;
  json: boolean;
}

/** Entries in `ls` order: bytewise by name (as `LC_ALL=C ls` sorts), whatever the tree's order. */
function sortedByName(items: ListItem[]): ListItem[] {
  const keyed = items.map((it) => ({ it, bytes: encodeName(it.name) }));
  keyed.sort((x, y) => {
    const n = Math.min(x.bytes.length, y.bytes.length);
    for (let i = 0; i < n; i++) if (x.bytes[i] !== y.bytes[i]) return x.bytes[i] - y.bytes[i];
    return x.bytes.length - y.bytes.length;
  });
  return keyed.map((k) => k.it);
}

/**
 * Writes a listing of `item` (a directory's entries, or the item itself when it is not a
 * directory) through `write`. Recursive listings print paths relative to the listed directory.
 */
export async function printListing(
  item: ListItem,
  opts: ListOptions,
  write: (b: Uint8Array) => Promise<void>,
): Promise<void> {
  const enc = new TextEncoder();
  const json: Record<string, unknown>[] = [];
  const emit = async (path: string, it: ListItem) => {
    if (opts.json) json.push(jsonNode(path, it.attr, it.digest));
    else {
      const line = opts.long ? longLine("\0", it.attr) : "\0";
      // Names go out as their exact bytes; the rest of the line is text.
      const [pre, post] = line.split("\0");
      await write(concat([enc.encode(pre), encodeName(path), enc.encode(post + "\n")]));
    }
  };
  if (!item.children) {
    await emit(item.name, item);
  } else {
    const walk = async (prefix: string, children: Children) => {
      const items = sortedByName(await children());
      for (const it of items) await emit(prefix ? `${prefix}/${it.name}` : it.name, it);
      if (!opts.recursive) return;
      for (const it of items) {
        if (it.children) await walk(prefix ? `${prefix}/${it.name}` : it.name, it.children);
      }
    };
    await walk("", item.children);
  }
  if (opts.json) await write(enc.encode(JSON.stringify(json, null, 1) + "\n"));
}
