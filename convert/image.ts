/**
 * Converting whole images to eStargz (what google/crfs called "stargzify") or zstd:chunked: every
 * layer of the image SRC (tar, tar+gzip or tar+zstd, zstd:chunked included) is rewritten as an
 * eStargz (or, with `format: "zstd:chunked"`, a zstd:chunked) blob and the image is written to
 * DST with OCI media types. Used by `crfs convert SRC DST`; see {@link convertImage}.
 *
 * What the converted image is:
 * - an OCI manifest (`application/vnd.oci.image.manifest.v1+json`) with an OCI config media type;
 *   every layer `application/vnd.oci.image.layer.v1.tar+gzip` carrying the annotations
 *   `containerd.io/snapshot/stargz/toc.digest` (TOC digest) and
 *   `io.containers.estargz.uncompressed-size` (decimal) — zstd:chunked layers are
 *   `application/vnd.oci.image.layer.v1.tar+zstd` with the writer's `…zstd-chunked.*`
 *   annotations (see layer_descriptor.ts); other layer and manifest annotations
 *   are kept, a `subject` is not (the converted image is not the artifact it referred to);
 * - the config's bytes re-serialized with only `rootfs.diff_ids` replaced (diff ID = sha256 of
 *   the uncompressed eStargz blob); history and every other field are unchanged;
 * - with `--all-platforms`, an OCI index over the converted platform images, keeping each
 *   entry's platform and annotations and the index's annotations. Attestation entries
 *   (`unknown/unknown`, `vnd.docker.reference.type: attestation-manifest`) are left out: they
 *   describe the original images by digest, which the new index does not contain.
 *
 * How it is done:
 * - Layers are converted in parallel (at most `jobs` at a time) through one shared
 *   {@link CompressPool}. Each source layer is streamed, checked against its manifest digest and
 *   size (the stream is read to its very end, whatever the tar reader needed), and the eStargz
 *   output goes to a temporary file while the writer computes its digest; the blob is then
 *   stored from that file, so the digest is of exactly the bytes uploaded (uploads verify it
 *   once more while streaming). Identical source layers (shared between platforms) are
 *   converted once.
 * - A blob already at DST is not uploaded again (HEAD); on the same registry a blob that exists
 *   in SRC's repository is mounted across repositories instead of uploaded; a tag already
 *   pointing at the same manifest is not written again.
 * - Blobs go first, then per-platform manifests, then the index or tag: DST never names a
 *   missing blob. On failure the sink undoes what it can (see endpoint.ts) and the
 *   temporary files are removed.
 *
 * The metadata-only variant (`metaTag`), from the original CRFS design: the converter can also
 * produce an image that has the original's metadata (environment, entry point, command, working
 * directory, labels, history) but no file contents, so that a container host pulls only a few
 * kilobytes and the contents are read lazily through crfs. Here it is the converted image's
 * config with one empty eStargz layer (an empty tree: no file content at all), history entries
 * marked `empty_layer` plus one entry saying where the contents are, and the label and manifest
 * annotation {@link STARGZ_IMAGE_ANNOTATION} = the converted image's `REPOSITORY@DIGEST`. With
 * `--all-platforms` it is an index of such images.
 *
 * @module
 */
import { digestLike, digestMismatch } from "../drivers/digest.ts";
import { Digester } from "../drivers/digester.ts";
import type { DriverRegistry } from "../drivers/driver.ts";
import { RegistryError } from "../drivers/errors.ts";
import {
  defaultPlatform,
  type Descriptor,
  formatPlatform,
  type ImageManifest,
  type IndexManifest,
  type Manifest,
  MediaType,
  parsePlatform,
  type Platform,
  selectPlatform,
} from "../drivers/manifest.ts";
import { formatReference } from "../drivers/reference.ts";
import { CompressPool } from "../format/compress_pool.ts";
import { DEFAULT_CHUNK_SIZE, writeEStargz } from "../format/writer.ts";
import { writeZstdChunked } from "../format/zstd_chunked_writer.ts";
import { ZSTD_LAYER_MEDIA_TYPE } from "../format/zstd_chunked.ts";
import { UserError } from "./errors.ts";
import {
  type ConvertFormat,
  estargzLayerDescriptor,
  zstdChunkedLayerDescriptor,
} from "./layer_descriptor.ts";
import {
  type Endpoint,
  type ImageSink,
  type ImageSource,
  openSink,
  openSource,
} from "./endpoint.ts";

