/**
 * The tree of an Additional Layer Store, the directory layout through which containers/storage
 * (podman, CRI-O, buildah) takes layers it does not have to pull. With the store's `:ref`
 * option, containers/storage looks a layer up as
 *
 * ```
 * <base64 of the image reference>/<digest>/
 *   diff/   the layer's root in overlayfs form (whiteouts as 0/0 character devices, opaque
 *           directories with trusted.overlay.opaque=y), used as an overlayfs lower directory;
 *           the eStargz TOC and landmark files are left out (format details: the original
 *           image has none; a normal pull of the eStargz blob would extract them as files)
 *   info    JSON: compressed-diff-digest, compressed-size, diff-digest (the config's diff_id),
 *           diff-size, compression (2 = gzip for eStargz, 4 = zstd for zstd:chunked),
 *           toc-digest (the eStargz TOC digest; the manifest checksum for zstd:chunked)
 *   blob    the compressed layer blob, read lazily (containers/storage reads it only to push or
 *           save the image)
 * ```
 *
 * The reference is the one the image is pulled by, `host/name:tag` or `host/name@digest`, in
 * standard padded base64 (`docker.io/library/x:tag` and `x:tag` both work). `<digest>` is the
 * layer's blob digest (what podman 4.x asks for) or its TOC digest (what newer
 * containers/storage asks for: the eStargz TOC digest, the zstd:chunked manifest checksum); both
 * name the same layer, under distinct inodes. Only layers whose descriptor carries the eStargz
 * TOC digest annotation or the zstd:chunked manifest annotations and whose TOC opens are served:
 * any other lookup is ENOENT, and containers/storage then pulls the layer itself.
 *
 * containers/storage reports using a layer by creating and removing `<layer>/use`, and
 * releasing it by removing the layer directory; a store that keeps count answers ENOENT to
 * both. Layers here live as long as crfs serves them, so both are answered ENOENT (and no
 * other change is allowed: EROFS). The mount must be writable for those requests to arrive.
 *
 * @module
 */
import type { Descriptor, ImageConfigJson, ImageManifest } from "../drivers/manifest.ts";
import { parseReference, type Reference } from "../drivers/reference.ts";
import { announcedLayer } from "../format/layer_kind.ts";
import { UNCOMPRESSED_SIZE_ANNOTATION } from "../format/toc.ts";
import type { ImageStore } from "./image_store.ts";
import { LruMap } from "./lru_map.ts";
import type { OpenLayer } from "./layer_open.ts";
import { layerRoot } from "./layer_tree.ts";
import { prefetchStartup } from "./startup_prefetch.ts";
import { bytesNode, dirAttr, type FsNode, NodeError } from "./node.ts";
import { after } from "../format/timers.ts";

/** What containers/storage reads from a layer's `info` file (its `Layer` JSON fields). */
export interface LayerInfo {
  /** The layer blob's digest. */
  "compressed-diff-digest": string;
  /** The layer blob's size. */
  "compressed-size": number;
  /** The uncompressed layer's digest: the image config's diff_id for the layer. */
  "diff-digest": string;
  /** The uncompressed size, when the descriptor's annotation gives it. */
  "diff-size"?: number;
  /** containers/storage's compression number: 2 is gzip, 4 zstd. */
  compression: number;
  /**
   * The eStargz TOC digest or the zstd:chunked manifest checksum (newer containers/storage
   * indexes layers by it).
   */
  "toc-digest": string;
}

/** containers/storage's number for gzip compression (`archive.Gzip`). */
export const GZIP_COMPRESSION = 2;
/** containers/storage's number for zstd compression (`archive.Zstd`). */
export const ZSTD_COMPRESSION = 4;

/** The name under which containers/storage looks up a reference: standard padded base64. */
export function encodeRefName(ref: string): string {
  const bytes = new TextEncoder().encode(ref);
  return btoa(String.fromCharCode(...bytes));
}

/**
 * The reference a directory name stands for, or undefined when the name is not the canonical
 * base64 of a reference with a tag or a digest.
 */
