/**
 * Command-line options shared by the commands that talk to registries (`ls`, `cat`, `mount`,
 * `store`, `convert`), and building the driver registry and image store from them with the
 * host's configuration: auth files (drivers/auth_files.ts), registries.conf
 * (drivers/registries_conf.ts: insecure hosts, mirrors, credential helpers), certs.d TLS
 * (drivers/tls_config.ts), and metrics on every registry request (fs/metrics_hooks.ts) when they
 * are served (`--metrics-address`; otherwise the metrics code is not even loaded).
 *
 * Credentials given on the command line belong to one registry: `--creds USER[:PASS]` (or
 * `--username USER --password-stdin`) for the registry the command names — the image's host for
 * `ls`/`cat`, the one `--host` of `mount`, the destination registry of `convert` (else its
 * source) — or the hosts given with `--creds-host`; `convert` also has `--src-creds` and
 * `--dest-creds`. Every other host gets only what its own configuration gives.
 *
 * @module
 */
// The drivers' own modules, not the barrel drivers/mod.ts: a mount loads only what it uses.
import { defaultDrivers } from "../drivers/default_drivers.ts";
import type { DriverRegistry } from "../drivers/driver.ts";
import type { ExplicitCredentials } from "../drivers/auth.ts";
import { InvalidReferenceError } from "../drivers/reference.ts";
import { RegistryError } from "../drivers/errors.ts";
import { AuthFiles } from "../drivers/auth_files.ts";
import {
  insecureHosts,
  loadRegistriesConf,
  RegistriesConfError,
  type RegistriesConfig,
  searchRegistries,
  shortNameCandidates,
} from "../drivers/registries_conf.ts";
import { defaultCertsDirs, TlsClients } from "../drivers/tls_config.ts";
import { ConfigFileError, loadConfigFile, mergeConfig } from "../fs/config_file.ts";
import type { CrfsMetrics, MetricsServer } from "../fs/metrics.ts";
import type { FuseOps } from "../fs/fuse/ops.ts";
import { ImageStore, preloadLayerCode } from "../fs/image_store.ts";
import { after } from "../format/timers.ts";
import { defaultCacheDir, DiskCache } from "../fs/disk_cache.ts";
import { startMemoryReclaim } from "../fs/memory_reclaim.ts";
import type { LayerOpenOptions, PrefetchMode, VerifyPolicy } from "../fs/layer_open.ts";
import { type Options, parseSize, UsageError, UserError } from "./cli.ts";

/** The flags, in `parseFlags` form. */
export const registryFlags = {
  "insecure-registry": { type: "string", multiple: true },
  platform: { type: "string" },
  driver: { type: "string", multiple: true },
  "local-dir": { type: "string" },
  creds: { type: "string" },
  "creds-host": { type: "string", multiple: true },
  username: { type: "string" },
  "password-stdin": { type: "boolean" },
  authfile: { type: "string" },
  "tls-verify": { type: "string" },
  "certs-dir": { type: "string", multiple: true },
  "tag-ttl": { type: "string" },
  "cache-dir": { type: "string" },
  "cache-size": { type: "string" },
  "memory-budget": { type: "string" },
  "no-cache": { type: "boolean" },
  prefetch: { type: "string" },
  "no-background-fetch": { type: "boolean" },
  verify: { type: "string" },
  debug: { type: "boolean" },
} satisfies Options;

