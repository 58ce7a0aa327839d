/**
 * The merged view of an image (`images/…/<tag>/`): all layers unified top-down with OCI
 * whiteouts applied, the way a container runtime would assemble them. `.wh.x` in a layer hides
 * `x` in the layers below; `.wh..wh..opq` hides everything below in that directory; a
 * non-directory hides a directory of the same name below it. Files are the layer's own nodes
 * (same keys, so the same inode numbers as in `layers/`).
 *
 * @module
 */
import type { StargzReader } from "../format/reader.ts";
import type { FileAttr } from "../format/file_attr.ts";
import type { TOCNode } from "../format/toc_index.ts";
import {
  OPAQUE_MARKER,
  tocFileNode,
  TocLayer,
  WHITEOUT_PREFIX,
  whiteoutHides,
} from "./layer_tree.ts";
import type { FsNode, Volatility } from "./node.ts";

/** One layer of an image: its reader and its id (digest) for keys. */
export interface UnionLayer {
  reader: StargzReader;
  id: string;
}

/** A directory of one layer contributing to a merged directory. */
interface Source {
  layer: TocLayer;
  dir: TOCNode;
}

/** The merged root of `layers` (bottom first, as in a manifest). `id` names the image in keys. */
export function unionRoot(layers: UnionLayer[], id: string): FsNode {
  const sources: Source[] = [];
  for (let i = layers.length - 1; i >= 0; i--) {
    const layer = new TocLayer(layers[i].reader, layers[i].id);
    sources.push({ layer, dir: layer.reader.root });
    if (layer.reader.root.children!.has(OPAQUE_MARKER)) break;
  }
  return new UnionDir(sources, id, "");
}

const isWhiteout = (name: string) => name.startsWith(WHITEOUT_PREFIX);

/** A merged directory (operations on the prototype, not closures per directory). */
class UnionDir implements FsNode {
  readonly key: string;
  /** The layers' directories, top first. */
  readonly #sources: Source[];
  /** The image id, for keys. */
  readonly #id: string;
  /** The directory's path in the image (`""` for the root). */
  readonly #path: string;
  #merged: Map<string, FsNode> | undefined;
  #subdirs = 0;
  #attr: FileAttr | undefined;

  constructor(sources: Source[], id: string, path: string) {
    this.#sources = sources;
    this.#id = id;
    this.#path = path;
    this.key = `image:${id}:${path}`;
  }

  get volatility(): Volatility {
    return "immutable";
  }

  /**
   * Attributes come from the topmost layer that has the directory as an entry of its own: a
   * directory an upper layer only implies (it holds files there) keeps the lower one's owner,
   * mode and time, as applying the layers would. The opaque marker is a layer detail; the
   * merged directory shows only its own xattrs.
   */
  attr(): FileAttr {
    if (this.#attr === undefined) {
      const top = this.#sources.find((s) => !s.dir.implicit) ?? this.#sources[0];
      this.#attr = { ...top.dir, nlink: this.#links() };
    }
    return this.#attr;
  }

  lookup(name: string): Promise<FsNode | undefined> {
    return Promise.resolve(isWhiteout(name) ? undefined : this.#children().get(name));
  }

  list(): Promise<[string, FsNode][]> {
    return Promise.resolve([...this.#children()]);
  }

  listNow(): [string, FsNode][] {
    return [...this.#children()];
  }

  #childPath(name: string): string {
    return this.#path === "" ? name : `${this.#path}/${name}`;
  }

  /** The merged entry `name`, built from the sources top-down. */
  #resolve(name: string): FsNode | undefined {
    const dirs: Source[] = [];
    for (const s of this.#sources) {
      const c = s.dir.children!;
      const child = c.get(name);
      if (child) {
        if (child.type !== "dir") {
          if (dirs.length > 0) break; // a file below a directory is hidden by it
          return tocFileNode(s.layer, child);
        }
        dirs.push({ layer: s.layer, dir: child });
        if (child.children!.has(OPAQUE_MARKER)) break;
      }
      // hides what lies below this layer
      if (whiteoutHides(name) && c.has(WHITEOUT_PREFIX + name)) break;
    }
    if (dirs.length === 0) return undefined;
    return new UnionDir(dirs, this.#id, this.#childPath(name));
  }

  #children(): Map<string, FsNode> {
    if (this.#merged) return this.#merged;
    const sources = this.#sources;
    if (sources.length === 1) {
      // One layer's directory: each entry is that layer's own (what #resolve gives, without
      // looking the name up again in every source).
      const { layer, dir } = sources[0];
      const out = new Map<string, FsNode>();
      for (const [name, child] of dir.children!) {
        if (isWhiteout(name)) continue;
        if (child.type === "dir") {
          out.set(name, new UnionDir([{ layer, dir: child }], this.#id, this.#childPath(name)));
          this.#subdirs++;
        } else {
          out.set(name, tocFileNode(layer, child));
        }
      }
      return (this.#merged = out);
    }
    const names: string[] = [];
    const seen = new Set<string>();
    for (const s of sources) {
      for (const name of s.dir.children!.keys()) {
        if (isWhiteout(name) || seen.has(name)) continue;
        seen.add(name);
        names.push(name);
      }
    }
    const merged = new Map<string, FsNode>();
    for (const name of names) {
      const node = this.#resolve(name);
      if (!node) continue;
      merged.set(name, node);
      if (node.attr().type === "dir") this.#subdirs++;
    }
    return (this.#merged = merged);
  }

  /**
   * The link count. One layer's directory: its subdirectories counted in place (building every
   * child's node only for the link count made the first lookup of a big directory slow).
   */
  #links(): number {
    const sources = this.#sources;
    if (sources.length > 1) {
      this.#children();
      return 2 + this.#subdirs;
    }
    let n = 2;
    for (const [name, c] of sources[0].dir.children!) {
      if (c.type === "dir" && !isWhiteout(name)) n++;
    }
    return n;
  }
}