export function decodeRefName(name: string): Reference | undefined {
  if (name.length === 0 || name.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(name)) {
    return undefined;
  }
  let text: string;
  try {
    const raw = atob(name);
    text = new TextDecoder("utf-8", { fatal: true }).decode(
      Uint8Array.from(raw, (c) => c.charCodeAt(0)),
    );
  } catch {
    return undefined;
  }
  // One name per reference: the re-encoding must give the name back.
  if (encodeRefName(text) !== name) return undefined;
  try {
    const ref = parseReference(text, { defaultTag: null });
    return ref.tag === undefined && ref.digest === undefined ? undefined : ref;
  } catch {
    return undefined;
  }
}

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

/**
 * The `info` document of a layer: `tocDigest` names its TOC (see {@link LayerInfo}), `format`
 * is what its annotations announce (gzip compression unless zstd:chunked).
 */
export function layerInfo(
  desc: Descriptor,
  diffId: string,
  tocDigest: string,
  format: "estargz" | "zstd:chunked" = "estargz",
): LayerInfo {
  const info: LayerInfo = {
    "compressed-diff-digest": desc.digest,
    "compressed-size": desc.size,
    "diff-digest": diffId,
    compression: format === "zstd:chunked" ? ZSTD_COMPRESSION : GZIP_COMPRESSION,
    "toc-digest": tocDigest,
  };
  const usize = Number(desc.annotations?.[UNCOMPRESSED_SIZE_ANNOTATION]);
  if (Number.isSafeInteger(usize) && usize > 0) info["diff-size"] = usize;
  return info;
}

/** References the layer store remembers (listing and directories). */
const MAX_REFERENCES = 1024;
/** Layer directories the layer store keeps built. */
const MAX_LAYER_DIRS = 256;

/** Options of the store tree. */
export interface LayerStoreOptions {
  /** Logs one line per layer declined for a reason other than not being eStargz. */
  log?: (line: string) => void;
  /**
   * Once a layer's TOC is in, read ahead what a container start reads from it (the config's
   * program and its libraries, /etc/passwd, …: fs/startup_prefetch.ts). Off by default.
   */
  startupPrefetch?: boolean;
}

/** The root of the layer store: one directory per image reference looked up. */
export function layerStoreRoot(store: ImageStore, opts: LayerStoreOptions = {}): FsNode {
  const log = opts.log ?? store.log;
  // Readers whose startup files were read ahead (a layer has two names, one reader).
  const prefetched = new WeakSet<object>();
  const ahead = opts.startupPrefetch
    ? (reader: OpenLayer["reader"], config: ImageConfigJson) => {
      if (prefetched.has(reader)) return;
      prefetched.add(reader);
      // Started once the answer is out: its first reads (lookups, cache probes, the requests
      // themselves) would otherwise hold the thread before the layer directory is answered.
      after(0, () => prefetchStartup(reader, config).catch(() => {}));
    }
    : undefined;
  // Bounded for long runs, least recently used out: references looked up (listed), their
  // directories, and layer directories by `<ref name>/<manifest digest>/<digest>` (failures
  // are not kept). Dropped ones are built again from the image store when asked for.
  const seen = new LruMap<string, true>(MAX_REFERENCES);
  const layers = new LruMap<string, Promise<FsNode | undefined>>(MAX_LAYER_DIRS);
  const refDirs = new LruMap<string, FsNode>(MAX_REFERENCES);

  const refDir = (name: string, ref: Reference): FsNode => {
    let dir = refDirs.get(name);
    if (!dir) {
      dir = referenceDir(store, name, ref, layers, log, ahead);
      refDirs.set(name, dir);
    }
    return dir;
  };
  return {
    key: "als:root",
    volatility: "listing",
    attr: () => dirAttr(2 + seen.size),
    lookup(name) {
      const ref = decodeRefName(name);
      if (!ref) return Promise.resolve(undefined);
      seen.set(name, true);
      return Promise.resolve(refDir(name, ref));
    },
    list() {
      return Promise.resolve(
        [...seen.keys()].sort().map((n) => [n, refDir(n, decodeRefName(n)!)] as [string, FsNode]),
      );
    },
    change: () => Promise.reject(new NodeError("EROFS", "the layer store is read-only")),
  };
}