/** Manifest annotation and config label of a metadata-only image: where the contents are. */
export const STARGZ_IMAGE_ANNOTATION = "io.crfs.stargz.image";

/** Default number of layers converted at the same time. */
export const DEFAULT_JOBS = 3;

/** Layer media types crfs can convert (tar, gzip- or zstd-compressed tar). */
const CONVERTIBLE_LAYERS: readonly string[] = [
  MediaType.OCI_LAYER,
  MediaType.OCI_LAYER_GZIP,
  ZSTD_LAYER_MEDIA_TYPE,
  "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
  MediaType.DOCKER_LAYER_GZIP,
  "application/vnd.docker.image.rootfs.diff.tar",
  "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
  "application/vnd.oci.image.layer.nondistributable.v1.tar",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
];

const CONFIG_TYPES: readonly string[] = [MediaType.OCI_CONFIG, MediaType.DOCKER_CONFIG];

/** Options of {@link convertImage}. */
export interface ConvertImageOptions {
  /** The platform to pick from an index (`os/arch[/variant]`); default this machine's. */
  platform?: string;
  /** Convert every platform of an index and write a new index. */
  allPlatforms?: boolean;
  /** Also write the metadata-only variant under this tag (see the module documentation). */
  metaTag?: string;
  /** The layer format written; default `estargz`. */
  format?: ConvertFormat;
  /** Chunk size; default 4 MiB. */
  chunkSize?: number;
  /**
   * eStargz only: pack small files into shared gzip members of at least this many bytes
   * (`innerOffset`; see format/writer.ts `minChunkSize`). Default 0 (one member per chunk).
   */
  minChunkSize?: number;
  /** Compression level: gzip 1–9 (default 6) or zstd 1–19 (default 10). */
  level?: number;
  /** Compression workers; default one per core. */
  workers?: number;
  /** Layers converted at the same time; default {@link DEFAULT_JOBS}. */
  jobs?: number;
  /** Paths to put first in every layer, before a `.prefetch.landmark` (see format/writer.ts). */
  prioritized?: string[];
  /** Cancels the conversion (everything written is undone as on any failure). */
  signal?: AbortSignal;
  /** Receives a one-line progress summary now and then. */
  onProgress?: (line: string) => void;
}

/** One converted layer. */
export interface ConvertedLayer {
  /** The source layer's digest and size. */
  source: { digest: string; size: number; mediaType: string };
  /** The format written. */
  format: ConvertFormat;
  /** The converted blob's digest and size. */
  digest: string;
  size: number;
  diffId: string;
  /** The TOC JSON's digest (both formats). */
  tocDigest: string;
  uncompressedSize: number;
  /** zstd:chunked: the annotations the writer gave (manifest checksum and positions). */
  annotations?: Record<string, string>;
  /** How the blob reached DST. */
  transfer: "uploaded" | "present" | "mounted";
  /** Seconds spent converting. */
  seconds: number;
}

/** One converted platform image. */
export interface ConvertedImage {
  platform?: Platform;
  /** The source manifest's digest. */
  sourceDigest: string;
  /** The converted manifest's digest and size. */
  digest: string;
  size: number;
  layers: ConvertedLayer[];
}

/** What {@link convertImage} did. */
export interface ConvertImageResult {
  /** DST as given, for messages. */
  destination: string;
  /** The tag written. */
  tag: string;
  /** Digest and media type of what the tag points at (an image manifest or an index). */
  digest: string;
  mediaType: string;
  images: ConvertedImage[];
  /** The metadata-only variant, when asked for. */
  meta?: { tag: string; digest: string; mediaType: string };
  /** Whether the tag already pointed at this manifest (nothing was written for it). */
  unchanged: boolean;
}

/** A small bounded job queue. */
class Limiter {
  #active = 0;
  #waiting: (() => void)[] = [];
  constructor(readonly limit: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#active >= this.limit) await new Promise<void>((r) => this.#waiting.push(r));
    this.#active++;
    try {
      return await fn();
    } finally {
      this.#active--;
      this.#waiting.shift()?.();
    }
  }
}

