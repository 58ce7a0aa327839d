/**
 * The default driver: the Docker Registry HTTP API v2 / OCI distribution API, as spoken by
 * Docker's registry, Docker Hub, Harbor, Quay, GHCR, ECR and the rest. Covers the `/v2/` ping,
 * `_catalog` and `tags/list` with `Link` pagination, manifests (full `Accept` list, digest
 * verification on the exact bytes, cheap `HEAD`s), blobs as range sources or verified streams,
 * and pushing (blob existence checks, cross-repository mounts, chunked uploads, manifests).
 *
 * GCR and ICR drivers extend it, overriding {@link DockerV2Driver.origin} and listing.
 *
 * @module
 */
import { type Authenticator, CATALOG_SCOPE, repositoryScope, type Target } from "./auth.ts";
import { type BlobFetch, RegistryBlobSource } from "./blob_source.ts";
import { digestLike, digestMismatch, newDigester, verifyingStream } from "./digest.ts";
import {
  type BlobData,
  type BlobSource,
  type CallOptions,
  type Driver,
  type DriverContext,
  fetchConfig,
  type ListOptions,
  type ManifestHead,
  manifestHead,
  type ResolvedImage,
  resolveImage,
  type ResolveOptions,
  type TagInfo,
  type TagListOptions,
  type UploadOptions,
} from "./driver.ts";
import { RegistryError } from "./errors.ts";
import { type HttpClient, type HttpRequest, readBody, readJson, responseError } from "./http.ts";
import {
  type Descriptor,
  type ImageConfig,
  type ImageManifest,
  type Manifest,
  MANIFEST_ACCEPT,
  parseManifest,
} from "./manifest.ts";
import {
  formatReference,
  isDigest,
  isDockerHub,
  type Reference,
  type RepositoryName,
} from "./reference.ts";

/** Options of {@link DockerV2Driver}. */
export interface DockerV2Options {
  /** `n` for `_catalog` pages. Default 1000 (docker-registry's maximum). */
  catalogPageSize?: number;
  /** `n` for `tags/list` pages; default none (the registry's default). */
  tagPageSize?: number;
  /** Largest blob kept in memory when a server ignores `Range`. Default 16 MiB. */
  wholeBlobLimit?: number;
  /** Upload chunk size. Default 8 MiB. */
  uploadChunkSize?: number;
  /** Concurrent manifest HEADs when listing tags with digests. Default 8. */
  headConcurrency?: number;
  /** Most pages a catalog or tag listing follows. Default {@link MAX_LIST_PAGES}. */
  maxListPages?: number;
  /** Most entries a catalog or tag listing collects. Default {@link MAX_LIST_ENTRIES}. */
  maxListEntries?: number;
}

const MAX_MANIFEST = 8 * 1024 * 1024;
/** Default cap on the pages one listing follows (a hostile server may paginate forever). */
export const MAX_LIST_PAGES = 1_000;
/** Default cap on the entries one listing collects. */
export const MAX_LIST_ENTRIES = 100_000;

/** The Docker Registry v2 / OCI distribution driver; see the module documentation. */
export class DockerV2Driver implements Driver {
  readonly name: string = "docker-v2";
  readonly http: HttpClient;
  readonly auth: Authenticator;
  readonly options: DockerV2Options;

  constructor(ctx: Pick<DriverContext, "http" | "auth">, options: DockerV2Options = {}) {
    this.http = ctx.http;
    this.auth = ctx.auth;
    this.options = options;
  }

  /** The fallback driver serves every host. */
  matches(_host: string): boolean {
    return true;
  }

  /** URL origin for `host` (`https://host`, or http for loopback/insecure hosts). */
  origin(host: string): string {
    return this.http.baseUrl(host);
  }

  /** The auth target of `host`. */
  protected target(host: string): Target {
    return { host, origin: this.origin(host) };
  }

  /** Sends an authenticated request for `scopes` and consumes the response inside the retry loop. */
  protected call<T>(
    host: string,
    scopes: string[],
    req: HttpRequest,
    consume: (res: Response) => Promise<T>,
  ): Promise<T> {
    return this.auth.requestWith(this.target(host), scopes, req, consume);
  }

