/**
 * The file tree a TOC describes: one {@link TOCNode} per file, directories with their children,
 * hardlinks resolved to the node of their target (so every name of a file is the same node and
 * reports the true link count), chunk lists with their compressed extents, implicit parent
 * directories only where the tar had none, and every structural check a hostile TOC needs.
 *
 * @module
 */
import { type FileAttr, type FileType, NO_XATTRS } from "./file_attr.ts";
import { cleanPath, encodeName } from "./names.ts";
import {
  cachedModTime,
  checkTOCEntry,
  NO_PREFETCH_LANDMARK,
  parseTOCUnchecked,
  PREFETCH_LANDMARK,
  type TOC,
  TOC_TAR_NAME,
  type TOCEntry,
  TOCError,
} from "./toc.ts";

/** One piece of a regular file's content, stored as its own gzip member. */
export interface Chunk {
  /** Offset of the chunk's gzip member in the blob. */
  offset: number;
  /** End of the chunk's compressed extent (the next member boundary the TOC knows). */
  end: number;
  /** Offset of the chunk within the file's content. */
  chunkOffset: number;
  /** Uncompressed size of the chunk. */
  chunkSize: number;
  /** Offset of the chunk's bytes inside the decompressed member (eStargz `innerOffset`). */
  innerOffset: number;
  /** `sha256:…` of the chunk's uncompressed bytes, when the TOC has it. */
  digest?: string;
  /** The file the chunk belongs to. */
  node: TOCNode;
}

/**
 * A file, directory or special file of one stargz blob: its {@link FileAttr} (the node is the
 * attribute record itself, never copied) and where its content is. A node holds no name of its
 * own (its names are the keys of its directories' `children`; {@link TOCIndex.pathOf} gives
 * one): a layer of 10,000 entries kept every path twice otherwise.
 */
export interface TOCNode extends FileAttr {
  /** `sha256:…` of the whole content (regular files), when known. */
  digest?: string;
  /**
   * The chunks of a regular file with content: the one chunk of most files (no array per
   * file), or several in file order; undefined for no content. {@link chunksOf} gives a list.
   */
  content: Chunk | Chunk[] | undefined;
  /** Children by name, in TOC order (directories only). */
  children?: Map<string, TOCNode>;
  /** True when the directory was implied by a deeper name, not in the TOC itself. */
  implicit: boolean;
  /** Index of the node's defining TOC entry (-1 for implicit directories). */
  entryIndex: number;
}

/** Limits applied while building the tree. */
export interface IndexLimits {
  /** Deepest path accepted (components). Default 1024. */
  maxDepth?: number;
}

/** The tree of a TOC plus what the reader needs to locate content. */
export interface TOCIndex {
  root: TOCNode;
  /**
   * Every node by its clean path (hardlink names map to their target's node). Built from the
   * tree on first use (opening a layer needs none of it); {@link nodeAt} finds one path without
   * it.
   */
  readonly byPath: Map<string, TOCNode>;
  /** Offset of the `.prefetch.landmark` member, or undefined. */
  prefetchLandmark?: number;
  /** True when the blob carries `.no.prefetch.landmark`. */
  noPrefetchLandmark: boolean;
  /** Problems the index contained rather than rejected (e.g. a hardlink to a missing file). */
  warnings: string[];
  /** Every chunk of every file still in the tree (each names its file), in blob order. */
  chunks: Chunk[];
  /**
   * A clean path of `node` in the tree (`""` for the root; for a file with several names, one
   * of them), or undefined when it is not in the tree. Paths are worked out from the tree on
   * first use (error messages, recording what a workload reads) and then remembered.
   */
  pathOf(node: TOCNode): string | undefined;
}

/** The chunk list of nodes without content (shared, never modified). */
const NO_CHUNKS: readonly Chunk[] = Object.freeze([]);

/**
 * The chunks of `node` in file order (none for a node without content). A file of one chunk
 * gets a fresh list of it (files keep no array of their own for it).
 */
export function chunksOf(node: TOCNode): readonly Chunk[] {
  const c = node.content;
  return c === undefined ? NO_CHUNKS : Array.isArray(c) ? c : [c];
}

function newNode(type: FileType): TOCNode {
  return {
    digest: undefined,
    type,
    mode: 0,
    uid: 0,
    gid: 0,
    userName: "",
    groupName: "",
    size: 0,
    mtimeSec: 0,
    mtimeNsec: 0,
    linkName: "",
    devMajor: 0,
    devMinor: 0,
    xattrs: NO_XATTRS,
    content: undefined,
    nlink: 1,
    children: undefined,
    implicit: false,
    entryIndex: -1,
  };
}