/** Help text for the flags. */
export const REGISTRY_HELP = `Registry options:
      --insecure-registry HOST  use plain http for HOST (loopback hosts always do); repeatable
      --platform OS/ARCH[/V]    platform to pick from multi-platform images (default: this machine)
      --driver FILE.ts          load a registry driver from your own module; repeatable
      --local-dir DIR           directory of the 'local' host (default $CRFS_LOCAL_DIR, else
                                $XDG_DATA_HOME/crfs/local, else ~/.local/share/crfs/local)
      --creds USER[:PASS]       credentials for the one registry the command names (the
                                image's host; mount: the one --host; convert: DST's registry,
                                else SRC's; otherwise --creds-host HOST);
                                without :PASS the password comes from --password-stdin
      --creds-host HOST         the registry --creds are for; repeatable
      --username USER           the same as --creds USER (password from --password-stdin)
      --authfile FILE           credentials file (containers-auth.json(5)); default
                                $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
                                then ~/.config/containers/auth.json, ~/.docker/config.json
      --tls-verify=false        https without certificate checks for every host (not plain
                                http); default true
      --certs-dir DIR           HOST[:PORT]/ CA and client certificates, before
                                /etc/containers/certs.d and /etc/docker/certs.d; repeatable
      --tag-ttl SECONDS         how long a tag's digest and listings are trusted (default 60)
      --cache-dir DIR           disk cache of chunks, TOCs, manifests and tags, shared by every
                                crfs on the machine (default /var/cache/crfs for root,
                                ~/.cache/crfs otherwise)
      --cache-size SIZE         disk cache budget, least recently used entries go (default 10G)
      --no-cache                no disk cache (memory only)
      --memory-budget SIZE      resident memory a serving process aims to stay under: above it,
                                freed memory goes back to the system and, once quiet, the memory
                                chunk cache is emptied first (default 128M)
      --prefetch MODE           after a layer opens, fetch in the background: landmark (the
                                files its eStargz landmark prioritizes; default), all, off
      --no-background-fetch     no prefetch and no read-ahead: fetch only what is read
      --verify POLICY           strict (default): check every digest the data carries; require:
                                also refuse layers without TOC digest annotations (zstd:chunked:
                                manifest checksum) or chunk digests; none: gzip CRCs only
      --debug                   log every registry request (credentials are never shown)
`;

/** What the flags set up. */
export interface RegistrySetup {
  drivers: DriverRegistry;
  store: ImageStore;
  tagTtlMs: number;
  debug: boolean;
  /** The disk cache, unless --no-cache. */
  disk?: DiskCache;
  /**
   * Metrics every registry request feeds, when they are served (`--metrics-address`, the
   * daemons); undefined otherwise (nothing would read them).
   */
  metrics?: CrfsMetrics;
  /** registries.conf as read. */
  registriesConf: RegistriesConfig;
  /** Releases TLS clients. */
  close(): void;
}

/** The registries credentials flags may be bound to by default, as a command names them. */
export interface CredentialTargets {
  /** Registry hosts the command names (`--creds` binds to them when exactly one). */
  hosts?: readonly string[];
  /** `convert`: the source registry host (`--src-creds`), if the source is a registry. */
  src?: string;
  /** `convert`: the destination registry host (`--dest-creds`), if it is a registry. */
  dest?: string;
}

function splitCreds(text: string, flag: string): { username: string; password?: string } {
  const colon = text.indexOf(":");
  const username = colon < 0 ? text : text.slice(0, colon);
  if (username === "") throw new UsageError(`${flag} takes USER[:PASSWORD]`);
  return colon < 0 ? { username } : { username, password: text.slice(colon + 1) };
}

/**
 * The credentials the flags give, each bound to its registry (see the module documentation).
 * `readPassword` reads standard input (once) for `--password-stdin`.
 */