/** Per-layer states rendered as one progress line. */
class ProgressBoard {
  readonly #states = new Map<string, string>();
  #done = 0;
  #total = 0;
  constructor(readonly emit?: (line: string) => void) {}
  add(): void {
    this.#total++;
  }
  set(key: string, state: string): void {
    this.#states.set(key, state);
    this.#render();
  }
  finish(key: string): void {
    this.#states.delete(key);
    this.#done++;
    this.#render();
  }
  #render(): void {
    if (!this.emit) return;
    const active = [...this.#states].map(([k, s]) => `${k.slice(7, 19)} ${s}`);
    this.emit(`layers ${this.#done}/${this.#total} done · ${active.join(" · ")}`);
  }
}

/** What a layer job needs. */
interface JobContext {
  source: ImageSource;
  sink: ImageSink;
  tmpDir: string;
  pool: CompressPool;
  format: ConvertFormat;
  chunkSize: number;
  minChunkSize: number;
  level?: number;
  prioritized?: string[];
  signal: AbortSignal;
  board: ProgressBoard;
}

/** Which manifest of SRC's top-level one to convert, and with which platform. */
interface Picked {
  manifest: ImageManifest;
  entry?: Descriptor;
}

function isImageEntry(d: Descriptor): boolean {
  const p = d.platform;
  if (p && p.os === "unknown" && p.architecture === "unknown") return false;
  if (d.annotations?.["vnd.docker.reference.type"] === "attestation-manifest") return false;
  return true;
}

async function childImage(
  source: ImageSource,
  entry: Descriptor,
  signal: AbortSignal,
): Promise<ImageManifest> {
  const m = await source.manifest(entry.digest, signal);
  if (m.kind !== "image") {
    throw new RegistryError(`${source.what}: nested index ${entry.digest} is not supported`, {
      code: "UNSUPPORTED",
    });
  }
  if (m.bytes.length !== entry.size) {
    throw new RegistryError(
      `${source.what}@${entry.digest}: manifest is ${m.bytes.length} bytes, the index says ${entry.size}`,
      { code: "BAD_RESPONSE" },
    );
  }
  return m;
}

/** Picks the images to convert from SRC's top-level manifest. */
async function pickImages(
  source: ImageSource,
  top: Manifest,
  opts: ConvertImageOptions,
  signal: AbortSignal,
): Promise<Picked[]> {
  if (top.kind === "image") return [{ manifest: top }];
  if (opts.allPlatforms) {
    const entries = top.json.manifests.filter(isImageEntry);
    if (entries.length === 0) {
      throw new RegistryError(`${source.what}: the index lists no images`, {
        code: "PLATFORM_NOT_FOUND",
      });
    }
    return await Promise.all(
      entries.map(async (entry) => ({ manifest: await childImage(source, entry, signal), entry })),
    );
  }
  const want = opts.platform ? parsePlatform(opts.platform) : defaultPlatform();
  const entry = selectPlatform(top.json, want, source.what);
  return [{ manifest: await childImage(source, entry, signal), entry }];
}

function checkLayerType(source: ImageSource, d: Descriptor): void {
  if (CONVERTIBLE_LAYERS.includes(d.mediaType)) return;
  const kind = d.mediaType.includes("encrypted")
    ? "encrypted"
    : `of type ${JSON.stringify(d.mediaType)}`;
  throw new RegistryError(
    `${source.what}: layer ${d.digest} is ${kind}; crfs converts tar, tar+gzip and tar+zstd layers only`,
    { code: "UNSUPPORTED" },
  );
}