function newDir(implicit: boolean): TOCNode {
  const dir = newNode("dir");
  dir.mode = 0o755;
  dir.nlink = 2;
  dir.children = new Map();
  dir.implicit = implicit;
  return dir;
}

function decodeXattrs(x: Record<string, string>, where: () => string): Map<string, Uint8Array> {
  const m = new Map<string, Uint8Array>();
  for (const [k, v] of Object.entries(x)) {
    try {
      const bin = atob(v);
      const b = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) b[i] = bin.charCodeAt(i);
      m.set(k, b);
    } catch {
      throw new TOCError(`${where()}: xattr ${JSON.stringify(k)} is not valid base64`);
    }
  }
  return m.size > 0 ? m : NO_XATTRS;
}

/**
 * Builds the tree of `toc`. `tocOffset` bounds every content offset (content lies before the
 * TOC member). Throws {@link TOCError} for structural problems that would make reads wrong:
 * names with `..`, offsets outside the blob, chunks that do not tile their file, two chunks at
 * one place (chunks may share a member at distinct, non-overlapping `innerOffset`s).
 */
export function buildIndex(toc: TOC, tocOffset: number, limits: IndexLimits = {}): TOCIndex {
  return indexEntries(toc.entries, false, tocOffset, limits);
}

/**
 * Parses TOC JSON bytes and builds their tree in one pass over the entries, each checked as
 * {@link parseTOC} checks it just before it is indexed: what `parseTOC` then
 * {@link buildIndex} give, with the same errors (a TOC with several faults may report another
 * one first).
 *
 * @example
 * ```ts
 * const { toc, index } = indexTOC(json, footer.tocOffset);
 * const hosts = nodeAt(index.root, "etc/hosts");
 * ```
 */
export function indexTOC(
  json: Uint8Array,
  tocOffset: number,
  limits: IndexLimits = {},
): { toc: TOC; index: TOCIndex } {
  const toc = parseTOCUnchecked(json);
  return { toc, index: indexEntries(toc.entries, true, tocOffset, limits) };
}

