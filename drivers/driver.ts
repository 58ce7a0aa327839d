/**
 * The {@link Driver} interface between crfs and a kind of registry, and the registry of drivers:
 * a driver is chosen per host (the first whose `matches(host)` is true, the Docker v2 driver
 * being the fallback), can be registered at run time, and can be loaded from a user's own
 * TypeScript module with {@link loadDriverModule} — no change to crfs needed.
 *
 * A user module exports either a driver object or a factory `(ctx: DriverContext) => Driver`,
 * as its default export or as `driver`. Only `name`, `matches`, `getManifest` and `blob` are
 * required; `resolve`, `getConfig`, `fetchBlob` and `headManifest` get generic implementations
 * on top of those (the generic `fetchBlob` verifies the digest like the built-in ones). Listing, pushing and pinging are capabilities (drivers/capabilities.ts): a
 * module that has them exports their methods, and one that does not simply lacks them.
 *
 * @module
 */
import type { RangeSource } from "../format/range_source.ts";
import { Authenticator, type AuthOptions } from "./auth.ts";
import { digestLike, digestMismatch, verifyingStream } from "./digest.ts";
import { RegistryError } from "./errors.ts";
import { HttpClient, type HttpOptions } from "./http.ts";
import {
  defaultPlatform,
  type Descriptor,
  type ImageConfig,
  type ImageConfigJson,
  type ImageManifest,
  type IndexManifest,
  type Manifest,
  parsePlatform,
  type Platform,
  selectPlatform,
} from "./manifest.ts";
import {
  formatReference,
  type Reference,
  referenceTarget,
  type RepositoryName,
} from "./reference.ts";
import type {
  CallOptions,
  Driver,
  ManifestHead,
  ManifestReader,
  ResolvedImage,
  ResolveOptions,
} from "./capabilities.ts";

export * from "./capabilities.ts";

/** Options of the built-in drivers (and handed to user driver factories). */
export interface DriverOptions extends HttpOptions, AuthOptions {
  /** Directory of the `local` pseudo-registry; default `$CRFS_LOCAL_DIR` or `~/.local/share/crfs/local`. */
  localDir?: string;
  /** Base URL for all gcr.io-like hosts (an emulator, set only by tests); default the host itself. */
  gcrUrl?: string;
  /** Default GCR project (owner); default from `$GOOGLE_CLOUD_PROJECT` or the GCE metadata server. */
  gcrProject?: string;
  /** Base URL for all icr.io hosts (an emulator, set only by tests); default the host itself. */
  icrUrl?: string;
  /** IBM Cloud IAM token endpoint (an emulator, set only by tests); default https://iam.cloud.ibm.com/identity/token. */
  iamUrl?: string;
  /** IBM Cloud API key; default from the docker config (`iamapikey`) or `$IBMCLOUD_API_KEY`. */
  icrApiKey?: string;
  /** IBM Cloud account id for the `Account` header; default `$IBMCLOUD_ACCOUNT`. */
  icrAccount?: string;
  /** `_catalog` page size (`n`); default 1000. */
  catalogPageSize?: number;
  /**
   * Wraps the driver chosen for a host (`forHost`): registries.conf's mirrors and locations
   * come in this way (`registriesConfWrapper` in mirrored_driver.ts). `directDriver` gives the
   * unwrapped driver of any host.
   */
  wrapDriver?: (
    host: string,
    driver: Driver,
    directDriver: (host: string) => Driver,
    log: (line: string) => void,
  ) => Driver;
}

/** What a driver (built-in or user) is built with: options and the shared HTTP/auth machinery. */
export interface DriverContext {
  options: DriverOptions;
  http: HttpClient;
  auth: Authenticator;
}

/** A user module's factory export. */
export type DriverFactory = (
  ctx: DriverContext,
) => Driver | Partial<Driver> | Promise<Driver | Partial<Driver>>;

/** Builds the shared HTTP client and authenticator for `options`. */
export function createContext(options: DriverOptions = {}): DriverContext {
  const http = new HttpClient(options);
  const auth = new Authenticator(http, options);
  return { options, http, auth };
}

const globalDrivers: Driver[] = [];

/**
 * Registers a driver process-wide: every {@link DriverRegistry} consults it before its built-in
 * drivers (later registrations win).
 */
export function registerDriver(driver: Driver): void {
  globalDrivers.unshift(driver);
}

/** Removes a driver registered with {@link registerDriver}. */
export function unregisterDriver(driver: Driver): void {
  const i = globalDrivers.indexOf(driver);
  if (i >= 0) globalDrivers.splice(i, 1);
}

/** Picks the driver for a host: user drivers, then process-wide ones, then built-ins, then the fallback. */
export class DriverRegistry {
  readonly #own: Driver[] = [];
  readonly #builtin: Driver[];
  readonly #fallback: Driver;
  readonly #wrapped = new Map<string, { inner: Driver; driver: Driver }>();
  /** The context built-in drivers share; handed to loaded factories. */
  readonly context: DriverContext;

