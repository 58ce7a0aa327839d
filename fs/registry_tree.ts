/**
 * The tree crfs shows, from the root down:
 *
 * ```
 * README-crfs.txt
 * layers/<host>/<repository…>/<tag>            → symlink to sha256-<manifest>
 * layers/<host>/<repository…>/sha256-<manifest>/{0…N-1, bottom, top, config, sha256-<layer>/}
 * layers/local/<path…>/<name>.stargz/          the root of a local stargz file (`local/<path…>/<name>:latest`)
 * images/<host>/<repository…>/<tag or sha256-<manifest>>/   the merged image
 * ```
 *
 * Any host can be looked up; repository names have any depth. The `local` host is an ordinary
 * host served by the `local` driver (files and OCI layouts of the local directory). Directories are built lazily from
 * the {@link ImageStore}'s cached registry state. The same tree backs the FUSE mount and
 * `crfs ls`.
 *
 * @module
 */
import type { ImageManifest } from "../drivers/manifest.ts";
import { isTag, LOCAL_HOST, type RepositoryName } from "../drivers/reference.ts";
import { lister } from "../drivers/capabilities.ts";
import { isRegistryError } from "../drivers/errors.ts";
import { ImageStore } from "./image_store.ts";
import { LruMap } from "./lru_map.ts";
import { layerRoot } from "./layer_tree.ts";
import { statusNode } from "./status.ts";
import { unionRoot } from "./union.ts";
import { bytesNode, dirAttr, type FsNode, NodeError, staticDir, symlinkNode } from "./node.ts";

/** The two views of the registry. */
export type View = "layers" | "images";

/** Options of the tree. */
export interface TreeOptions {
  /** Hosts listed in `layers/` and `images/` besides `local` and those looked up. */
  hosts?: string[];
  /** Hosts looked up that the listing remembers, least recently used out. Default 256. */
  maxLookedUpHosts?: number;
}