export async function credentialFlags(
  values: Record<string, unknown>,
  targets: CredentialTargets,
  readPassword: () => Promise<string>,
): Promise<ExplicitCredentials[]> {
  const pending: { flag: string; username: string; password?: string; hosts: string[] }[] = [];
  const creds = values.creds as string | undefined;
  const username = values.username as string | undefined;
  if (creds !== undefined && username !== undefined) {
    throw new UsageError("--creds and --username exclude each other");
  }
  const bound = (values["creds-host"] as string[] | undefined) ?? [];
  if (bound.length > 0 && creds === undefined && username === undefined) {
    throw new UsageError("--creds-host needs --creds USER[:PASS] (or --username)");
  }
  if (creds !== undefined || username !== undefined) {
    const flag = creds !== undefined ? "--creds" : "--username";
    const parsed = creds !== undefined ? splitCreds(creds, flag) : { username: username! };
    let hosts = bound;
    if (hosts.length === 0) {
      // convert: the registry written to (else the one read from); other commands: the one
      // registry they name.
      const sided = targets.dest ?? targets.src;
      const named = [
        ...new Set(
          [...(targets.hosts ?? []), ...(sided ? [sided] : [])].map((h) => h.toLowerCase()),
        ),
      ];
      if (named.length === 0) {
        throw new UsageError(
          `${flag} needs --creds-host HOST: credentials belong to one registry, and this ` +
            `command names none`,
        );
      }
      if (named.length > 1) {
        throw new UsageError(
          `${flag}: the command names several registries (${
            named.join(", ")
          }); say which with --creds-host HOST`,
        );
      }
      hosts = named;
    }
    pending.push({ flag, ...parsed, hosts });
  }
  for (const [flag, host] of [["src-creds", targets.src], ["dest-creds", targets.dest]] as const) {
    const text = values[flag] as string | undefined;
    if (text === undefined) continue;
    if (!host) {
      throw new UsageError(
        `--${flag}: the ${flag === "src-creds" ? "source" : "destination"} is not a registry`,
      );
    }
    pending.push({ flag: `--${flag}`, ...splitCreds(text, `--${flag}`), hosts: [host] });
  }
  const lacking = pending.filter((p) => p.password === undefined);
  if (values["password-stdin"]) {
    if (lacking.length !== 1) {
      throw new UsageError(
        lacking.length === 0
          ? "--password-stdin needs --creds USER (or --username USER) without a password"
          : "--password-stdin gives one password; give the others as USER:PASS",
      );
    }
    lacking[0].password = await readPassword();
  } else if (lacking.length > 0) {
    throw new UsageError(
      `${lacking[0].flag} ${lacking[0].username}: give USER:PASS or --password-stdin`,
    );
  }
  return pending.map((p) => ({
    hosts: p.hosts,
    username: p.username,
    password: p.password!,
    source: `${p.flag} (for ${p.hosts.join(", ")})`,
  }));
}

/**
 * Builds drivers and the image store from parsed flag values. One-shot commands pass
 * `prefetch: false`: they read what they need and exit.
 */