  constructor(builtin: Driver[], fallback: Driver, context: DriverContext) {
    this.#builtin = builtin;
    this.#fallback = fallback;
    this.context = context;
  }

  /** Adds a driver that takes precedence over all others registered before it. */
  register(driver: Driver): void {
    this.#own.unshift(driver);
  }

  /** All drivers in the order they are tried. */
  list(): Driver[] {
    return [...this.#own, ...globalDrivers, ...this.#builtin, this.#fallback];
  }

  /**
   * The driver for `host`, wrapped by the `wrapDriver` option when given (registries.conf's
   * mirrors and locations, see mirrored_driver.ts).
   */
  forHost(host: string): Driver {
    const d = this.directDriver(host);
    const wrap = this.context.options.wrapDriver;
    if (!wrap) return d;
    const key = host.toLowerCase();
    let m = this.#wrapped.get(key);
    if (!m || m.inner !== d) {
      m = {
        inner: d,
        driver: wrap(host, d, (h) => this.directDriver(h), (l) => this.context.http.log(l)),
      };
      this.#wrapped.set(key, m);
      while (this.#wrapped.size > 1024) this.#wrapped.delete(this.#wrapped.keys().next().value!);
    }
    return m.driver;
  }

  /** The driver serving `host` itself, without registries.conf. */
  directDriver(host: string): Driver {
    const h = host.toLowerCase();
    for (const d of [...this.#own, ...globalDrivers, ...this.#builtin]) if (d.matches(h)) return d;
    return this.#fallback;
  }

  /** Loads a user driver module (see {@link loadDriverModule}) and registers it. */
  async load(pathOrUrl: string): Promise<Driver> {
    const driver = await loadDriverModule(pathOrUrl, this.context);
    this.register(driver);
    return driver;
  }
}

/**
 * Imports a user driver from a `.ts`/`.js` file path (relative to the working directory) or URL.
 * The module's default export, or its `driver` export, is a driver object or a
 * {@link DriverFactory}. Missing optional methods are filled in (see the module documentation).
 */
export async function loadDriverModule(
  pathOrUrl: string,
  ctx: DriverContext = createContext(),
): Promise<Driver> {
  let url: string;
  if (/^(file|https?|data):/.test(pathOrUrl)) url = pathOrUrl;
  else {
    const abs = pathOrUrl.startsWith("/") ? pathOrUrl : `${Deno.cwd()}/${pathOrUrl}`;
    url = new URL(`file://${abs.split("/").map(encodeURIComponent).join("/")}`).href;
  }
  let mod: Record<string, unknown>;
  try {
    mod = await import(url);
  } catch (e) {
    throw new RegistryError(`cannot load driver module ${pathOrUrl}: ${(e as Error).message}`, {
      code: "UNSUPPORTED",
    });
  }
  const exported = mod.default ?? mod.driver;
  if (exported === undefined) {
    throw new RegistryError(
      `driver module ${pathOrUrl} has neither a default export nor a 'driver' export`,
      {
        code: "UNSUPPORTED",
      },
    );
  }
  let value: unknown = exported;
  if (typeof exported === "function") value = await (exported as DriverFactory)(ctx);
  return completeDriver(value as Partial<Driver>, pathOrUrl);
}

/**
 * Checks a (partial) driver object and fills in what is missing of reading: generic `resolve`,
 * `getConfig`, `fetchBlob` and `headManifest` built on the required methods. Listing, pushing
 * and pinging are copied when the object has them, and left out (no stubs) when it does not.
 */
export function completeDriver(partial: Partial<Driver>, source = "driver"): Driver {
  if (!partial || typeof partial !== "object") {
    throw new RegistryError(`${source}: the driver export is not an object`, {
      code: "UNSUPPORTED",
    });
  }
  const missing = (["matches", "getManifest", "blob"] as const).filter((k) =>
    typeof partial[k] !== "function"
  );
  if (typeof partial.name !== "string" || partial.name === "") missing.unshift("name" as never);
  if (missing.length) {
    throw new RegistryError(`${source}: the driver lacks ${missing.join(", ")}`, {
      code: "UNSUPPORTED",
    });
  }
  const d = partial as Driver;
  const out: Driver = {
    name: d.name,
    matches: (host) => d.matches(host),
    getManifest: d.getManifest.bind(d),
    headManifest: d.headManifest?.bind(d) ??
      (async (repo, tagOrDigest, options) =>
        manifestHead(await d.getManifest(repo, tagOrDigest, options))),
    resolve: d.resolve?.bind(d) ?? ((ref, options) => resolveImage(out, ref, options)),
    getConfig: d.getConfig?.bind(d) ?? ((repo, m, options) => fetchConfig(out, repo, m, options)),
    blob: d.blob.bind(d),
    fetchBlob: d.fetchBlob?.bind(d) ?? (async (repo, digest, options) => {
      const src = await d.blob(repo, digest, options?.size, options);
      const what = `${formatReference(repo)}@${digest}`;
      return rangeSourceStream(src, options?.signal).pipeThrough(
        verifyingStream(what, digest, options?.size),
      );
    }),
  };
  const optional = [
    "ping",
    "listOwners",
    "listRepositories",
    "listTags",
    "blobExists",
    "mountBlob",
    "uploadBlob",
    "putManifest",
  ] as const;
  const record = out as unknown as Record<string, unknown>;
  for (const k of optional) {
    const f = d[k];
    if (typeof f === "function") record[k] = f.bind(d);
  }
  return out;
}

/** What a `HEAD` would tell of a manifest already fetched. */
export function manifestHead(m: Manifest): ManifestHead {
  return { digest: m.digest, mediaType: m.mediaType, size: m.bytes.length };
}

/**
 * A `headManifest` for media that fetch instead: the fetched manifest's head, undefined when
 * `getManifest` says `MANIFEST_UNKNOWN`.
 */
export async function headByFetching(
  reader: Pick<ManifestReader, "getManifest">,
  repo: RepositoryName,
  tagOrDigest: string,
  options?: CallOptions,
): Promise<ManifestHead | undefined> {
  try {
    return manifestHead(await reader.getManifest(repo, tagOrDigest, options));
  } catch (e) {
    if (e instanceof RegistryError && e.code === "MANIFEST_UNKNOWN") return undefined;
    throw e;
  }
}

/**
 * The generic `resolve`: fetches the reference's manifest; when it is an index, picks the
 * platform (default {@link defaultPlatform}) and fetches that manifest, checking its size and
 * digest against the index entry. Nested indexes are followed up to a depth of two.
 */
export async function resolveImage(
  driver: Pick<Driver, "getManifest">,
  ref: Reference,
  options: ResolveOptions = {},
): Promise<ResolvedImage> {
  const want = typeof options.platform === "string"
    ? parsePlatform(options.platform)
    : options.platform ?? defaultPlatform();
  const repo = { host: ref.host, repository: ref.repository };
  let manifest = await driver.getManifest(repo, referenceTarget(ref), options);
  let index: IndexManifest | undefined;
  let platform: Platform | undefined;
  for (let depth = 0; manifest.kind === "index"; depth++) {
    if (depth >= 2) {
      throw new RegistryError(`${formatReference(ref)}: indexes nested too deeply`, {
        code: "UNSUPPORTED",
        reference: formatReference(ref),
      });
    }
    index ??= manifest;
    const what = formatReference(ref);
    const entry = selectPlatform(manifest.json, want, what);
    platform = entry.platform;
    const child = await driver.getManifest(repo, entry.digest, options);
    if (child.bytes.length !== entry.size) {
      throw new RegistryError(
        `${what}: manifest ${entry.digest} is ${child.bytes.length} bytes but the index says ${entry.size}`,
        { code: "BAD_RESPONSE", reference: what },
      );
    }
    manifest = child;
  }
  return {
    ref: { ...ref, digest: manifest.digest },
    manifest,
    ...(index ? { index } : {}),
    ...(platform ? { platform } : {}),
  };
}

/** The generic `getConfig`: reads the config blob fully, verifies and parses it. */
export async function fetchConfig(
  driver: Pick<Driver, "fetchBlob">,
  repo: RepositoryName,
  manifest: ImageManifest | Descriptor,
  options: CallOptions = {},
): Promise<ImageConfig> {
  const desc = "kind" in manifest ? manifest.json.config : manifest;
  const what = `${formatReference(repo)}@${desc.digest} (config)`;
  if (desc.size > 64 * 1024 * 1024) {
    throw new RegistryError(`${what}: config of ${desc.size} bytes is too large`, {
      code: "BAD_RESPONSE",
      reference: what,
    });
  }
  const stream = await driver.fetchBlob(repo, desc.digest, {
    size: desc.size,
    signal: options.signal,
  });
  const bytes = new Uint8Array(await new Response(stream).arrayBuffer());
  const actual = await digestLike(desc.digest, bytes);
  if (actual !== desc.digest) throw digestMismatch(what, desc.digest, actual);
  let json: ImageConfigJson;
  try {
    json = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new RegistryError(`${what}: the image config is not valid JSON`, {
      code: "BAD_RESPONSE",
      reference: what,
    });
  }
  return { digest: desc.digest, bytes, json };
}

/** Streams a {@link RangeSource} from start to end in 1 MiB reads. */
export function rangeSourceStream(
  src: RangeSource,
  signal?: AbortSignal,
  chunk = 1 << 20,
): ReadableStream<Uint8Array> {
  let offset = 0;
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      if (offset >= src.size) {
        c.close();
        return;
      }
      const bytes = await src.read(offset, Math.min(chunk, src.size - offset), signal);
      if (bytes.length === 0) {
        c.error(
          new RegistryError(`blob ended early at ${offset} of ${src.size} bytes`, {
            code: "BAD_RESPONSE",
          }),
        );
        return;
      }
      offset += bytes.length;
      c.enqueue(bytes);
    },
  }, { highWaterMark: 0 });
}
