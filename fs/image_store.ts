/**
 * What the file tree knows about registries, cached: manifests by digest (forever: they are
 * immutable), tags to digests (for the tag TTL), repository catalogs (for the same TTL), and one
 * stargz reader per layer blob, opened once and shared by every view and image that contains
 * the layer. Every layer of an image is opened in parallel. With a disk cache, manifests,
 * configs, TOCs, chunks and tag resolutions outlive the process, so a second mount of an image
 * reads cached files without any registry request.
 *
 * @module
 */
import type { ChunkCache } from "../format/reader.ts";
import { type Driver, type DriverRegistry, lister, type TagInfo } from "../drivers/driver.ts";
import type { Descriptor, ImageConfig, ImageManifest, Manifest } from "../drivers/manifest.ts";
import type { RepositoryName } from "../drivers/reference.ts";
import type { RangeSource } from "../format/range_source.ts";
import { isNotFound, isRegistryError } from "../drivers/errors.ts";
import { IMAGE_MEDIA_TYPES, parseManifest } from "../drivers/manifest.ts";
import type { DiskCache } from "./disk_cache.ts";
import type { DecodePool } from "../format/decode_pool.ts";
import { LOCAL_HOST } from "../drivers/reference.ts";
import type { OpenLayer, PrefetchMode, VerifyPolicy } from "./layer_open.ts";
import { LruMap } from "./lru_map.ts";
import type { StargzReader } from "../format/reader.ts";

/** Options of an {@link ImageStore}. */
export interface ImageStoreOptions {
  /** How long a tag's digest and a catalog are trusted, in ms. Default 60 s. */
  tagTtlMs?: number;
  /** Platform to choose from indexes (`os/arch[/variant]`); default this machine's. */
  platform?: string;
  /** Shared in-memory cache of decompressed chunks. */
  chunkCache?: ChunkCache;
  /** Wraps each layer's blob source (e.g. to count traffic). */
  wrapSource?: (digest: string, source: RangeSource) => RangeSource;
  /** The disk cache. */
  disk?: DiskCache;
  /** Bytes of a file read ahead when it is read sequentially (0 = off; default the reader's). */
  readAhead?: number;
  /**
   * Background fetching once a layer opens: `landmark` (default) fetches the files its
   * `.prefetch.landmark` marks as prioritized, `all` the whole layer, `off` nothing.
   */
  prefetch?: PrefetchMode;
  /**
   * Verification: `strict` (default) checks every digest the data carries (TOC digest against
   * the manifest annotation, chunk digests, file digests); `require` also refuses layers
   * without chunk digests, and registry layers without a TOC digest annotation (the `local`
   * host's files have no real manifest to carry one); `none` keeps only gzip CRC checks.
   */
  verify?: VerifyPolicy;
  /** Logs one line per problem. */
  log?: (line: string) => void;
  /** Bounds of the store's tables; see {@link StoreLimits}. */
  limits?: Partial<StoreLimits>;
}

/**
 * How much registry state an {@link ImageStore} keeps in memory, least recently used out. A
 * layer reader dropped from `layers` stays in use (and is found again) while nodes of the tree
 * still hold it, e.g. files the kernel has open; it is released once nothing does.
 */
export interface StoreLimits {
  /** Layer readers kept open with nothing else holding them (each holds its TOC index). */
  layers: number;
  /** Manifests (and image configs) by digest. */
  manifests: number;
  /** Tag resolutions, repository catalogs and tag lists (each for the tag TTL). */
  tags: number;
  /** Repositories learned from the registry or the disk cache (hinted ones always stay). */
  repositories: number;
}

/** The default {@link StoreLimits}. */
export const DEFAULT_STORE_LIMITS: StoreLimits = {
  layers: 64,
  manifests: 1024,
  tags: 4096,
  repositories: 4096,
};

interface Timed<T> {
  at: number;
  value: Promise<T>;
}

