/**
 * registries.conf inside the drivers layer: {@link mirroredDriver} wraps the driver of a host so
 * that every manifest and blob read of a repository goes through the endpoints
 * {@link resolveRegistry} gives it — each `[[registry.mirror]]` in order, then the primary
 * `location` (the prefix rewritten) — with {@link withEndpoints}'s fallback, and fails at once
 * for a `blocked` prefix. Callers (the image store) keep naming the image as the user did: the
 * resolved image's `ref` is the original reference, whichever endpoint served it.
 *
 * Blobs are read from the endpoint that last served a manifest of the repository, falling back
 * through the others when a read fails there (blobs are content-addressed and verified above).
 * Listing, pinging and pushing go to the original host unchanged.
 *
 * @module
 */
import type { RangeSource } from "../format/range_source.ts";
import {
  type BlobSource,
  type CallOptions,
  canList,
  type Driver,
  type Lister,
  type ManifestHead,
  type ResolvedImage,
  type ResolveOptions,
} from "./capabilities.ts";
import type { Descriptor, ImageConfig, ImageManifest, Manifest } from "./manifest.ts";
import { RegistryError } from "./errors.ts";
import { type FallbackResult, withEndpoints as tryEndpoints } from "./mirror_fallback.ts";
import { formatReference, isDigest, type Reference, type RepositoryName } from "./reference.ts";
import {
  type RegistriesConfig,
  type RegistryEndpoint,
  type ResolvedRegistry,
  resolveRegistry,
} from "./registries_conf.ts";
import { isDockerHub } from "./reference.ts";

/**
 * {@link tryEndpoints}, except that when every endpoint failed and the primary could not be
 * reached at all, an endpoint that did answer (a mirror's "manifest unknown") gives the code:
 * the file system then says ENOENT for a name no reachable endpoint has, not EIO.
 */
async function withEndpoints<T>(
  resolved: ResolvedRegistry,
  what: string,
  attempt: (endpoint: RegistryEndpoint) => Promise<T>,
  signal?: AbortSignal,
): Promise<FallbackResult<T>> {
  const errors: unknown[] = [];
  try {
    return await tryEndpoints(resolved, what, async (e) => {
      try {
        return await attempt(e);
      } catch (err) {
        errors.push(err);
        throw err;
      }
    }, signal);
  } catch (e) {
    const unreachable = (x: unknown) =>
      !(x instanceof RegistryError) || ["CONNECTION", "TIMEOUT", "DNS", "TLS"].includes(x.code);
    const telling = errors.find((x) => !unreachable(x));
    if (
      errors.length > 1 && e instanceof RegistryError && unreachable(e) &&
      telling instanceof RegistryError
    ) {
      throw new RegistryError(e.message, {
        code: telling.code,
        status: telling.status,
        reference: what,
        cause: e,
      });
    }
    throw e;
  }
}

/** Whether `conf` says anything about `host` (a `[[registry]]` whose prefix names it). */
export function confMentionsHost(conf: RegistriesConfig, host: string): boolean {
  const h = isDockerHub(host) ? "docker.io" : host.toLowerCase();
  return conf.registries.some((r) => {
    const first = r.prefix.split("/")[0].toLowerCase();
    if (first.startsWith("*.")) return h.replace(/:\d+$/, "").endsWith(first.slice(1));
    return first === h || (isDockerHub(first) && h === "docker.io");
  });
}

function sameRepo(e: RegistryEndpoint, repo: RepositoryName): boolean {
  const hostSame = e.host.toLowerCase() === repo.host.toLowerCase() ||
    (isDockerHub(e.host) && isDockerHub(repo.host));
  return hostSame && e.repository === repo.repository;
}

/**
 * `inner` (the driver of a host registries.conf mentions) with its reads resolved through
 * `conf`; `driverFor` gives the (unwrapped) driver of an endpoint's host.
 */