/** `<base64 ref>/`: the eStargz and zstd:chunked layers of the image the reference names now. */
function referenceDir(
  store: ImageStore,
  name: string,
  ref: Reference,
  layers: LruMap<string, Promise<FsNode | undefined>>,
  log: (line: string) => void,
  ahead?: (reader: OpenLayer["reader"], config: ImageConfigJson) => void,
): FsNode {
  const repo = { host: ref.host, repository: ref.repository };
  const where = `${ref.host}/${ref.repository}${ref.digest ? `@${ref.digest}` : `:${ref.tag}`}`;

  /**
   * The single-platform manifest the reference names, or undefined when there is none; EIO
   * when the registry fails (containers/storage then pulls as usual, and nothing is cached).
   */
  const manifest = async (): Promise<ImageManifest | undefined> => {
    try {
      const digest = ref.digest ?? await store.resolveTag(repo, ref.tag!);
      return digest ? await store.imageManifest(repo, digest) : undefined;
    } catch (e) {
      if (e instanceof NodeError) throw e;
      // Registry errors usually name the reference already: said once.
      const message = (e as Error).message;
      const said = message.startsWith(`${where}:`) ? message : `${where}: ${message}`;
      log(`crfs: layer store: ${said}`);
      throw new NodeError("EIO", said);
    }
  };

  const open = (m: ImageManifest, index: number, dirName: string) => {
    const key = `${name}/${m.digest}/${dirName}`;
    let p = layers.get(key);
    if (!p) {
      p = openLayerDir(
        store,
        repo,
        m,
        index,
        `${name}/${dirName}`,
        where,
        log,
        ahead,
      );
      layers.set(key, p);
      p.then((n) => n ?? layers.delete(key), () => layers.delete(key));
    }
    return p;
  };

  return {
    key: `als:ref:${name}`,
    // Never "immutable", even by digest: an absence may be a registry failure, which the kernel
    // must not remember (layer directories themselves are immutable and cached as such).
    volatility: "tag",
    attr: () => dirAttr(2),
    async lookup(dirName) {
      if (!DIGEST_RE.test(dirName)) return undefined;
      const m = await manifest();
      const i =
        m?.json.layers.findIndex((d) =>
          d.digest === dirName || announcedLayer(d.annotations)?.tocKey === dirName
        ) ?? -1;
      return i < 0 ? undefined : await open(m!, i, dirName);
    },
    async list() {
      const m = await manifest();
      if (!m) return [];
      const names: [string, number][] = [];
      m.json.layers.forEach((d, i) => {
        const toc = announcedLayer(d.annotations)?.tocKey;
        if (!toc) return;
        names.push([d.digest, i]);
        if (DIGEST_RE.test(toc) && toc !== d.digest) names.push([toc, i]);
      });
      const nodes = await Promise.all(names.map(([n, i]) => open(m, i, n).catch(() => undefined)));
      return names.flatMap(([n], k) => nodes[k] ? [[n, nodes[k]] as [string, FsNode]] : []);
    },
    // containers/storage releases a layer by removing its directory: ENOENT says "counted".
    change(change, child) {
      if (change === "rmdir" && DIGEST_RE.test(child)) {
        return Promise.reject(new NodeError("ENOENT", `${where}/${child} stays served`));
      }
      return Promise.reject(new NodeError("EROFS", "the layer store is read-only"));
    },
  };
}

/**
 * `<base64 ref>/<digest>/` for layer `index` of `m`, or undefined when the layer is not
 * eStargz nor zstd:chunked (no TOC digest annotation nor manifest checksum) or the config has no
 * diff_id for it.
 *
 * The config is fetched beside the TOC, but the directory is answered only once the TOC has opened
 * and verified against its digest: a layer whose TOC does not open is declined, and
 * containers/storage pulls it the usual way (as a lazy layer it would only ever answer EIO).
 */
