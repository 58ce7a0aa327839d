/**
 * crfs's node tree served over FUSE: implements `FuseOps` (fs/fuse/ops.ts) on top of
 * {@link FsNode}s and the {@link InodeTable}. Content under digests is immutable, so entries and
 * attributes are cached by the kernel for a long time, negative lookups in immutable directories
 * too, and file pages are kept across opens; tags and listings are refreshed after the tag TTL.
 *
 * @module
 */
import { DT_DIR, dtOf } from "../format/file_attr.ts";
import { decodeName, encodeName } from "../format/names.ts";
import {
  type Answer,
  type AttrReply,
  type DirItem,
  type EntryChange,
  type EntryReply,
  Errno,
  FuseError,
  type FuseOps,
  type MaybePromise,
  type OpendirReply,
  type OpenReply,
  type StatfsOut,
} from "./fuse/ops.ts";
import { InodeTable, type InodeTableOptions } from "./inode_table.ts";
import { LruMap } from "./lru_map.ts";
import { type FsNode, NodeError } from "./node.ts";

/** Options of the filesystem. */
export interface FilesystemOptions {
  /** TTL for tags and listings, in ms. */
  tagTtlMs: number;
  /** TTL for immutable content, in ms. Default one day. */
  immutableTtlMs?: number;
  /** Logs a line per failed operation. */
  log?: (line: string) => void;
  /** Called once per file with a path inside its image, the first time it is read. */
  onFirstRead?: (path: string) => void;
  /** Bounds of the inode table (nodes kept for numbers the kernel does not hold). */
  inodes?: Omit<InodeTableOptions, "onDrop">;
}

const ERRNO: Record<NodeError["code"], number> = {
  ENOENT: Errno.ENOENT,
  EIO: Errno.EIO,
  ENOTDIR: Errno.ENOTDIR,
  EISDIR: Errno.EISDIR,
  EINVAL: Errno.EINVAL,
  EACCES: Errno.EACCES,
  EROFS: Errno.EROFS,
};

/**
 * Extended attributes tools ask of every file without listing first (`ls -l`: the SELinux label
 * and POSIX ACLs), which crfs has only where an image carries them. For a file without one the
 * answer is EOPNOTSUPP, not ENODATA: such tools then take the whole mount to have none and stop
 * asking (`ls -l` made two round trips to crfs per file before).
 */
const ASKED_OF_EVERY_FILE = new Set([
  "security.selinux",
  "system.posix_acl_access",
  "system.posix_acl_default",
]);
const DOT = new Uint8Array([0x2e]);
/** Directory listings kept for reads at later offsets (each is the directory's own children). */
const MAX_LISTINGS = 512;
/**
 * A directory offset is `listing id × 2^32 + position`: each read from offset 0 takes a listing
 * of its own, so two readers of a directory that changes meanwhile (a tag list) each go on with
 * the listing they started, and a `telldir` offset names its listing. Ids wrap below 2^20 (offsets
 * stay below 2^52, exact in a double).
 */
const LISTING_UNIT = 2 ** 32;
const MAX_LISTING_ID = 2 ** 20;
const DOTDOT = new Uint8Array([0x2e, 0x2e]);

/** crfs's filesystem, ready to be mounted. */
export class CrfsFilesystem implements FuseOps {
  readonly inodes: InodeTable;
  readonly #tagTtl: number;
  readonly #immutableTtl: number;
  readonly #log: (line: string) => void;
  /**
   * Listings being read, by listing id (READDIR carries no handle: directories are opened
   * without asking us; the id is in the offset, see {@link LISTING_UNIT}): the latest few hundred.
   */
  readonly #listings = new LruMap<number, [string, FsNode][]>(MAX_LISTINGS);
  /** The listings of each directory, to let them go with its inode. */
  readonly #listingsOf = new Map<number, Set<number>>();
  #nextListing = 1;
  /** A directory's parent (the one it was last reached through), for its `..` entry. */
  readonly #parents = new Map<number, number>();
  readonly #onFirstRead?: (path: string) => void;
  readonly #seen = new Set<string>();

