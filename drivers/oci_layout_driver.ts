/**
 * One OCI image layout directory (`oci:DIR[:TAG]`) as a driver: it reads manifests and blobs
 * and takes pushes (blobs written atomically, tags in index.json), through {@link OciLayout}.
 * It serves no host and does not list: {@link lister} on it fails with `registry driver
 * 'oci-layout' cannot list tags`. The repository argument of each call is ignored (the layout
 * is the repository); an empty tag names the layout's only image.
 *
 * @module
 */
import type {
  BlobData,
  BlobReader,
  BlobSource,
  CallOptions,
  DriverIdentity,
  ManifestHead,
  ManifestReader,
  Pusher,
  ResolvedImage,
  ResolveOptions,
} from "./capabilities.ts";
import { digestLike, digestMismatch } from "./digest.ts";
import { headByFetching } from "./driver.ts";
import { RegistryError } from "./errors.ts";
import type { Descriptor, ImageConfig, ImageManifest, Manifest } from "./manifest.ts";
import { OciLayout } from "./local.ts";
import { isDigest, type Reference, type RepositoryName } from "./reference.ts";

/** The repository name calls on an {@link OciLayoutDriver} may pass (any is accepted). */
export const LAYOUT_REPOSITORY: RepositoryName = { host: "oci-layout", repository: "layout" };

/** An OCI layout as a driver; see the module documentation. */
export class OciLayoutDriver implements DriverIdentity, ManifestReader, BlobReader, Pusher {
  /** Always `oci-layout`. */
  readonly name = "oci-layout";
  /** The layout read and written. */
  readonly layout: OciLayout;

  constructor(layout: OciLayout) {
    this.layout = layout;
  }

  /**
   * Opens the existing layout in `dir` (a `NOT_FOUND` error when it is not one).
   *
   * @example
   * ```ts
   * const d = await OciLayoutDriver.open("out");
   * const { manifest } = await d.resolve({ ...LAYOUT_REPOSITORY, tag: "v1" });
   * ```
   */
  static async open(dir: string): Promise<OciLayoutDriver> {
    return new OciLayoutDriver(await OciLayout.open(dir));
  }

  /** A layout serves no registry host. */
  matches(_host: string): boolean {
    return false;
  }

  resolve(ref: Reference, options: ResolveOptions = {}): Promise<ResolvedImage> {
    return this.layout.resolve(ref.digest ?? (ref.tag || undefined), options);
  }

  getManifest(_repo: RepositoryName, tagOrDigest: string): Promise<Manifest> {
    return this.layout.getManifest(tagOrDigest || undefined);
  }

  headManifest(repo: RepositoryName, tagOrDigest: string): Promise<ManifestHead | undefined> {
    return headByFetching(this, repo, tagOrDigest);
  }

  /** The config, verified against the descriptor's digest and size. */
  async getConfig(
    _repo: RepositoryName,
    manifest: ImageManifest | Descriptor,
  ): Promise<ImageConfig> {
    const desc = "kind" in manifest ? manifest.json.config : manifest;
    const config = await this.layout.getConfig(desc);
    if (config.bytes.length !== desc.size) {
      throw new RegistryError(
        `oci:${this.layout.dir}@${desc.digest}: config is ${config.bytes.length} bytes, ` +
          `the manifest says ${desc.size}`,
        { code: "BAD_RESPONSE" },
      );
    }
    return config;
  }

  blob(_repo: RepositoryName, digest: string, size?: number): Promise<BlobSource> {
    return this.layout.blob(digest, size);
  }

  fetchBlob(
    _repo: RepositoryName,
    digest: string,
    options: CallOptions & { size?: number } = {},
  ): Promise<ReadableStream<Uint8Array>> {
    return this.layout.fetchBlob(digest, options.size);
  }

  blobExists(_repo: RepositoryName, digest: string): Promise<boolean> {
    return this.layout.hasBlob(digest);
  }

  /** Layouts have no other repositories to mount from. */
  mountBlob(): Promise<boolean> {
    return Promise.resolve(false);
  }

  uploadBlob(_repo: RepositoryName, digest: string, size: number, data: BlobData): Promise<void> {
    return this.layout.writeBlob(digest, data, size);
  }

  async putManifest(
    _repo: RepositoryName,
    tagOrDigest: string,
    mediaType: string,
    bytes: Uint8Array,
  ): Promise<string> {
    if (!isDigest(tagOrDigest)) return await this.layout.putManifest(bytes, mediaType, tagOrDigest);
    const digest = await digestLike(tagOrDigest, bytes);
    if (digest !== tagOrDigest) throw digestMismatch(`oci:${this.layout.dir}`, tagOrDigest, digest);
    await this.layout.writeBlob(digest, bytes, bytes.length);
    return digest;
  }
}
