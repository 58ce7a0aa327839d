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
import { type FsNode, NodeError, type Volatility } from "./node.ts";

/** Prefix of OCI whiteout names. */
export const WHITEOUT_PREFIX = ".wh.";
/** Name of the OCI opaque-directory marker. */
export const OPAQUE_MARKER = ".wh..wh..opq";
/** The xattr overlayfs reads to treat a directory as opaque. */
export const OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque";

/** Numbers given to layer ids for file keys, in the order first seen (one per process). */
const layerNumbers = new Map<string, number>();

/**
 * One layer as its file nodes see it: the reader their bytes come from, the id (digest) that
 * names the layer in keys and messages, and the base of its files' keys. Shared by every node
 * of the layer (a node holds one reference, not three).
 */
export class TocLayer {
  /** The first key of the layer's files (its number times 2^32). */
  readonly keyBase: number;
  constructor(readonly reader: StargzReader, readonly id: string) {
    let n = layerNumbers.get(id);
    if (n === undefined) layerNumbers.set(id, n = layerNumbers.size + 1);
    this.keyBase = n * 2 ** 32;
  }
}

/**
 * The key of a non-directory TOC node of `layer`: the file's identity, not one of its names.
 * A file reached through a hardlink is the node of the hardlink's target, and a later entry may
 * give the target's first name to another file (GNU tar appending, writers that keep both
 * entries): keys from paths would then give two files one inode. The defining TOC entry's index
 * names the file for as long as the blob is the same; with the layer's number it makes one
 * number (no string of 80 bytes per file).
 */
export function tocFileKey(layer: TocLayer, n: TOCNode): number {
  return layer.keyBase + n.entryIndex;
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
 * operations on the prototype (no closures per file), as a cold walk builds one per entry: its
 * key is worked out from the layer and the node, its path (when recording a workload) from the
 * layer's tree.
 */
class TocFileNode implements FsNode {
  constructor(readonly layer: TocLayer, readonly toc: TOCNode) {}
  get key(): number {
    return tocFileKey(this.layer, this.toc);
  }
  get volatility(): Volatility {
    return "immutable";
  }
  attr(): FileAttr {
    return this.toc;
  }
  get path(): string | undefined {
    return this.layer.reader.index.pathOf(this.toc);
  }
}

/** A TOC-backed regular file: {@link TocFileNode} that reads its bytes from the layer. */
class TocRegularFileNode extends TocFileNode {
  async read(
    offset: number,
    length: number,
    signal?: AbortSignal,
    into?: Uint8Array<ArrayBuffer>,
  ): Promise<Uint8Array> {
    try {
      return await this.layer.reader.read(this.toc, offset, length, signal, into);
    } catch (e) {
      throw new NodeError("EIO", `${this.layer.id}/${this.path}: ${(e as Error).message}`);
    }
  }
}

/** Node operations shared by the layer and merged views for TOC-backed files. */
export function tocFileNode(layer: TocLayer, n: TOCNode): FsNode {
  return n.type === "reg" ? new TocRegularFileNode(layer, n) : new TocFileNode(layer, n);
}

/** The root of one layer in overlayfs form. `id` names the layer (its digest) in keys. */
export function layerRoot(reader: StargzReader, id: string): FsNode {
  return new LayerDir(new TocLayer(reader, id), reader.root, "");
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

/** A directory of one layer in overlayfs form (operations on the prototype, not per directory). */
class LayerDir implements FsNode {
  readonly key: string;
  readonly #layer: TocLayer;
  readonly #dir: TOCNode;
  /** The directory's path in the layer (`""` for the root). */
  readonly #path: string;
  #listing: Map<string, FsNode> | undefined;
  readonly #attr: FileAttr;

  constructor(layer: TocLayer, dir: TOCNode, path: string) {
    this.#layer = layer;
    this.#dir = dir;
    this.#path = path;
    this.key = `layer:${layer.id}:${path}`;
    this.#attr = dir;
    if (dir.children!.has(OPAQUE_MARKER)) {
      const xattrs = new Map(dir.xattrs);
      xattrs.set(OVERLAY_OPAQUE_XATTR, new TextEncoder().encode("y"));
      this.#attr = { ...dir, xattrs };
    }
  }

  get volatility(): Volatility {
    return "immutable";
  }

  attr(): FileAttr {
    return this.#attr;
  }

  lookup(name: string): Promise<FsNode | undefined> {
    return Promise.resolve(this.#children().get(name));
  }

  list(): Promise<[string, FsNode][]> {
    return Promise.resolve([...this.#children()]);
  }

  listNow(): [string, FsNode][] {
    return [...this.#children()];
  }

  #children(): Map<string, FsNode> {
    if (this.#listing) return this.#listing;
    const dir = this.#dir;
    const layer = this.#layer;
    const out = new Map<string, FsNode>();
    for (const [name, child] of dir.children!) {
      if (name === OPAQUE_MARKER) continue;
      if (name.startsWith(WHITEOUT_PREFIX) && name.length > WHITEOUT_PREFIX.length) {
        const hidden = name.slice(WHITEOUT_PREFIX.length);
        if (!whiteoutHides(hidden)) continue;
        // A name present in the layer itself wins over its own whiteout.
        if (!dir.children!.has(hidden)) {
          out.set(hidden, whiteoutNode(`layer:${layer.id}:${this.#childPath(name)}:wh`, child));
        }
        continue;
      }
      out.set(
        name,
        child.type === "dir"
          ? new LayerDir(layer, child, this.#childPath(name))
          : tocFileNode(layer, child),
      );
    }
    return (this.#listing = out);
  }

  #childPath(name: string): string {
    return this.#path === "" ? name : `${this.#path}/${name}`;
  }
}