  async ping(host: string, options: CallOptions = {}): Promise<void> {
    await this.auth.ping(this.target(host), options.signal);
  }

  // ---- listing ----

  /** All repository names from `_catalog`, following `Link` pagination. */
  async catalog(host: string, options: ListOptions = {}): Promise<string[]> {
    if (isDockerHub(host)) {
      throw new RegistryError(
        `${host}: Docker Hub does not allow listing repositories; name an image instead`,
        {
          code: "UNSUPPORTED",
          reference: host,
        },
      );
    }
    const n = this.options.catalogPageSize ?? 1000;
    const what = `${host} (catalog)`;
    let url = `${this.origin(host)}/v2/_catalog?n=${n}`;
    const out: string[] = [];
    const seen = new Set<string>([url]);
    const cap = this.#listCap(what);
    for (let page = 0;; page++) {
      if (cap.stop(page, out.length)) break;
      const { items, next } = await this.call(host, [CATALOG_SCOPE], {
        url,
        what,
        signal: options.signal,
      }, async (res) => {
        if (res.status === 404 || res.status === 405) {
          await res.body?.cancel();
          throw new RegistryError(
            `${host}: this registry does not offer a catalog (HTTP ${res.status})`,
            {
              code: "UNSUPPORTED",
              status: res.status,
              reference: host,
            },
          );
        }
        if (!res.ok) throw await responseError(res, what);
        const body = await readJson<{ repositories?: string[] }>(res, what);
        return { items: body.repositories ?? [], next: nextLink(res.headers.get("link"), url) };
      });
      out.push(...items);
      if (!next || items.length === 0 || seen.has(next)) break;
      if (options.limit !== undefined && out.length >= options.limit) break;
      seen.add(next);
      url = next;
    }
    return [...new Set(out.slice(0, cap.maxEntries))].sort();
  }