export function mirroredDriver(
  inner: Driver,
  conf: RegistriesConfig,
  driverFor: (host: string) => Driver,
  log?: (line: string) => void,
): Driver {
  /** host/repository → the endpoint that last served a manifest. */
  const served = new Map<string, RegistryEndpoint>();
  const key = (repo: RepositoryName) => `${repo.host}/${repo.repository}`;
  const resolved = (repo: RepositoryName, tagOrDigest?: string): ResolvedRegistry =>
    resolveRegistry(conf, {
      host: repo.host,
      repository: repo.repository,
      ...(tagOrDigest === undefined
        ? {}
        : isDigest(tagOrDigest)
        ? { digest: tagOrDigest }
        : { tag: tagOrDigest }),
    });
  const direct = (r: ResolvedRegistry, repo: RepositoryName) =>
    !r.blocked && r.endpoints.length === 1 && sameRepo(r.endpoints[0], repo);
  const at = (e: RegistryEndpoint): RepositoryName => ({ host: e.host, repository: e.repository });
  const note = <T>(
    repo: RepositoryName,
    what: string,
    out: { value: T; endpoint: RegistryEndpoint; failures: { endpoint: RegistryEndpoint }[] },
  ) => {
    served.set(key(repo), out.endpoint);
    for (const f of out.failures) log?.(`${what}: endpoint ${f.endpoint.location} failed, next`);
    if (out.endpoint.mirror) log?.(`${what}: served by mirror ${out.endpoint.location}`);
    return out.value;
  };
  /** Endpoints for blobs: the one that served a manifest first, then the rest in order. */
  const blobEndpoints = (repo: RepositoryName): ResolvedRegistry => {
    const r = resolved(repo);
    const last = served.get(key(repo));
    if (!last) return r;
    const rest = r.endpoints.filter((e) => e.location !== last.location);
    return { ...r, endpoints: [last, ...rest] };
  };

  const d: Driver = {
    name: inner.name,
    matches: (host) => inner.matches(host),
    async resolve(ref: Reference, options: ResolveOptions = {}): Promise<ResolvedImage> {
      const r = resolved(ref, ref.digest ?? ref.tag);
      if (direct(r, ref)) return await inner.resolve(ref, options);
      const what = formatReference(ref);
      const out = await withEndpoints(r, what, async (e) => {
        const image = await driverFor(e.host).resolve({ ...ref, ...at(e) }, options);
        // The image keeps the user's name; only the bytes came from the endpoint.
        return { ...image, ref: { ...image.ref, host: ref.host, repository: ref.repository } };
      }, options.signal);
      return note(ref, what, out);
    },
    async getManifest(repo, tagOrDigest, options: CallOptions = {}): Promise<Manifest> {
      const r = resolved(repo, tagOrDigest);
      if (direct(r, repo)) return await inner.getManifest(repo, tagOrDigest, options);
      const what = `${formatReference(repo)}${isDigest(tagOrDigest) ? "@" : ":"}${tagOrDigest}`;
      const out = await withEndpoints(
        r,
        what,
        (e) => driverFor(e.host).getManifest(at(e), tagOrDigest, options),
        options.signal,
      );
      return note(repo, what, out);
    },
    async headManifest(repo, tagOrDigest, options: CallOptions = {}) {
      const r = resolved(repo, tagOrDigest);
      if (direct(r, repo)) return await inner.headManifest(repo, tagOrDigest, options);
      const out = await withEndpoints(r, formatReference(repo), async (e) => {
        const head = await driverFor(e.host).headManifest(at(e), tagOrDigest, options);
        if (!head) throw new Error(`${e.location}: no manifest ${tagOrDigest}`);
        return head;
      }, options.signal).catch(() => undefined);
      return out?.value as ManifestHead | undefined;
    },
    async getConfig(
      repo: RepositoryName,
      manifest: ImageManifest | Descriptor,
      options: CallOptions = {},
    ): Promise<ImageConfig> {
      const r = blobEndpoints(repo);
      if (direct(r, repo)) return await inner.getConfig(repo, manifest, options);
      const out = await withEndpoints(
        r,
        formatReference(repo),
        (e) => driverFor(e.host).getConfig(at(e), manifest, options),
        options.signal,
      );
      return out.value;
    },
    async blob(repo, digest, size, options: CallOptions = {}): Promise<BlobSource> {
      const r = blobEndpoints(repo);
      if (direct(r, repo)) return await inner.blob(repo, digest, size, options);
      const what = `${formatReference(repo)}@${digest}`;
      const out = await withEndpoints(
        r,
        what,
        (e) => driverFor(e.host).blob(at(e), digest, size, options),
        options.signal,
      );
      const rest = r.endpoints.filter((e) => e !== out.endpoint);
      return new FallbackBlobSource(
        digest,
        out.value,
        rest,
        (e) => driverFor(e.host).blob(at(e), digest, out.value.size, options),
        what,
        log,
      );
    },
    async fetchBlob(repo, digest, options: CallOptions & { size?: number } = {}) {
      const r = blobEndpoints(repo);
      if (direct(r, repo)) return await inner.fetchBlob(repo, digest, options);
      const out = await withEndpoints(
        r,
        `${formatReference(repo)}@${digest}`,
        (e) => driverFor(e.host).fetchBlob(at(e), digest, options),
        options.signal,
      );
      return out.value;
    },
  };
  // Listing: tags through the endpoints like manifests; repositories from the host itself, or
  // — when it cannot be reached — what the endpoints of its configured prefixes list.
  if (canList(inner)) {
    const listing = d as Driver & Lister;
    listing.listTags = async (repo, options = {}) => {
      const r = resolved(repo);
      if (direct(r, repo)) return await inner.listTags(repo, options);
      const out = await withEndpoints(r, formatReference(repo), (e) => {
        const ed = driverFor(e.host);
        if (!canList(ed)) throw new Error(`${e.host} cannot list tags`);
        return ed.listTags(at(e), options);
      }, options.signal);
      return out.value;
    };
    listing.listRepositories = async (host, prefix = "", options = {}) => {
      try {
        return await inner.listRepositories(host, prefix, options);
      } catch (e) {
        const fromEndpoints = await endpointRepositories(host, options).catch(() => undefined);
        if (!fromEndpoints || fromEndpoints.length === 0) {
          // Neither the host nor its mirrors list: names are still looked up one by one.
          throw new RegistryError(
            `${host}: cannot list repositories (${(e as Error).message}); its mirrors list none`,
            { code: "UNSUPPORTED", reference: host, cause: e },
          );
        }
        log?.(`${host}: listing failed (${(e as Error).message}); listing its mirrors instead`);
        const p = prefix.replace(/^\/+|\/+$/g, "");
        return p === ""
          ? fromEndpoints
          : fromEndpoints.filter((n) => n === p || n.startsWith(`${p}/`));
      }
    };
    listing.listOwners = async (host, options = {}) => {
      const repos = await listing.listRepositories(host, "", options);
      return [...new Set(repos.map((r) => r.split("/")[0]))].sort();
    };
  }
  /** The repositories the endpoints of `host`'s configured prefixes hold, in `host`'s names. */
  const endpointRepositories = async (host: string, options: CallOptions): Promise<string[]> => {
    const out = new Set<string>();
    for (const entry of conf.registries) {
      if (entry.blocked || entry.prefix.startsWith("*.")) continue;
      const slash = entry.prefix.indexOf("/");
      if (!confMentionsHost({ ...conf, registries: [entry] }, host)) continue;
      const ns = slash < 0 ? "" : entry.prefix.slice(slash + 1);
      // A sentinel name under the prefix shows where the prefix lands on each endpoint.
      const probe = resolved({ host, repository: ns ? `${ns}/x` : "x" });
      for (const e of probe.endpoints) {
        if (sameRepo(e, { host, repository: e.repository })) continue; // the host itself
        const base = e.repository.slice(0, -1);
        const ed = driverFor(e.host);
        if (!canList(ed)) continue;
        try {
          const names = await ed.listRepositories(e.host, base.replace(/\/$/, ""), options);
          for (const n of names) {
            if (n.startsWith(base)) out.add((ns ? `${ns}/` : "") + n.slice(base.length));
          }
          break;
        } catch {
          // the next endpoint
        }
      }
    }
    return [...out].sort();
  };
  // Other optional capabilities: exactly those the inner driver has, on the original host.
  const optional = [
    "ping",
    "blobExists",
    "mountBlob",
    "uploadBlob",
    "putManifest",
  ] as const;
  const target = d as unknown as Record<string, unknown>;
  const source = inner as unknown as Record<string, unknown>;
  for (const name of optional) {
    const f = source[name];
    if (typeof f === "function") target[name] = f.bind(inner);
  }
  return d;
}