function indexEntries(
  entries: readonly TOCEntry[],
  check: boolean,
  tocOffset: number,
  limits: IndexLimits,
): TOCIndex {
  const maxDepth = limits.maxDepth ?? 1024;
  const root = newDir(true);
  const warnings: string[] = [];
  let prefetchLandmark: number | undefined;
  let noPrefetchLandmark = false;
  let last: TOCNode | undefined; // the reg node that following `chunk` entries belong to
  let lastName = "";
  const allChunks: Chunk[] = []; // in TOC order
  const boundaries: number[] = []; // every member offset the TOC names
  const files: TOCNode[] = []; // regular files, in TOC order (some may be replaced later)
  const filePaths: string[] = []; // their paths, for messages
  const names: NameMemory = {
    users: new OwnerNames(),
    groups: new OwnerNames(),
  };

  const where = (i: number, e: TOCEntry) =>
    `TOC entry ${i} (${JSON.stringify(e.name.slice(0, 200))})`;
  // The entry being indexed, for messages (no closure per entry: this loop runs for every
  // entry of every TOC on the way to a container's first byte).
  let at = 0;
  let atEntry: TOCEntry = { name: "", type: "dir" };
  const whereNow = () => where(at, atEntry);
  // The directory the previous entry went into (entries come directory by directory), valid
  // while no directory has left the tree since (`dirsDropped` unchanged).
  let lastDirPath = "";
  let lastDir = root;
  let lastDirDropped = 0;
  let dirsDropped = 0;

  // The directory at a clean path, made (implicit) where missing: walked from the root, one
  // name at a time (a directory change, not every entry: see `lastDir`).
  const ensureDir = (path: string, i: number): TOCNode => {
    let dir = root;
    let start = 0;
    while (start < path.length) {
      let end = path.indexOf("/", start);
      if (end < 0) end = path.length;
      const name = path.slice(start, end);
      let next = dir.children!.get(name);
      if (next === undefined) {
        next = newDir(true);
        attach(dir, name, next);
      } else if (next.type !== "dir") {
        throw new TOCError(
          `TOC entry ${i}: ${
            JSON.stringify(path.slice(0, end))
          } is used as a directory but is a ${next.type}`,
        );
      }
      dir = next;
      start = end + 1;
    }
    return dir;
  };

  const detach = (parent: TOCNode, name: string) => {
    const old = parent.children!.get(name);
    if (!old) return;
    parent.children!.delete(name);
    if (old.type === "dir") {
      dirsDropped++;
      parent.nlink--;
      // The files of the replaced subtree lose a name each.
      const stack = [old];
      while (stack.length) {
        const d = stack.pop()!;
        for (const c of d.children!.values()) {
          if (c.type === "dir") stack.push(c);
          else c.nlink--;
        }
      }
    } else old.nlink--;
  };

  const attach = (parent: TOCNode, name: string, node: TOCNode) => {
    detach(parent, name);
    parent.children!.set(name, node);
    if (node.type === "dir") parent.nlink++;
  };

  for (let i = 0; i < entries.length; i++) {
    const e = check ? checkTOCEntry(entries[i], i) : entries[i];
    at = i;
    atEntry = e;
    const cleaned = cleanPath(e.name);
    if (typeof cleaned !== "string") {
      const why = cleaned.problem === "dotdot" ? "has a '..' component" : "contains a NUL byte";
      throw new TOCError(`${where(i, e)}: name ${why}`);
    }
    const path = cleaned;
    if (path.length > maxDepth && path.split("/").length > maxDepth) {
      throw new TOCError(`${where(i, e)}: path too deep`);
    }

    if ((e.type === "reg" || e.type === "chunk") && (e.offset ?? 0) > 0) boundaries.push(e.offset!);
    if (e.type === "chunk") {
      if (!last || path !== lastName) {
        throw new TOCError(`${where(i, e)}: chunk entry does not follow its file`);
      }
      const c = makeChunk(e, whereNow, tocOffset, last);
      const had = last.content!;
      if (Array.isArray(had)) had.push(c);
      else last.content = [had, c];
      allChunks.push(c);
      continue;
    }
    last = undefined;

    if (path === TOC_TAR_NAME) continue; // the TOC describing itself (some writers list it)
    if (path === PREFETCH_LANDMARK || path === NO_PREFETCH_LANDMARK) {
      if (path === PREFETCH_LANDMARK) prefetchLandmark = e.offset ?? 0;
      else noPrefetchLandmark = true;
      continue;
    }
    if (path === "") {
      // The root's own entry (tar "./"): take its attributes.
      if (e.type !== "dir") throw new TOCError(`${where(i, e)}: the root is not a directory`);
      applyAttrs(root, e, whereNow, names);
      root.implicit = false;
      root.entryIndex = i;
      continue;
    }
    const slash = path.lastIndexOf("/");
    let parent: TOCNode;
    if (
      lastDirDropped === dirsDropped && slash === lastDirPath.length &&
      (slash < 0 ? lastDirPath === "" : path.startsWith(lastDirPath))
    ) parent = lastDir;
    else {
      const parentPath = slash < 0 ? "" : path.slice(0, slash);
      parent = ensureDir(parentPath, i);
      lastDirPath = parentPath;
      lastDir = parent;
      lastDirDropped = dirsDropped;
    }
    const name = slash < 0 ? path : path.slice(slash + 1);

    if (e.type === "hardlink") {
      const target = cleanPath(e.linkName ?? "");
      const t = typeof target === "string" ? nodeAt(root, target) : undefined;
      if (!t || typeof target !== "string") {
        warnings.push(`${where(i, e)}: hardlink to missing ${JSON.stringify(e.linkName)} omitted`);
        continue;
      }
      if (t.type === "dir") {
        warnings.push(`${where(i, e)}: hardlink to a directory omitted`);
        continue;
      }
      if (t === parent.children!.get(name)) continue; // a link to itself changes nothing
      attach(parent, name, t);
      t.nlink++;
      continue;
    }

    if (e.type === "dir") {
      const existing = parent.children!.get(name);
      if (existing && existing.type === "dir") {
        applyAttrs(existing, e, whereNow, names);
        existing.implicit = false;
        existing.entryIndex = i;
        continue;
      }
      const dir = newDir(false);
      applyAttrs(dir, e, whereNow, names);
      dir.entryIndex = i;
      attach(parent, name, dir);
      continue;
    }

    const node = newNode(e.type as FileType);
    node.entryIndex = i;
    if (e.type === "reg") {
      files.push(node);
      filePaths.push(path);
    }
    applyAttrs(node, e, whereNow, names);
    if (e.type === "reg") {
      node.size = e.size ?? 0;
      node.digest = e.digest || undefined;
      if (node.size > 0) {
        const c = makeChunk(e, whereNow, tocOffset, node);
        // One string for the digest a file of one chunk carries twice (eStargz).
        if (c.digest !== undefined && c.digest === node.digest) c.digest = node.digest;
        node.content = c;
        allChunks.push(c);
        last = node;
        lastName = path;
      }
    } else if (e.type === "symlink") {
      node.linkName = e.linkName ?? "";
      node.size = encodeName(node.linkName).length;
    }
    attach(parent, name, node);
  }

  // Chunks must tile each file exactly, in order. A missing chunkSize means "up to the next
  // chunk, or the end of the file" (google/crfs omits it on the last chunk).
  // A file replaced by a later entry of the same name, with no hardlink keeping it, has no name
  // left (nlink 0) and is no longer part of the tree.
  // The same pass lists every chunk of the live files with its file (in TOC order, which
  // writers make blob order: sorted below only when it is not).
  const chunks: Chunk[] = [];
  let inOrder = true;
  let prev: Chunk | undefined;
  for (let f = 0; f < files.length; f++) {
    const node = files[f];
    if (node.nlink <= 0 || node.size === 0) continue;
    let expect = 0;
    const cs = chunksOf(node);
    for (let k = 0; k < cs.length; k++) {
      const c = cs[k];
      if (c.chunkSize === 0) {
        c.chunkSize = (k + 1 < cs.length ? cs[k + 1].chunkOffset : node.size) - c.chunkOffset;
      }
      if (c.chunkOffset !== expect) {
        throw new TOCError(
          `TOC: chunks of ${
            JSON.stringify(filePaths[f])
          } do not tile the file (gap or overlap at ${expect})`,
        );
      }
      expect += c.chunkSize;
    }
    if (expect !== node.size) {
      throw new TOCError(
        `TOC: chunks of ${JSON.stringify(filePaths[f])} cover ${expect} of ${node.size} bytes`,
      );
    }
    // A file of one chunk without a chunk digest (zstd:chunked from containers/storage, legacy
    // stargz): the file's digest is that chunk's, so every read of it is verified.
    if (cs.length === 1 && !cs[0].digest && node.digest) cs[0].digest = node.digest;
    for (let k = 0; k < cs.length; k++) {
      const chunk = cs[k];
      if (inOrder && prev !== undefined && before(prev, chunk) > 0) inOrder = false;
      prev = chunk;
      chunks.push(chunk);
    }
  }
  computeExtents(allChunks, boundaries, tocOffset);
  if (!inOrder) chunks.sort(before);
  checkSharedMembers(chunks);
  let byPath: Map<string, TOCNode> | undefined;
  let paths: Map<TOCNode, string> | undefined;
  return {
    root,
    get byPath() {
      return byPath ??= pathsOf(root);
    },
    pathOf(node: TOCNode): string | undefined {
      paths ??= namesOf(byPath ?? pathsOf(root));
      return paths.get(node);
    },
    prefetchLandmark,
    noPrefetchLandmark,
    warnings,
    chunks,
  };
}

