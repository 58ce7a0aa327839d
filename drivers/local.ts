/**
 * Local images: the `local` pseudo-registry and OCI image layout directories.
 *
 * The `local` host is a directory (option `localDir`, default `$CRFS_LOCAL_DIR`, else
 * `$XDG_DATA_HOME/crfs/local` or `~/.local/share/crfs/local`). In it, every `NAME.stargz` file is
 * an image `local/NAME:latest` with that file as its single layer (manifest and config are
 * synthesized; the config has no `diff_ids`, since those would need the whole layer
 * decompressed), and every directory holding an OCI image layout is an image repository
 * `local/PATH` whose tags are the layout's `org.opencontainers.image.ref.name`s. Pushing to
 * `local/PATH` writes such a layout.
 *
 * {@link OciLayout} reads and writes one layout (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`)
 * on its own, for `oci:DIR[:tag]` arguments: blobs are written atomically (temporary file,
 * digest check, fsync, rename) and `index.json` is replaced atomically.
 *
 * @module
 */
import { FileSource } from "../format/range_source.ts";
import { digestLike, digestMismatch, newDigester, verifyingStream } from "./digest.ts";
import {
  type BlobData,
  type BlobSource,
  type CallOptions,
  type Driver,
  fetchConfig,
  type ListOptions,
  type ManifestHead,
  type ResolvedImage,
  resolveImage,
  type ResolveOptions,
  type TagInfo,
} from "./driver.ts";
import { RegistryError } from "./errors.ts";
import {
  defaultPlatform,
  type Descriptor,
  type ImageConfig,
  type ImageManifest,
  type IndexJson,
  type Manifest,
  MediaType,
  parseManifest,
  parsePlatform,
  type Platform,
  selectPlatform,
} from "./manifest.ts";
import {
  isDigest,
  LOCAL_HOST,
  type Reference,
  type RepositoryName,
  repositoryName,
  validateDigest,
} from "./reference.ts";
import { env } from "./env.ts";

/** The annotation holding a tag in an OCI layout's index.json. */
export const REF_NAME = "org.opencontainers.image.ref.name";

/** The default `local` directory (see the module documentation). */
export function defaultLocalDir(): string {
  const explicit = env("CRFS_LOCAL_DIR");
  if (explicit) return explicit;
  const data = env("XDG_DATA_HOME") ?? `${env("HOME") ?? "."}/.local/share`;
  return `${data}/crfs/local`;
}

async function exists(path: string): Promise<Deno.FileInfo | undefined> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) {
      return undefined;
    }
    throw e;
  }
}

/** A {@link BlobSource} over a local file. Close it when done. */
export class LocalBlobSource implements BlobSource {
  readonly digest: string;
  readonly #file: FileSource;
  private constructor(digest: string, file: FileSource) {
    this.digest = digest;
    this.#file = file;
  }
  /** Opens `path` as the blob `digest`; checks `size` when given. */
  static async open(path: string, digest: string, size?: number): Promise<LocalBlobSource> {
    const file = await FileSource.open(path);
    if (size !== undefined && file.size !== size) {
      file.close();
      throw new RegistryError(`${path}: blob is ${file.size} bytes, expected ${size}`, {
        code: "BAD_RESPONSE",
      });
    }
    return new LocalBlobSource(digest, file);
  }
  get size(): number {
    return this.#file.size;
  }
  read(offset: number, length: number): Promise<Uint8Array> {
    return this.#file.read(offset, length);
  }
  close(): void {
    this.#file.close();
  }
}

const locks = new Map<string, Promise<unknown>>();

/** Runs `fn` after earlier calls with the same key finished (in-process only). */
async function serialized<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const prev = locks.get(key) ?? Promise.resolve();
  const p = prev.catch(() => {}).then(fn);
  locks.set(key, p);
  try {
    return await p;
  } finally {
    if (locks.get(key) === p) locks.delete(key);
  }
}

