/**
 * The two ends of `crfs convert` for images: what a SRC or DST argument names, reading images
 * from a registry, an OCI layout, a docker archive or a single local layer file, and writing
 * them to a registry or an OCI layout.
 *
 * Argument forms: `oci:DIR[:TAG]`, `docker-archive:FILE[:NAME:TAG]`, `docker://REFERENCE`,
 * `-` (a file: standard input or output), a path to an existing file, a name ending in
 * `.tar`, `.tar.gz`, `.tgz`, `.gz`, `.stargz` or `.estargz` (a file), and otherwise an image
 * reference (`HOST/REPO[:TAG][@DIGEST]`, or a short name). A short SRC (`team/app:v1`, no
 * registry named, no `docker://`) means, as for podman, the `[aliases]` entry or each of
 * registries.conf's `unqualified-search-registries` in order — the first that has the image
 * ({@link sourceCandidates}, {@link resolveSource}); without search registries it stays Docker
 * Hub's. A DST converted from a plain
 * file is a registry only when it names its host (`127.0.0.1:5000/…`, `localhost/…`) or says
 * `docker://`, so `crfs convert in.tar out` keeps writing the file `out`.
 *
 * Writes are all-or-nothing where the medium allows: an OCI layout that did not exist is built
 * in a staging directory next to it and renamed into place at the end; in an existing layout,
 * blobs are written atomically and the ones this run added are removed again on failure, and
 * index.json changes last. Registries get every blob before the manifest that names it.
 *
 * @module
 */
import { isZstd } from "../format/zstd.ts";
import { ZSTD_LAYER_MEDIA_TYPE } from "../format/zstd_chunked.ts";
import {
  type BlobReader,
  type Driver,
  type DriverRegistry,
  type ManifestReader,
  type Pusher,
  pusher,
} from "../drivers/driver.ts";
import { digestLike } from "../drivers/digest.ts";
import { Digester } from "../drivers/digester.ts";
import { RegistryError } from "../drivers/errors.ts";
import { OciLayout } from "../drivers/local.ts";
import {
  defaultPlatform,
  type Descriptor,
  type Manifest,
  MediaType,
  parseManifest,
  type Platform,
} from "../drivers/manifest.ts";
import {
  formatReference,
  InvalidReferenceError,
  parseOciTarget,
  parseReference,
  type Reference,
  referenceTarget,
  type RepositoryName,
} from "../drivers/reference.ts";
import { DockerArchiveDriver } from "../drivers/docker_archive.ts";
import {
  isShortName,
  type RegistriesConfig,
  shortNameCandidates,
} from "../drivers/registries_conf.ts";
import { LAYOUT_REPOSITORY, OciLayoutDriver } from "../drivers/oci_layout_driver.ts";
import { UsageError } from "./errors.ts";

/** What a command-line argument names. */
export type Endpoint =
  | { kind: "registry"; ref: Reference; text: string }
  | { kind: "oci"; dir: string; tag?: string; text: string }
  | { kind: "archive"; path: string; tag?: string; text: string }
  | { kind: "file"; path: string; text: string };

const FILE_NAME = /\.(tar|tgz|gz|stargz|estargz)$/i;

async function stat(path: string): Promise<Deno.FileInfo | undefined> {
  try {
    return await Deno.stat(path);
  } catch {
    return undefined;
  }
}

/**
 * Classifies SRC or DST (see the module documentation). `srcIsFile` tells, for a DST, whether
 * SRC was a plain file. Throws {@link UsageError} or {@link InvalidReferenceError} (exit 2).
 */
