/**
 * Reading `docker save` / `skopeo copy … docker-archive:FILE` archives, as an image source for
 * `crfs convert` and as a driver ({@link DockerArchiveDriver}: reads manifests and blobs, no
 * listing, no pushing): the tar is indexed once (headers only, by positioned reads), `manifest.json`
 * picks the image (by one of its `RepoTags`, or the only image), and the image is presented as
 * an ordinary Docker v2 manifest whose layer descriptors carry the true digest, size and
 * compression of each layer file (digests computed by reading the files once). Layer files may
 * be plain tar (the classic format) or compressed (`blobs/sha256/…` of Docker ≥ 25); symlinked
 * members (`<id>/layer.tar -> ../<diffid>.tar`) are followed.
 *
 * Writing archives is left out on purpose: docker load, podman load and skopeo decompress the
 * layers of an archive, so an archive cannot carry eStargz layers to a registry.
 *
 * @module
 */
import type * as cap from "./capabilities.ts";
import { sha256Digest, verifyingStream } from "./digest.ts";
import { Digester } from "./digester.ts";
import { headByFetching, resolveImage } from "./driver.ts";
import { RegistryError } from "./errors.ts";
import {
  type Descriptor,
  type ImageConfig,
  type ImageManifest,
  type Manifest,
  MediaType,
  parseManifest,
} from "./manifest.ts";
import { isDigest, type Reference, type RepositoryName } from "./reference.ts";
import { FileSource } from "../format/range_source.ts";
import { cleanPath, parentOf } from "../format/names.ts";
import * as tarHeader from "../format/tar_header.ts";

/** One member of an indexed tar file. */
export interface TarMember {
  /** Clean path (see `cleanPath`). */
  name: string;
  kind: "reg" | "hardlink" | "symlink" | "dir" | "other";
  /** Byte offset of the content in the tar file. */
  offset: number;
  size: number;
  linkName: string;
}

/** Largest extension header body or manifest.json read into memory. */
const MAX_META = 16 << 20;

/**
 * Indexes a plain (uncompressed) tar file by reading only its headers. Throws {@link tarHeader.TarError}
 * when the file is not a tar.
 */
export async function indexTar(src: FileSource): Promise<Map<string, TarMember>> {
  const members = new Map<string, TarMember>();
  let pos = 0;
  const global: tarHeader.PaxRecords = new Map();
  let local: tarHeader.PaxRecords | undefined;
  let longName: Uint8Array | undefined;
  let longLink: Uint8Array | undefined;
  while (pos + tarHeader.BLOCK <= src.size) {
    const block = await src.read(pos, tarHeader.BLOCK);
    if (tarHeader.isZeroBlock(block)) break;
    const raw = tarHeader.decodeHeaderBlock(block);
    pos += tarHeader.BLOCK;
    const t = raw.typeflag;
    if (t === "x" || t === "g" || t === "L" || t === "K") {
      if (raw.size > MAX_META) throw new tarHeader.TarError(`tar: extension header too large`);
      const body = await src.read(pos, raw.size);
      pos += raw.size + tarHeader.paddingFor(raw.size);
      if (t === "x") local = tarHeader.parsePaxRecords(body, local);
      else if (t === "g") tarHeader.parsePaxRecords(body, global);
      else if (t === "L") longName = body.slice();
      else longLink = body.slice();
      continue;
    }
    const pax = local ? new Map([...global, ...local]) : global;
    const headerOnly = "123456".includes(t);
    let kind: TarMember["kind"] = "other";
    let name = "";
    let linkName = "";
    let size = headerOnly ? 0 : raw.size;
    if (t !== "V") {
      const h = tarHeader.resolveHeader(raw, pax, longName, longLink);
      const clean = cleanPath(h.name);
      name = typeof clean === "string" ? clean : "";
      linkName = h.linkName;
      if (!headerOnly && pax.has("size")) size = h.size;
      kind = h.kind === "reg" || h.kind === "hardlink" || h.kind === "symlink" || h.kind === "dir"
        ? h.kind
        : "other";
    }
    local = longName = longLink = undefined;
    if (name) members.set(name, { name, kind, offset: pos, size, linkName });
    pos += size + tarHeader.paddingFor(size);
    if (pos > src.size) throw new tarHeader.TarError("tar: truncated archive");
  }
  return members;
}

