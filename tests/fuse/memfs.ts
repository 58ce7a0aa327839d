/**
 * TEST FIXTURE: a small in-memory read-only filesystem implementing `FuseOps`, used by the FUSE
 * tests and the read benchmark. Names are raw bytes; file contents are either literal bytes or a
 * deterministic pattern of any size (so big files cost no memory); files can be made slow
 * (reads wait on a gate) or failing (reads/lookups throw).
 *
 * @module
 */
import {
  DT_DIR,
  dtFromMode,
  Errno,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFREG,
  S_IFSOCK,
} from "../../fs/fuse/abi.ts";
import type {
  Attr,
  AttrReply,
  DirItem,
  EntryReply,
  FuseOps,
  OpendirReply,
  OpenReply,
  StatfsOut,
} from "../../fs/fuse/ops.ts";
import { FuseError, ROOT_ID } from "../../fs/fuse/ops.ts";
import { NO_XATTRS, typeFromMode } from "../../format/file_attr.ts";

const enc = new TextEncoder();

/** Bytes of a name given as text or bytes. */
export function nameBytes(name: string | Uint8Array): Uint8Array {
  return typeof name === "string" ? enc.encode(name) : name;
}

function key(name: Uint8Array): string {
  return String.fromCharCode.apply(null, name as unknown as number[]);
}

/** A deterministic pseudo-random byte pattern of any length: byte i is `block[i % period]`. */
export class Pattern {
  readonly size: number;
  readonly #block: Uint8Array;
  constructor(size: number, seed = 1, period = 1_048_573) {
    this.size = size;
    this.#block = new Uint8Array(period);
    let x = seed >>> 0 || 1;
    for (let i = 0; i < period; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      this.#block[i] = x & 0xff;
    }
  }

  /** Bytes [offset, offset+n) clipped to the size, written into `into` if it is big enough. */
  slice(offset: number, n: number, into?: Uint8Array): Uint8Array {
    const len = Math.max(0, Math.min(n, this.size - offset));
    const out = into && into.length >= len ? into.subarray(0, len) : new Uint8Array(len);
    const p = this.#block.length;
    let done = 0;
    while (done < len) {
      const at = (offset + done) % p;
      const k = Math.min(len - done, p - at);
      out.set(this.#block.subarray(at, at + k), done);
      done += k;
    }
    return out;
  }
}

type Content = Uint8Array | Pattern;

interface NodeBase {
  id: number;
  parent: number;
  mode: number;
  uid: number;
  gid: number;
  mtimeSec: number;
  mtimeNsec: number;
  xattrs: Map<string, Uint8Array>;
}
interface DirNode extends NodeBase {
  kind: "dir";
  names: Uint8Array[];
  children: Map<string, number>;
}
interface FileNode extends NodeBase {
  kind: "file";
  content: Content;
  /** Reads wait for this first. */
  gate?: Promise<void>;
  /** Reads throw this. */
  failRead?: unknown;
  /** Open with FOPEN_DIRECT_IO (reads reach the filesystem with the caller's offsets). */
  directIo?: boolean;
}
interface OtherNode extends NodeBase {
  kind: "other";
  rdev: number;
  target?: Uint8Array;
}
type Node = DirNode | FileNode | OtherNode;

/** Common options of added nodes. */
export interface NodeOptions {
  mode?: number;
  uid?: number;
  gid?: number;
  mtimeSec?: number;
  mtimeNsec?: number;
  xattrs?: Record<string, Uint8Array | string>;
}

/** Options of the whole test filesystem. */
export interface MemFsOptions {
  /** Serve READDIRPLUS (default true). */
  plus?: boolean;
  /** Entry/attr cache timeouts (default 60 s). */
  ttlMs?: number;
}

/** The in-memory filesystem (test fixture). */
export class MemFs implements FuseOps {
  readonly nodes = new Map<number, Node>();
  /** Lookup counts the kernel holds, per node (lookups + readdirplus entries - forgets). */
  readonly lookups = new Map<number, number>();
  /** Names whose lookup throws a plain Error (→ EIO). */
  readonly failLookup = new Set<string>();
  readonly ttlMs: number;
  readonly calls = new Map<string, number>();
  #nextId = ROOT_ID + 1;

  readdirplusEntry?: (parent: number, item: DirItem) => Promise<EntryReply>;

  constructor(options: MemFsOptions = {}) {
    this.ttlMs = options.ttlMs ?? 60_000;
    this.nodes.set(ROOT_ID, {
      kind: "dir",
      id: ROOT_ID,
      parent: ROOT_ID,
      mode: S_IFDIR | 0o755,
      uid: 0,
      gid: 0,
      mtimeSec: 1_700_000_000,
      mtimeNsec: 0,
      xattrs: new Map(),
      names: [],
      children: new Map(),
    });
    if (options.plus ?? true) {
      this.readdirplusEntry = (parent, item) => {
        this.#count("readdirplusEntry");
        const dir = this.#dir(parent);
        const id = dir.children.get(key(item.name));
        if (id === undefined) return Promise.reject(new FuseError(Errno.ENOENT));
        return Promise.resolve(this.#entry(id));
      };
    }
  }

  #count(op: string): void {
    this.calls.set(op, (this.calls.get(op) ?? 0) + 1);
  }