/**
 * The `wrapDriver` option (driver.ts) that applies `conf` to the hosts it mentions.
 *
 * @example
 * ```ts
 * const drivers = defaultDrivers({ wrapDriver: registriesConfWrapper(await loadRegistriesConf()) });
 * ```
 */
export function registriesConfWrapper(
  conf: RegistriesConfig,
): (
  host: string,
  driver: Driver,
  directDriver: (host: string) => Driver,
  log: (line: string) => void,
) => Driver {
  return (host, driver, directDriver, log) =>
    confMentionsHost(conf, host) ? mirroredDriver(driver, conf, directDriver, log) : driver;
}

/** A blob source that moves on to the next endpoint when a read fails. */
class FallbackBlobSource implements BlobSource {
  readonly digest: string;
  readonly size: number;
  #current: BlobSource;
  readonly #rest: RegistryEndpoint[];
  readonly #open: (e: RegistryEndpoint) => Promise<BlobSource>;
  readonly #what: string;
  readonly #log?: (line: string) => void;

  constructor(
    digest: string,
    first: BlobSource,
    rest: RegistryEndpoint[],
    open: (e: RegistryEndpoint) => Promise<BlobSource>,
    what: string,
    log?: (line: string) => void,
  ) {
    this.digest = digest;
    this.size = first.size;
    this.#current = first;
    this.#rest = [...rest];
    this.#open = open;
    this.#what = what;
    this.#log = log;
  }

  async read(offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    for (;;) {
      const source: RangeSource = this.#current;
      try {
        return await source.read(offset, length, signal);
      } catch (e) {
        if (signal?.aborted || this.#rest.length === 0) throw e;
        const next = this.#rest.shift()!;
        this.#log?.(
          `${this.#what}: read failed (${(e as Error).message}); trying ${next.location}`,
        );
        try {
          this.#current = await this.#open(next);
        } catch {
          if (this.#rest.length === 0) throw e;
        }
      }
    }
  }

  async invalidate(offset: number, length: number): Promise<void> {
    await this.#current.invalidate?.(offset, length);
  }

  close(): void {
    this.#current.close?.();
  }
}
