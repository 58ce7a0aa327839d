/**
 * Opening one layer blob for reading: the single place where a blob — from a registry, from the
 * `local` directory or named on the command line — becomes a {@link StargzReader}, and where the
 * options that apply to every layer live: the shared in-memory chunk cache, the decode pool, the
 * verify policy, background prefetch, read-ahead, traffic accounting and the disk cache.
 *
 * @module
 */
import { type ChunkCache, MemoryChunkCache, StargzReader } from "../format/reader.ts";
import { FileSource, type RangeSource } from "../format/range_source.ts";
import { announcedLayer } from "../format/layer_kind.ts";
import { TOC_DIGEST_ANNOTATION } from "../format/toc.ts";
import type { DecodePool } from "../format/decode_pool.ts";
import type { DiskCache } from "./disk_cache.ts";
import { DecodedChunkCache } from "./decoded_cache.ts";
import { type Reclaimable, reclaimable } from "./memory_reclaim.ts";
import { NodeError } from "./node.ts";

/** How much is checked: see {@link LayerOpenOptions.verify}. */
export type VerifyPolicy = "strict" | "require" | "none";
/** What is fetched in the background once a layer opens. */
export type PrefetchMode = "off" | "landmark" | "all";

/** A layer opened for reading. */
export interface OpenLayer {
  /** The blob's digest, or another stable id for a blob without one (a file). */
  digest: string;
  reader: StargzReader;
}

/** The blob to open. */
export interface LayerBlob {
  /** The blob digest (`sha256:…`) or a stable id; it keys the chunk and disk caches and inodes. */
  id: string;
  /** The blob's bytes. */
  source: RangeSource;
  /** Where the blob is, for messages (`host/repo@digest`, a file path). */
  where: string;
  /** The TOC digest its manifest promises (the eStargz annotation), checked unless `none`. */
  tocDigest?: string;
  /**
   * The descriptor's annotations: they locate a zstd:chunked TOC (its manifest position) and
   * give the digests checked unless `none` (eStargz TOC digest, zstd:chunked manifest checksum).
   */
  annotations?: Record<string, string>;
  /**
   * Whether a registry manifest describes the blob, so that `require` can demand the TOC digest
   * annotation (for zstd:chunked its equivalent, the manifest checksum). Blobs without a real manifest (local files: a `.stargz` of the local directory, a
   * file named on the command line) have nothing to carry it; `require` then demands chunk
   * digests only.
   */
  manifested: boolean;
}

/** Options of {@link openLayer}; a store passes the same ones for every layer. */
export interface LayerOpenOptions {
  /** Shared in-memory cache of decompressed chunks (none by default). */
  chunkCache?: ChunkCache;
  /** Workers that decode big fetches on other cores (inline decoding by default). */
  decodePool?: DecodePool;
  /**
   * `strict` (default) checks every digest the data carries (TOC digest against the annotation,
   * chunk digests, file digests); `require` also refuses layers without chunk digests and, for
   * manifested blobs, without the TOC digest annotation; `none` keeps only gzip CRC checks.
   */
  verify?: VerifyPolicy;
  /**
   * Background fetching once the layer opens: `landmark` fetches the files its
   * `.prefetch.landmark` prioritizes, `all` the whole layer, `off` (default) nothing.
   */
  prefetch?: PrefetchMode;
  /** Stops background fetching. */
  signal?: AbortSignal;
  /** Bytes of a file read ahead when it is read sequentially (0 = off; default the reader's). */
  readAhead?: number;
  /** Wraps the blob's source (e.g. to count traffic) before any caching. */
  wrapSource?: (id: string, source: RangeSource) => RangeSource;
  /**
   * The disk cache: the blob's ranges are kept there, keyed by `id`, and its big chunks
   * decompressed (in front of `chunkCache`).
   */
  disk?: DiskCache;
  /** Logs one line per problem (warnings of the TOC, a stopped prefetch). */
  log?: (line: string) => void;
}