  constructor(root: FsNode, opts: FilesystemOptions) {
    this.inodes = new InodeTable(root, {
      ...opts.inodes,
      onDrop: (ino) => {
        this.#parents.delete(ino);
        this.#dropListings(ino);
      },
    });
    this.#tagTtl = opts.tagTtlMs;
    this.#immutableTtl = opts.immutableTtlMs ?? 86_400_000;
    this.#log = opts.log ?? ((l) => console.error(l));
    this.#onFirstRead = opts.onFirstRead;
  }

  #ttl(n: FsNode): number {
    if (n.volatility === "volatile") return 0;
    return n.volatility === "immutable" ? this.#immutableTtl : this.#tagTtl;
  }

  #node(ino: number): FsNode {
    const n = this.inodes.get(ino);
    if (!n) throw new FuseError(Errno.ENOENT, `unknown node ${ino}`);
    return n;
  }

  /**
   * Runs a node operation, mapping node errors to errnos and logging unexpected failures. An
   * operation that answers synchronously is answered synchronously (no promise, no microtask
   * turns: the FUSE loop replies at once).
   */
  #guard<T>(what: string, f: () => MaybePromise<T>): MaybePromise<T> {
    let r: MaybePromise<T>;
    try {
      r = f();
    } catch (e) {
      throw this.#fuseError(what, e);
    }
    if (r instanceof Promise) return r.catch((e) => Promise.reject(this.#fuseError(what, e)));
    return r;
  }

  #fuseError(what: string, e: unknown): FuseError {
    if (e instanceof FuseError) return e;
    if (e instanceof NodeError) {
      // Node errors were logged where they arose.
      return new FuseError(ERRNO[e.code], e.message);
    }
    this.#log(`crfs: ${what}: ${(e as Error).message}`);
    return new FuseError(Errno.EIO, (e as Error).message);
  }

  /**
   * The entry of `child` under `dir`. The name's binding is only as stable as the directory's
   * listing (a tag under a repository may name another image after the tag TTL, even though
   * that image's own directory is immutable); the attributes are as stable as the node.
   */
  #entry(parent: number, dir: FsNode, child: FsNode): EntryReply {
    const ino = this.#assign(parent, child);
    // Every entry reply is a lookup the kernel holds until it forgets it.
    this.inodes.lookedUp(ino);
    const ttl = this.#ttl(child);
    return {
      nodeId: ino,
      attr: child.attr(),
      entryTtlMs: Math.min(ttl, this.#ttl(dir)),
      attrTtlMs: ttl,
    };
  }

  /** The inode number of `child`, reached from directory `parent`. */
  #assign(parent: number, child: FsNode): number {
    const ino = this.inodes.assign(child);
    if (child.list && ino !== parent) this.#parents.set(ino, parent);
    return ino;
  }

  lookup(parent: number, name: Uint8Array): Answer<EntryReply> {
    return this.#guard("lookup", async () => {
      const dir = this.#node(parent);
      if (!dir.lookup) throw new FuseError(Errno.ENOTDIR);
      let child = await dir.lookup(decodeName(name));
      if (child?.snapshot) child = await child.snapshot();
      if (!child) {
        // A negative entry: in immutable directories the kernel may remember the absence.
        if (dir.volatility === "immutable") {
          return {
            nodeId: 0,
            attr: dir.attr(),
            entryTtlMs: this.#immutableTtl,
            attrTtlMs: 0,
          };
        }
        return FuseError.of(Errno.ENOENT);
      }
      return this.#entry(parent, dir, child);
    });
  }

  /** The kernel dropped `nlookup` lookups of `nodeId` (FORGET, BATCH_FORGET). */
  forget(nodeId: number, nlookup: number): void {
    this.inodes.forget(nodeId, nlookup);
  }

  getattr(nodeId: number): MaybePromise<AttrReply> {
    return this.#guard("getattr", () => {
      const n = this.#node(nodeId);
      return { attr: n.attr(), ttlMs: this.#ttl(n) };
    });
  }

  readlink(nodeId: number): MaybePromise<Uint8Array> {
    return this.#guard("readlink", () => {
      const a = this.#node(nodeId).attr();
      if (a.type !== "symlink") throw new FuseError(Errno.EINVAL);
      return encodeName(a.linkName);
    });
  }

  /**
   * Always ENOSYS: the kernel then opens and releases files without asking us (its "no open"
   * mode, keeping the page cache), which halves the requests per file read. Nothing is lost:
   * the mount is read-only, every file's content is fixed for its inode (status files take a
   * new inode per lookup), and reads need no handle.
   */
  open(_nodeId: number, _flags: number): Promise<OpenReply> {
    return Promise.reject(new FuseError(Errno.ENOSYS));
  }

  read(
    nodeId: number,
    _fh: number,
    offset: number,
    size: number,
    signal?: AbortSignal,
    into?: Uint8Array,
  ): MaybePromise<Uint8Array> {
    return this.#guard("read", () => {
      const n = this.#node(nodeId);
      if (!n.read) throw new FuseError(Errno.EISDIR);
      if (this.#onFirstRead && n.path !== undefined && !this.#seen.has(n.path)) {
        this.#seen.add(n.path);
        this.#onFirstRead(n.path);
      }
      return n.read(offset, size, signal, into as Uint8Array<ArrayBuffer> | undefined);
    });
  }

  /**
   * ENOTDIR for a non-directory, else always ENOSYS: the kernel then opens and releases
   * directories without asking us (its "no opendir" mode), so a walk costs two round trips
   * fewer per directory (OPENDIR and RELEASEDIR were half of a cold `find`'s requests). Reads
   * need no handle: {@link readdir} keeps the listing per directory.
   */
  opendir(nodeId: number): MaybePromise<OpendirReply> {
    return this.#guard("opendir", () => {
      const n = this.#node(nodeId);
      if (!n.list) throw new FuseError(Errno.ENOTDIR);
      throw new FuseError(Errno.ENOSYS);
    });
  }

  /**
   * Items of directory `nodeId` from offset `offset`. Offset 0 lists the directory afresh;
   * later offsets continue that listing (`fh` is not needed: the kernel opens directories
   * without asking, see {@link opendir}).
   */
  readdir(nodeId: number, _fh: number, offset: number, limit = Infinity): MaybePromise<DirItem[]> {
    try {
      const n = this.#node(nodeId);
      const at = offset % LISTING_UNIT;
      // A listing of its own from offset 0; later offsets go on with the listing they name (one
      // let go of meanwhile is listed afresh under a new id).
      const id = Math.floor(offset / LISTING_UNIT);
      const items = offset === 0 ? undefined : this.#listings.get(id);
      if (items) return this.#dirItems(nodeId, items, at, limit, id);
      if (n.listNow) {
        const now = n.listNow();
        return this.#dirItems(nodeId, now, at, limit, this.#keepListing(nodeId, now));
      }
      return n.list!().then((items) =>
        this.#dirItems(nodeId, items, at, limit, this.#keepListing(nodeId, items))
      ).catch((e) => Promise.reject(this.#fuseError("readdir", e)));
    } catch (e) {
      throw this.#fuseError("readdir", e);
    }
  }

  /** The items of a listing from directory offset `offset`, at most `limit`. */
  /** Keeps `items` as a new listing of directory `nodeId`; its id. */
  #keepListing(nodeId: number, items: [string, FsNode][]): number {
    const id = this.#nextListing;
    this.#nextListing = id + 1 < MAX_LISTING_ID ? id + 1 : 1;
    this.#listings.set(id, items);
    let ids = this.#listingsOf.get(nodeId);
    if (!ids) this.#listingsOf.set(nodeId, ids = new Set());
    ids.add(id);
    // Ids whose listing the LRU let go of are forgotten here too (bounded per directory).
    if (ids.size > 8) { for (const old of ids) if (!this.#listings.has(old)) ids.delete(old); }
    return id;
  }

  #dropListings(nodeId: number): void {
    for (const id of this.#listingsOf.get(nodeId) ?? []) this.#listings.delete(id);
    this.#listingsOf.delete(nodeId);
  }

  #dirItems(
    nodeId: number,
    items: [string, FsNode][],
    offset: number,
    limit: number,
    listing: number,
  ): DirItem[] {
    // Positions: 0 is ".", 1 is "..", 2 + i the i-th child; an item's `next` is its position + 1,
    // in the listing's offsets (see LISTING_UNIT).
    const base = listing * LISTING_UNIT;
    const out: DirItem[] = [];
    if (offset === 0 && limit > 0) {
      out.push({ name: DOT, type: DT_DIR, ino: nodeId, next: base + 1 });
    }
    if (offset <= 1 && out.length < limit) {
      const up = this.#parents.get(nodeId) ?? nodeId;
      out.push({ name: DOTDOT, type: DT_DIR, ino: up, next: base + 2 });
    }
    const start = Math.max(offset, 2) - 2;
    const end = Math.min(items.length, start + limit - out.length);
    for (let i = start; i < end; i++) {
      const [name, child] = items[i];
      const ino = this.#assign(nodeId, child);
      out.push({
        name: encodeName(name),
        type: dtOf(child.attr().type),
        ino,
        next: base + i + 3,
      });
    }
    return out;
  }

  /**
   * The entry of an item `readdir` just listed (and so numbered): only the lookup is counted
   * here, without a closure or a second key lookup per entry (a cold walk asks this of every
   * entry).
   */
  readdirplusEntry(parent: number, item: DirItem): EntryReply {
    try {
      const dir = this.#node(parent);
      const child = this.#node(item.ino);
      const attr = child.attr();
      const ttl = this.#ttl(child);
      this.inodes.lookedUp(item.ino);
      return { nodeId: item.ino, attr, entryTtlMs: Math.min(ttl, this.#ttl(dir)), attrTtlMs: ttl };
    } catch (e) {
      throw this.#fuseError("readdirplus", e);
    }
  }

  /** Never asked by the kernel (see {@link opendir}); lets the listing go. */
  releasedir(nodeId: number, _fh: number): void {
    this.#dropListings(nodeId);
  }

  getxattr(nodeId: number, name: Uint8Array): Answer<Uint8Array> {
    return this.#guard("getxattr", () => {
      const key = decodeName(name);
      const v = this.#node(nodeId).attr().xattrs.get(key);
      if (v === undefined) {
        return FuseError.of(ASKED_OF_EVERY_FILE.has(key) ? Errno.EOPNOTSUPP : Errno.ENODATA);
      }
      return v;
    });
  }

  listxattr(nodeId: number): MaybePromise<Uint8Array[]> {
    return this.#guard("listxattr", () => {
      const x = this.#node(nodeId).attr().xattrs;
      return [...x.keys()].map(encodeName);
    });
  }

  /** Name changes go to the directory's `change` (only a writable mount asks); EROFS without. */
  changeEntry(change: EntryChange, parent: number, name: Uint8Array): MaybePromise<void> {
    return this.#guard("changeEntry", async () => {
      const dir = this.#node(parent);
      if (!dir.change) throw new FuseError(Errno.EROFS);
      await dir.change(change, decodeName(name));
    });
  }

  statfs(): Promise<StatfsOut> {
    return Promise.resolve({
      blocks: 0,
      bfree: 0,
      bavail: 0,
      files: this.inodes.size,
      ffree: 0,
      bsize: 4096,
      namelen: 255,
      frsize: 4096,
    });
  }
}