/** One OCI image layout directory; see the module documentation. */
export class OciLayout {
  readonly dir: string;
  private constructor(dir: string) {
    this.dir = dir.replace(/\/+$/, "") || "/";
  }

  /** Whether `dir` holds an OCI layout (an `oci-layout` file). */
  static async isLayout(dir: string): Promise<boolean> {
    return (await exists(`${dir}/oci-layout`))?.isFile ?? false;
  }

  /** Opens an existing layout; a `NOT_FOUND` error when `dir` is not one. */
  static async open(dir: string): Promise<OciLayout> {
    if (!(await OciLayout.isLayout(dir))) {
      throw new RegistryError(`${dir}: not an OCI image layout (no oci-layout file)`, {
        code: "NOT_FOUND",
        reference: dir,
      });
    }
    return new OciLayout(dir);
  }

  /** Opens the layout at `dir`, creating an empty one (and the directory) when absent. */
  static async create(dir: string): Promise<OciLayout> {
    if (await OciLayout.isLayout(dir)) return new OciLayout(dir);
    const info = await exists(dir);
    if (info && !info.isDirectory) {
      throw new RegistryError(`${dir}: exists and is not a directory`, { code: "BAD_RESPONSE" });
    }
    await Deno.mkdir(`${dir}/blobs/sha256`, { recursive: true });
    const layout = new OciLayout(dir);
    if (!(await exists(`${dir}/index.json`))) {
      await layout.#writeIndex({ schemaVersion: 2, mediaType: MediaType.OCI_INDEX, manifests: [] });
    }
    await atomicWrite(
      `${dir}/oci-layout`,
      new TextEncoder().encode(JSON.stringify({ imageLayoutVersion: "1.0.0" })),
    );
    return layout;
  }