export async function parseEndpoint(
  text: string,
  role: "src" | "dst",
  srcIsFile = false,
): Promise<Endpoint> {
  const oci = parseOciTarget(text);
  if (oci) return { kind: "oci", ...oci, text };
  if (text.startsWith("docker-archive:")) {
    if (role === "dst") {
      throw new UsageError(
        `${text}: docker archives can only be read: docker load, podman load and skopeo ` +
          `decompress their layers, so they cannot carry eStargz; write oci:DIR or push to a registry`,
      );
    }
    const rest = text.slice("docker-archive:".length);
    if (rest === "") throw new UsageError(`${text}: docker-archive: needs a file`);
    if ((await stat(rest))?.isFile) return { kind: "archive", path: rest, text };
    for (let i = rest.indexOf(":"); i > 0; i = rest.indexOf(":", i + 1)) {
      if ((await stat(rest.slice(0, i)))?.isFile) {
        return { kind: "archive", path: rest.slice(0, i), tag: rest.slice(i + 1), text };
      }
    }
    return { kind: "archive", path: rest, text }; // opening it reports the missing file
  }
  if (text.startsWith("docker://")) {
    return { kind: "registry", ref: parseReference(text.slice("docker://".length)), text };
  }
  if (text === "-") return { kind: "file", path: text, text };
  const info = await stat(text);
  if (info?.isFile) return { kind: "file", path: text, text };
  if (info?.isDirectory) {
    const hint = (await OciLayout.isLayout(text)) ? `oci:${text}` : `oci:${text} for an OCI layout`;
    throw new UsageError(`${text} is a directory; did you mean ${hint}?`);
  }
  if (FILE_NAME.test(text)) {
    if (role === "src") throw new UsageError(`${text}: no such file`);
    return { kind: "file", path: text, text };
  }
  if (role === "dst" && srcIsFile) {
    const first = text.split("/")[0];
    const hostLike = text.includes("/") &&
      (first.includes(".") || first.includes(":") || first === "localhost" || first === "local");
    if (!hostLike) return { kind: "file", path: text, text };
  }
  try {
    return { kind: "registry", ref: parseReference(text), text };
  } catch (e) {
    if (e instanceof InvalidReferenceError && role === "src" && !text.includes(":")) {
      throw new UsageError(`${text}: no such file, and ${e.message}`);
    }
    throw e;
  }
}

/**
 * The registry references a SRC may stand for, in the order to try them: for a short name (see
 * the module documentation) its `[aliases]` entry or one per search registry of `conf`;
 * otherwise SRC itself.
 */
export function sourceCandidates(src: Endpoint, conf: RegistriesConfig): Endpoint[] {
  if (
    src.kind !== "registry" || src.ref.host === "local" || src.text.startsWith("docker://") ||
    !isShortName(src.text)
  ) {
    return [src];
  }
  const names = shortNameCandidates(conf, src.text);
  if (names.length === 0) return [src];
  return names.map((text) => ({ kind: "registry", ref: parseReference(text), text }));
}

/**
 * The first of `candidates` whose manifest `drivers` can read (a single candidate is returned
 * as is: reading it reports its own errors). When none can, a {@link RegistryError} names the
 * short name `typed`, every candidate tried and why the first failed.
 */
export async function resolveSource(
  typed: string,
  candidates: Endpoint[],
  drivers: DriverRegistry,
  signal?: AbortSignal,
): Promise<Endpoint> {
  if (candidates.length === 1) return candidates[0];
  const failures: { what: string; error: unknown }[] = [];
  for (const c of candidates) {
    if (c.kind !== "registry") return c;
    const repo = { host: c.ref.host, repository: c.ref.repository };
    try {
      await drivers.forHost(c.ref.host).getManifest(repo, referenceTarget(c.ref), { signal });
      return c;
    } catch (e) {
      if (signal?.aborted) throw e;
      failures.push({ what: formatReference(c.ref), error: e });
    }
  }
  const first = failures[0].error;
  const reason = first instanceof Error ? first.message : String(first);
  throw new RegistryError(
    `${typed}: a short name; no search registry has it (tried ${
      failures.map((f) => f.what).join(", ")
    }; registries.conf unqualified-search-registries): ${reason}`,
    {
      code: first instanceof RegistryError ? first.code : "NOT_FOUND",
      reference: typed,
      cause: first,
    },
  );
}

/** Text for messages: the reference or path. */
export function endpointText(e: Endpoint): string {
  return e.kind === "registry" ? formatReference(e.ref) : e.text;
}

