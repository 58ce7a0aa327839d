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
import { type FsNode, type NodeAttr, NodeError } from "./node.ts";

/** Prefix of OCI whiteout names. */
export const WHITEOUT_PREFIX = ".wh.";
/** Name of the OCI opaque-directory marker. */
export const OPAQUE_MARKER = ".wh..wh..opq";
/** The xattr overlayfs reads to treat a directory as opaque. */
export const OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque";

/** Attributes of a TOC node. */
export function tocAttr(n: TOCNode): NodeAttr {
  return {
    kind: n.type,
    mode: n.mode,
    uid: n.uid,
    gid: n.gid,
    userName: n.userName,
    groupName: n.groupName,
    size: n.size,
    mtimeSec: n.mtimeSec,
    mtimeNsec: n.mtimeNsec,
    nlink: n.nlink,
    devMajor: n.devMajor,
    devMinor: n.devMinor,
  };
}

/** Node operations shared by the layer and merged views for TOC-backed files. */
export function tocFileNode(key: string, reader: StargzReader, n: TOCNode, where: string): FsNode {
  const node: FsNode = {
    key,
    volatility: "immutable",
    attr: () => tocAttr(n),
    xattrs: () => n.xattrs,
    path: n.path,
  };
  if (n.type === "symlink") node.readlink = () => Promise.resolve(n.linkName);
  if (n.type === "reg") {
    node.read = async (offset, length, signal) => {
      try {
        return await reader.read(n, offset, length, signal);
      } catch (e) {
        throw new NodeError("EIO", `${where}/${n.path}: ${(e as Error).message}`);
      }
    };
  }
  return node;
}

/** The root of one layer in overlayfs form. `id` names the layer (its digest) in keys. */
export function layerRoot(reader: StargzReader, id: string): FsNode {
  return layerDir(reader, id, reader.root);
}

function whiteoutNode(key: string, source: TOCNode): FsNode {
  return {
    key,
    volatility: "immutable",
    attr: () => ({
      ...tocAttr(source),
      kind: "char",
      mode: 0,
      size: 0,
      nlink: 1,
      devMajor: 0,
      devMinor: 0,
    }),
  };
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
        // A name present in the layer itself wins over its own whiteout.
        if (!dir.children!.has(hidden)) out.set(hidden, whiteoutNode(`${key(child)}:wh`, child));
        continue;
      }
      out.set(
        name,
        child.type === "dir"
          ? layerDir(reader, id, child)
          : tocFileNode(key(child), reader, child, id),
      );
    }
    return (listing = out);
  };
  const opaque = dir.children!.has(OPAQUE_MARKER);
  return {
    key: key(dir),
    volatility: "immutable",
    attr: () => tocAttr(dir),
    xattrs: () => {
      if (!opaque) return dir.xattrs;
      const x = new Map(dir.xattrs);
      x.set(OVERLAY_OPAQUE_XATTR, new TextEncoder().encode("y"));
      return x;
    },
    lookup: (name) => Promise.resolve(children().get(name)),
    list: () => Promise.resolve([...children()]),
  };
}