export async function setupRegistry(
  values: Record<string, unknown>,
  opts: {
    prefetch?: boolean;
    log?: (line: string) => void;
    /** The registries the command names, for binding credential flags. */
    credentials?: CredentialTargets;
    /** Test hook: fetch to wrap instead of the TLS clients'. */
    fetch?: typeof fetch;
  } = {},
): Promise<RegistrySetup> {
  const debug = values.debug === true;
  const explicitCredentials = await credentialFlags(
    values,
    opts.credentials ?? {},
    async () => (await new Response(Deno.stdin.readable).text()).replace(/\r?\n$/, ""),
  );
  const ttl = values["tag-ttl"] === undefined ? 60 : Number(values["tag-ttl"]);
  if (!Number.isFinite(ttl) || ttl < 0) {
    throw new UsageError("--tag-ttl must be a number of seconds");
  }
  const tlsVerifyText = values["tls-verify"] as string | undefined;
  if (tlsVerifyText !== undefined && tlsVerifyText !== "true" && tlsVerifyText !== "false") {
    throw new UsageError("--tls-verify is true or false");
  }
  const registriesConf = await registriesConfig();
  const confInsecure = insecureHosts(registriesConf);
  const tls = new TlsClients({
    certsDirs: [...((values["certs-dir"] as string[] | undefined) ?? []), ...defaultCertsDirs()],
    noVerifyHosts: confInsecure,
    tlsVerify: tlsVerifyText !== "false",
  });
  const authFiles = new AuthFiles({
    authFile: values.authfile as string | undefined,
    credentialHelpers: registriesConf.credentialHelpers,
  });
  let disk: DiskCache | undefined;
  if (!values["no-cache"]) {
    const dir = (values["cache-dir"] as string | undefined) ?? defaultCacheDir();
    const maxBytes = values["cache-size"]
      ? parseSize(values["cache-size"] as string, "--cache-size")
      : undefined;
    try {
      disk = await DiskCache.open(dir, { maxBytes });
    } catch (e) {
      tls.close();
      throw new UserError(
        `cache directory ${dir}: ${(e as Error).message} (use --cache-dir or --no-cache)`,
      );
    }
  }
  // Without `[[registry]]` tables registries.conf changes no host's driver: the mirrors' code
  // is not loaded then.
  const wrapDriver = registriesConf.registries.length > 0
    ? (await import("../drivers/mirrored_driver.ts")).registriesConfWrapper(registriesConf)
    : undefined;
  let metrics: CrfsMetrics | undefined;
  let fetchFn = opts.fetch ?? tls.fetch;
  if (typeof values["metrics-address"] === "string") {
    const [{ crfsMetrics }, { instrumentFetch }] = await Promise.all([
      import("../fs/metrics.ts"),
      import("../fs/metrics_hooks.ts"),
    ]);
    metrics = crfsMetrics({ cache: () => disk?.stats, cacheMaxBytes: disk?.maxBytes });
    fetchFn = instrumentFetch(fetchFn, metrics);
  }
  const counted = fetchFn;
  const drivers = defaultDrivers({
    insecureRegistries: (values["insecure-registry"] as string[] | undefined) ?? [],
    // registries.conf `insecure = true`: https without verification first, then plain http.
    httpsThenHttpHosts: confInsecure,
    // The `local` host's directory; without the flag the local driver's default.
    localDir: values["local-dir"] as string | undefined,
    explicitCredentials,
    authFiles,
    fetch: (input, init) => {
      const answer = counted(input, init);
      preloadOnce();
      return answer;
    },
    wrapDriver,
    debug: debug ? (line) => console.error(`crfs: ${line}`) : undefined,
  });
  for (const mod of (values.driver as string[] | undefined) ?? []) {
    try {
      await drivers.load(mod);
    } catch (e) {
      throw new UserError((e as Error).message);
    }
  }
  const layers = layerFlags(values);
  const store = new ImageStore(drivers, {
    log: opts.log,
    verify: layers.verify,
    tagTtlMs: ttl * 1000,
    platform: values.platform as string | undefined,
    disk,
    prefetch: opts.prefetch === false ? "off" : layers.prefetch,
    readAhead: layers.readAhead,
  });
  await store.init();
  startMemoryReclaim({
    budgetBytes: values["memory-budget"] !== undefined
      ? parseSize(values["memory-budget"] as string, "--memory-budget")
      : undefined,
  });
  return {
    drivers,
    store,
    tagTtlMs: ttl * 1000,
    debug,
    disk,
    metrics,
    registriesConf,
    close: () => tls.close(),
  };
}

let preloadScheduled = false;

/**
 * Loads the layer code (fs/image_store.ts) once the first registry request is out: a moment
 * later, so that the request is on the wire before loading takes the thread.
 */
function preloadOnce(): void {
  if (preloadScheduled) return;
  preloadScheduled = true;
  after(1, preloadLayerCode);
}

/** registries.conf as the containers tools read it; a bad file is a one-line user error. */
export async function registriesConfig(): Promise<RegistriesConfig> {
  try {
    return await loadRegistriesConf();
  } catch (e) {
    if (e instanceof RegistriesConfError) throw new UserError(e.message);
    throw e;
  }
}

/** The layer options the flags set (`--verify`, `--prefetch`, `--no-background-fetch`). */
export function layerFlags(
  values: Record<string, unknown>,
): Required<Pick<LayerOpenOptions, "verify" | "prefetch">> & { readAhead?: number } {
  const background = values["no-background-fetch"] !== true;
  const prefetch = (values.prefetch as string | undefined) ?? "landmark";
  if (!["off", "landmark", "all"].includes(prefetch)) {
    throw new UsageError("--prefetch is one of landmark, all, off");
  }
  const verify = (values.verify as string | undefined) ?? "strict";
  if (!["strict", "require", "none"].includes(verify)) {
    throw new UsageError("--verify is one of strict, require, none");
  }
  return {
    verify: verify as VerifyPolicy,
    prefetch: background ? prefetch as PrefetchMode : "off",
    readAhead: background ? undefined : 0,
  };
}

