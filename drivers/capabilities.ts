/**
 * What a registry driver can do, as small capability interfaces: every driver has a
 * {@link DriverIdentity} and reads manifests ({@link ManifestReader}) and blobs
 * ({@link BlobReader}); listing ({@link Lister}), pushing ({@link Pusher}) and pinging
 * ({@link Pinger}) are there only when the driver has them. Check with {@link canList},
 * {@link canPush}, {@link canPing}, or take the capability with {@link lister} / {@link pusher},
 * which fail with one clear error (`registry driver 'oci-layout' cannot list tags`).
 *
 * Docker v2, GCR, ICR, the `local` host, OCI layouts and docker archives all implement these in
 * drivers/; user driver modules need only `name`, `matches`, `getManifest` and `blob`.
 *
 * @example
 * ```ts
 * const driver = drivers.forHost(repo.host);
 * if (canList(driver)) console.log(await driver.listTags(repo));
 * await pusher(driver, "push").putManifest(repo, "v1", mediaType, bytes);
 * ```
 *
 * @module
 */
import type { RangeSource } from "../format/range_source.ts";
import { RegistryError } from "./errors.ts";
import type {
  Descriptor,
  ImageConfig,
  ImageManifest,
  IndexManifest,
  Manifest,
  Platform,
} from "./manifest.ts";
import type { Reference, RepositoryName } from "./reference.ts";

/** A blob's bytes with random access: a {@link RangeSource} that knows its digest. */
export interface BlobSource extends RangeSource {
  /** The blob's digest. */
  readonly digest: string;
  /** Releases resources (open files); optional. */
  close?(): void;
}

/** Options every driver call takes. */
export interface CallOptions {
  /** Cancels the call. */
  signal?: AbortSignal;
}

/** Options for listing calls. */
export interface ListOptions extends CallOptions {
  /** Stop after about this many entries. */
  limit?: number;
}

/** Options for {@link Lister.listTags}. */
export interface TagListOptions extends CallOptions {
  /** Also find each tag's digest even when that costs a request per tag. */
  digests?: boolean;
}

/** One tag of a repository. */
export interface TagInfo {
  /** Tag name. */
  name: string;
  /** Manifest digest, when known (cheap on GCR-like registries, or with `digests: true`). */
  digest?: string;
  /** Manifest media type, when known. */
  mediaType?: string;
  /** Image size in bytes as the registry reports it, when known. */
  size?: number;
  /** When the registry says the image was created/uploaded, when known. */
  created?: Date;
}

/** Options for {@link ManifestReader.resolve}. */
export interface ResolveOptions extends CallOptions {
  /** Platform to pick from an index (`linux/arm64` or an object); default this machine's. */
  platform?: Platform | string;
}

/** The outcome of {@link ManifestReader.resolve}. */
export interface ResolvedImage {
  /** The reference resolved, with `digest` set to the image manifest's digest. */
  ref: Reference;
  /** The single-platform image manifest. */
  manifest: ImageManifest;
  /** The index / manifest list the manifest was chosen from, if there was one. */
  index?: IndexManifest;
  /** The chosen platform, when chosen from an index. */
  platform?: Platform;
}

/** What a cheap `HEAD` of a manifest tells. */
export interface ManifestHead {
  digest: string;
  mediaType: string;
  size: number;
}

/** Options for {@link Pusher.uploadBlob}. */
export interface UploadOptions extends CallOptions {
  /** PATCH chunk size; default 8 MiB. */
  chunkSize?: number;
}

/** Blob contents to upload. */
export type BlobData = Uint8Array | ReadableStream<Uint8Array>;

/** Who a driver is: a short name for messages and the hosts it serves. */
export interface DriverIdentity {
  /** Short name for messages (`docker-v2`, `gcr`, `icr`, `local`, `oci-layout`, …). */
  readonly name: string;
  /** Whether this driver serves `host`. */
  matches(host: string): boolean;
}

/** Reading manifests and image configurations. */
export interface ManifestReader {
  /** Resolves a reference to a single-platform image manifest (through an index if needed). */
  resolve(ref: Reference, options?: ResolveOptions): Promise<ResolvedImage>;
  /** Fetches a manifest by tag or digest, verified against its digest. */
  getManifest(repo: RepositoryName, tagOrDigest: string, options?: CallOptions): Promise<Manifest>;
  /** A manifest's digest, type and size without fetching it; undefined when it does not exist. */
  headManifest(
    repo: RepositoryName,
    tagOrDigest: string,
    options?: CallOptions,
  ): Promise<ManifestHead | undefined>;
  /** The image configuration of a manifest (or of a config descriptor), verified. */
  getConfig(
    repo: RepositoryName,
    manifest: ImageManifest | Descriptor,
    options?: CallOptions,
  ): Promise<ImageConfig>;
}

