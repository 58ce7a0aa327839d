/**
 * Command-line options shared by the commands that talk to registries (`ls`, `cat`, `mount`,
 * `convert`), and building the driver registry and image store from them.
 *
 * @module
 */
import {
  defaultDrivers,
  type DriverRegistry,
  InvalidReferenceError,
  RegistryError,
} from "../drivers/mod.ts";
import { ImageStore } from "../fs/image_store.ts";
import { defaultCacheDir, DiskCache } from "../fs/disk_cache.ts";
import type { LayerOpenOptions, PrefetchMode, VerifyPolicy } from "../fs/layer_open.ts";
import { type Options, parseSize, UsageError, UserError } from "./cli.ts";

/** The flags, in `parseFlags` form. */
export const registryFlags = {
  "insecure-registry": { type: "string", multiple: true },
  platform: { type: "string" },
  driver: { type: "string", multiple: true },
  "local-dir": { type: "string" },
  username: { type: "string" },
  "password-stdin": { type: "boolean" },
  "tag-ttl": { type: "string" },
  "cache-dir": { type: "string" },
  "cache-size": { type: "string" },
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
      --username USER           registry user (password from stdin with --password-stdin);
                                otherwise credentials come from the docker config
      --tag-ttl SECONDS         how long a tag's digest and listings are trusted (default 60)
      --cache-dir DIR           disk cache of chunks, TOCs, manifests and tags, shared by every
                                crfs on the machine (default /var/cache/crfs for root,
                                ~/.cache/crfs otherwise)
      --cache-size SIZE         disk cache budget, least recently used entries go (default 10G)
      --no-cache                no disk cache (memory only)
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
}

/**
 * Builds drivers and the image store from parsed flag values. One-shot commands pass
 * `prefetch: false`: they read what they need and exit.
 */
export async function setupRegistry(
  values: Record<string, unknown>,
  opts: { prefetch?: boolean; log?: (line: string) => void } = {},
): Promise<RegistrySetup> {
  const debug = values.debug === true;
  let password: string | undefined;
  if (values["password-stdin"]) {
    password = (await new Response(Deno.stdin.readable).text()).replace(/\r?\n$/, "");
  }
  const ttl = values["tag-ttl"] === undefined ? 60 : Number(values["tag-ttl"]);
  if (!Number.isFinite(ttl) || ttl < 0) {
    throw new UsageError("--tag-ttl must be a number of seconds");
  }
  const drivers = defaultDrivers({
    insecureRegistries: (values["insecure-registry"] as string[] | undefined) ?? [],
    // The `local` host's directory; without the flag the local driver's default.
    localDir: values["local-dir"] as string | undefined,
    username: values.username as string | undefined,
    password,
    debug: debug ? (line) => console.error(`crfs: ${line}`) : undefined,
  });
  for (const mod of (values.driver as string[] | undefined) ?? []) {
    try {
      await drivers.load(mod);
    } catch (e) {
      throw new UserError((e as Error).message);
    }
  }
  let disk: DiskCache | undefined;
  if (!values["no-cache"]) {
    const dir = (values["cache-dir"] as string | undefined) ?? defaultCacheDir();
    const maxBytes = values["cache-size"]
      ? parseSize(values["cache-size"] as string, "--cache-size")
      : undefined;
    try {
      disk = await DiskCache.open(dir, { maxBytes });
    } catch (e) {
      throw new UserError(
        `cache directory ${dir}: ${(e as Error).message} (use --cache-dir or --no-cache)`,
      );
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
  return { drivers, store, tagTtlMs: ttl * 1000, debug, disk };
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