/** One image listed in an archive's manifest.json. */
interface ArchiveItem {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
}

/** An opened docker archive; close it when done. */
export class DockerArchive {
  readonly path: string;
  readonly #src: FileSource;
  readonly #members: Map<string, TarMember>;
  readonly #items: ArchiveItem[];
  /** Layer digest → archive member, for the images synthesized so far. */
  readonly #blobs = new Map<string, TarMember>();

  private constructor(
    path: string,
    src: FileSource,
    members: Map<string, TarMember>,
    items: ArchiveItem[],
  ) {
    this.path = path;
    this.#src = src;
    this.#members = members;
    this.#items = items;
  }

  /**
   * Opens `path` when it is a docker archive; undefined when it is a tar without a valid
   * top-level manifest.json (or not a tar at all, when `lenient`). Errors name the file.
   */
  static async open(path: string, lenient = false): Promise<DockerArchive | undefined> {
    let src: FileSource;
    try {
      src = await FileSource.open(path);
    } catch (e) {
      throw new RegistryError(`${path}: ${(e as Error).message}`, { code: "NOT_FOUND" });
    }
    try {
      let members: Map<string, TarMember>;
      try {
        members = await indexTar(src);
      } catch (e) {
        if (lenient) {
          src.close();
          return undefined;
        }
        throw new RegistryError(`${path}: not a docker archive (${(e as Error).message})`, {
          code: "BAD_RESPONSE",
        });
      }
      const manifest = members.get("manifest.json");
      let items: ArchiveItem[] | undefined;
      if (manifest && manifest.kind === "reg" && manifest.size <= MAX_META) {
        try {
          const json = JSON.parse(
            new TextDecoder().decode(await src.read(manifest.offset, manifest.size)),
          );
          if (
            Array.isArray(json) &&
            json.every((i) =>
              i && typeof i.Config === "string" && Array.isArray(i.Layers) &&
              i.Layers.every((l: unknown) => typeof l === "string")
            )
          ) items = json;
        } catch {
          // not JSON: not an archive
        }
      }
      if (!items) {
        if (lenient) {
          src.close();
          return undefined;
        }
        throw new RegistryError(`${path}: not a docker archive (no valid manifest.json)`, {
          code: "BAD_RESPONSE",
        });
      }
      return new DockerArchive(path, src, members, items);
    } catch (e) {
      try {
        src.close();
      } catch {
        // already closed
      }
      throw e;
    }
  }

  /** The `RepoTags` of every image, in archive order. */
  get repoTags(): string[][] {
    return this.#items.map((i) => i.RepoTags ?? []);
  }