/**
 * Opens a layer blob (eStargz, stargz or zstd:chunked) as a stargz reader with `options`. Failures (not stargz, a digest that does
 * not match, what `verify` refuses) are logged and thrown as an EIO {@link NodeError} naming
 * `blob.where`.
 *
 * @example
 * ```ts
 * const layer = await openLayer(
 *   { id: desc.digest, source, where: "127.0.0.1:5000/my/app@" + desc.digest, manifested: true,
 *     annotations: desc.annotations },
 *   { verify: "require", chunkCache, prefetch: "landmark" },
 * );
 * const bytes = await layer.reader.read(layer.reader.lookup("/etc/hostname")!, 0, 100);
 * ```
 */
export async function openLayer(
  blob: LayerBlob,
  options: LayerOpenOptions = {},
): Promise<OpenLayer> {
  const verify = options.verify ?? "strict";
  const log = options.log ?? ((line: string) => console.error(line));
  try {
    let source = blob.source;
    if (options.wrapSource) source = options.wrapSource(blob.id, source);
    if (
      verify === "require" && blob.manifested && !blob.tocDigest &&
      !announcedLayer(blob.annotations)?.tocKey
    ) {
      throw new Error(
        `no ${TOC_DIGEST_ANNOTATION} or zstd-chunked.manifest-checksum annotation (--verify require)`,
      );
    }
    // The memory cache is the first thing given back when the process is over its memory
    // budget (see memory_reclaim.ts); with a disk cache, its chunks are read from disk again.
    const memory = options.chunkCache ??
      (options.disk ? new MemoryChunkCache(32 << 20) : undefined);
    if (memory && options.disk && "clear" in memory) reclaimable(memory as Reclaimable);
    const open = (src: RangeSource) =>
      StargzReader.open(src, {
        annotations: blob.annotations,
        tocDigest: verify === "none" ? undefined : blob.tocDigest,
        verify: verify === "none" ? "none" : "strict",
        cache: options.disk && memory ? new DecodedChunkCache(options.disk, memory) : memory,
        cacheKey: `${blob.id}:`,
        readAhead: options.readAhead,
        // The first read of a layer takes little beyond its file (a container start reads a
        // few small files first); reads that walk the blob in order grow the window to 4 MiB.
        fetchWindow: 64 << 10,
        // The footer alone, then exactly the TOC: no content bytes fetched with it.
        tailGuess: 0,
        decodePool: options.decodePool,
      });
    let reader: StargzReader;
    if (options.disk) {
      const cached = options.disk.caching(blob.id, source);
      try {
        reader = await open(cached);
      } catch {
        // A damaged cached TOC must not make the layer unreadable: forget it, fetch again.
        await cached.invalidate(0, source.size);
        reader = await open(cached);
      }
    } else reader = await open(source);
    for (const w of reader.index.warnings) log(`crfs: ${blob.where}: ${w}`);
    if (verify === "require" && reader.index.chunks.some((chunk) => !chunk.digest)) {
      throw new Error("the TOC has no chunk digests (--verify require)");
    }
    const prefetch = options.prefetch ?? "off";
    if (prefetch !== "off") {
      reader.prefetch(prefetch, options.signal).catch((e) =>
        log(`crfs: ${blob.where}: prefetch stopped: ${(e as Error).message}`)
      );
    }
    return { digest: blob.id, reader };
  } catch (e) {
    const msg = `layer ${blob.where}: ${(e as Error).message}`;
    log(`crfs: ${msg}`);
    throw new NodeError("EIO", msg);
  }
}

/**
 * Opens a layer file (eStargz, stargz or zstd:chunked, found from its footer) named on the command line through {@link openLayer} (no manifest: its id
 * is its path, size and mtime). Close it when done.
 */
export async function openLayerFile(
  path: string,
  options: LayerOpenOptions = {},
): Promise<OpenLayer & { close(): void }> {
  const source = await FileSource.open(path);
  try {
    const { size, mtime } = await Deno.stat(path);
    const layer = await openLayer({
      id: `file:${path}:${size}:${mtime?.getTime() ?? 0}`,
      source,
      where: path,
      manifested: false,
    }, options);
    return { ...layer, close: () => source.close() };
  } catch (e) {
    source.close();
    throw e;
  }
}
