/**
 * `crfs mount`: serves crfs's tree (layers/, images/) read-only over FUSE at a mount point until
 * SIGINT/SIGTERM, fetching only the bytes that are read.
 *
 * @module
 */
import { CrfsFilesystem } from "../fs/filesystem.ts";
import { installSignalUnmount, mount } from "../fs/fuse/mount.ts";
import { preloadLayerCode } from "../fs/image_store.ts";
import { after } from "../format/timers.ts";
import { rootNode } from "../fs/registry_tree.ts";
import { type Command, defineCommand, type Options, UsageError, UserError } from "./cli.ts";
import {
  REGISTRY_HELP,
  registryFlags,
  serveMetricsFlag,
  setupRegistry,
  withConfigFile,
  withFuseMetrics,
} from "./registry_options.ts";

const HELP = `Usage: crfs mount [options] [MOUNTPOINT]

Mounts container images read-only at MOUNTPOINT (default /crfs; $XDG_RUNTIME_DIR/crfs for a
non-root user, who mounts through fusermount3) and serves them until
interrupted (Ctrl-C or SIGTERM unmounts cleanly). Only the bytes that are read are fetched.

  MOUNTPOINT/layers/<host>/<repository>/<tag>               → sha256-<manifest>
  MOUNTPOINT/layers/<host>/<repository>/sha256-<manifest>/  0…N-1, bottom, top, config, layer roots
  MOUNTPOINT/layers/local/<name>.stargz/                    a local stargz file (--local-dir)
  MOUNTPOINT/images/<host>/<repository>/<tag>/              the merged image

A mount point left stale by a killed crfs is cleared first.

Options:
      --host HOST        list HOST in layers/ and images/ (any host can be looked up); repeatable
      --allow-other      let other users access the mount (needs user_allow_other for non-root)
      --read-ahead KB    kernel readahead for the mount (default 1024)
      --layer-store DIR  also serve an additional layer store for podman/CRI-O at DIR, sharing
                         this mount's caches (see 'crfs store --help')
      --entry-ttl SECONDS  how long the kernel keeps names and attributes of immutable content
                         (default one day; tests use short ones to prove inodes stay stable)
      --record FILE      write the path of every file read (in first-read order, one per
                         line) to FILE: a workload's files, ready for 'crfs convert --prioritize-file'
      --metrics-address HOST:PORT  serve Prometheus metrics at http://HOST:PORT/metrics
                         (registry requests and bytes, cache, FUSE operations and latencies)
      --config FILE      settings file (default $CRFS_CONFIG, else /etc/crfs/config.toml when
                         it exists); flags given here override it
The root also holds crfs-status.json: bytes and requests fetched per layer, cache hits.
  -h, --help             show this help

${REGISTRY_HELP}`;

/** How long after mounting an unused mount starts loading the code that opens layers, in ms. */
const IDLE_PRELOAD_MS = 50;

/** The flags of the command, besides `--help`. */
const FLAGS: Options = {
  host: { type: "string", multiple: true },
  "metrics-address": { type: "string" },
  config: { type: "string" },
  "allow-other": { type: "boolean" },
  "read-ahead": { type: "string" },
  record: { type: "string" },
  "entry-ttl": { type: "string" },
  "layer-store": { type: "string" },
  ...registryFlags,
};

export const mountCommand: Command = defineCommand({
  name: "mount",
  summary: "mount images from registries as a read-only filesystem",
  help: HELP,
  flags: FLAGS,
  takes: "one mount point",
  argsOk: (p) => p.length <= 1,
  prepare: (values, positionals) => withConfigFile("mount", { values, positionals }),
  async run(values, positionals) {
    const mountpoint = positionals[0] ??
      (await import("../fs/fuse/unprivileged.ts")).defaultMountpoint();
    if (mountpoint === undefined) {
      throw new UsageError("no $XDG_RUNTIME_DIR for the default mount point: give a MOUNTPOINT");
    }
    const readAheadKb = values["read-ahead"] === undefined ? 1024 : Number(values["read-ahead"]);
    if (!Number.isInteger(readAheadKb) || readAheadKb < 0) {
      throw new UsageError("--read-ahead takes a number of KiB");
    }
    const setup = await setupRegistry(values, {
      credentials: { hosts: (values.host as string[] | undefined) ?? [] },
    });
    const root = rootNode(setup.store, { hosts: values.host as string[] | undefined });
    let record: ((path: string) => void) | undefined;
    let recordDone = Promise.resolve();
    if (values.record) {
      let f: Deno.FsFile;
      try {
        f = await Deno.open(values.record as string, { write: true, create: true, truncate: true });
      } catch (e) {
        throw new UserError(`--record ${values.record}: ${(e as Error).message}`);
      }
      const enc = new TextEncoder();
      // Lines are written in order as files are first read, so the list survives a kill.
      record = (path) => {
        recordDone = recordDone.then(async () => {
          const b = enc.encode(`/${path}\n`);
          for (let o = 0; o < b.length;) o += await f.write(b.subarray(o));
        }).catch(() => {});
      };
    }
    const entryTtl = values["entry-ttl"] === undefined ? undefined : Number(values["entry-ttl"]);
    if (entryTtl !== undefined && !(entryTtl >= 0)) {
      throw new UsageError("--entry-ttl takes seconds");
    }
    const fs = new CrfsFilesystem(root, {
      tagTtlMs: setup.tagTtlMs,
      immutableTtlMs: entryTtl === undefined ? undefined : entryTtl * 1000,
      onFirstRead: record,
    });
    let m;
    try {
      m = await mount(mountpoint, await withFuseMetrics(fs, setup), {
        debug: setup.debug ? (line) => console.error(`fuse: ${line}`) : undefined,
        allowOther: values["allow-other"] === true,
        readAheadKb,
      });
    } catch (e) {
      throw new UserError(`cannot mount at ${mountpoint}: ${(e as Error).message}`);
    }
    const mounts = [m];
    if (values["layer-store"]) {
      try {
        // Loaded only for --layer-store: the layer store's code is not on a plain mount's path.
        const { mountLayerStore } = await import("./store.ts");
        mounts.push(
          await mountLayerStore(values["layer-store"] as string, setup, {
            allowOther: values["allow-other"] === true,
            readAheadKb,
          }),
        );
      } catch (e) {
        await m.unmount();
        throw e;
      }
      console.error(`crfs: layer store at ${mounts[1].mountpoint}`);
    }
    const metricsServer = await serveMetricsFlag(values, setup, mounts);
    installSignalUnmount(mounts, { exit: false });
    console.error(`crfs: mounted at ${m.mountpoint} (Ctrl-C or SIGTERM to unmount)`);
    // A mount not used at once loads the layer code while idle; one used at once loads it when
    // its first registry request is out (see setupRegistry).
    after(IDLE_PRELOAD_MS, preloadLayerCode);
    await Promise.all(mounts.map((x) => x.closed));
    await metricsServer?.close();
    setup.close();
    setup.store.stopBackground();
    await recordDone;
    await setup.disk?.flush();
    console.error(`crfs: unmounted ${m.mountpoint}`);
    return 0;
  },
});