  #add(parent: number, name: string | Uint8Array, node: Omit<Node, "id" | "parent">): number {
    const dir = this.#dir(parent);
    const n = nameBytes(name);
    const id = this.#nextId++;
    this.nodes.set(id, { ...node, id, parent } as Node);
    dir.names.push(n);
    dir.children.set(key(n), id);
    return id;
  }

  #base(o: NodeOptions, mode: number) {
    const x = new Map<string, Uint8Array>();
    for (const [k, v] of Object.entries(o.xattrs ?? {})) x.set(key(enc.encode(k)), nameBytes(v));
    return {
      mode: o.mode !== undefined ? (mode & 0o170000) | o.mode : mode,
      uid: o.uid ?? 0,
      gid: o.gid ?? 0,
      mtimeSec: o.mtimeSec ?? 1_700_000_000,
      mtimeNsec: o.mtimeNsec ?? 0,
      xattrs: x,
    };
  }

  /** Adds a directory; returns its node id. */
  addDir(parent: number, name: string | Uint8Array, o: NodeOptions = {}): number {
    return this.#add(parent, name, {
      kind: "dir",
      ...this.#base(o, S_IFDIR | 0o755),
      names: [],
      children: new Map(),
    } as Omit<DirNode, "id" | "parent">);
  }

  /** Adds a regular file with literal or pattern content. */
  addFile(
    parent: number,
    name: string | Uint8Array,
    content: Content | string,
    o: NodeOptions & { gate?: Promise<void>; failRead?: unknown; directIo?: boolean } = {},
  ): number {
    return this.#add(parent, name, {
      kind: "file",
      ...this.#base(o, S_IFREG | 0o644),
      content: typeof content === "string" ? enc.encode(content) : content,
      gate: o.gate,
      failRead: o.failRead,
      directIo: o.directIo,
    } as Omit<FileNode, "id" | "parent">);
  }

  /** Adds a symlink. */
  addSymlink(
    parent: number,
    name: string | Uint8Array,
    target: string | Uint8Array,
    o: NodeOptions = {},
  ): number {
    return this.#add(parent, name, {
      kind: "other",
      ...this.#base(o, S_IFLNK | 0o777),
      rdev: 0,
      target: nameBytes(target),
    } as Omit<OtherNode, "id" | "parent">);
  }

  /** Adds a device node, fifo or socket (`type` is one of the S_IF* constants). */
  addSpecial(
    parent: number,
    name: string | Uint8Array,
    type: number,
    rdev = 0,
    o: NodeOptions = {},
  ): number {
    if (![S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK].includes(type)) throw new Error("bad type");
    return this.#add(parent, name, {
      kind: "other",
      ...this.#base(o, type | 0o644),
      rdev,
    } as Omit<OtherNode, "id" | "parent">);
  }

  #node(id: number): Node {
    const n = this.nodes.get(id);
    if (!n) throw new FuseError(Errno.ENOENT);
    return n;
  }

  #dir(id: number): DirNode {
    const n = this.#node(id);
    if (n.kind !== "dir") throw new FuseError(Errno.ENOTDIR);
    return n;
  }

  /** Attributes of a node. */
  attr(id: number): Attr {
    const n = this.#node(id);
    let size = 0;
    let nlink = 1;
    if (n.kind === "file") size = n.content instanceof Pattern ? n.content.size : n.content.length;
    if (n.kind === "other" && n.target) size = n.target.length;
    if (n.kind === "dir") {
      size = 4096;
      nlink = 2;
      for (const c of n.children.values()) if (this.nodes.get(c)?.kind === "dir") nlink++;
    }
    const rdev = n.kind === "other" ? n.rdev : 0;
    return {
      type: typeFromMode(n.mode),
      size,
      blocks: Math.ceil(size / 512),
      mtimeSec: n.mtimeSec,
      mtimeNsec: n.mtimeNsec,
      ctimeSec: n.mtimeSec + 1,
      ctimeNsec: 5,
      mode: n.mode & 0o7777,
      nlink,
      uid: n.uid,
      gid: n.gid,
      userName: "",
      groupName: "",
      linkName: "",
      // rdev is in new_encode_dev form: minor bits 0-7 and 20-31, major bits 8-19.
      devMajor: (rdev >>> 8) & 0xfff,
      devMinor: (rdev & 0xff) | ((rdev >>> 12) & 0xfff00),
      xattrs: NO_XATTRS,
    };
  }

  #entry(id: number): EntryReply {
    this.lookups.set(id, (this.lookups.get(id) ?? 0) + 1);
    return { nodeId: id, attr: this.attr(id), entryTtlMs: this.ttlMs, attrTtlMs: this.ttlMs };
  }

  /** Answered synchronously (like crfs's own lookups of loaded directories). */
  lookup(parent: number, name: Uint8Array): EntryReply | FuseError {
    this.#count("lookup");
    if (this.failLookup.has(key(name))) throw new Error("lookup exploded (test)");
    const id = this.#dir(parent).children.get(key(name));
    if (id === undefined) return FuseError.of(Errno.ENOENT);
    return this.#entry(id);
  }

  forget(nodeId: number, nlookup: number): void {
    this.#count("forget");
    this.lookups.set(nodeId, (this.lookups.get(nodeId) ?? 0) - nlookup);
  }

  getattr(nodeId: number): AttrReply {
    this.#count("getattr");
    return { attr: this.attr(nodeId), ttlMs: this.ttlMs };
  }

  readlink(nodeId: number): Promise<Uint8Array> {
    const n = this.#node(nodeId);
    if (n.kind !== "other" || !n.target) throw new FuseError(Errno.EINVAL);
    return Promise.resolve(n.target);
  }

  open(nodeId: number, _flags: number): Promise<OpenReply> {
    this.#count("open");
    const n = this.#node(nodeId);
    if (n.kind !== "file") throw new FuseError(Errno.EISDIR);
    return Promise.resolve({ fh: nodeId * 10, keepCache: !n.directIo, directIo: n.directIo });
  }

  async read(
    ...[nodeId, fh, offset, size, signal, into]: Parameters<FuseOps["read"]>
  ): Promise<Uint8Array> {
    this.#count("read");
    const n = this.#node(nodeId);
    if (n.kind !== "file") throw new FuseError(Errno.EISDIR);
    if (fh !== nodeId * 10) throw new Error(`wrong fh ${fh}`);
    if (n.gate) {
      this.#count("gated");
      // Wait for the gate, or for the caller to be interrupted (kernel INTERRUPT → abort).
      const aborted = new Promise<void>((_, reject) => {
        if (signal?.aborted) reject(signal.reason);
        signal?.addEventListener("abort", () => reject(signal.reason), { once: true });
      });
      aborted.catch(() => this.#count("aborted"));
      await Promise.race([n.gate, aborted]);
    }
    signal?.throwIfAborted();
    if (n.failRead !== undefined) throw n.failRead;
    if (n.content instanceof Pattern) return n.content.slice(offset, size, into);
    return n.content.subarray(offset, Math.min(n.content.length, offset + size));
  }

  opendir(nodeId: number): Promise<OpendirReply> {
    this.#dir(nodeId);
    return Promise.resolve({ fh: 7 });
  }

  /** Offsets: 0 → ".", 1 → "..", 2+i → the i-th child; each item's `next` is its index + 1. */
  readdir(nodeId: number, fh: number, offset: number, limit = Infinity): Promise<DirItem[]> {
    this.#count("readdir");
    if (fh !== 7) throw new Error(`wrong dir fh ${fh}`);
    const dir = this.#dir(nodeId);
    const out: DirItem[] = [];
    const total = dir.names.length + 2;
    for (let i = offset; i < total && out.length < limit; i++) {
      if (i === 0) out.push({ name: enc.encode("."), type: DT_DIR, ino: dir.id, next: 1 });
      else if (i === 1) {
        out.push({ name: enc.encode(".."), type: DT_DIR, ino: dir.parent, next: 2 });
      } else {
        const name = dir.names[i - 2];
        const id = dir.children.get(key(name))!;
        out.push({ name, type: dtFromMode(this.#node(id).mode), ino: id, next: i + 1 });
      }
    }
    return Promise.resolve(out);
  }

  getxattr(nodeId: number, name: Uint8Array): Uint8Array | FuseError {
    this.#count("getxattr");
    const v = this.#node(nodeId).xattrs.get(key(name));
    if (!v) return FuseError.of(Errno.ENODATA);
    return v;
  }

  listxattr(nodeId: number): Promise<Uint8Array[]> {
    const names = [...this.#node(nodeId).xattrs.keys()].map((k) =>
      Uint8Array.from(k, (c) => c.charCodeAt(0))
    );
    return Promise.resolve(names);
  }

  statfs(_nodeId: number): Promise<StatfsOut> {
    return Promise.resolve({
      blocks: 1000,
      bfree: 0,
      bavail: 0,
      files: this.nodes.size,
      ffree: 0,
      bsize: 4096,
      namelen: 255,
      frsize: 4096,
    });
  }
}