/** Where images are read from. */
export interface ImageSource {
  /** For messages. */
  readonly what: string;
  /** The registry repository, for cross-repository mounts. */
  readonly repo?: RepositoryName;
  /** The manifest SRC names (an index or an image). */
  top(signal?: AbortSignal): Promise<Manifest>;
  /** A manifest by digest (the entries of an index). */
  manifest(digest: string, signal?: AbortSignal): Promise<Manifest>;
  /** The config blob's bytes, verified against `desc`. */
  config(desc: Descriptor, signal?: AbortSignal): Promise<Uint8Array>;
  /** A blob's bytes; the stream errors when they do not match `desc`. */
  blob(desc: Descriptor, signal?: AbortSignal): Promise<ReadableStream<Uint8Array>>;
  /** Releases files. */
  close(): void;
}

/** Where converted images are written. */
export interface ImageSink {
  /** For messages. */
  readonly what: string;
  /** The registry repository, when a registry. */
  readonly repo?: RepositoryName;
  /** Whether the blob is there already. */
  hasBlob(digest: string, signal?: AbortSignal): Promise<boolean>;
  /** Mounts a blob from another repository of the same registry; false when not done. */
  mountBlob(digest: string, from: RepositoryName, signal?: AbortSignal): Promise<boolean>;
  /** Stores the bytes of the file at `path` as the blob `digest` (verified). */
  putBlobFile(digest: string, size: number, path: string, signal?: AbortSignal): Promise<void>;
  /** Stores a small blob. */
  putBlob(digest: string, bytes: Uint8Array, signal?: AbortSignal): Promise<void>;
  /** Whether a manifest is there (by digest). */
  hasManifest(digest: string, signal?: AbortSignal): Promise<boolean>;
  /** The digest a tag points at now, if any. */
  tagDigest(tag: string, signal?: AbortSignal): Promise<string | undefined>;
  /** Stores a manifest under `tag`, or by digest when `tag` is undefined. Returns its digest. */
  putManifest(
    bytes: Uint8Array,
    mediaType: string,
    tag: string | undefined,
    signal?: AbortSignal,
  ): Promise<string>;
  /** Makes everything written visible (OCI layouts built aside are moved into place). */
  commit(): Promise<void>;
  /** Undoes what can be undone after a failure. */
  abort(): Promise<void>;
}

/** Opens SRC for reading. `drivers` serves registry references. */
export async function openSource(
  src: Endpoint,
  drivers: DriverRegistry,
  platform: Platform | undefined,
): Promise<ImageSource> {
  switch (src.kind) {
    case "registry": {
      const repo = { host: src.ref.host, repository: src.ref.repository };
      const reader = drivers.forHost(src.ref.host);
      return readerSource(reader, repo, referenceTarget(src.ref), formatReference(src.ref), repo);
    }
    case "oci":
      return readerSource(
        await OciLayoutDriver.open(src.dir),
        LAYOUT_REPOSITORY,
        src.tag ?? "",
        src.text,
      );
    case "archive":
      return archiveSource((await DockerArchiveDriver.open(src.path))!, src.tag);
    case "file": {
      const archive = src.path === "-" ? undefined : await DockerArchiveDriver.open(src.path, true);
      if (archive) return archiveSource(archive, undefined);
      return await layerFileSource(src.path, platform ?? defaultPlatform());
    }
  }
}

/** Any manifest and blob reader (registry, OCI layout, docker archive) as SRC. */
function readerSource(
  reader: ManifestReader & BlobReader,
  repo: RepositoryName,
  target: string,
  what: string,
  registryRepo?: RepositoryName,
  close = () => {},
): ImageSource {
  return {
    what,
    ...(registryRepo ? { repo: registryRepo } : {}),
    top: (signal) => reader.getManifest(repo, target, { signal }),
    manifest: (digest, signal) => reader.getManifest(repo, digest, { signal }),
    config: async (desc, signal) => (await reader.getConfig(repo, desc, { signal })).bytes,
    blob: (desc, signal) => reader.fetchBlob(repo, desc.digest, { size: desc.size, signal }),
    close,
  };
}

function archiveSource(archive: DockerArchiveDriver, tag: string | undefined): ImageSource {
  const repo = { host: "docker-archive", repository: "" };
  return readerSource(
    archive,
    repo,
    tag ?? "",
    archive.archive.path,
    undefined,
    () => archive.close(),
  );
}