  /**
   * The bounds of one listing: `stop(page, entries)` is true once `page` pages were read or
   * `entries` collected, and logs that the listing was truncated.
   */
  #listCap(what: string): { maxEntries: number; stop(page: number, entries: number): boolean } {
    const maxPages = this.options.maxListPages ?? MAX_LIST_PAGES;
    const maxEntries = this.options.maxListEntries ?? MAX_LIST_ENTRIES;
    return {
      maxEntries,
      stop: (page, entries) => {
        if (page < maxPages && entries < maxEntries) return false;
        this.http.log(
          `${what}: listing truncated after ${page} pages and ${
            Math.min(entries, maxEntries)
          } entries (the registry offers more pages; limits ${maxPages} pages, ${maxEntries} entries)`,
        );
        return true;
      },
    };
  }

  async listOwners(host: string, options: ListOptions = {}): Promise<string[]> {
    const repos = await this.catalog(host, options);
    return [...new Set(repos.map((r) => r.split("/")[0]))].sort();
  }

  async listRepositories(host: string, prefix = "", options: ListOptions = {}): Promise<string[]> {
    const repos = await this.catalog(host, options);
    const p = prefix.replace(/^\/+|\/+$/g, "");
    return p === "" ? repos : repos.filter((r) => r === p || r.startsWith(`${p}/`));
  }

  async listTags(repo: RepositoryName, options: TagListOptions = {}): Promise<TagInfo[]> {
    const names = await this.tagNames(repo, options);
    const tags: TagInfo[] = names.map((name) => ({ name }));
    if (options.digests) {
      await forEachLimit(tags, this.options.headConcurrency ?? 8, async (t) => {
        const head = await this.headManifest(repo, t.name, options);
        if (head) {
          t.digest = head.digest;
          t.mediaType = head.mediaType;
        }
      });
    }
    return tags;
  }

  /** Tag names from `tags/list`, following `Link` pagination; sorted. */
  async tagNames(repo: RepositoryName, options: CallOptions = {}): Promise<string[]> {
    const what = formatReference(repo);
    const n = this.options.tagPageSize;
    let url = `${this.origin(repo.host)}/v2/${repo.repository}/tags/list${n ? `?n=${n}` : ""}`;
    const out: string[] = [];
    const seen = new Set<string>([url]);
    const cap = this.#listCap(what);
    for (let page = 0;; page++) {
      if (cap.stop(page, out.length)) break;
      const { items, next } = await this.call(
        repo.host,
        [repositoryScope(repo.repository, "pull")],
        {
          url,
          what,
          signal: options.signal,
        },
        async (res) => {
          if (!res.ok) throw await responseError(res, what);
          const body = await readJson<{ tags?: string[] | null }>(res, what);
          return { items: body.tags ?? [], next: nextLink(res.headers.get("link"), url) };
        },
      );
      out.push(...items);
      if (!next || items.length === 0 || seen.has(next)) break;
      seen.add(next);
      url = next;
    }
    return [...new Set(out.slice(0, cap.maxEntries))].sort();
  }

  // ---- manifests ----

  resolve(ref: Reference, options: ResolveOptions = {}): Promise<ResolvedImage> {
    return resolveImage(this, ref, options);
  }

  async getManifest(
    repo: RepositoryName,
    tagOrDigest: string,
    options: CallOptions = {},
  ): Promise<Manifest> {
    const byDigest = isDigest(tagOrDigest);
    const what = refText(repo, tagOrDigest);
    const url = `${this.origin(repo.host)}/v2/${repo.repository}/manifests/${tagOrDigest}`;
    return await this.call(repo.host, [repositoryScope(repo.repository, "pull")], {
      url,
      headers: { accept: MANIFEST_ACCEPT },
      what,
      signal: options.signal,
    }, async (res) => {
      if (!res.ok) throw await responseError(res, what);
      const bytes = await readBody(res, what, MAX_MANIFEST);
      const actual = await digestLike(byDigest ? tagOrDigest : "sha256:", bytes);
      if (byDigest && actual !== tagOrDigest) throw transientMismatch(what, tagOrDigest, actual);
      const header = res.headers.get("docker-content-digest");
      if (
        header && isDigest(header) && header !== actual &&
        (await digestLike(header, bytes)) !== header
      ) {
        throw transientMismatch(`${what} (Docker-Content-Digest)`, header, actual);
      }
      return parseManifest(bytes, actual, res.headers.get("content-type"), what);
    });
  }

  async headManifest(
    repo: RepositoryName,
    tagOrDigest: string,
    options: CallOptions = {},
  ): Promise<ManifestHead | undefined> {
    const what = refText(repo, tagOrDigest);
    const url = `${this.origin(repo.host)}/v2/${repo.repository}/manifests/${tagOrDigest}`;
    const head = await this.call(repo.host, [repositoryScope(repo.repository, "pull")], {
      url,
      method: "HEAD",
      headers: { accept: MANIFEST_ACCEPT },
      what,
      signal: options.signal,
    }, async (res) => {
      await res.body?.cancel();
      if (res.status === 404) return undefined;
      if (!res.ok) throw await responseError(res, what);
      return {
        digest: res.headers.get("docker-content-digest") ?? "",
        mediaType: (res.headers.get("content-type") ?? "").split(";")[0].trim(),
        size: Number(res.headers.get("content-length") ?? -1),
      };
    });
    if (head && (!isDigest(head.digest) || head.size < 0)) {
      // The registry did not say; fall back to a GET and compute it.
      return manifestHead(await this.getManifest(repo, tagOrDigest, options));
    }
    return head;
  }

  getConfig(
    repo: RepositoryName,
    manifest: ImageManifest | Descriptor,
    options: CallOptions = {},
  ): Promise<ImageConfig> {
    return fetchConfig(this, repo, manifest, options);
  }

  // ---- blobs ----

  #blobUrl(repo: RepositoryName, digest: string): string {
    return `${this.origin(repo.host)}/v2/${repo.repository}/blobs/${digest}`;
  }

  async blob(
    repo: RepositoryName,
    digest: string,
    size?: number,
    options: CallOptions = {},
  ): Promise<BlobSource> {
    if (!isDigest(digest)) {
      throw new RegistryError(
        `${formatReference(repo)}: bad blob digest ${JSON.stringify(digest)}`,
        { code: "BAD_RESPONSE" },
      );
    }
    const what = refText(repo, digest);
    const blobSize = size ?? await this.#blobSize(repo, digest, options);
    const url = this.#blobUrl(repo, digest);
    const scopes = [repositoryScope(repo.repository, "pull")];
    const fetch: BlobFetch = (headers, consume, signal) =>
      this.call(
        repo.host,
        scopes,
        { url, headers, what, signal },
        consume,
      );
    return new RegistryBlobSource(digest, blobSize, fetch, {
      what,
      wholeBlobLimit: this.options.wholeBlobLimit,
      log: (line) => this.http.log(line),
    });
  }

  /** A HEAD of the blob: `missing` on 404, else its Content-Length (undefined when not sent). */
  async #headBlob(
    repo: RepositoryName,
    digest: string,
    options: CallOptions,
  ): Promise<{ missing: true } | { missing: false; length?: number }> {
    const what = refText(repo, digest);
    return await this.call(repo.host, [repositoryScope(repo.repository, "pull")], {
      url: this.#blobUrl(repo, digest),
      method: "HEAD",
      what,
      signal: options.signal,
    }, async (res) => {
      await res.body?.cancel();
      if (res.status === 404) return { missing: true as const };
      if (!res.ok) throw await responseError(res, what);
      const len = res.headers.get("content-length");
      return { missing: false as const, ...(len === null ? {} : { length: Number(len) }) };
    });
  }

  async #blobSize(repo: RepositoryName, digest: string, options: CallOptions): Promise<number> {
    const what = refText(repo, digest);
    const head = await this.#headBlob(repo, digest, options);
    if (head.missing) {
      throw new RegistryError(`${what}: blob unknown to the registry (HTTP 404)`, {
        code: "BLOB_UNKNOWN",
        status: 404,
        reference: what,
      });
    }
    const size = head.length;
    if (size !== undefined && Number.isSafeInteger(size)) return size;
    // No length on HEAD: ask for the first byte and read the total from Content-Range.
    return await this.call(repo.host, [repositoryScope(repo.repository, "pull")], {
      url: this.#blobUrl(repo, digest),
      headers: { range: "bytes=0-0" },
      what,
      signal: options.signal,
    }, async (res) => {
      const cr = res.headers.get("content-range");
      const len = res.headers.get("content-length");
      await res.body?.cancel();
      if (!res.ok) throw await responseError(res, what);
      const m = cr ? /\/(\d+)\s*$/.exec(cr) : null;
      if (res.status === 206 && m) return Number(m[1]);
      if (res.status === 200 && len !== null) return Number(len);
      throw new RegistryError(`${what}: the registry does not tell the blob's size`, {
        code: "BAD_RESPONSE",
        reference: what,
      });
    });
  }

  async fetchBlob(
    repo: RepositoryName,
    digest: string,
    options: CallOptions & { size?: number } = {},
  ): Promise<ReadableStream<Uint8Array>> {
    const what = refText(repo, digest);
    const res = await this.auth.request(this.target(repo.host), [
      repositoryScope(repo.repository, "pull"),
    ], {
      url: this.#blobUrl(repo, digest),
      what,
      signal: options.signal,
    });
    if (res.status !== 200) {
      const err = await responseError(res, what);
      throw res.status === 404
        ? new RegistryError(err.message, { code: "BLOB_UNKNOWN", status: 404, reference: what })
        : err;
    }
    if (!res.body) {
      throw new RegistryError(`${what}: empty response`, { code: "BAD_RESPONSE", reference: what });
    }
    return res.body.pipeThrough(verifyingStream(what, digest, options.size));
  }

  async blobExists(
    repo: RepositoryName,
    digest: string,
    options: CallOptions = {},
  ): Promise<boolean> {
    return !(await this.#headBlob(repo, digest, options)).missing;
  }

  // ---- pushing ----

  async mountBlob(
    repo: RepositoryName,
    digest: string,
    fromRepository: string,
    options: CallOptions = {},
  ): Promise<boolean> {
    const what = refText(repo, digest);
    const origin = this.origin(repo.host);
    const url = `${origin}/v2/${repo.repository}/blobs/uploads/?mount=${
      encodeURIComponent(digest)
    }&from=${encodeURIComponent(fromRepository)}`;
    const scopes = [
      repositoryScope(repo.repository, "pull,push"),
      repositoryScope(fromRepository, "pull"),
    ];
    const location = await this.call(repo.host, scopes, {
      url,
      method: "POST",
      what,
      retry: true,
      signal: options.signal,
    }, async (res) => {
      await res.body?.cancel();
      if (res.status === 201) return null;
      if (res.status === 202) return res.headers.get("location");
      throw await responseError(res, what);
    });
    if (location === null) return true;
    // The registry started an ordinary upload instead; cancel it (best effort).
    if (location) await this.#cancelUpload(repo, new URL(location, origin).href).catch(() => {});
    return false;
  }

  async #cancelUpload(repo: RepositoryName, url: string): Promise<void> {
    await this.call(repo.host, [repositoryScope(repo.repository, "pull,push")], {
      url,
      method: "DELETE",
      what: formatReference(repo),
    }, async (res) => {
      await res.body?.cancel();
    });
  }

  async uploadBlob(
    repo: RepositoryName,
    digest: string,
    size: number,
    data: BlobData,
    options: UploadOptions = {},
  ): Promise<void> {
    if (!isDigest(digest)) {
      throw new RegistryError(`${formatReference(repo)}: bad digest ${digest}`, {
        code: "BAD_RESPONSE",
      });
    }
    const what = refText(repo, digest);
    if (data instanceof Uint8Array) {
      if (data.length !== size) {
        throw new RegistryError(`${what}: ${data.length} bytes given, ${size} declared`, {
          code: "BAD_RESPONSE",
          reference: what,
        });
      }
      const actual = await digestLike(digest, data);
      if (actual !== digest) throw digestMismatch(what, digest, actual);
      // Bytes can be sent again: retry the whole session once on a transient failure.
      try {
        await this.#upload(repo, digest, size, chunksOf(data, options.chunkSize), options, what);
      } catch (e) {
        if (!(e instanceof RegistryError && e.transient)) throw e;
        this.http.log(`${what}: upload failed (${e.message}); starting over`);
        await this.#upload(repo, digest, size, chunksOf(data, options.chunkSize), options, what);
      }
      return;
    }
    await this.#upload(repo, digest, size, rechunk(data, options.chunkSize), options, what);
  }

  async #upload(
    repo: RepositoryName,
    digest: string,
    size: number,
    chunks: AsyncIterable<Uint8Array>,
    options: UploadOptions,
    what: string,
  ): Promise<void> {
    const origin = this.origin(repo.host);
    const scopes = [repositoryScope(repo.repository, "pull,push")];
    // Every step of an upload session answers with the Location of the next one.
    const step = (req: HttpRequest, ok: number[]) =>
      this.call(repo.host, scopes, { ...req, what, signal: options.signal }, async (res) => {
        await res.body?.cancel();
        if (!ok.includes(res.status)) throw await responseError(res, what);
        const loc = res.headers.get("location");
        if (!loc) {
          throw new RegistryError(`${what}: upload response without a Location`, {
            code: "BAD_RESPONSE",
            reference: what,
          });
        }
        return new URL(loc, origin).href;
      });
    let location = await step({
      url: `${origin}/v2/${repo.repository}/blobs/uploads/`,
      method: "POST",
      headers: { "content-length": "0" },
      retry: true,
    }, [202, 201]);
    const digester = await newDigester(digest.split(":")[0]);
    let offset = 0;
    try {
      for await (const chunk of chunks) {
        if (chunk.length === 0) continue;
        digester.update(chunk);
        if (offset + chunk.length > size) {
          throw new RegistryError(`${what}: more than the declared ${size} bytes`, {
            code: "BAD_RESPONSE",
            reference: what,
          });
        }
        const start = offset;
        location = await step({
          url: location,
          method: "PATCH",
          headers: {
            "content-type": "application/octet-stream",
            "content-range": `${start}-${start + chunk.length - 1}`,
            "content-length": String(chunk.length),
          },
          body: chunk,
          retry: false,
        }, [202, 204]);
        offset += chunk.length;
      }
      if (offset !== size) {
        throw new RegistryError(`${what}: got ${offset} bytes, ${size} declared`, {
          code: "BAD_RESPONSE",
          reference: what,
        });
      }
      const actual = digester.digest();
      if (actual !== digest) throw digestMismatch(what, digest, actual);
    } catch (e) {
      await this.#cancelUpload(repo, location).catch(() => {});
      throw e;
    }
    const done = new URL(location);
    done.searchParams.set("digest", digest);
    await this.call(repo.host, scopes, {
      url: done.href,
      method: "PUT",
      headers: { "content-length": "0", "content-type": "application/octet-stream" },
      what,
      retry: false,
      signal: options.signal,
    }, async (res) => {
      await res.body?.cancel();
      if (res.status !== 201 && res.status !== 204 && res.status !== 200) {
        throw await responseError(res, what);
      }
    });
  }

  async putManifest(
    repo: RepositoryName,
    tagOrDigest: string,
    mediaType: string,
    bytes: Uint8Array,
    options: CallOptions = {},
  ): Promise<string> {
    const what = refText(repo, tagOrDigest);
    const digest = await digestLike(isDigest(tagOrDigest) ? tagOrDigest : "sha256:", bytes);
    if (isDigest(tagOrDigest) && digest !== tagOrDigest) {
      throw digestMismatch(what, tagOrDigest, digest);
    }
    return await this.call(repo.host, [repositoryScope(repo.repository, "pull,push")], {
      url: `${this.origin(repo.host)}/v2/${repo.repository}/manifests/${tagOrDigest}`,
      method: "PUT",
      headers: { "content-type": mediaType },
      body: bytes,
      what,
      signal: options.signal,
    }, async (res) => {
      await res.body?.cancel();
      if (res.status !== 201 && res.status !== 200 && res.status !== 202) {
        throw await responseError(res, what);
      }
      const header = res.headers.get("docker-content-digest");
      if (
        header && header.startsWith("sha256:") && digest.startsWith("sha256:") && header !== digest
      ) {
        throw digestMismatch(`${what} (stored manifest)`, digest, header);
      }
      return digest;
    });
  }
}