/** Turns registry and reference errors into user errors (no stack traces for them). */
export function userFacing(e: unknown): unknown {
  if (e instanceof RegistryError) return new UserError(e.message);
  if (e instanceof InvalidReferenceError) return new UserError(e.message, 2);
  return e;
}

/** The registry host a tree path names (`["layers", HOST, …]`), as credential targets. */
export function targetHosts(components: readonly string[]): string[] {
  const host = components[0] === "layers" || components[0] === "images" ? components[1] : undefined;
  return host && host !== "local" ? [host] : [];
}

/** Whether the first component of an image argument names a registry host. */
function namesHost(text: string): boolean {
  const slash = text.indexOf("/");
  if (slash < 0) return /^(?:localhost|[a-z0-9-]+(?:\.[a-z0-9-]+)+)(?::\d+)?$/i.test(text);
  const first = text.slice(0, slash);
  return /^(?:localhost|local|\[[0-9a-fA-F:.]+\])(?::\d+)?$/.test(first) ||
    /^[^:@]*\.[^:@]*(?::\d+)?$/.test(first);
}

/**
 * The arguments to try for an image argument of `ls`/`cat`: the argument itself, or — when it
 * names no registry (a short name such as `team/app:v1/etc`) and registries.conf has
 * `unqualified-search-registries` — its fully qualified candidates in order (an `[aliases]`
 * entry first), as podman resolves short names. Without search registries a short name stays
 * Docker Hub's.
 */
export function imageArgCandidates(text: string, conf: RegistriesConfig): string[] {
  if (text.startsWith("/") || namesHost(text) || searchRegistries(conf).length === 0) {
    return [text];
  }
  const at = text.search(/[:@]/);
  let name = text.replace(/\/+$/, "");
  let path = "";
  if (at >= 0) {
    name = text.slice(0, at);
    const slash = text.indexOf("/", at);
    const ref = slash < 0 ? text.slice(at) : text.slice(at, slash);
    path = slash < 0 ? "" : text.slice(slash);
    name += ref;
  }
  const candidates = shortNameCandidates(conf, name).map((c) => c + path);
  return candidates.length > 0 ? candidates : [text];
}

/**
 * `ops` with every FUSE operation counted in the setup's metrics when they are served
 * (`--metrics-address`), else `ops` itself.
 */
export async function withFuseMetrics(ops: FuseOps, setup: RegistrySetup): Promise<FuseOps> {
  if (!setup.metrics) return ops;
  const { instrumentFuseOps } = await import("../fs/metrics_hooks.ts");
  return instrumentFuseOps(ops, setup.metrics);
}

/**
 * Serves `/metrics` when `--metrics-address` was given (undefined otherwise). When the address
 * cannot be served, `mounted` is unmounted first and the failure is a one-line user error.
 */
export async function serveMetricsFlag(
  values: Record<string, unknown>,
  setup: RegistrySetup,
  mounted: readonly { unmount(): Promise<void> }[],
): Promise<MetricsServer | undefined> {
  const address = values["metrics-address"];
  if (typeof address !== "string" || !setup.metrics) return undefined;
  try {
    const { serveMetrics } = await import("../fs/metrics.ts");
    const server = await serveMetrics(address, setup.metrics.registry);
    console.error(`crfs: metrics at ${server.url}`);
    return server;
  } catch (e) {
    for (const m of mounted) await m.unmount();
    throw new UserError((e as Error).message);
  }
}

/**
 * The daemon's flags laid over its config file (`--config FILE`, else the default file when it
 * exists): flags given on the command line win.
 */
export async function withConfigFile(
  command: "mount" | "store",
  parsed: {
    values: Record<string, string | boolean | string[] | undefined>;
    positionals: string[];
  },
): Promise<
  { values: Record<string, string | boolean | string[] | undefined>; positionals: string[] }
> {
  const path = parsed.values.config as string | undefined;
  try {
    const conf = await loadConfigFile(command, { path, required: path !== undefined });
    return mergeConfig(conf, parsed.values, parsed.positionals);
  } catch (e) {
    if (e instanceof ConfigFileError) throw new UserError(e.message);
    throw e;
  }
}
