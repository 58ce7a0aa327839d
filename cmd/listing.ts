/**
 * Printing file listings for `crfs ls`: the `ls -l` long format, recursive walks and JSON, over
 * a small node interface that both a single stargz blob and the mounted tree can provide.
 *
 * @module
 */
import { encodeName } from "../format/names.ts";

/** What `crfs ls` needs to know about one file. */
export interface ListNode {
  type: "dir" | "reg" | "symlink" | "char" | "block" | "fifo" | "whiteout";
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  userName: string;
  groupName: string;
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  linkName: string;
  devMajor: number;
  devMinor: number;
  xattrs?: Map<string, Uint8Array>;
  digest?: string;
}

/** A directory's entries, loaded on demand. */
export type Children = () => Promise<ListItem[]>;

/** A node with the way to reach its children (directories only). */
export interface ListItem {
  name: string;
  node: ListNode;
  children?: Children;
}

const TYPE_CHAR: Record<ListNode["type"], string> = {
  dir: "d",
  reg: "-",
  symlink: "l",
  char: "c",
  block: "b",
  fifo: "p",
  whiteout: "c",
};

/** `drwxr-xr-x`-style mode string, with setuid/setgid/sticky letters. */
export function modeString(type: ListNode["type"], mode: number): string {
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
export function longLine(name: string, n: ListNode): string {
  const owner = n.userName || String(n.uid);
  const group = n.groupName || String(n.gid);
  const size = n.type === "char" || n.type === "block" || n.type === "whiteout"
    ? `${n.devMajor}, ${n.devMinor}`
    : String(n.size);
  const target = n.type === "symlink" ? ` -> ${n.linkName}` : "";
  return `${modeString(n.type, n.mode)} ${String(n.nlink).padStart(3)} ${owner.padEnd(8)} ${
    group.padEnd(8)
  } ${size.padStart(10)} ${timeString(n.mtimeSec)} ${name}${target}`;
}

/** The JSON form of a node. */
export function jsonNode(path: string, n: ListNode): Record<string, unknown> {
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
  if (n.digest) o.digest = n.digest;
  if (n.xattrs && n.xattrs.size > 0) {
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
  const emit = async (path: string, n: ListNode) => {
    if (opts.json) json.push(jsonNode(path, n));
    else {
      const line = opts.long ? longLine("\0", n) : "\0";
      // Names go out as their exact bytes; the rest of the line is text.
      const [pre, post] = line.split("\0");
      await write(concat(enc.encode(pre), encodeName(path), enc.encode(post + "\n")));
    }
  };
  if (!item.children) {
    await emit(item.name, item.node);
  } else {
    const walk = async (prefix: string, children: Children) => {
      const items = await children();
      for (const it of items) await emit(prefix ? `${prefix}/${it.name}` : it.name, it.node);
      if (!opts.recursive) return;
      for (const it of items) {
        if (it.children) await walk(prefix ? `${prefix}/${it.name}` : it.name, it.children);
      }
    };
    await walk("", item.children);
  }
  if (opts.json) await write(enc.encode(JSON.stringify(json, null, 1) + "\n"));
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