  /** The parsed index.json. */
  async index(): Promise<IndexJson> {
    let text: string;
    try {
      text = await Deno.readTextFile(`${this.dir}/index.json`);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        return { schemaVersion: 2, mediaType: MediaType.OCI_INDEX, manifests: [] };
      }
      throw e;
    }
    try {
      const json = JSON.parse(text) as IndexJson;
      if (!Array.isArray(json.manifests)) throw new Error("no manifests");
      return json;
    } catch {
      throw new RegistryError(`${this.dir}/index.json: not a valid OCI index`, {
        code: "BAD_RESPONSE",
        reference: this.dir,
      });
    }
  }

  async #writeIndex(index: IndexJson): Promise<void> {
    await atomicWrite(
      `${this.dir}/index.json`,
      new TextEncoder().encode(JSON.stringify(index, null, 2) + "\n"),
    );
  }

  /** Tags (ref names) with their descriptors, sorted by name. */
  async tags(): Promise<{ name: string; descriptor: Descriptor }[]> {
    const index = await this.index();
    return index.manifests
      .filter((d) => d.annotations?.[REF_NAME])
      .map((d) => ({ name: d.annotations![REF_NAME], descriptor: d }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** Path of a blob. */
  blobPath(digest: string): string {
    validateDigest(digest);
    const [alg, hex] = digest.split(":");
    return `${this.dir}/blobs/${alg}/${hex}`;
  }

  /** Whether the blob is present. */
  async hasBlob(digest: string): Promise<boolean> {
    return (await exists(this.blobPath(digest)))?.isFile ?? false;
  }

  /** Reads a whole blob and verifies it. */
  async readBlob(digest: string, what = `${this.dir}@${digest}`): Promise<Uint8Array> {
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(this.blobPath(digest));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new RegistryError(`${what}: blob not in the OCI layout`, {
          code: "BLOB_UNKNOWN",
          reference: what,
        });
      }
      throw e;
    }
    const actual = await digestLike(digest, bytes);
    if (actual !== digest) throw digestMismatch(what, digest, actual);
    return bytes;
  }

  /** Random access to a blob (a file). Close it when done. */
  async blob(digest: string, size?: number): Promise<LocalBlobSource> {
    const path = this.blobPath(digest);
    if (!(await exists(path))) {
      throw new RegistryError(`${this.dir}@${digest}: blob not in the OCI layout`, {
        code: "BLOB_UNKNOWN",
        reference: this.dir,
      });
    }
    return await LocalBlobSource.open(path, digest, size);
  }

  /** The blob as a stream, verified against its digest. */
  async fetchBlob(digest: string, size?: number): Promise<ReadableStream<Uint8Array>> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(this.blobPath(digest));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new RegistryError(`${this.dir}@${digest}: blob not in the OCI layout`, {
          code: "BLOB_UNKNOWN",
          reference: this.dir,
        });
      }
      throw e;
    }
    return file.readable.pipeThrough(verifyingStream(`${this.dir}@${digest}`, digest, size));
  }

  /**
   * Writes a blob atomically: into a temporary file next to its place, checking size and
   * digest, synced, then renamed. A blob already present is kept (and `data` is not read).
   */
  async writeBlob(digest: string, data: BlobData, size?: number): Promise<void> {
    const path = this.blobPath(digest);
    if (await exists(path)) {
      if (data instanceof ReadableStream) await data.cancel();
      return;
    }
    const dir = path.slice(0, path.lastIndexOf("/"));
    await Deno.mkdir(dir, { recursive: true });
    const tmp = `${dir}/.tmp-${crypto.randomUUID()}`;
    const what = `${this.dir}@${digest}`;
    const file = await Deno.open(tmp, { write: true, createNew: true, mode: 0o644 });
    try {
      const d = await newDigester(digest.split(":")[0]);
      const write = async (chunk: Uint8Array) => {
        d.update(chunk);
        for (let o = 0; o < chunk.length;) o += await file.write(chunk.subarray(o));
      };
      if (data instanceof Uint8Array) await write(data);
      else for await (const chunk of data) await write(chunk);
      if (size !== undefined && d.bytes !== size) {
        throw new RegistryError(`${what}: got ${d.bytes} bytes, expected ${size}`, {
          code: "BAD_RESPONSE",
          reference: what,
        });
      }
      const actual = d.digest();
      if (actual !== digest) throw digestMismatch(what, digest, actual);
      await file.syncData();
      file.close();
      await Deno.rename(tmp, path);
    } catch (e) {
      try {
        file.close();
      } catch {
        // already closed
      }
      await Deno.remove(tmp).catch(() => {});
      throw e;
    }
  }

  /**
   * Stores a manifest blob and, with a `tag`, points the tag at it in index.json (replacing
   * the tag's previous entry). Without a tag the manifest is listed untagged (once).
   * Returns its digest.
   */
  async putManifest(
    bytes: Uint8Array,
    mediaType: string,
    tag?: string,
    extra: Partial<Descriptor> = {},
  ): Promise<string> {
    const digest = await digestLike("sha256:", bytes);
    parseManifest(bytes, digest, mediaType, `${this.dir}@${digest}`);
    await this.writeBlob(digest, bytes, bytes.length);
    await serialized(this.dir, async () => {
      const index = await this.index();
      const kept = index.manifests.filter((d) =>
        tag !== undefined
          ? d.annotations?.[REF_NAME] !== tag
          : !(d.digest === digest && !d.annotations?.[REF_NAME])
      );
      const annotations = {
        ...(extra.annotations ?? {}),
        ...(tag !== undefined ? { [REF_NAME]: tag } : {}),
      };
      kept.push({
        ...extra,
        mediaType,
        digest,
        size: bytes.length,
        ...(Object.keys(annotations).length ? { annotations } : {}),
      });
      await this.#writeIndex({
        ...index,
        schemaVersion: 2,
        mediaType: index.mediaType ?? MediaType.OCI_INDEX,
        manifests: kept,
      });
    });
    return digest;
  }

  /** The descriptor a tag or digest names: an index.json entry, or any stored manifest blob by digest. */
  async #find(tagOrDigest?: string): Promise<{ digest: string; mediaType?: string }> {
    const index = await this.index();
    if (tagOrDigest === undefined) {
      if (index.manifests.length === 1) return index.manifests[0];
      throw new RegistryError(
        `${this.dir}: the OCI layout holds ${index.manifests.length} images; name one with oci:DIR:TAG`,
        { code: "MANIFEST_UNKNOWN", reference: this.dir },
      );
    }
    if (isDigest(tagOrDigest)) {
      return index.manifests.find((d) => d.digest === tagOrDigest) ?? { digest: tagOrDigest };
    }
    const found = index.manifests.find((d) => d.annotations?.[REF_NAME] === tagOrDigest);
    if (!found) {
      const tags = (await this.tags()).map((t) => t.name);
      throw new RegistryError(
        `${this.dir}: no image tagged ${JSON.stringify(tagOrDigest)} in the OCI layout` +
          (tags.length ? ` (tags: ${tags.join(", ")})` : ""),
        { code: "MANIFEST_UNKNOWN", reference: this.dir },
      );
    }
    return found;
  }

  /** A manifest by tag or digest (or the only one), verified. */
  async getManifest(tagOrDigest?: string): Promise<Manifest> {
    const d = await this.#find(tagOrDigest);
    const what = `oci:${this.dir}${
      tagOrDigest && !isDigest(tagOrDigest) ? `:${tagOrDigest}` : `@${d.digest}`
    }`;
    const bytes = await this.readBlob(d.digest, what).catch((e) => {
      if (e instanceof RegistryError && e.code === "BLOB_UNKNOWN") {
        throw new RegistryError(`${what}: manifest not in the OCI layout`, {
          code: "MANIFEST_UNKNOWN",
          reference: what,
        });
      }
      throw e;
    });
    return parseManifest(bytes, d.digest, d.mediaType, what);
  }

  /** Resolves a tag (or the only image) to a single-platform manifest, through an index if needed. */
  async resolve(tag?: string, options: ResolveOptions = {}): Promise<ResolvedImage> {
    const want: Platform = typeof options.platform === "string"
      ? parsePlatform(options.platform)
      : options.platform ?? defaultPlatform();
    let manifest = await this.getManifest(tag);
    let index;
    let platform;
    for (let depth = 0; manifest.kind === "index"; depth++) {
      if (depth >= 2) {
        throw new RegistryError(`oci:${this.dir}: indexes nested too deeply`, {
          code: "UNSUPPORTED",
        });
      }
      index ??= manifest;
      const entry = selectPlatform(manifest.json, want, `oci:${this.dir}${tag ? `:${tag}` : ""}`);
      platform = entry.platform;
      manifest = await this.getManifest(entry.digest);
    }
    return {
      ref: {
        host: LOCAL_HOST,
        repository: this.dir,
        ...(tag ? { tag } : {}),
        digest: manifest.digest,
      },
      manifest,
      ...(index ? { index } : {}),
      ...(platform ? { platform } : {}),
    };
  }

  /** The image config of a manifest, verified. */
  async getConfig(manifest: ImageManifest | Descriptor): Promise<ImageConfig> {
    const desc = "kind" in manifest ? manifest.json.config : manifest;
    const bytes = await this.readBlob(desc.digest);
    try {
      return { digest: desc.digest, bytes, json: JSON.parse(new TextDecoder().decode(bytes)) };
    } catch {
      throw new RegistryError(`${this.dir}@${desc.digest}: the image config is not valid JSON`, {
        code: "BAD_RESPONSE",
      });
    }
  }
}