/** A one-image source whose manifest and config are known up front. */
function fixedSource(
  what: string,
  manifest: Manifest,
  config: Uint8Array,
  blob: (digest: string) => ReadableStream<Uint8Array>,
  close: () => void,
): ImageSource {
  return {
    what,
    top: () => Promise.resolve(manifest),
    manifest: (digest) => {
      if (digest === manifest.digest) return Promise.resolve(manifest);
      return Promise.reject(
        new RegistryError(`${what}: no manifest ${digest}`, { code: "MANIFEST_UNKNOWN" }),
      );
    },
    config: () => Promise.resolve(config),
    blob: (desc) => Promise.resolve(blob(desc.digest)),
    close,
  };
}

/**
 * A plain tar, tar.gz or tar.zst file as a one-layer image for `platform`: a minimal config (os,
 * architecture, empty `config`), no history. The layer is digested once up front.
 */
async function layerFileSource(path: string, platform: Platform): Promise<ImageSource> {
  if (path === "-") {
    throw new UsageError("an image cannot be read from standard input; name a file");
  }
  const d = new Digester("sha256");
  let gz = false;
  let zst = false;
  let size = 0;
  {
    using file = await Deno.open(path);
    for await (const chunk of file.readable) {
      if (size === 0 && chunk.length >= 2) gz = chunk[0] === 0x1f && chunk[1] === 0x8b;
      if (size === 0 && chunk.length >= 4) zst = isZstd(chunk);
      d.update(chunk);
      size += chunk.length;
    }
  }
  const layerDigest = d.digest();
  const config = new TextEncoder().encode(JSON.stringify({
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: {},
    rootfs: { type: "layers", diff_ids: [] },
  }));
  const json = {
    schemaVersion: 2,
    mediaType: MediaType.OCI_MANIFEST,
    config: {
      mediaType: MediaType.OCI_CONFIG,
      digest: await digestLike("sha256:", config),
      size: config.length,
    },
    layers: [{
      mediaType: gz ? MediaType.OCI_LAYER_GZIP : zst ? ZSTD_LAYER_MEDIA_TYPE : MediaType.OCI_LAYER,
      digest: layerDigest,
      size,
    }],
  };
  const bytes = new TextEncoder().encode(JSON.stringify(json));
  const manifest = parseManifest(bytes, await digestLike("sha256:", bytes), json.mediaType, path);
  return fixedSource(path, manifest, config, () => {
    const stream = Deno.openSync(path).readable;
    return stream;
  }, () => {});
}

/** Opens DST for writing. */
export async function openSink(dst: Endpoint, drivers: DriverRegistry): Promise<ImageSink> {
  if (dst.kind === "registry") {
    if (dst.ref.digest) {
      throw new UsageError(
        `${dst.text}: a destination cannot name a digest (it is computed); give a tag`,
      );
    }
    return registrySink(dst.ref, drivers.forHost(dst.ref.host));
  }
  if (dst.kind === "oci") return await ociSink(dst.dir);
  throw new UsageError(`${dst.text}: an image can be written to a registry or oci:DIR only`);
}

/** Attempts of a streamed upload (the file can be read again). */
const UPLOAD_ATTEMPTS = 2;

function registrySink(ref: Reference, driver: Driver): ImageSink {
  const repo = { host: ref.host, repository: ref.repository };
  return pusherSink(pusher(driver, `push to ${ref.host}`), repo, formatReference(repo), repo);
}

