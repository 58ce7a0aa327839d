/**
 * `crfs store DIR`: serves an Additional Layer Store for containers/storage (podman, CRI-O) at
 * DIR over FUSE until SIGINT/SIGTERM, so that pulling an eStargz image takes its layers from
 * crfs (fetched lazily as the container reads them) instead of downloading them. The tree is
 * fs/layer_store.ts; `crfs mount --layer-store DIR` serves the same next to the mount.
 *
 * @module
 */
import { CrfsFilesystem } from "../fs/filesystem.ts";
import { type FuseMount, installSignalUnmount, mount } from "../fs/fuse/mount.ts";
import { rootlessIdMaps, userNamespaceView } from "../fs/fuse/userns_view.ts";
import { preloadLayerCode } from "../fs/image_store.ts";
import { layerStoreRoot } from "../fs/layer_store.ts";
import { type Command, defineCommand, type Options, UsageError, UserError } from "./cli.ts";
import {
  layerFlags,
  REGISTRY_HELP,
  registryFlags,
  type RegistrySetup,
  serveMetricsFlag,
  setupRegistry,
  withConfigFile,
  withFuseMetrics,
} from "./registry_options.ts";
import { after } from "../format/timers.ts";

const HELP = `Usage: crfs store [options] DIR

Serves an Additional Layer Store for podman, CRI-O and buildah (containers/storage) at DIR until
interrupted. Pulling an eStargz or zstd:chunked image then downloads no layer: containers/storage
takes each layer from DIR, and files are fetched from the registry only when a container reads
them. Other layers are not in the store: podman pulls those as usual. Once podman has taken a layer,
what a container start reads from it is fetched ahead: the program the image's config starts, the
libraries the loader will load for it, /etc/passwd, /etc/group, /etc/nsswitch.conf and
/etc/ld.so.cache (not with --prefetch off or --no-background-fetch; a layer with prioritized
files gets those instead).

  DIR/<base64 of the image reference>/<layer digest or TOC digest>/{diff/,info,blob}

Use it with the ':ref' option, for one command:

  podman --storage-opt overlay.additionallayerstore=DIR:ref pull HOST/NAME:TAG

or for every command, in /etc/containers/storage.conf:

  [storage.options]
  additionallayerstores = ["DIR:ref"]

As a non-root user the store is for that user's rootless podman: owners are shown as its user
namespace maps them (image uid 0 → you, 1… → your /etc/subuid range; gids from /etc/subgid).
Start it before your first podman command, or run 'podman system migrate' after starting it
(podman's namespace keeps the mounts it saw when it was made).

Options:
      --allow-other      let other users access the store (rootless podman; needs
                         user_allow_other in /etc/fuse.conf for non-root)
      --read-ahead KB    kernel readahead for the mount (default 1024)
      --metrics-address HOST:PORT  serve Prometheus metrics at http://HOST:PORT/metrics
                         (registry requests and bytes, cache, FUSE operations and latencies)
      --config FILE      settings file (default $CRFS_CONFIG, else /etc/crfs/config.toml when
                         it exists); flags given here override it
  -h, --help             show this help

${REGISTRY_HELP}`;

/** How long after mounting the store starts loading the code that opens layers, in ms. */
const IDLE_PRELOAD_MS = 50;

/** The podman flag that uses a store at `dir`. */
export function storageOpt(dir: string): string {
  return `--storage-opt overlay.additionallayerstore=${dir}:ref`;
}

/**
 * Mounts the layer store of `setup`'s image store at `dir` (writable: see fs/layer_store.ts);
 * `startupPrefetch` reads ahead what a container start reads of each layer taken (off unless set).
 */
export async function mountLayerStore(
  dir: string,
  setup: RegistrySetup,
  opts: { allowOther?: boolean; readAheadKb?: number; startupPrefetch?: boolean } = {},
): Promise<FuseMount> {
  const tree = new CrfsFilesystem(
    layerStoreRoot(setup.store, { startupPrefetch: opts.startupPrefetch }),
    { tagTtlMs: setup.tagTtlMs },
  );
  // A non-root user's store is for that user's rootless podman: owners as its user namespace
  // maps them (/etc/subuid), opaque markers also as user.overlay.opaque.
  const fs = Deno.uid() === 0 ? tree : userNamespaceView(tree, await rootlessIdMaps());
  try {
    return await mount(dir, await withFuseMetrics(fs, setup), {
      debug: setup.debug ? (line) => console.error(`fuse(store): ${line}`) : undefined,
      allowOther: opts.allowOther,
      readAheadKb: opts.readAheadKb,
      writable: true,
      fsName: "crfs-store",
    });
  } catch (e) {
    throw new UserError(`cannot mount the layer store at ${dir}: ${(e as Error).message}`);
  }
}

/** The flags of the command, besides `--help`. */
const FLAGS: Options = {
  "allow-other": { type: "boolean" },
  "read-ahead": { type: "string" },
  "metrics-address": { type: "string" },
  config: { type: "string" },
  ...registryFlags,
};

export const storeCommand: Command = defineCommand({
  name: "store",
  summary: "serve an additional layer store: podman/CRI-O run eStargz images lazily",
  help: HELP,
  flags: FLAGS,
  takes: "one directory",
  argsOk: (p) => p.length === 1,
  prepare: (values, positionals) => withConfigFile("store", { values, positionals }),
  async run(values, positionals) {
    const readAheadKb = values["read-ahead"] === undefined ? 1024 : Number(values["read-ahead"]);
    if (!Number.isInteger(readAheadKb) || readAheadKb < 0) {
      throw new UsageError("--read-ahead takes a number of KiB");
    }
    const setup = await setupRegistry(values);
    const m = await mountLayerStore(positionals[0], setup, {
      allowOther: values["allow-other"] === true,
      readAheadKb,
      // As with any prefetch: not with --prefetch off nor --no-background-fetch.
      startupPrefetch: layerFlags(values).prefetch !== "off",
    });
    const metricsServer = await serveMetricsFlag(values, setup, [m]);
    installSignalUnmount(m, { exit: false });
    // The store waits for podman's first question: the code that opens a layer loads now, not
    // between that question and its answer.
    after(IDLE_PRELOAD_MS, preloadLayerCode);
    console.error(
      `crfs: layer store at ${m.mountpoint} (Ctrl-C or SIGTERM to unmount); use it with\n` +
        `  podman ${storageOpt(m.mountpoint)} …`,
    );
    await m.closed;
    await metricsServer?.close();
    setup.close();
    setup.store.stopBackground();
    await setup.disk?.flush();
    console.error(`crfs: unmounted ${m.mountpoint}`);
    return 0;
  },
});