/** Converts one layer into a temporary file and stores it at DST. */
async function convertLayer(ctx: JobContext, desc: Descriptor): Promise<ConvertedLayer> {
  const { source, sink, signal, board } = ctx;
  const what = `${source.what}: layer ${desc.digest}`;
  const started = performance.now();
  board.set(desc.digest, "fetching");
  const stream = await source.blob(desc, signal);
  // Every source byte passes through here in order, whoever reads it.
  const seen = new Digester(desc.digest.split(":")[0]);
  const counted = stream.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, c) {
        seen.update(chunk);
        c.enqueue(chunk);
        const pct = desc.size ? Math.floor((100 * seen.bytes) / desc.size) : 0;
        board.set(desc.digest, `converting ${pct}%`);
      },
    }),
  );
  const reader = counted.getReader();
  const input = async function* () {
    while (true) {
      if (signal.aborted) throw signal.reason;
      const r = await reader.read();
      if (r.done) return;
      yield r.value;
    }
  };
  const path = `${ctx.tmpDir}/${desc.digest.replace(":", "-")}.${
    ctx.format === "zstd:chunked" ? "zst" : "estargz"
  }`;
  const out = await Deno.open(path, { write: true, createNew: true });
  const written = new Digester("sha256");
  let result;
  try {
    const sinkBytes = async (bytes: Uint8Array) => {
      signal.throwIfAborted();
      written.update(bytes);
      for (let o = 0; o < bytes.length;) o += await out.write(bytes.subarray(o));
    };
    result = ctx.format === "zstd:chunked"
      ? await writeZstdChunked(input(), sinkBytes, {
        pool: ctx.pool,
        chunkSize: ctx.chunkSize,
        level: ctx.level,
      })
      : await writeEStargz(input(), sinkBytes, {
        pool: ctx.pool,
        chunkSize: ctx.chunkSize,
        minChunkSize: ctx.minChunkSize,
        level: ctx.level,
        prioritized: ctx.prioritized,
        tempDir: ctx.tmpDir,
      });
    // The tar reader stops at the end-of-archive marker: read the rest so that the whole
    // blob is checked against its digest.
    while (!(await reader.read()).done) { /* drained through the digester */ }
  } catch (e) {
    await reader.cancel().catch(() => {});
    throw layerError(what, e);
  } finally {
    out.close();
  }
  if (seen.bytes !== desc.size) {
    throw new RegistryError(`${what}: got ${seen.bytes} bytes, the manifest says ${desc.size}`, {
      code: "BAD_RESPONSE",
    });
  }
  const actual = seen.digest();
  if (actual !== desc.digest) throw digestMismatch(what, desc.digest, actual);
  const ownDigest = written.digest();
  if (ownDigest !== result.blobDigest || written.bytes !== result.blobSize) {
    throw new Error(`${what}: the converted blob's digest changed while it was written`);
  }
  const seconds = (performance.now() - started) / 1000;
  signal.throwIfAborted();
  let transfer: ConvertedLayer["transfer"] = "uploaded";
  if (await sink.hasBlob(result.blobDigest, signal)) transfer = "present";
  else if (source.repo && (await sink.mountBlob(result.blobDigest, source.repo, signal))) {
    transfer = "mounted";
  } else {
    board.set(desc.digest, "uploading");
    await sink.putBlobFile(result.blobDigest, result.blobSize, path, signal);
  }
  await Deno.remove(path).catch(() => {});
  board.finish(desc.digest);
  return {
    source: { digest: desc.digest, size: desc.size, mediaType: desc.mediaType },
    format: ctx.format,
    digest: result.blobDigest,
    size: result.blobSize,
    diffId: result.diffId,
    tocDigest: result.tocDigest,
    uncompressedSize: result.uncompressedSize,
    ...("annotations" in result ? { annotations: result.annotations } : {}),
    transfer,
    seconds,
  };
}

/** Format errors in a layer become user errors naming the layer. */
function layerError(what: string, e: unknown): unknown {
  if (e instanceof RegistryError || e instanceof UserError) return e;
  const name = (e as Error)?.name;
  if (name === "TarError" || name === "GzipError" || name === "ZstdError") {
    return new UserError(`${what}: ${(e as Error).message}`);
  }
  return e;
}

const enc = new TextEncoder();

/** The source config as a JSON object. */
function parseConfig(source: ImageSource, bytes: Uint8Array): Record<string, unknown> {
  try {
    const json = JSON.parse(new TextDecoder().decode(bytes));
    if (json && typeof json === "object" && !Array.isArray(json)) return json;
  } catch {
    // reported below
  }
  throw new RegistryError(`${source.what}: the image config is not a JSON object`, {
    code: "BAD_RESPONSE",
  });
}

/** The converted config: the source's JSON with `rootfs.diff_ids` replaced. */
function convertedConfig(source: Record<string, unknown>, diffIds: string[]) {
  const json = { ...source };
  const rootfs = (json.rootfs && typeof json.rootfs === "object" ? json.rootfs : {}) as Record<
    string,
    unknown
  >;
  json.rootfs = { ...rootfs, type: rootfs.type ?? "layers", diff_ids: diffIds };
  return json;
}