/**
 * The node at clean path `path` under `root` (`""` is the root itself), or undefined: walked
 * one name at a time through the directories' children.
 */
export function nodeAt(root: TOCNode, path: string): TOCNode | undefined {
  let node: TOCNode | undefined = root;
  let start = 0;
  while (start < path.length) {
    if (node.children === undefined) return undefined;
    let end = path.indexOf("/", start);
    if (end < 0) end = path.length;
    node = node.children.get(path.slice(start, end));
    if (node === undefined) return undefined;
    start = end + 1;
  }
  return node;
}

/** Every name of the tree under `root` with its node, directories before their children. */
function pathsOf(root: TOCNode): Map<string, TOCNode> {
  const out = new Map<string, TOCNode>([["", root]]);
  const stack: TOCNode[] = [root];
  const stackPaths: string[] = [""];
  while (stack.length) {
    const d = stack.pop()!;
    const at = stackPaths.pop()!;
    for (const [name, c] of d.children!) {
      const path = at === "" ? name : `${at}/${name}`;
      out.set(path, c);
      if (c.type === "dir") {
        stack.push(c);
        stackPaths.push(path);
      }
    }
  }
  return out;
}

/** One name of each node of `byPath` (the first it lists). */
function namesOf(byPath: Map<string, TOCNode>): Map<TOCNode, string> {
  const out = new Map<TOCNode, string>();
  for (const [path, node] of byPath) if (!out.has(node)) out.set(node, path);
  return out;
}

/** Blob order of two chunks (negative when `a` comes first). */
function before(a: Chunk, b: Chunk): number {
  return a.offset - b.offset || a.innerOffset - b.innerOffset;
}