async function atomicWrite(path: string, bytes: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${crypto.randomUUID()}`;
  try {
    const f = await Deno.open(tmp, { write: true, createNew: true, mode: 0o644 });
    try {
      for (let o = 0; o < bytes.length;) o += await f.write(bytes.subarray(o));
      await f.syncData();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/** sha256 of a file, streamed. */
async function fileDigest(path: string): Promise<string> {
  const d = await newDigester("sha256");
  const f = await Deno.open(path);
  for await (const chunk of f.readable) d.update(chunk);
  return d.digest();
}

/** A synthesized single-layer image for a `.stargz` file. */
interface StargzImage {
  path: string;
  layer: Descriptor;
  config: { digest: string; bytes: Uint8Array };
  manifest: ImageManifest;
}

/** The `local` pseudo-registry driver; see the module documentation. */
export class LocalDriver implements Driver {
  readonly name = "local";
  /** The local directory. */
  readonly dir: string;
  readonly #stargz = new Map<string, { key: string; image: Promise<StargzImage> }>();

  constructor(options: { localDir?: string } = {}) {
    this.dir = (options.localDir ?? defaultLocalDir()).replace(/\/+$/, "") || "/";
  }

  matches(host: string): boolean {
    return host === LOCAL_HOST;
  }

  #checkHost(host: string): void {
    if (host !== LOCAL_HOST) {
      throw new RegistryError(`the local driver does not serve ${host}`, { code: "UNSUPPORTED" });
    }
  }

  async ping(host: string): Promise<void> {
    this.#checkHost(host);
    const info = await exists(this.dir);
    if (!info?.isDirectory) {
      throw new RegistryError(`local: the local image directory ${this.dir} does not exist`, {
        code: "NOT_FOUND",
        reference: LOCAL_HOST,
      });
    }
  }

  /** All local repositories: `.stargz` files and OCI layouts, as repository paths. */
  async #walk(): Promise<{ repository: string; kind: "stargz" | "layout" }[]> {
    const out: { repository: string; kind: "stargz" | "layout" }[] = [];
    const visit = async (rel: string, depth: number) => {
      const abs = rel ? `${this.dir}/${rel}` : this.dir;
      if (rel && await OciLayout.isLayout(abs)) {
        out.push({ repository: rel, kind: "layout" });
        return;
      }
      if (depth > 16) return;
      let entries: Deno.DirEntry[];
      try {
        entries = await Array.fromAsync(Deno.readDir(abs));
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return;
        throw e;
      }
      for (const e of entries) {
        const child = rel ? `${rel}/${e.name}` : e.name;
        let isFile = e.isFile;
        let isDirectory = e.isDirectory;
        if (e.isSymlink) {
          // Symlinked files and directories count (a common way to add images).
          const target = await exists(`${abs}/${e.name}`);
          isFile = target?.isFile ?? false;
          isDirectory = target?.isDirectory ?? false;
        }
        if (isFile && e.name.endsWith(".stargz")) {
          out.push({ repository: child.slice(0, -".stargz".length), kind: "stargz" });
        } else if (isDirectory) await visit(child, depth + 1);
      }
    };
    await visit("", 0);
    return out.filter((r) => {
      try {
        repositoryName(LOCAL_HOST, r.repository);
        return true;
      } catch {
        return false; // names that are not valid repository names are not listed
      }
    }).sort((a, b) => (a.repository < b.repository ? -1 : 1));
  }

  async listOwners(host: string, _options?: ListOptions): Promise<string[]> {
    this.#checkHost(host);
    return [...new Set((await this.#walk()).map((r) => r.repository.split("/")[0]))].sort();
  }

  async listRepositories(host: string, prefix = "", _options?: ListOptions): Promise<string[]> {
    this.#checkHost(host);
    const p = prefix.replace(/^\/+|\/+$/g, "");
    return (await this.#walk()).map((r) => r.repository).filter((r) =>
      p === "" || r === p || r.startsWith(`${p}/`)
    );
  }

  /** What `repo` is on disk: a stargz file, an OCI layout, or nothing. */
  async #locate(
    repo: RepositoryName,
  ): Promise<{ kind: "stargz"; path: string } | { kind: "layout"; layout: OciLayout } | undefined> {
    this.#checkHost(repo.host);
    const file = `${this.dir}/${repo.repository}.stargz`;
    if ((await exists(file))?.isFile) return { kind: "stargz", path: file };
    const dir = `${this.dir}/${repo.repository}`;
    if (await OciLayout.isLayout(dir)) return { kind: "layout", layout: await OciLayout.open(dir) };
    return undefined;
  }

  async #need(repo: RepositoryName) {
    const found = await this.#locate(repo);
    if (!found) {
      throw new RegistryError(
        `local/${repo.repository}: no ${repo.repository}.stargz file or OCI layout ${repo.repository}/ in ${this.dir}`,
        { code: "NAME_UNKNOWN", reference: `local/${repo.repository}` },
      );
    }
    return found;
  }

  /** The synthesized image of a stargz file, cached while the file is unchanged. */
  async #stargzImage(path: string): Promise<StargzImage> {
    const info = await Deno.stat(path);
    const key = `${info.size}:${info.mtime?.getTime()}:${info.ino}`;
    const cached = this.#stargz.get(path);
    if (cached && cached.key === key) return await cached.image;
    const image = (async (): Promise<StargzImage> => {
      const layerDigest = await fileDigest(path);
      const platform = defaultPlatform();
      const name = path.slice(path.lastIndexOf("/") + 1);
      const configBytes = new TextEncoder().encode(JSON.stringify({
        architecture: platform.architecture,
        os: platform.os,
        config: {},
        rootfs: { type: "layers", diff_ids: [] },
      }));
      const config = { digest: await digestLike("sha256:", configBytes), bytes: configBytes };
      const layer: Descriptor = {
        mediaType: MediaType.OCI_LAYER_GZIP,
        digest: layerDigest,
        size: info.size,
        annotations: { "org.opencontainers.image.title": name },
      };
      const json = {
        schemaVersion: 2,
        mediaType: MediaType.OCI_MANIFEST,
        config: {
          mediaType: MediaType.OCI_CONFIG,
          digest: config.digest,
          size: configBytes.length,
        },
        layers: [layer],
      };
      const bytes = new TextEncoder().encode(JSON.stringify(json));
      const digest = await digestLike("sha256:", bytes);
      return {
        path,
        layer,
        config,
        manifest: { kind: "image", digest, mediaType: MediaType.OCI_MANIFEST, bytes, json },
      };
    })();
    this.#stargz.set(path, { key, image });
    image.catch(() => this.#stargz.delete(path));
    return await image;
  }

  async listTags(repo: RepositoryName): Promise<TagInfo[]> {
    const found = await this.#need(repo);
    if (found.kind === "stargz") {
      const img = await this.#stargzImage(found.path);
      return [{
        name: "latest",
        digest: img.manifest.digest,
        mediaType: img.manifest.mediaType,
        size: img.layer.size,
      }];
    }
    return (await found.layout.tags()).map((t) => ({
      name: t.name,
      digest: t.descriptor.digest,
      mediaType: t.descriptor.mediaType,
    }));
  }

  resolve(ref: Reference, options: ResolveOptions = {}): Promise<ResolvedImage> {
    return resolveImage(this, ref, options);
  }

  async getManifest(repo: RepositoryName, tagOrDigest: string): Promise<Manifest> {
    const found = await this.#need(repo);
    if (found.kind === "layout") return await found.layout.getManifest(tagOrDigest);
    const img = await this.#stargzImage(found.path);
    if (tagOrDigest !== "latest" && tagOrDigest !== img.manifest.digest) {
      throw new RegistryError(
        `local/${repo.repository}:${tagOrDigest}: a .stargz file only has the tag latest`,
        {
          code: "MANIFEST_UNKNOWN",
          reference: `local/${repo.repository}`,
        },
      );
    }
    return img.manifest;
  }

  async headManifest(repo: RepositoryName, tagOrDigest: string): Promise<ManifestHead | undefined> {
    try {
      const m = await this.getManifest(repo, tagOrDigest);
      return { digest: m.digest, mediaType: m.mediaType, size: m.bytes.length };
    } catch (e) {
      if (e instanceof RegistryError && ["MANIFEST_UNKNOWN", "NAME_UNKNOWN"].includes(e.code)) {
        return undefined;
      }
      throw e;
    }
  }

  async getConfig(
    repo: RepositoryName,
    manifest: ImageManifest | Descriptor,
    options: CallOptions = {},
  ): Promise<ImageConfig> {
    const found = await this.#need(repo);
    if (found.kind === "layout") return await found.layout.getConfig(manifest);
    return await fetchConfig(this, repo, manifest, options);
  }

  async blob(repo: RepositoryName, digest: string, size?: number): Promise<BlobSource> {
    const found = await this.#need(repo);
    if (found.kind === "layout") return await found.layout.blob(digest, size);
    const img = await this.#stargzImage(found.path);
    if (digest === img.layer.digest) return await LocalBlobSource.open(found.path, digest, size);
    if (digest === img.config.digest) {
      const bytes = img.config.bytes;
      return {
        digest,
        size: bytes.length,
        read: (o: number, n: number) => Promise.resolve(bytes.slice(o, o + n)),
      };
    }
    throw new RegistryError(`local/${repo.repository}@${digest}: blob unknown`, {
      code: "BLOB_UNKNOWN",
    });
  }

  async fetchBlob(
    repo: RepositoryName,
    digest: string,
    options: CallOptions & { size?: number } = {},
  ): Promise<ReadableStream<Uint8Array>> {
    const found = await this.#need(repo);
    if (found.kind === "layout") return await found.layout.fetchBlob(digest, options.size);
    const img = await this.#stargzImage(found.path);
    if (digest === img.layer.digest) {
      const f = await Deno.open(found.path);
      return f.readable.pipeThrough(
        verifyingStream(`local/${repo.repository}@${digest}`, digest, options.size),
      );
    }
    if (digest === img.config.digest) {
      return new Blob([img.config.bytes as Uint8Array<ArrayBuffer>]).stream();
    }
    throw new RegistryError(`local/${repo.repository}@${digest}: blob unknown`, {
      code: "BLOB_UNKNOWN",
    });
  }

  async blobExists(repo: RepositoryName, digest: string): Promise<boolean> {
    const found = await this.#locate(repo);
    if (!found) return false;
    if (found.kind === "layout") return await found.layout.hasBlob(digest);
    const img = await this.#stargzImage(found.path);
    return digest === img.layer.digest || digest === img.config.digest;
  }

  async mountBlob(repo: RepositoryName, digest: string, fromRepository: string): Promise<boolean> {
    const from = await this.#locate({ host: LOCAL_HOST, repository: fromRepository });
    if (from?.kind !== "layout" || !(await from.layout.hasBlob(digest))) return false;
    const layout = await OciLayout.create(`${this.dir}/${repo.repository}`);
    await layout.writeBlob(digest, await from.layout.fetchBlob(digest));
    return true;
  }

  async #writable(repo: RepositoryName): Promise<OciLayout> {
    this.#checkHost(repo.host);
    if ((await exists(`${this.dir}/${repo.repository}.stargz`))?.isFile) {
      throw new RegistryError(`local/${repo.repository}: is a .stargz file; push to another name`, {
        code: "DENIED",
      });
    }
    return await OciLayout.create(`${this.dir}/${repo.repository}`);
  }

  async uploadBlob(
    repo: RepositoryName,
    digest: string,
    size: number,
    data: BlobData,
  ): Promise<void> {
    await (await this.#writable(repo)).writeBlob(digest, data, size);
  }

  async putManifest(
    repo: RepositoryName,
    tagOrDigest: string,
    mediaType: string,
    bytes: Uint8Array,
  ): Promise<string> {
    const layout = await this.#writable(repo);
    if (isDigest(tagOrDigest)) {
      const digest = await digestLike(tagOrDigest, bytes);
      if (digest !== tagOrDigest) {
        throw digestMismatch(`local/${repo.repository}`, tagOrDigest, digest);
      }
      return await layout.putManifest(bytes, mediaType);
    }
    return await layout.putManifest(bytes, mediaType, tagOrDigest);
  }
}