async function blobDescriptor(bytes: Uint8Array, mediaType: string): Promise<Descriptor> {
  return { mediaType, digest: await digestLike("sha256:", bytes), size: bytes.length };
}

function layerDescriptor(l: ConvertedLayer, extra?: Record<string, string>): Descriptor {
  return l.format === "zstd:chunked"
    ? zstdChunkedLayerDescriptor({ ...l, annotations: l.annotations ?? {} }, extra)
    : estargzLayerDescriptor(l, extra);
}

function manifestBytes(
  config: Descriptor,
  layers: Descriptor[],
  annotations?: Record<string, string>,
): Uint8Array {
  return enc.encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.OCI_MANIFEST,
    config,
    layers,
    ...(annotations && Object.keys(annotations).length ? { annotations } : {}),
  }));
}

function indexBytes(manifests: Descriptor[], annotations?: Record<string, string>): Uint8Array {
  return enc.encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.OCI_INDEX,
    manifests,
    ...(annotations && Object.keys(annotations).length ? { annotations } : {}),
  }));
}

async function putSmallBlob(
  sink: ImageSink,
  bytes: Uint8Array,
  mediaType: string,
  signal: AbortSignal,
) {
  const desc = await blobDescriptor(bytes, mediaType);
  if (!(await sink.hasBlob(desc.digest, signal))) await sink.putBlob(desc.digest, bytes, signal);
  return desc;
}

/** Stores an image manifest by digest unless it is there already. */
async function putManifestOnce(sink: ImageSink, bytes: Uint8Array, signal: AbortSignal) {
  if (!(await sink.hasManifest(await digestLike("sha256:", bytes), signal))) {
    await sink.putManifest(bytes, MediaType.OCI_MANIFEST, undefined, signal);
  }
}

/** The empty layer of metadata-only images: an eStargz blob of an empty tar. */
async function emptyLayer(
  pool: CompressPool,
): Promise<{ bytes: Uint8Array; layer: ConvertedLayer }> {
  const parts: Uint8Array[] = [];
  const r = await writeEStargz(ReadableStream.from([new Uint8Array(1024)]), (b) => {
    parts.push(b.slice());
  }, { pool });
  const bytes = new Uint8Array(r.blobSize);
  let o = 0;
  for (const p of parts) {
    bytes.set(p, o);
    o += p.length;
  }
  return {
    bytes,
    layer: {
      source: { digest: r.blobDigest, size: r.blobSize, mediaType: MediaType.OCI_LAYER_GZIP },
      format: "estargz",
      digest: r.blobDigest,
      size: r.blobSize,
      diffId: r.diffId,
      tocDigest: r.tocDigest,
      uncompressedSize: r.uncompressedSize,
      transfer: "uploaded",
      seconds: 0,
    },
  };
}

/** The tag DST names (default `latest`). */
function destinationTag(dst: Endpoint): string {
  if (dst.kind === "registry") return dst.ref.tag ?? "latest";
  if (dst.kind === "oci") return dst.tag ?? "latest";
  return "latest";
}

/** `REPOSITORY@DIGEST` (or `oci:DIR@DIGEST`) of something written to DST. */
function pinned(dst: Endpoint, digest: string): string {
  if (dst.kind === "registry") {
    return `${formatReference({ host: dst.ref.host, repository: dst.ref.repository })}@${digest}`;
  }
  if (dst.kind === "oci") return `oci:${dst.dir}@${digest}`;
  return digest;
}

/**
 * Converts the image SRC into an eStargz (or zstd:chunked) image at DST (see the module documentation).
 * `drivers` serves registry references on either side.
 */