/** `host/repo:tag` or `host/repo@digest`, for messages. */
export function refText(repo: RepositoryName, tagOrDigest: string): string {
  const sep = isDigest(tagOrDigest) ? "@" : ":";
  return `${formatReference({ host: repo.host, repository: repo.repository })}${sep}${tagOrDigest}`;
}

function transientMismatch(what: string, expected: string, actual: string): RegistryError {
  const e = digestMismatch(what, expected, actual);
  return new RegistryError(e.message, {
    code: e.code,
    reference: what,
    detail: e.detail,
    transient: true,
  });
}

/** The `rel="next"` target of a `Link` header, resolved against `base`; same origin only. */
export function nextLink(header: string | null, base: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(/,(?=\s*<)/)) {
    const m = /^\s*<([^>]*)>\s*(.*)$/.exec(part);
    if (!m) continue;
    if (!/(?:^|;)\s*rel\s*=\s*"?(?:[^"]*\s)?next(?:\s[^"]*)?"?\s*(?:;|$)/i.test(m[2])) continue;
    try {
      const url = new URL(m[1], base);
      if (url.origin !== new URL(base).origin) return undefined;
      return url.href;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

async function* chunksOf(data: Uint8Array, chunkSize = 8 << 20): AsyncIterable<Uint8Array> {
  for (let o = 0; o < data.length; o += chunkSize) {
    yield data.subarray(o, Math.min(o + chunkSize, data.length));
  }
}

async function* rechunk(
  stream: ReadableStream<Uint8Array>,
  chunkSize = 8 << 20,
): AsyncIterable<Uint8Array> {
  let buf = new Uint8Array(chunkSize);
  let fill = 0;
  for await (const piece of stream) {
    let p = 0;
    while (p < piece.length) {
      const n = Math.min(chunkSize - fill, piece.length - p);
      buf.set(piece.subarray(p, p + n), fill);
      fill += n;
      p += n;
      if (fill === chunkSize) {
        yield buf;
        buf = new Uint8Array(chunkSize);
        fill = 0;
      }
    }
  }
  if (fill > 0) yield buf.subarray(0, fill);
}

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function forEachLimit<T>(
  items: T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]);
  });
  await Promise.all(workers);
}
