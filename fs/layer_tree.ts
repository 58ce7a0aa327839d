/**
 * One layer as a file tree (`layers/…/sha256-<layer>/`), served from its stargz reader. The view
 * is in overlayfs form, so that `mount -t overlay` over layer directories gives the merged
 * image: an OCI whiteout `.wh.x` appears as a character device 0/0 named `x`, and a directory
 * holding `.wh..wh..opq` carries `trusted.overlay.opaque=y` with the marker itself hidden.
 * Format details (`stargz.index.json`, landmarks) never appear.
 *
 * @module
 */
import type { StargzReader } from "../format/reader.ts";
import type { TOCNode } from "../format/toc_index.ts";
import { type FileAttr, NO_XATTRS } from "../format/file_attr.ts";
import { type FsNode, NodeError } from "./node.ts";

/** Prefix of OCI whiteout names. */
export const WHITEOUT_PREFIX = ".wh.";
/** Name of the OCI opaque-directory marker. */
export const OPAQUE_MARKER = ".wh..wh..opq";
/** The xattr overlayfs reads to treat a directory as opaque. */
export const OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque";

/**
 * The key of a non-directory TOC node of layer `id`: the file's identity, not one of its names.
 * A file reached through a hardlink is the node of the hardlink's target, whose `path` is the
 * target's first name, and a later entry may give that name to another file (GNU tar appending,
 * writers that keep both entries): keys from paths would then give two files one inode. The
 * defining TOC entry's index names the file for as long as the blob is the same.
 */
export function tocFileKey(id: string, n: TOCNode): string {
  return `lfile:${id}:${n.entryIndex}`;
}

/**
 * Whether a whiteout names something: `.wh..` and `.wh...` would hide `.` and `..`, which no
 * layer can remove, so they are ignored (never shown, never hiding anything).
 */
export function whiteoutHides(hidden: string): boolean {
  return hidden !== "" && hidden !== "." && hidden !== "..";
}

/**
 * A TOC-backed non-directory: its attributes are the TOC node itself. One small object with its
 * operations on the prototype (no closures per file), as a cold walk builds one per entry.
 */
class TocFileNode implements FsNode {
  readonly volatility = "immutable";
  constructor(readonly key: string, readonly toc: TOCNode) {}
  attr(): FileAttr {
    return this.toc;
  }
  get path(): string {
    return this.toc.path;
  }
}

/** A TOC-backed regular file: {@link TocFileNode} that reads its bytes from the layer. */
class TocRegularFileNode extends TocFileNode {
  constructor(key: string, toc: TOCNode, readonly reader: StargzReader, readonly where: string) {
    super(key, toc);
  }
  async read(
    offset: number,
    length: number,
    signal?: AbortSignal,
    into?: Uint8Array<ArrayBuffer>,
  ): Promise<Uint8Array> {
    try {
      return await this.reader.read(this.toc, offset, length, signal, into);
    } catch (e) {
      throw new NodeError("EIO", `${this.where}/${this.toc.path}: ${(e as Error).message}`);
    }
  }
}

/** Node operations shared by the layer and merged views for TOC-backed files. */
export function tocFileNode(key: string, reader: StargzReader, n: TOCNode, where: string): FsNode {
  return n.type === "reg" ? new TocRegularFileNode(key, n, reader, where) : new TocFileNode(key, n);
}

/** The root of one layer in overlayfs form. `id` names the layer (its digest) in keys. */
export function layerRoot(reader: StargzReader, id: string): FsNode {
  return layerDir(reader, id, reader.root);
}

function whiteoutNode(key: string, source: TOCNode): FsNode {
  const attr: FileAttr = {
    ...source,
    type: "char",
    mode: 0,
    size: 0,
    linkName: "",
    nlink: 1,
    devMajor: 0,
    devMinor: 0,
    xattrs: NO_XATTRS,
  };
  return { key, volatility: "immutable", attr: () => attr };
}

function layerDir(reader: StargzReader, id: string, dir: TOCNode): FsNode {
  const key = (n: TOCNode) => `layer:${id}:${n.path}`;
  let listing: Map<string, FsNode> | undefined;
  const children = (): Map<string, FsNode> => {
    if (listing) return listing;
    const out = new Map<string, FsNode>();
    for (const [name, child] of dir.children!) {
      if (name === OPAQUE_MARKER) continue;
      if (name.startsWith(WHITEOUT_PREFIX) && name.length > WHITEOUT_PREFIX.length) {
        const hidden = name.slice(WHITEOUT_PREFIX.length);
        if (!whiteoutHides(hidden)) continue;
        // A name present in the layer itself wins over its own whiteout.
        const at = dir.path === "" ? name : `${dir.path}/${name}`;
        if (!dir.children!.has(hidden)) {
          out.set(hidden, whiteoutNode(`layer:${id}:${at}:wh`, child));
        }
        continue;
      }
      out.set(
        name,
        child.type === "dir"
          ? layerDir(reader, id, child)
          : tocFileNode(tocFileKey(id, child), reader, child, id),
      );
    }
    return (listing = out);
  };
  let attr: FileAttr = dir;
  if (dir.children!.has(OPAQUE_MARKER)) {
    const xattrs = new Map(dir.xattrs);
    xattrs.set(OVERLAY_OPAQUE_XATTR, new TextEncoder().encode("y"));
    attr = { ...dir, xattrs };
  }
  return {
    key: key(dir),
    volatility: "immutable",
    attr: () => attr,
    lookup: (name) => Promise.resolve(children().get(name)),
    list: () => Promise.resolve([...children()]),
    listNow: () => [...children()],
  };
}