/** Any driver that reads manifests and pushes (a registry, an OCI layout) as DST. */
function pusherSink(
  push: ManifestReader & Pusher,
  repo: RepositoryName,
  what: string,
  registryRepo?: RepositoryName,
): ImageSink {
  return {
    what,
    ...(registryRepo ? { repo: registryRepo } : {}),
    hasBlob: (digest, signal) => push.blobExists(repo, digest, { signal }),
    async mountBlob(digest, from, signal) {
      if (from.host !== repo.host || from.repository === repo.repository) return false;
      try {
        if (!(await push.blobExists(from, digest, { signal }))) return false;
        return await push.mountBlob(repo, digest, from.repository, { signal });
      } catch (e) {
        if (signal?.aborted) throw e;
        return false; // fall back to uploading
      }
    },
    async putBlobFile(digest, size, path, signal) {
      for (let attempt = 1;; attempt++) {
        const file = await Deno.open(path);
        try {
          await push.uploadBlob(repo, digest, size, file.readable, { signal });
          return;
        } catch (e) {
          if (!(e instanceof RegistryError && e.transient) || attempt >= UPLOAD_ATTEMPTS) throw e;
        } finally {
          try {
            file.close();
          } catch {
            // the stream closed it
          }
        }
      }
    },
    putBlob: (digest, bytes, signal) =>
      push.uploadBlob(repo, digest, bytes.length, bytes, { signal }),
    hasManifest: async (digest, signal) =>
      (await push.headManifest(repo, digest, { signal })) !== undefined,
    tagDigest: async (tag, signal) => (await push.headManifest(repo, tag, { signal }))?.digest,
    async putManifest(bytes, mediaType, tag, signal) {
      const digest = await digestLike("sha256:", bytes);
      await push.putManifest(repo, tag ?? digest, mediaType, bytes, { signal });
      return digest;
    },
    commit: () => Promise.resolve(),
    abort: () => Promise.resolve(),
  };
}

async function ociSink(dir: string): Promise<ImageSink> {
  const target = dir.replace(/\/+$/, "") || "/";
  const existing = await stat(target);
  let layoutDir = target;
  let staging: string | undefined;
  if (existing && !existing.isDirectory) {
    throw new UsageError(`oci:${dir}: exists and is not a directory`);
  }
  if (existing && !(await OciLayout.isLayout(target))) {
    const empty = (await Array.fromAsync(Deno.readDir(target))).length === 0;
    if (!empty) {
      throw new UsageError(`oci:${dir}: the directory exists and is not an OCI layout`);
    }
  }
  if (!existing || !(await OciLayout.isLayout(target))) {
    const slash = target.lastIndexOf("/");
    const parent = slash < 0 ? "." : slash === 0 ? "/" : target.slice(0, slash);
    const base = target.slice(slash + 1);
    if (!(await stat(parent))?.isDirectory) {
      throw new UsageError(`oci:${dir}: the parent directory ${parent} does not exist`);
    }
    staging = `${parent}/.${base}.crfs-${crypto.randomUUID().slice(0, 8)}`;
    layoutDir = staging;
  }
  const layout = await OciLayout.create(layoutDir);
  const sink = pusherSink(new OciLayoutDriver(layout), LAYOUT_REPOSITORY, `oci:${dir}`);
  const added: string[] = [];
  const put = async (digest: string, write: () => Promise<unknown>) => {
    if (await layout.hasBlob(digest)) return;
    await write();
    added.push(layout.blobPath(digest));
  };
  return {
    ...sink,
    putBlobFile: (digest, size, path) => put(digest, () => sink.putBlobFile(digest, size, path)),
    putBlob: (digest, bytes) => put(digest, () => sink.putBlob(digest, bytes)),
    async putManifest(bytes, mediaType, tag) {
      if (tag === undefined) {
        // Untagged manifests (an index's entries) are blobs only, not index.json entries.
        const digest = await digestLike("sha256:", bytes);
        await put(digest, () => sink.putManifest(bytes, mediaType, undefined));
        return digest;
      }
      const digest = await sink.putManifest(bytes, mediaType, tag);
      // index.json now names what was written: from here on those blobs must stay.
      added.length = 0;
      return digest;
    },
    async commit() {
      if (staging) {
        if ((await stat(target))?.isDirectory) await Deno.remove(target); // empty: checked above
        await Deno.rename(staging, target);
        staging = undefined;
      }
      added.length = 0;
    },
    async abort() {
      if (staging) {
        await Deno.remove(staging, { recursive: true }).catch(() => {});
        staging = undefined;
        return;
      }
      // In an existing layout index.json changes last, with the tag; drop the blobs we added.
      for (const path of added) await Deno.remove(path).catch(() => {});
      added.length = 0;
    },
  };
}