function makeChunk(e: TOCEntry, where: () => string, tocOffset: number, node: TOCNode): Chunk {
  const offset = e.offset ?? 0;
  if (offset <= 0 || offset >= tocOffset) {
    throw new TOCError(`${where()}: content offset ${offset} lies outside the blob's data`);
  }
  return {
    offset,
    end: 0,
    chunkOffset: e.chunkOffset ?? 0,
    chunkSize: e.chunkSize ?? 0,
    innerOffset: e.innerOffset ?? 0,
    digest: e.chunkDigest || undefined,
    node,
  };
}

/**
 * Owner names by id: writers leave a name out when it is the same as last time for that id. The
 * map is written only when the name or id changes (entries mostly repeat the previous owner).
 */
class OwnerNames {
  readonly #byId = new Map<number, string>();
  #lastName = "";
  #lastId = -1;

  /** The name of owner `id`: `given`, remembered, or the last one given for `id` (else ""). */
  name(id: number, given: string | undefined): string {
    if (!given) return this.#byId.get(id) ?? "";
    if (given !== this.#lastName || id !== this.#lastId) {
      this.#byId.set(id, given);
      this.#lastName = given;
      this.#lastId = id;
    }
    return given;
  }
}

/** The user and group names of one TOC. */
interface NameMemory {
  users: OwnerNames;
  groups: OwnerNames;
}

function applyAttrs(node: TOCNode, e: TOCEntry, where: () => string, names: NameMemory): void {
  node.mode = (e.mode ?? (e.type === "dir" ? 0o755 : 0)) & 0o7777;
  node.uid = e.uid ?? 0;
  node.gid = e.gid ?? 0;
  node.userName = names.users.name(node.uid, e.userName);
  node.groupName = names.groups.name(node.gid, e.groupName);
  const t = e.modtime ? cachedModTime(e.modtime) : null;
  node.mtimeSec = t?.sec ?? 0;
  node.mtimeNsec = t?.nsec ?? 0;
  node.devMajor = e.devMajor ?? 0;
  node.devMinor = e.devMinor ?? 0;
  node.xattrs = e.xattrs ? decodeXattrs(e.xattrs, where) : NO_XATTRS;
}

/**
 * Chunks (in blob order) that share a member must sit at distinct places inside it: the same
 * `offset` and `innerOffset` twice (a TOC entry copied), or overlapping bytes, are rejected.
 */
function checkSharedMembers(chunks: readonly Chunk[]): void {
  for (let i = 1; i < chunks.length; i++) {
    const a = chunks[i - 1];
    const b = chunks[i];
    if (a.offset !== b.offset) continue;
    if (a.innerOffset === b.innerOffset) {
      const inner = a.innerOffset ? ` (inner offset ${a.innerOffset})` : "";
      throw new TOCError(`TOC: two entries share the blob offset ${a.offset}${inner}`);
    }
    if (a.innerOffset + a.chunkSize > b.innerOffset) {
      throw new TOCError(`TOC: chunks overlap inside the member at blob offset ${a.offset}`);
    }
  }
}

/**
 * Gives every chunk the end of its compressed extent: the next larger member offset the TOC
 * knows, or the TOC's own offset. Chunks at one offset share that member (eStargz
 * `innerOffset`).
 */
function computeExtents(chunks: Chunk[], boundaries: number[], tocOffset: number): void {
  // Searched for the first offset greater than a chunk's: duplicates do no harm, and the list is
  // ascending as it comes when writers put content in TOC order (sorted otherwise).
  let ascending = true;
  for (let i = 1; i < boundaries.length && ascending; i++) {
    if (boundaries[i] < boundaries[i - 1]) ascending = false;
  }
  const offsets: ArrayLike<number> = ascending ? boundaries : Float64Array.from(boundaries).sort();
  const n = offsets.length;
  let lo = 0; // every offset before `lo` is ≤ the current chunk's
  let prev = -1;
  for (let k = 0; k < chunks.length; k++) {
    const c = chunks[k];
    const at = c.offset;
    if (at < prev) lo = 0;
    prev = at;
    // Walked forward a few steps while chunks come in blob order, searched for otherwise.
    for (let steps = 0; lo < n && offsets[lo] <= at && steps < 8; steps++) lo++;
    if (lo < n && offsets[lo] <= at) {
      let hi = n;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (offsets[mid] <= at) lo = mid + 1;
        else hi = mid;
      }
    }
    c.end = lo < n ? offsets[lo] : tocOffset;
  }
}