  /** Follows symlinks and hardlinks to the regular member holding `name`'s bytes. */
  #member(name: string): TarMember {
    let clean = cleanPath(name);
    for (let hops = 0; hops < 16 && typeof clean === "string"; hops++) {
      const m = this.#members.get(clean);
      if (!m) break;
      if (m.kind === "reg") return m;
      if (m.kind === "symlink") {
        const target = m.linkName.startsWith("/") ? m.linkName : `${parentOf(clean)}/${m.linkName}`;
        clean = resolveDots(target);
      } else if (m.kind === "hardlink") clean = cleanPath(m.linkName);
      else break;
    }
    throw new RegistryError(`${this.path}: ${name} is missing from the archive`, {
      code: "BLOB_UNKNOWN",
    });
  }

  /** Reads a whole (small) member. */
  async #readSmall(name: string): Promise<Uint8Array> {
    const m = this.#member(name);
    if (m.size > MAX_META) {
      throw new RegistryError(`${this.path}: ${name} is too large`, { code: "BAD_RESPONSE" });
    }
    return await this.#src.read(m.offset, m.size);
  }

  /**
   * The image tagged `tag` (matched against `RepoTags` with or without a `docker.io/` or
   * `docker.io/library/` prefix), or the only image: its synthesized manifest and its config
   * bytes. Layer digests are computed here (each layer file is read once).
   */
  async image(tag?: string): Promise<{ manifest: ImageManifest; config: Uint8Array }> {
    const norm = (t: string) => t.replace(/^docker\.io\/(library\/)?/, "");
    let item: ArchiveItem | undefined;
    if (tag !== undefined) {
      item = this.#items.find((i) => (i.RepoTags ?? []).some((t) => norm(t) === norm(tag)));
      if (!item) {
        const tags = this.#items.flatMap((i) => i.RepoTags ?? []);
        throw new RegistryError(
          `${this.path}: no image tagged ${JSON.stringify(tag)} in the archive` +
            (tags.length ? ` (it has ${tags.join(", ")})` : ""),
          { code: "MANIFEST_UNKNOWN" },
        );
      }
    } else if (this.#items.length === 1) item = this.#items[0];
    else {
      throw new RegistryError(
        `${this.path}: the archive holds ${this.#items.length} images; name one with ` +
          `docker-archive:FILE:NAME:TAG (it has ${
            this.#items.flatMap((i) => i.RepoTags ?? []).join(", ") || "no tags"
          })`,
        { code: "MANIFEST_UNKNOWN" },
      );
    }
    const config = await this.#readSmall(item.Config);
    const configDigest = await sha256Digest(config);
    this.#blobs.set(configDigest, this.#member(item.Config));
    const layers = [];
    for (const name of item.Layers) {
      const m = this.#member(name);
      const head = await this.#src.read(m.offset, Math.min(4, m.size));
      const gz = head[0] === 0x1f && head[1] === 0x8b;
      const zstd = head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd;
      const digest = await this.#digest(m);
      this.#blobs.set(digest, m);
      layers.push({
        mediaType: gz
          ? MediaType.DOCKER_LAYER_GZIP
          : zstd
          ? MediaType.OCI_LAYER_ZSTD
          : "application/vnd.docker.image.rootfs.diff.tar",
        digest,
        size: m.size,
      });
    }
    const json = {
      schemaVersion: 2,
      mediaType: MediaType.DOCKER_MANIFEST,
      config: {
        mediaType: MediaType.DOCKER_CONFIG,
        digest: configDigest,
        size: config.length,
      },
      layers,
    };
    const bytes = new TextEncoder().encode(JSON.stringify(json));
    const manifest = parseManifest(
      bytes,
      await sha256Digest(bytes),
      MediaType.DOCKER_MANIFEST,
      this.path,
    ) as ImageManifest;
    return { manifest, config };
  }

  async #digest(m: TarMember): Promise<string> {
    const d = new Digester("sha256");
    for await (const chunk of this.#stream(m)) d.update(chunk);
    return d.digest();
  }

  async *#stream(m: TarMember): AsyncGenerator<Uint8Array> {
    const step = 1 << 20;
    for (let o = 0; o < m.size; o += step) {
      yield await this.#src.read(m.offset + o, Math.min(step, m.size - o));
    }
  }

  #blobMember(digest: string): TarMember {
    const m = this.#blobs.get(digest);
    if (!m) {
      throw new RegistryError(`${this.path}: no layer ${digest} in the archive`, {
        code: "BLOB_UNKNOWN",
      });
    }
    return m;
  }

  /** A layer's (or config's) bytes, by the digest {@link image} gave it. */
  blob(digest: string): ReadableStream<Uint8Array> {
    return ReadableStream.from(this.#stream(this.#blobMember(digest)));
  }

  /** Random access to a layer (or config) by the digest {@link image} gave it. */
  blobSource(digest: string): cap.BlobSource {
    const m = this.#blobMember(digest);
    const src = this.#src;
    return {
      digest,
      size: m.size,
      async read(offset: number, length: number): Promise<Uint8Array> {
        const n = Math.max(0, Math.min(length, m.size - offset));
        if (n === 0) return new Uint8Array(0);
        return await src.read(m.offset + offset, n);
      },
    };
  }

  /** Closes the file. */
  close(): void {
    this.#src.close();
  }
}

/**
 * A docker archive as a driver that reads manifests and blobs (see the module documentation).
 * Tags are the archive's `RepoTags`: `getManifest(repo, tag)` matches `REPOSITORY:TAG` (or
 * `tag` alone when it holds a `:`, or the repository is empty); an empty tag names the only
 * image. Digests name the images synthesized so far.
 */