/** Caches of registry state for the tree. */
export class ImageStore {
  readonly drivers: DriverRegistry;
  readonly tagTtlMs: number;
  readonly platform?: string;
  readonly log: (line: string) => void;
  #chunkCache?: ChunkCache;
  readonly #wrap?: (digest: string, source: RangeSource) => RangeSource;
  readonly #disk?: DiskCache;
  readonly #readAhead?: number;
  readonly #prefetch: PrefetchMode;
  readonly #verify: VerifyPolicy;
  #decodePool?: DecodePool;
  readonly #background = new AbortController();
  readonly limits: StoreLimits;
  readonly #manifests: LruMap<string, Promise<Manifest>>;
  readonly #tags: LruMap<string, Timed<string | undefined>>;
  readonly #catalogs: LruMap<string, Timed<string[] | undefined>>;
  /** Catalogs that have arrived, for answers that make no request. */
  readonly #catalogsDone: LruMap<string, { at: number; names: string[] }>;
  readonly #tagLists: LruMap<string, Timed<TagInfo[] | undefined>>;
  readonly #layers: LruMap<string, Promise<OpenLayer>>;
  /** Readers dropped from `#layers` that may still be in use, found again while they live. */
  readonly #heldLayers = new Map<string, WeakRef<StargzReader>>();
  /** Closes a dropped reader's blob source once the reader is gone. */
  readonly #release = new FinalizationRegistry<{ digest: string; source: LazyBlobSource }>(
    ({ digest, source }) => {
      const held = this.#heldLayers.get(digest);
      if (held && held.deref() === undefined) this.#heldLayers.delete(digest);
      source.close();
    },
  );
  readonly #sources = new Map<string, LazyBlobSource>();
  /** Layers being opened (not let go of by {@link releaseOpenLayers}: they would open twice). */
  readonly #opening = new Set<string>();
  /** What the memory reclaimer empties (held here: the reclaimer holds it weakly). */
  readonly #openLayersReclaim = { clear: () => this.releaseOpenLayers() };
  readonly #configs: LruMap<string, Promise<ImageConfig>>;
  /** Repositories the user named: always kept. */
  readonly #hintedRepos = new Set<string>();
  /** Repositories learned from the registry or disk cache. */
  readonly #learnedRepos: LruMap<string, true>;

  constructor(drivers: DriverRegistry, opts: ImageStoreOptions = {}) {
    this.drivers = drivers;
    this.tagTtlMs = opts.tagTtlMs ?? 60_000;
    this.platform = opts.platform;
    this.log = opts.log ?? ((l) => console.error(l));
    this.#chunkCache = opts.chunkCache;
    this.#wrap = opts.wrapSource;
    this.#disk = opts.disk;
    this.#readAhead = opts.readAhead;
    this.#prefetch = opts.prefetch ?? "landmark";
    this.#verify = opts.verify ?? "strict";
    const limits = { ...DEFAULT_STORE_LIMITS, ...opts.limits };
    this.limits = limits;
    this.#manifests = new LruMap(limits.manifests);
    this.#configs = new LruMap(limits.manifests);
    this.#tags = new LruMap(limits.tags);
    this.#catalogs = new LruMap(Math.max(1, limits.tags >> 4));
    this.#catalogsDone = new LruMap(Math.max(1, limits.tags >> 4));
    this.#tagLists = new LruMap(limits.tags);
    this.#learnedRepos = new LruMap(limits.repositories);
    this.#layers = new LruMap(limits.layers, (digest, p) => this.#dropLayer(digest, p));
  }

  /** Sizes of the store's tables now (for status reports and tests). */
  get tableSizes(): Record<string, number> {
    return {
      layers: this.#layers.size,
      heldLayers: this.#heldLayers.size,
      manifests: this.#manifests.size,
      configs: this.#configs.size,
      tags: this.#tags.size,
      catalogs: this.#catalogs.size,
      catalogsDone: this.#catalogsDone.size,
      tagLists: this.#tagLists.size,
      repositories: this.#learnedRepos.size + this.#hintedRepos.size,
    };
  }

  #knows(key: string): boolean {
    return this.#hintedRepos.has(key) || this.#learnedRepos.get(key) !== undefined;
  }

  #learn(key: string): void {
    if (!this.#hintedRepos.has(key)) this.#learnedRepos.set(key, true);
  }

  *#knownRepos(): Iterable<string> {
    yield* this.#hintedRepos;
    yield* this.#learnedRepos.keys();
  }

  /**
   * Loads what the disk cache knows (repositories seen within the tag TTL), so a new mount
   * walks to them without asking the registry.
   */
  async init(): Promise<void> {
    for (const r of (await this.#disk?.repositories(this.tagTtlMs)) ?? []) this.#learn(r);
  }

  /**
   * Records that `repo` exists (named by the user), so walking to it needs no catalog and
   * no guessing whether its path components are tags.
   */
  hintRepository(repo: RepositoryName): void {
    this.#hintedRepos.add(`${repo.host}/${repo.repository}`);
  }

  /**
   * Whether `repo` is a repository: true or false when known (from hints, what the registry
   * showed, or a catalog fetched within the TTL), undefined when unknown. Makes no request:
   * walking to a file never waits for a catalog (see {@link catalog}).
   */
  isRepository(repo: RepositoryName): boolean | undefined {
    const key = `${repo.host}/${repo.repository}`;
    if (this.#knows(key)) return true;
    for (const k of this.#knownRepos()) if (k.startsWith(key + "/")) return undefined;
    const all = this.#catalogNow(repo.host);
    return all ? all.includes(repo.repository) : undefined;
  }

  /** Whether a hinted or learned repository lives at or under `prefix` (no requests). */
  hintedUnder(host: string, prefix: string): boolean {
    const key = `${host}/${prefix}`;
    for (const k of this.#knownRepos()) if (k === key || k.startsWith(key + "/")) return true;
    return false;
  }

  /**
   * Whether some repository lives at or under `prefix`: true/false when known (as for
   * {@link isRepository}), undefined if unknown. Makes no request.
   */
  hasRepositoryUnder(host: string, prefix: string): boolean | undefined {
    if (this.hintedUnder(host, prefix)) return true;
    const all = this.#catalogNow(host);
    return all ? all.some((r) => r === prefix || r.startsWith(prefix + "/")) : undefined;
  }

  /** The catalog of `host` when one fetched within the TTL has arrived (no request). */
  #catalogNow(host: string): string[] | undefined {
    const hit = this.#catalogsDone.get(host);
    return hit && Date.now() - hit.at < this.tagTtlMs ? hit.names : undefined;
  }

  /** The driver serving `host`. */
  driver(host: string): Driver {
    return this.drivers.forHost(host);
  }

  #fresh<T>(map: LruMap<string, Timed<T>>, key: string, make: () => Promise<T>): Promise<T> {
    const hit = map.get(key);
    if (hit && Date.now() - hit.at < this.tagTtlMs) return hit.value;
    const value = make();
    map.set(key, { at: Date.now(), value });
    value.catch(() => {
      if (map.peek(key)?.value === value) map.delete(key);
    });
    return value;
  }

  /**
   * The digest of the single-platform image a tag names now (through an index if needed), or
   * undefined when the tag does not exist. Cached for the tag TTL.
   */
  resolveTag(
    repo: RepositoryName,
    tag: string,
    opts: { headOnly?: boolean } = {},
  ): Promise<string | undefined> {
    const ref = `${repo.host}/${repo.repository}:${tag}`;
    // A local file's tag changes with the file: not worth recording for the next mount.
    const disk = repo.host === LOCAL_HOST ? undefined : this.#disk;
    return this.#fresh(this.#tags, ref, async () => {
      const recorded = `${ref}@${this.platform ?? "default"}`;
      const known = await disk?.tag(recorded, this.tagTtlMs);
      if (known) {
        this.#learn(`${repo.host}/${repo.repository}`);
        return known;
      }
      try {
        // Listings only need the digest: a HEAD says it (and is free of Docker Hub's pull
        // limits) unless the tag names an index, whose body picks the platform. Opening an
        // image needs the manifest anyway: one GET.
        const driver = this.driver(repo.host);
        let digest: string;
        const head = opts.headOnly ? await driver.headManifest(repo, tag) : undefined;
        if (opts.headOnly && !head) return undefined;
        if (head && IMAGE_MEDIA_TYPES.includes(head.mediaType)) digest = head.digest;
        else {
          const r = await driver.resolve({ ...repo, tag }, { platform: this.platform });
          const m = r.manifest;
          this.#manifests.set(m.digest, Promise.resolve(m));
          disk?.later(() => disk.putObject(m.digest, m.bytes));
          digest = m.digest;
        }
        // Records for the next process: written behind the answer (the layers come next), each
        // a file of its own.
        if (disk) {
          disk.later(() => disk.putTag(recorded, digest));
          disk.later(() => disk.putRepository(`${repo.host}/${repo.repository}`));
        }
        this.#learn(`${repo.host}/${repo.repository}`);
        return digest;
      } catch (e) {
        if (isNotFound(e)) return undefined;
        throw e;
      }
    });
  }

  /** A manifest by digest (cached forever); undefined when it does not exist. */
  async manifest(repo: RepositoryName, digest: string): Promise<Manifest | undefined> {
    let p = this.#manifests.get(digest);
    if (!p) {
      p = this.#fetchManifest(repo, digest);
      this.#manifests.set(digest, p);
      p.catch(() => this.#manifests.delete(digest));
    }
    try {
      return await p;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  async #fetchManifest(repo: RepositoryName, digest: string): Promise<Manifest> {
    const cached = await this.#disk?.object(digest);
    if (cached) {
      return parseManifest(cached, digest, undefined, `${repo.host}/${repo.repository}@${digest}`);
    }
    const m = await this.driver(repo.host).getManifest(repo, digest);
    const disk = this.#disk;
    disk?.later(() => disk.putObject(m.digest, m.bytes)); // for the next process
    return m;
  }

  /**
   * The single-platform manifest for a digest: the manifest itself, or for an index the
   * platform's manifest. Undefined when missing.
   */
  async imageManifest(repo: RepositoryName, digest: string): Promise<ImageManifest | undefined> {
    const m = await this.manifest(repo, digest);
    if (!m) return undefined;
    if (m.kind === "image") return m;
    const r = await this.driver(repo.host).resolve({ ...repo, digest }, {
      platform: this.platform,
    });
    this.#manifests.set(r.manifest.digest, Promise.resolve(r.manifest));
    return r.manifest;
  }

  /** The image config of a manifest (cached). */
  config(repo: RepositoryName, manifest: ImageManifest): Promise<ImageConfig> {
    const d = manifest.json.config.digest;
    let p = this.#configs.get(d);
    if (!p) {
      p = (async (): Promise<ImageConfig> => {
        const cached = await this.#disk?.object(d);
        if (cached) {
          return { digest: d, bytes: cached, json: JSON.parse(new TextDecoder().decode(cached)) };
        }
        const c = await this.driver(repo.host).getConfig(repo, manifest);
        const disk = this.#disk;
        disk?.later(() => disk.putObject(c.digest, c.bytes)); // for the next process
        return c;
      })();
      this.#configs.set(d, p);
      p.catch(() => this.#configs.delete(d));
    }
    return p;
  }

  /**
   * Repository names on a host (the catalog), cached for the TTL; undefined when the registry
   * cannot list them (Docker Hub, denied catalogs).
   */
  catalog(host: string): Promise<string[] | undefined> {
    return this.#fresh(this.#catalogs, host, async () => {
      try {
        const at = Date.now();
        const names = await lister(this.driver(host), "list repositories").listRepositories(host);
        this.#catalogsDone.set(host, { at, names });
        return names;
      } catch (e) {
        if (
          isRegistryError(e, "UNSUPPORTED", "UNAUTHORIZED", "DENIED", "NOT_FOUND", "NAME_UNKNOWN")
        ) return undefined;
        throw e;
      }
    });
  }

  /** Tags of a repository (cached for the TTL); undefined when it is not a repository. */
  tags(repo: RepositoryName): Promise<TagInfo[] | undefined> {
    return this.#fresh(this.#tagLists, `${repo.host}/${repo.repository}`, async () => {
      try {
        return await lister(this.driver(repo.host)).listTags(repo);
      } catch (e) {
        if (isNotFound(e) || isRegistryError(e, "UNSUPPORTED", "NAME_UNKNOWN")) return undefined;
        throw e;
      }
    });
  }

  /**
   * The stargz reader of a layer, opened once and shared: a reader dropped from the open
   * layers (least recently used beyond `limits.layers`) that nodes of the tree still hold is
   * found again, never opened twice.
   */
  layer(repo: RepositoryName, desc: Descriptor): Promise<OpenLayer> {
    let p = this.#layers.get(desc.digest);
    if (!p) {
      const reader = this.#heldLayers.get(desc.digest)?.deref();
      this.#heldLayers.delete(desc.digest);
      p = reader ? Promise.resolve({ digest: desc.digest, reader }) : this.#openLayer(repo, desc);
      this.#layers.set(desc.digest, p);
      const opened = p;
      this.#opening.add(desc.digest);
      p.catch(() => {
        if (this.#layers.peek(desc.digest) === opened) this.#layers.delete(desc.digest);
      }).finally(() => this.#opening.delete(desc.digest));
    }
    return p;
  }

  /**
   * Lets go of every open layer: readers that nodes of the tree still hold (files and
   * directories the kernel knows) stay in use and are found again; the others are released, and
   * opened again (TOC from the disk cache) when next looked up. What the memory reclaimer does
   * when a quiet process is over its budget (fs/memory_reclaim.ts), after the chunk cache.
   * Layers still being opened stay.
   */
  releaseOpenLayers(): void {
    for (const digest of [...this.#layers.keys()]) {
      if (this.#opening.has(digest)) continue;
      const p = this.#layers.peek(digest)!;
      this.#layers.delete(digest);
      this.#dropLayer(digest, p);
    }
  }

  /** A layer left the open layers: remember its reader weakly; release it once unused. */
  #dropLayer(digest: string, p: Promise<OpenLayer>): void {
    for (const [d, ref] of this.#heldLayers) {
      if (ref.deref() === undefined) this.#heldLayers.delete(d);
    }
    p.then(({ reader }) => {
      if (this.#layers.peek(digest) !== undefined) return; // opened again meanwhile
      this.#heldLayers.set(digest, new WeakRef(reader));
      const source = this.#sources.get(digest);
      this.#sources.delete(digest);
      if (source) this.#release.register(reader, { digest, source });
    }, () => {});
  }

  async #openLayer(repo: RepositoryName, desc: Descriptor): Promise<OpenLayer> {
    const { openLayer, MemoryChunkCache, DecodePool, reclaimable } = await layerCode();
    // Over the memory budget while quiet, the open layers go with the memory caches.
    reclaimable(this.#openLayersReclaim);
    // Small: with a disk cache, big chunks are re-read decompressed from disk.
    this.#chunkCache ??= new MemoryChunkCache(16 << 20);
    // Files of the local directory are on disk already: no disk cache copy of their bytes, and
    // no manifest of a registry stands behind them (see `LayerBlob.manifested`).
    const local = repo.host === LOCAL_HOST;
    const source = new LazyBlobSource(
      () => this.driver(repo.host).blob(repo, desc.digest, desc.size),
      desc.size,
    );
    this.#sources.set(desc.digest, source);
    return await openLayer({
      id: desc.digest,
      source,
      where: `${repo.host}/${repo.repository}@${desc.digest}`,
      annotations: desc.annotations,
      manifested: !local,
    }, {
      verify: this.#verify,
      chunkCache: this.#chunkCache,
      // One pool for every layer: big fetches decode on the other cores, once reads have decoded
      // 8 MiB in place (a container start reads a few big files: no worker to start for those).
      decodePool: this.#decodePool ??= new DecodePool(undefined, undefined, {
        warmAfterBytes: 8 << 20,
      }),
      readAhead: this.#readAhead,
      prefetch: this.#prefetch,
      signal: this.#background.signal,
      wrapSource: this.#wrap,
      disk: local ? undefined : this.#disk,
      log: this.log,
    }).catch((e) => {
      if (this.#sources.get(desc.digest) === source) this.#sources.delete(desc.digest);
      source.close();
      throw e;
    });
  }

  /** The disk cache, if any. */
  get disk(): DiskCache | undefined {
    return this.#disk;
  }

  /** Stops background fetching (before unmounting). */
  stopBackground(): void {
    this.#background.abort();
  }

  /** Every layer opened so far (for status reports). */
  async openLayers(): Promise<OpenLayer[]> {
    const out: OpenLayer[] = [];
    for (const p of this.#layers.values()) {
      try {
        out.push(await p);
      } catch { /* failed opens are not layers */ }
    }
    return out;
  }

  /** Opens every layer of a manifest, in parallel. */
  layers(repo: RepositoryName, manifest: ImageManifest): Promise<OpenLayer[]> {
    return Promise.all(manifest.json.layers.map((d) => this.layer(repo, d)));
  }
}

/** The code that opens and reads layers (the format stack, zlib), loaded on first use. */
interface LayerCode {
  openLayer: typeof import("./layer_open.ts").openLayer;
  MemoryChunkCache: typeof import("../format/reader.ts").MemoryChunkCache;
  DecodePool: typeof import("../format/decode_pool.ts").DecodePool;
  reclaimable: typeof import("./memory_reclaim.ts").reclaimable;
}

let layerCodeLoad: Promise<LayerCode> | undefined;

/**
 * Imports the layer code once. A mount starts serving before it is loaded: it loads while the
 * first registry request is on its way (see {@link preloadLayerCode}), not before the mount is
 * up, nor before that request is sent (loading blocks the thread for a while).
 */
function layerCode(): Promise<LayerCode> {
  return layerCodeLoad ??= Promise.all([
    import("./layer_open.ts"),
    import("../format/reader.ts"),
    import("../format/decode_pool.ts"),
    import("./memory_reclaim.ts"),
    import("../format/libdeflate.ts"),
  ]).then(([open, reader, pool, reclaim, libdeflate]) => {
    warmUp(libdeflate);
    return {
      openLayer: open.openLayer,
      MemoryChunkCache: reader.MemoryChunkCache,
      DecodePool: pool.DecodePool,
      reclaimable: reclaim.reclaimable,
    };
  });
}

/**
 * Runs once what the first inflate would otherwise set up on its way: libdeflate's `dlopen` and
 * symbol binding (7 ms with warm caches, 48 ms in a profile of a mount started from a cold page
 * cache, right before its first byte). Node's zlib and crypto are not loaded: the read path
 * needs neither (format/crc32.ts, format/sha256.ts).
 */
function warmUp(libdeflate: typeof import("../format/libdeflate.ts")): void {
  try {
    libdeflate.haveLibdeflate();
  } catch { /* only a warm-up: the real work says what fails */ }
}

/**
 * Starts loading the code that opens and reads layers, unless it is loaded or loading. The
 * time for it is right after the first registry request has gone out (a tag's manifest: the
 * layers come next), while the thread would only wait for the answer: `crfs mount` calls it
 * then (see `instrumentFetch`'s `onRequest`). Opening a layer loads it anyway.
 */
export function preloadLayerCode(): void {
  layerCode().catch(() => {}); // a failure shows where the code is used
}

/**
 * A blob source that asks the driver for the blob only when first read: a layer whose TOC and
 * chunks all come from the disk cache makes no registry request at all.
 */
class LazyBlobSource implements RangeSource {
  readonly size: number;
  readonly #open: () => Promise<RangeSource & { close?(): void }>;
  #source?: Promise<RangeSource & { close?(): void }>;
  constructor(open: () => Promise<RangeSource & { close?(): void }>, size: number) {
    this.#open = open;
    this.size = size;
  }
  async read(offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    if (!this.#source) {
      const p = this.#open();
      this.#source = p;
      p.catch(() => {
        if (this.#source === p) this.#source = undefined;
      });
    }
    return (await this.#source).read(offset, length, signal);
  }
  /** Releases the blob (an open file of the local driver), if it was opened. */
  close(): void {
    const p = this.#source;
    this.#source = undefined;
    p?.then((s) => s.close?.(), () => {});
  }
}