/** Hosts shown in a view: the configured ones always, looked-up ones up to a bound. */
class HostSet {
  readonly #fixed: Set<string>;
  readonly #lookedUp: LruMap<string, true>;
  constructor(fixed: string[], max: number) {
    this.#fixed = new Set(fixed);
    this.#lookedUp = new LruMap(max);
  }
  add(host: string): void {
    if (!this.#fixed.has(host)) this.#lookedUp.set(host, true);
  }
  /** Every host, sorted, `local` first. */
  list(): string[] {
    const all = new Set([...this.#fixed, ...this.#lookedUp.keys()]);
    all.delete(LOCAL_HOST);
    return [LOCAL_HOST, ...[...all].sort()];
  }
}

const HOST_RE =
  /^(?:\[[0-9a-fA-F:.]+\]|[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*)(?::\d{1,5})?$/;
const COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DIGEST_DIR_RE = /^sha256-([0-9a-f]{64})$/;

const README = `crfs — the Container Registry Filesystem

This read-only tree shows container images straight from their registries, fetching only the
bytes you read (layers must be stargz/eStargz: see 'crfs convert').

layers/<host>/<repository>/<tag>               symlink to the manifest directory
layers/<host>/<repository>/sha256-<manifest>/  0 … N-1 (symlinks to the layers, bottom first),
                                               bottom, top, config, sha256-<layer>/ (one layer)
layers/local/<name>.stargz/                    a local stargz file (also local/<name>:latest)
images/<host>/<repository>/<tag>/              the merged image (whiteouts applied)
images/<host>/<repository>/sha256-<manifest>/  the same, by digest

Any host can be looked up (layers/127.0.0.1:5000, layers/gcr.io, …); repositories may have any
depth. Layer directories are in overlayfs form (whiteouts as 0/0 character devices, opaque
directories marked with trusted.overlay.opaque=y), so

  mount -t overlay overlay -o lowerdir=top:…:bottom,upperdir=U,workdir=W /merged

over layers/…/sha256-<manifest>/{N-1,…,0} gives the same tree as images/….
`;

const digestDir = (digest: string) => `sha256-${digest.slice("sha256:".length)}`;

/** Builds the root of the tree. */
export function rootNode(store: ImageStore, opts: TreeOptions = {}): FsNode {
  const seen = new HostSet(opts.hosts ?? [], opts.maxLookedUpHosts ?? 256);
  const views: [string, FsNode][] = (["layers", "images"] as View[]).map((
    v,
  ) => [v, viewDir(store, v, seen)]);
  return staticDir("root", [
    ["README-crfs.txt", bytesNode("readme", new TextEncoder().encode(README))],
    ["crfs-status.json", statusNode(store)],
    ...views,
  ]);
}

function viewDir(store: ImageStore, view: View, seen: HostSet): FsNode {
  const hostNode = (host: string): FsNode => pathDir(store, view, host, "");
  return {
    key: `view:${view}`,
    volatility: "listing",
    attr: () => dirAttr(1),
    lookup: (name) => {
      if (name !== LOCAL_HOST && !HOST_RE.test(name)) return Promise.resolve(undefined);
      seen.add(name);
      return Promise.resolve(hostNode(name));
    },
    list: () => Promise.resolve(seen.list().map((h) => [h, hostNode(h)])),
  };
}

/** Turns registry failures into node errors (logged once by the caller). */
function fail(store: ImageStore, what: string, e: unknown): never {
  if (e instanceof NodeError) throw e;
  const msg = `${what}: ${(e as Error).message}`;
  store.log(`crfs: ${msg}`);
  throw new NodeError("EIO", msg);
}

/**
 * A directory for a repository path `prefix` on `host` (`""` = the host itself): its children
 * are deeper path components, and, when the path is a repository, its tags and manifests.
 */
function pathDir(store: ImageStore, view: View, host: string, prefix: string): FsNode {
  const where = prefix ? `${host}/${prefix}` : host;
  const repo: RepositoryName = { host, repository: prefix };

  const subNames = async (): Promise<string[] | undefined> => {
    if (prefix === "") {
      try {
        return await lister(store.driver(host), "list owners").listOwners(host);
      } catch (e) {
        if (isRegistryError(e, "UNSUPPORTED", "DENIED", "UNAUTHORIZED")) return undefined;
        throw e;
      }
    }
    const all = await store.catalog(host);
    if (!all) return undefined;
    const out = new Set<string>();
    for (const r of all) {
      if (r.startsWith(prefix + "/")) out.add(r.slice(prefix.length + 1).split("/")[0]);
    }
    return [...out].sort();
  };

  const tagNode = async (tag: string): Promise<FsNode | undefined> => {
    let digest: string | undefined;
    try {
      digest = await store.resolveTag(repo, tag, { headOnly: view === "layers" });
    } catch (e) {
      if (isRegistryError(e, "UNAUTHORIZED", "DENIED", "NAME_UNKNOWN", "NOT_FOUND")) {
        return undefined;
      }
      fail(store, `${where}:${tag}`, e);
    }
    if (!digest) return undefined;
    if (view === "layers") {
      return symlinkNode(`tag:${where}:${tag}@${digest}`, digestDir(digest), "tag");
    }
    return await imageDir(store, repo, digest);
  };

  /** `images/…/<tag>/`: resolved on first use, so listing a repository opens no layer. */
  const tagDirs = new Map<string, FsNode>();
  const tagDir = (tag: string): FsNode => {
    let dir = tagDirs.get(tag);
    if (!dir) {
      dir = tagImageDir(store, `${where}:${tag}`, () => tagNode(tag));
      tagDirs.set(tag, dir);
    }
    return dir;
  };

  /** The tag `name` of this repository, opened (or undefined when there is no such tag). */
  const tagLookup = async (name: string): Promise<FsNode | undefined> => {
    if (view === "layers") return await tagNode(name);
    // The tag's image is opened now: a tag that cannot be served fails here, alone.
    const dir = tagDir(name);
    return (await (dir as TagImageDir).resolve()) ? dir : undefined;
  };

  const digestNode = async (name: string): Promise<FsNode | undefined> => {
    const digest = `sha256:${DIGEST_DIR_RE.exec(name)![1]}`;
    try {
      return view === "layers"
        ? await manifestDir(store, repo, digest)
        : await imageDir(store, repo, digest);
    } catch (e) {
      if (isRegistryError(e, "UNAUTHORIZED", "DENIED", "NAME_UNKNOWN")) return undefined;
      fail(store, `${where}@${digest}`, e);
    }
  };

  return {
    key: `path:${view}:${where}`,
    volatility: "listing",
    attr: () => dirAttr(1),
    async lookup(name) {
      try {
        if (prefix !== "" && DIGEST_DIR_RE.test(name)) return await digestNode(name);
        const sub = prefix ? `${prefix}/${name}` : name;
        if (host === LOCAL_HOST && name.endsWith(".stargz")) {
          const file = sub.slice(0, -".stargz".length);
          if (COMPONENT_RE.test(file.split("/").pop()!)) {
            const dir = await localFileDir(store, view, { host, repository: file });
            if (dir) return dir;
          }
        }
        // On the way to a repository the user named: no guessing.
        if (COMPONENT_RE.test(name) && store.hintedUnder(host, sub)) {
          return pathDir(store, view, host, sub);
        }
        // Try a tag only where the path may be a repository. Where that is unknown (no
        // catalog fetched: a walk never waits for one), an image's `name` may be a tag here or
        // the next component of a deeper repository: the directory finds out on its first
        // lookup. (In layers/ a tag is a symlink: it is tried now.)
        const known = prefix === "" ? false : store.isRepository(repo);
        if (
          known === undefined && view === "images" && isTag(name) && COMPONENT_RE.test(name)
        ) return ambiguousDir(store, repo, name, () => tagLookup(name));
        const triedTag = known !== false && isTag(name);
        if (triedTag) {
          const t = await tagLookup(name);
          if (t) return t;
        }
        if (!COMPONENT_RE.test(name)) return undefined;
        // No such tag: a deeper repository is only a guess then, which the catalog settles.
        if (triedTag) await store.catalog(host);
        if (store.hasRepositoryUnder(host, sub) === false) return undefined;
        return pathDir(store, view, host, sub);
      } catch (e) {
        fail(store, `${where}/${name}`, e);
      }
    },
    async list() {
      const out: [string, FsNode][] = [];
      let names: string[] | undefined;
      try {
        names = await subNames();
      } catch (e) {
        fail(store, where, e);
      }
      for (const n of names ?? []) {
        out.push([n, pathDir(store, view, host, prefix ? `${prefix}/${n}` : n)]);
      }
      if (prefix !== "") {
        let tags;
        try {
          tags = await store.tags(repo);
        } catch (e) {
          fail(store, where, e);
        }
        // Tags are listed by name: an image is opened only when its directory is used, and a
        // tag that cannot be served (not eStargz, gone) fails on its own, not the listing.
        const nodes = await Promise.all((tags ?? []).map(async (t) => {
          if (view === "images") return [t.name, tagDir(t.name)] as const;
          try {
            return [t.name, await tagNode(t.name)] as const;
          } catch {
            return [t.name, undefined] as const; // logged by tagNode
          }
        }));
        for (const [name, node] of nodes) {
          if (node && !out.some(([n]) => n === name)) out.push([name, node]);
        }
      }
      return out;
    },
  };
}

/**
 * `<prefix>/<name>` where nothing says whether `prefix` is a repository (no catalog known):
 * either the tag `name` of `prefix`, or the directory of the deeper repository path. It is
 * decided on the directory's first use, by what the registry answers for it: a tag of
 * `<prefix>/<name>` found (or a repository known there) makes it the path, else the tag
 * `name` of `prefix` found makes it that image, else the path. So the walk to a file of
 * `host/a/b/tag/` asks for `a/b:tag` only, never a catalog or `a:b`. Its key is the path's.
 * (images/ only: in layers/ a tag is a symlink.)
 */
/** A directory of nothing: where neither a tag nor a repository is. */
const NOTHING: FsNode = {
  key: "nothing",
  volatility: "listing",
  attr: () => dirAttr(1),
  lookup: () => Promise.resolve(undefined),
  list: () => Promise.resolve([]),
};

function ambiguousDir(
  store: ImageStore,
  parent: RepositoryName,
  name: string,
  openTag: () => Promise<FsNode | undefined>,
): FsNode {
  const host = parent.host;
  const sub = `${parent.repository}/${name}`;
  const asPath = pathDir(store, "images", host, sub);
  let decided: Promise<FsNode> | undefined;
  let image: FsNode | undefined;
  const decide = (child?: string): Promise<FsNode> => {
    if (decided) return decided;
    const p = (async (): Promise<FsNode> => {
      if (store.hasRepositoryUnder(host, sub)) return asPath;
      // A listing may ask for the catalog (listing the path needs it anyway).
      if (child === undefined) {
        try {
          await store.catalog(host);
        } catch (e) {
          fail(store, host, e);
        }
        if (store.hasRepositoryUnder(host, sub)) return asPath;
        if (store.isRepository(parent) === false) return asPath;
      }
      if (child !== undefined && isTag(child)) {
        try {
          if (await store.resolveTag({ host, repository: sub }, child)) return asPath;
        } catch (e) {
          if (!isRegistryError(e, "UNAUTHORIZED", "DENIED", "NAME_UNKNOWN", "NOT_FOUND")) {
            fail(store, `${host}/${sub}:${child}`, e);
          }
        }
      }
      // A tag of `prefix` that exists but cannot be served fails here, alone (EIO).
      image = await openTag();
      if (image) return image;
      // Neither: a deeper repository is only a guess then, which the catalog settles.
      try {
        await store.catalog(host);
      } catch (e) {
        fail(store, host, e);
      }
      return store.hasRepositoryUnder(host, sub) === false ? NOTHING : asPath;
    })();
    decided = p;
    p.catch(() => {
      if (decided === p) decided = undefined;
    });
    return p;
  };
  return {
    key: asPath.key,
    volatility: "listing",
    attr: () => image?.attr() ?? dirAttr(1),
    lookup: async (child) => (await decide(child)).lookup!(child),
    list: async () => (await decide()).list!(),
  };
}

/** A tag's image directory that resolves its image on first use. */
interface TagImageDir extends FsNode {
  /** The image now (resolved again after the tag TTL), or undefined when the tag is gone. */
  resolve(): Promise<FsNode | undefined>;
}

/**
 * `images/<host>/<repo>/<tag>/` as a node of its own (one inode per tag name) whose content is
 * the image the tag names now: `resolve` opens it (the tag's manifest and layers) when the
 * directory is first looked into, and again after the tag TTL. Until then it has a plain
 * directory's attributes, so a listing of the repository needs nothing of the image.
 */
function tagImageDir(
  store: ImageStore,
  what: string,
  open: () => Promise<FsNode | undefined>,
): TagImageDir {
  let current: { at: number; image: Promise<FsNode | undefined> } | undefined;
  let last: FsNode | undefined;
  const resolve = (): Promise<FsNode | undefined> => {
    if (!current || Date.now() - current.at >= store.tagTtlMs) {
      const image = open().then((n) => (last = n));
      const entry = { at: Date.now(), image };
      current = entry;
      image.catch(() => {
        if (current === entry) current = undefined;
      });
    }
    return current.image;
  };
  const image = async (): Promise<FsNode> => {
    const n = await resolve();
    if (!n) throw new NodeError("ENOENT", `${what}: no such tag`);
    return n;
  };
  return {
    key: `tagdir:${what}`,
    volatility: "tag",
    attr: () => last?.attr() ?? dirAttr(2),
    resolve,
    lookup: async (name) => (await image()).lookup!(name),
    list: async () => (await image()).list!(),
  };
}

/** `layers/<host>/<repo>/sha256-<manifest>/`: layer symlinks, config and layer roots. */
async function manifestDir(
  store: ImageStore,
  repo: RepositoryName,
  digest: string,
): Promise<FsNode | undefined> {
  const m = await store.manifest(repo, digest);
  if (!m) return undefined;
  if (m.kind === "index") {
    // An index stands for this machine's platform: point at that manifest's directory.
    const image = await store.imageManifest(repo, digest);
    return image ? symlinkNode(`index:${digest}`, digestDir(image.digest)) : undefined;
  }
  const layers = m.json.layers;
  const layerDirs = new Map(layers.map((d, i) => [digestDir(d.digest), i]));
  const openLayerDir = async (i: number) => {
    const { reader, digest: d } = await store.layer(repo, layers[i]);
    return layerRoot(reader, d);
  };
  const fixed: [string, FsNode][] = [];
  layers.forEach((d, i) =>
    fixed.push([String(i), symlinkNode(`lsym:${digest}:${i}`, digestDir(d.digest))])
  );
  if (layers.length > 0) {
    fixed.push(["bottom", symlinkNode(`lsym:${digest}:bottom`, "0")]);
    fixed.push(["top", symlinkNode(`lsym:${digest}:top`, String(layers.length - 1))]);
  }
  fixed.push(["config", configNode(store, repo, m)]);
  const fixedMap = new Map(fixed);
  return {
    key: `manifest:${digest}`,
    volatility: "immutable",
    attr: () => dirAttr(2 + layerDirs.size),
    lookup(name) {
      const f = fixedMap.get(name);
      if (f) return Promise.resolve(f);
      const i = layerDirs.get(name);
      return i === undefined ? Promise.resolve(undefined) : openLayerDir(i);
    },
    async list() {
      const roots = await Promise.all(
        [...layerDirs].map(async ([n, i]) => [n, await openLayerDir(i)] as [string, FsNode]),
      );
      return [...fixed, ...roots];
    },
  };
}

function configNode(store: ImageStore, repo: RepositoryName, m: ImageManifest): FsNode {
  const size = m.json.config.size;
  return {
    key: `config:${m.json.config.digest}`,
    volatility: "immutable",
    attr: () => ({ ...dirAttr(1), type: "reg", mode: 0o444, size }),
    async read(offset, length) {
      try {
        const c = await store.config(repo, m);
        return c.bytes.subarray(offset, offset + length);
      } catch (e) {
        fail(store, `${repo.host}/${repo.repository}@${m.json.config.digest}`, e);
      }
    },
  };
}

/** `images/<host>/<repo>/<tag or digest>/`: the merged image, all layers opened in parallel. */
async function imageDir(
  store: ImageStore,
  repo: RepositoryName,
  digest: string,
): Promise<FsNode | undefined> {
  const m = await store.imageManifest(repo, digest);
  if (!m) return undefined;
  const layers = await store.layers(repo, m);
  return unionRoot(layers.map((l) => ({ reader: l.reader, id: l.digest })), m.digest);
}

/**
 * `layers/local/…/NAME.stargz/` and `images/local/…/NAME.stargz/`: the root of the local file
 * `NAME.stargz`, which the `local` driver serves as the single-layer image `local/…/NAME:latest`.
 * Undefined when there is no such file.
 */
async function localFileDir(
  store: ImageStore,
  view: View,
  repo: RepositoryName,
): Promise<FsNode | undefined> {
  const digest = await store.resolveTag(repo, "latest");
  const m = digest ? await store.imageManifest(repo, digest) : undefined;
  if (!m || m.json.layers.length !== 1) return undefined;
  if (view === "images") return await imageDir(store, repo, m.digest);
  const { reader, digest: id } = await store.layer(repo, m.json.layers[0]);
  return layerRoot(reader, id);
}