/** Reading blobs: random access and whole verified streams. */
export interface BlobReader {
  /** Random access to a blob. `size` saves a request when known. */
  blob(
    repo: RepositoryName,
    digest: string,
    size?: number,
    options?: CallOptions,
  ): Promise<BlobSource>;
  /** The whole blob as a stream, verified against `digest` (the stream errors on mismatch). */
  fetchBlob(
    repo: RepositoryName,
    digest: string,
    options?: CallOptions & { size?: number },
  ): Promise<ReadableStream<Uint8Array>>;
}

/** Listing what a host holds. */
export interface Lister {
  /** Top-level names on the host (Docker Hub users, GCR projects, ICR namespaces, …). */
  listOwners(host: string, options?: ListOptions): Promise<string[]>;
  /** Full repository names under `prefix` (all of them when `prefix` is empty), sorted. */
  listRepositories(host: string, prefix?: string, options?: ListOptions): Promise<string[]>;
  /** The tags of a repository, sorted by name; digests when cheap or asked for. */
  listTags(repo: RepositoryName, options?: TagListOptions): Promise<TagInfo[]>;
}

/** Writing blobs and manifests. */
export interface Pusher {
  /** Whether the blob exists in the repository (a HEAD). */
  blobExists(repo: RepositoryName, digest: string, options?: CallOptions): Promise<boolean>;
  /** Cross-repository mount of a blob from `fromRepository` on the same host; false when not done. */
  mountBlob(
    repo: RepositoryName,
    digest: string,
    fromRepository: string,
    options?: CallOptions,
  ): Promise<boolean>;
  /** Uploads a blob whose digest and size are known in advance; both are verified. */
  uploadBlob(
    repo: RepositoryName,
    digest: string,
    size: number,
    data: BlobData,
    options?: UploadOptions,
  ): Promise<void>;
  /** Stores a manifest under a tag or its digest; returns its digest. */
  putManifest(
    repo: RepositoryName,
    tagOrDigest: string,
    mediaType: string,
    bytes: Uint8Array,
    options?: CallOptions,
  ): Promise<string>;
}

/** Checking that a host answers. */
export interface Pinger {
  /** Checks the registry answers (and learns how it authenticates). */
  ping(host: string, options?: CallOptions): Promise<void>;
}

/**
 * Access to one kind of registry: identity, manifests and blobs always; listing, pushing and
 * pinging when present (see the module documentation).
 */
export type Driver =
  & DriverIdentity
  & ManifestReader
  & BlobReader
  & Partial<Lister>
  & Partial<Pusher>
  & Partial<Pinger>;

const LISTER = ["listOwners", "listRepositories", "listTags"] as const;
const PUSHER = ["blobExists", "mountBlob", "uploadBlob", "putManifest"] as const;

function has(d: object, keys: readonly string[]): boolean {
  return keys.every((k) => typeof (d as Record<string, unknown>)[k] === "function");
}

/** Whether `d` can list owners, repositories and tags. */
export function canList<D extends object>(d: D): d is D & Lister {
  return has(d, LISTER);
}

/** Whether `d` can push blobs and manifests. */
export function canPush<D extends object>(d: D): d is D & Pusher {
  return has(d, PUSHER);
}

/** Whether `d` can ping a host. */
export function canPing<D extends object>(d: D): d is D & Pinger {
  return has(d, ["ping"]);
}

/** The `UNSUPPORTED` error for a capability `d` lacks: `registry driver 'NAME' cannot WHAT`. */
export function missingCapability(d: { readonly name: string }, what: string): RegistryError {
  return new RegistryError(`registry driver '${d.name}' cannot ${what}`, { code: "UNSUPPORTED" });
}

/** `d` as a {@link Lister}; throws {@link missingCapability} (`cannot WHAT`) when it is not one. */
export function lister<D extends DriverIdentity>(d: D, what = "list tags"): D & Lister {
  if (!canList(d)) throw missingCapability(d, what);
  return d;
}

/** `d` as a {@link Pusher}; throws {@link missingCapability} (`cannot WHAT`) when it is not one. */
export function pusher<D extends DriverIdentity>(d: D, what = "push"): D & Pusher {
  if (!canPush(d)) throw missingCapability(d, what);
  return d;
}