export class DockerArchiveDriver implements cap.DriverIdentity, cap.ManifestReader, cap.BlobReader {
  /** Always `docker-archive`. */
  readonly name = "docker-archive";
  /** The archive read. */
  readonly archive: DockerArchive;
  readonly #images = new Map<string, { manifest: ImageManifest; config: Uint8Array }>();

  constructor(archive: DockerArchive) {
    this.archive = archive;
  }

  /**
   * Opens `path` as {@link DockerArchive.open} does (undefined when not an archive and
   * `lenient`).
   *
   * @example
   * ```ts
   * const d = (await DockerArchiveDriver.open("image.tar"))!;
   * const { manifest } = await d.resolve({ host: "docker-archive", repository: "app", tag: "v1" });
   * ```
   */
  static async open(path: string, lenient = false): Promise<DockerArchiveDriver | undefined> {
    const archive = await DockerArchive.open(path, lenient);
    return archive ? new DockerArchiveDriver(archive) : undefined;
  }

  /** An archive serves no registry host. */
  matches(_host: string): boolean {
    return false;
  }

  async resolve(ref: Reference, options: cap.ResolveOptions = {}): Promise<cap.ResolvedImage> {
    if (ref.tag !== undefined || ref.digest !== undefined) {
      return await resolveImage(this, ref, options);
    }
    const r = await resolveImage(this, { ...ref, tag: "" }, options);
    const { tag: _only, ...named } = r.ref;
    return { ...r, ref: named };
  }

  async getManifest(repo: RepositoryName, tagOrDigest: string): Promise<Manifest> {
    if (isDigest(tagOrDigest)) {
      const known = this.#images.get(tagOrDigest);
      if (known) return known.manifest;
      throw new RegistryError(`${this.archive.path}: no manifest ${tagOrDigest}`, {
        code: "MANIFEST_UNKNOWN",
      });
    }
    const tag = tagOrDigest === ""
      ? undefined
      : tagOrDigest.includes(":") || !repo.repository
      ? tagOrDigest
      : `${repo.repository}:${tagOrDigest}`;
    const image = await this.archive.image(tag);
    this.#images.set(image.manifest.digest, image);
    return image.manifest;
  }

  headManifest(repo: RepositoryName, tagOrDigest: string): Promise<cap.ManifestHead | undefined> {
    return headByFetching(this, repo, tagOrDigest);
  }

  /** The config of an image synthesized so far (the archive's config file, as it is). */
  getConfig(_repo: RepositoryName, manifest: ImageManifest | Descriptor): Promise<ImageConfig> {
    const desc = "kind" in manifest ? manifest.json.config : manifest;
    const image = [...this.#images.values()].find((i) =>
      i.manifest.json.config.digest === desc.digest
    );
    if (!image) {
      return Promise.reject(
        new RegistryError(`${this.archive.path}: no config ${desc.digest}`, {
          code: "BLOB_UNKNOWN",
        }),
      );
    }
    let json;
    try {
      json = JSON.parse(new TextDecoder().decode(image.config));
    } catch {
      return Promise.reject(
        new RegistryError(`${this.archive.path}: the image config is not valid JSON`, {
          code: "BAD_RESPONSE",
        }),
      );
    }
    return Promise.resolve({ digest: desc.digest, bytes: image.config, json });
  }

  blob(_repo: RepositoryName, digest: string): Promise<cap.BlobSource> {
    return Promise.resolve(this.archive.blobSource(digest));
  }

  fetchBlob(
    _repo: RepositoryName,
    digest: string,
    options: cap.CallOptions & { size?: number } = {},
  ): Promise<ReadableStream<Uint8Array>> {
    const what = `${this.archive.path}@${digest}`;
    return Promise.resolve(
      this.archive.blob(digest).pipeThrough(verifyingStream(what, digest, options.size)),
    );
  }

  /** Closes the archive file. */
  close(): void {
    this.archive.close();
  }
}

/** Resolves `.` and `..` in a relative archive path (never above the archive root). */
function resolveDots(path: string): string {
  const out: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") out.pop();
    else out.push(part);
  }
  return out.join("/");
}
