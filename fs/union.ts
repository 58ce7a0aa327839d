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
import type { TOCNode } from "../format/toc_index.ts";
import {
  OPAQUE_MARKER,
  tocFileKey,
  tocFileNode,
  WHITEOUT_PREFIX,
  whiteoutHides,
} from "./layer_tree.ts";
import type { FsNode } from "./node.ts";

/** One layer of an image: its reader and its id (digest) for keys. */
export interface UnionLayer {
  reader: StargzReader;
  id: string;
}

/** A directory of one layer contributing to a merged directory. */
interface Source {
  layer: UnionLayer;
  dir: TOCNode;
}

/** The merged root of `layers` (bottom first, as in a manifest). `id` names the image in keys. */
export function unionRoot(layers: UnionLayer[], id: string): FsNode {
  const top = [...layers].reverse();
  const sources: Source[] = [];
  for (const layer of top) {
    sources.push({ layer, dir: layer.reader.root });
    if (layer.reader.root.children!.has(OPAQUE_MARKER)) break;
  }
  return unionDir(sources, id, "");
}

const isWhiteout = (name: string) => name.startsWith(WHITEOUT_PREFIX);

function unionDir(sources: Source[], id: string, path: string): FsNode {
  let merged: Map<string, FsNode> | undefined;
  let subdirs = 0;

  /** The merged entry `name`, built from the sources top-down. */
  const resolve = (name: string): FsNode | undefined => {
    const dirs: Source[] = [];
    for (const s of sources) {
      const c = s.dir.children!;
      const child = c.get(name);
      if (child) {
        if (child.type !== "dir") {
          if (dirs.length > 0) break; // a file below a directory is hidden by it
          return tocFileNode(tocFileKey(s.layer.id, child), s.layer.reader, child, s.layer.id);
        }
        dirs.push({ layer: s.layer, dir: child });
        if (child.children!.has(OPAQUE_MARKER)) break;
      }
      // hides what lies below this layer
      if (whiteoutHides(name) && c.has(WHITEOUT_PREFIX + name)) break;
    }
    if (dirs.length === 0) return undefined;
    return unionDir(dirs, id, path === "" ? name : `${path}/${name}`);
  };

  const children = (): Map<string, FsNode> => {
    if (merged) return merged;
    if (sources.length === 1) {
      // One layer's directory: each entry is that layer's own (what resolve gives, without
      // looking the name up again in every source).
      const { layer, dir } = sources[0];
      const out = new Map<string, FsNode>();
      for (const [name, child] of dir.children!) {
        if (isWhiteout(name)) continue;
        if (child.type === "dir") {
          out.set(
            name,
            unionDir([{ layer, dir: child }], id, path === "" ? name : `${path}/${name}`),
          );
          subdirs++;
        } else {
          out.set(name, tocFileNode(tocFileKey(layer.id, child), layer.reader, child, layer.id));
        }
      }
      return (merged = out);
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
    merged = new Map();
    for (const name of names) {
      const node = resolve(name);
      if (!node) continue;
      merged.set(name, node);
      if (node.attr().type === "dir") subdirs++;
    }
    return merged;
  };

  // Attributes come from the topmost layer that has the directory as an entry of its own: a
  // directory an upper layer only implies (it holds files there) keeps the lower one's owner,
  // mode and time, as applying the layers would.
  const top = sources.find((s) => !s.dir.implicit) ?? sources[0];
  let attr: ReturnType<FsNode["attr"]> | undefined;
  // One layer's directory: its subdirectories counted in place (building every child's node
  // only for the link count made the first lookup of a big directory slow).
  const links = (): number => {
    if (sources.length > 1) {
      children();
      return 2 + subdirs;
    }
    let n = 2;
    for (const [name, c] of sources[0].dir.children!) {
      if (c.type === "dir" && !isWhiteout(name)) n++;
    }
    return n;
  };
  return {
    key: `image:${id}:${path}`,
    volatility: "immutable",
    // The opaque marker is a layer detail; the merged directory shows only its own xattrs.
    attr: () => attr ??= { ...top.dir, nlink: links() },
    lookup: (name) => Promise.resolve(isWhiteout(name) ? undefined : children().get(name)),
    list: () => Promise.resolve([...children()]),
    listNow: () => [...children()],
  };
}