export async function convertImage(
  src: Endpoint,
  dst: Endpoint,
  drivers: DriverRegistry,
  opts: ConvertImageOptions = {},
): Promise<ConvertImageResult> {
  const tag = destinationTag(dst);
  if (opts.metaTag !== undefined && opts.metaTag === tag) {
    throw new UserError(`--meta-tag ${opts.metaTag} is the destination's own tag`, 2);
  }
  const platform = opts.platform ? parsePlatform(opts.platform) : undefined;
  const controller = new AbortController();
  const signal = opts.signal
    ? AbortSignal.any([opts.signal, controller.signal])
    : controller.signal;
  const source = await openSource(src, drivers, platform);
  let sink: ImageSink | undefined;
  let tmpDir: string | undefined;
  let pool: CompressPool | undefined;
  const jobs: Promise<unknown>[] = [];
  try {
    const top = await source.top(signal);
    const picked = await pickImages(source, top, opts, signal);
    const configs = await Promise.all(picked.map(async (p) => {
      const desc = p.manifest.json.config;
      if (!CONFIG_TYPES.includes(desc.mediaType)) {
        throw new RegistryError(
          `${source.what}: not a container image (config type ${JSON.stringify(desc.mediaType)})`,
          { code: "UNSUPPORTED" },
        );
      }
      for (const l of p.manifest.json.layers) checkLayerType(source, l);
      return parseConfig(source, await source.config(desc, signal));
    }));
    if (top.kind === "image" && platform) {
      const c = configs[0] as Partial<Platform>;
      const have = { os: c.os ?? "", architecture: c.architecture ?? "", variant: c.variant };
      if (have.os !== platform.os || have.architecture !== platform.architecture) {
        throw new RegistryError(
          `${source.what} is a single-platform image for ${formatPlatform(have)}, not ${
            formatPlatform(platform)
          }`,
          { code: "PLATFORM_NOT_FOUND" },
        );
      }
    }
    sink = await openSink(dst, drivers);
    // Fails early on an unreachable registry or refused credentials, before any work.
    const before = await sink.tagDigest(tag, signal);
    tmpDir = await Deno.makeTempDir({ prefix: "crfs-convert-" });
    pool = new CompressPool(opts.workers);
    const board = new ProgressBoard(opts.onProgress);
    const ctx: JobContext = {
      source,
      sink,
      tmpDir,
      pool,
      format: opts.format ?? "estargz",
      chunkSize: opts.chunkSize ?? DEFAULT_CHUNK_SIZE,
      minChunkSize: opts.minChunkSize ?? 0,
      level: opts.level ?? (opts.format === "zstd:chunked" ? undefined : 6),
      prioritized: opts.prioritized,
      signal,
      board,
    };
    const limiter = new Limiter(Math.max(1, opts.jobs ?? DEFAULT_JOBS));
    const byDigest = new Map<string, Promise<ConvertedLayer>>();
    const layerJob = (d: Descriptor) => {
      let p = byDigest.get(d.digest);
      if (!p) {
        board.add();
        p = limiter.run(() => convertLayer(ctx, d));
        // The first failure stops the others.
        p.catch(() => controller.abort(new Error("another layer failed")));
        byDigest.set(d.digest, p);
        jobs.push(p);
      }
      return p;
    };
    const perImage = picked.map((p) => Promise.all(p.manifest.json.layers.map(layerJob)));
    let converted: ConvertedLayer[][];
    try {
      converted = await Promise.all(perImage);
    } finally {
      await Promise.allSettled(jobs);
    }

    signal.throwIfAborted();
    // Configs and manifests: blobs first, then manifests, then the tag.
    const images: ConvertedImage[] = [];
    const manifests: { bytes: Uint8Array; desc: Descriptor; config: Record<string, unknown> }[] =
      [];
    for (let i = 0; i < picked.length; i++) {
      const p = picked[i];
      const layers = converted[i];
      const config = convertedConfig(configs[i], layers.map((l) => l.diffId));
      const configDesc = await putSmallBlob(
        sink,
        enc.encode(JSON.stringify(config)),
        MediaType.OCI_CONFIG,
        signal,
      );
      const bytes = manifestBytes(
        configDesc,
        layers.map((l, j) => layerDescriptor(l, p.manifest.json.layers[j].annotations)),
        p.manifest.json.annotations,
      );
      const desc: Descriptor = {
        mediaType: MediaType.OCI_MANIFEST,
        digest: await digestLike("sha256:", bytes),
        size: bytes.length,
        ...(p.entry?.platform ? { platform: p.entry.platform } : {}),
        ...(p.entry?.annotations ? { annotations: p.entry.annotations } : {}),
      };
      manifests.push({ bytes, desc, config });
      images.push({
        platform: p.entry?.platform,
        sourceDigest: p.manifest.digest,
        digest: desc.digest,
        size: desc.size,
        layers,
      });
    }
    let topBytes: Uint8Array;
    let topType: string;
    if (top.kind === "index" && opts.allPlatforms) {
      for (const m of manifests) await putManifestOnce(sink, m.bytes, signal);
      topBytes = indexBytes(manifests.map((m) => m.desc), (top as IndexManifest).json.annotations);
      topType = MediaType.OCI_INDEX;
    } else {
      topBytes = manifests[0].bytes;
      topType = MediaType.OCI_MANIFEST;
    }
    const digest = await digestLike("sha256:", topBytes);

    // The metadata-only variant, its blobs pushed before any tag is written.
    let metaTop: { bytes: Uint8Array; type: string } | undefined;
    if (opts.metaTag !== undefined) {
      const empty = await emptyLayer(pool);
      if (!(await sink.hasBlob(empty.layer.digest, signal))) {
        await sink.putBlob(empty.layer.digest, empty.bytes, signal);
      }
      const metas: { bytes: Uint8Array; desc: Descriptor }[] = [];
      for (const m of manifests) {
        const where = pinned(dst, m.desc.digest);
        const config = metaConfig(m.config, empty.layer.diffId, where);
        const configDesc = await putSmallBlob(
          sink,
          enc.encode(JSON.stringify(config)),
          MediaType.OCI_CONFIG,
          signal,
        );
        const bytes = manifestBytes(configDesc, [layerDescriptor(empty.layer)], {
          [STARGZ_IMAGE_ANNOTATION]: where,
        });
        const desc = { ...m.desc, digest: await digestLike("sha256:", bytes), size: bytes.length };
        metas.push({ bytes, desc });
      }
      if (topType === MediaType.OCI_INDEX) {
        for (const m of metas) await putManifestOnce(sink, m.bytes, signal);
        metaTop = {
          bytes: indexBytes(metas.map((m) => m.desc), {
            [STARGZ_IMAGE_ANNOTATION]: pinned(dst, digest),
          }),
          type: MediaType.OCI_INDEX,
        };
      } else metaTop = { bytes: metas[0].bytes, type: MediaType.OCI_MANIFEST };
    }

    signal.throwIfAborted();
    const unchanged = before === digest;
    if (!unchanged) await sink.putManifest(topBytes, topType, tag, signal);
    let meta: ConvertImageResult["meta"];
    if (metaTop) {
      const metaDigest = await digestLike("sha256:", metaTop.bytes);
      if ((await sink.tagDigest(opts.metaTag!, signal)) !== metaDigest) {
        await sink.putManifest(metaTop.bytes, metaTop.type, opts.metaTag, signal);
      }
      meta = { tag: opts.metaTag!, digest: metaDigest, mediaType: metaTop.type };
    }
    await sink.commit();
    return {
      destination: dst.text,
      tag,
      digest,
      mediaType: topType,
      images,
      ...(meta ? { meta } : {}),
      unchanged,
    };
  } catch (e) {
    controller.abort(e);
    await Promise.allSettled(jobs);
    await sink?.abort();
    if (signal.aborted && opts.signal?.aborted) {
      throw new UserError("interrupted; nothing was tagged", 130);
    }
    throw e;
  } finally {
    pool?.close();
    source.close();
    if (tmpDir) await Deno.remove(tmpDir, { recursive: true }).catch(() => {});
  }
}

/** The config of a metadata-only image (see the module documentation). */
function metaConfig(
  converted: Record<string, unknown>,
  emptyDiffId: string,
  where: string,
): Record<string, unknown> {
  const json = structuredClone(converted);
  json.rootfs = { type: "layers", diff_ids: [emptyDiffId] };
  const history = Array.isArray(json.history) ? json.history : [];
  json.history = [
    ...history.map((h) => ({ ...(h as object), empty_layer: true })),
    {
      created_by: `crfs convert --meta-tag: metadata only; the files are in ${where}`,
      comment: "crfs metadata-only image",
    },
  ];
  const cfg = (json.config && typeof json.config === "object" ? json.config : {}) as Record<
    string,
    unknown
  >;
  const labels = (cfg.Labels && typeof cfg.Labels === "object" ? cfg.Labels : {}) as Record<
    string,
    string
  >;
  json.config = { ...cfg, Labels: { ...labels, [STARGZ_IMAGE_ANNOTATION]: where } };
  return json;
}