async function openLayerDir(
  store: ImageStore,
  repo: { host: string; repository: string },
  m: ImageManifest,
  index: number,
  id: string,
  where: string,
  log: (line: string) => void,
  ahead?: (reader: OpenLayer["reader"], config: ImageConfigJson) => void,
): Promise<FsNode | undefined> {
  const desc = m.json.layers[index];
  const kind = announcedLayer(desc.annotations);
  const tocDigest = kind?.tocKey;
  // Not lazy: decline without a request; containers/storage pulls it the usual way.
  if (!kind || !tocDigest) return undefined;
  // Started at once, beside the config; logged by the image store when it fails.
  const opening = store.layer(repo, desc);
  opening.catch(() => {});
  let config: ImageConfigJson;
  try {
    config = (await store.config(repo, m)).json;
  } catch (e) {
    log(`crfs: layer store: ${where}: config: ${(e as Error).message}`);
    throw new NodeError("EIO", `${where}: config: ${(e as Error).message}`);
  }
  const diffId = config.rootfs?.diff_ids?.[index];
  if (!diffId || !DIGEST_RE.test(diffId)) {
    log(`crfs: layer store: ${where}: the config has no diff_id for layer ${index}; declined`);
    return undefined;
  }
  let layer: OpenLayer;
  try {
    layer = await opening;
  } catch {
    // A TOC that does not open (not stargz, a bad footer, a digest mismatch): pulled the usual way.
    return undefined;
  }
  ahead?.(layer.reader, config);
  const info = new TextEncoder().encode(
    JSON.stringify(layerInfo(desc, diffId, tocDigest, kind.format)),
  );
  const children: [string, FsNode][] = [
    ["diff", diffRoot(layerRoot(layer.reader, id))],
    ["info", bytesNode(`als:info:${id}`, info)],
    ["blob", blobNode(`als:blob:${id}`, layer, `${where}@${desc.digest}`)],
  ];
  const map = new Map(children);
  return {
    key: `als:layer:${id}`,
    volatility: "immutable",
    attr: () => dirAttr(3),
    lookup: (name) => Promise.resolve(map.get(name)),
    list: () => Promise.resolve(children),
    // containers/storage says it uses the layer by creating `use`: ENOENT says "counted".
    change(change, name) {
      if (name === "use" && change !== "mkdir" && change !== "rmdir") {
        return Promise.reject(new NodeError("ENOENT", `${where}: use noted`));
      }
      return Promise.reject(new NodeError("EROFS", "the layer store is read-only"));
    },
  };
}

/**
 * `diff/`: the layer root, except that the directory itself shows as containers/storage makes
 * the layer directories it extracts into (mode 0555, owned by root; a layer's own `./` entry is
 * not applied). A container's `/` takes its mode from there, so it is the same as after a normal
 * pull.
 */
function diffRoot(root: FsNode): FsNode {
  // Delegated one by one: a layer's directories are class instances, whose operations a
  // spread would not copy.
  return {
    key: root.key,
    volatility: root.volatility,
    lookup: (name) => root.lookup!(name),
    list: () => root.list!(),
    listNow: () => root.listNow!(),
    attr: () => ({
      ...root.attr(),
      mode: 0o555,
      uid: 0,
      gid: 0,
      userName: "root",
      groupName: "root",
    }),
  };
}

/** `blob`: the compressed layer, each read a range of the blob (through the disk cache). */
function blobNode(key: string, layer: OpenLayer, where: string): FsNode {
  const source = layer.reader.source;
  const size = source.size;
  return {
    key,
    volatility: "immutable",
    attr: () => ({ ...dirAttr(1), type: "reg", mode: 0o444, size }),
    async read(offset, length, signal) {
      const n = Math.min(length, size - offset);
      if (n <= 0) return new Uint8Array(0);
      try {
        return await source.read(offset, n, signal);
      } catch (e) {
        throw new NodeError("EIO", `${where}: blob: ${(e as Error).message}`);
      }
    },
  };
}
