/**
 * `crfs snapshotter`: serves containerd's snapshots API on a unix socket (a containerd proxy
 * plugin) until SIGINT/SIGTERM, so that containerd, nerdctl and Kubernetes nodes start eStargz
 * images without downloading their layers. The library is fs/snapshotter/.
 *
 * @module
 */
import { type Command, defineCommand, type Options, UsageError, UserError } from "./cli.ts";
import { preloadLayerCode } from "../fs/image_store.ts";
import { snapshotterPaths } from "../fs/user_dirs.ts";
import { REGISTRY_HELP, registryFlags, setupRegistry } from "./registry_options.ts";
import { after } from "../format/timers.ts";

/** How long after starting the snapshotter loads the code that opens layers, in ms. */
const IDLE_PRELOAD_MS = 50;
/** The library, imported when the command runs (a specifier Deno does not fetch ahead). */
const SERVICE_MODULE = new URL("../fs/snapshotter/service.ts", import.meta.url).href;
type ServiceModule = typeof import("../fs/snapshotter/service.ts");

const HELP = `Usage: crfs snapshotter [options]

Serves a containerd remote snapshotter on a unix socket until interrupted (Ctrl-C or SIGTERM
stops it and unmounts what it mounted). Layers of eStargz images are not downloaded: their
snapshots are crfs layer directories, fetched from the registry as containers read them. Other
layers are unpacked by containerd into ordinary overlayfs snapshots, so any image works.

containerd's config (/etc/containerd/config.toml):

  [proxy_plugins.crfs]
    type = "snapshot"
    address = "/run/crfs/snapshotter.sock"

then 'ctr-remote image rpull --snapshotter crfs REF' and 'ctr run --snapshotter crfs …', or for
Kubernetes, in the CRI plugin's section:

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "crfs"
    disable_snapshot_annotations = false

State (snapshot metadata and directories, the FUSE tree at ROOT/fuse) lives under --root and
survives restarts of crfs and containerd. As a non-root user (rootless containerd) the
defaults are $XDG_RUNTIME_DIR/crfs-snapshotter/snapshotter.sock, $XDG_DATA_HOME/crfs/snapshotter
(~/.local/share/crfs/snapshotter) and the cache $XDG_CACHE_HOME/crfs (~/.cache/crfs); the tree
is mounted allow_other (containers run as other uids), which needs user_allow_other in
/etc/fuse.conf.

Options:
      --address SOCKET   unix socket to serve (default /run/crfs/snapshotter.sock)
      --root DIR         state directory (default /var/lib/crfs/snapshotter)
  -h, --help             show this help

${REGISTRY_HELP}`;

/** The flags of the command, besides `--help`. */
const FLAGS: Options = {
  address: { type: "string" },
  root: { type: "string" },
  ...registryFlags,
};

/** The `snapshotter` subcommand. */
export const snapshotterCommand: Command = defineCommand({
  name: "snapshotter",
  summary: "serve a containerd remote snapshotter (lazy eStargz pulls) on a unix socket",
  help: HELP,
  flags: FLAGS,
  takes: "no arguments",
  argsOk: (p) => p.length === 0,
  async run(values) {
    const defaults = snapshotterPaths();
    const address = (values.address as string | undefined) ?? defaults.address;
    if (address === undefined) {
      throw new UsageError("no $XDG_RUNTIME_DIR for the default socket: give --address SOCKET");
    }
    const root = (values.root as string | undefined) ?? defaults.root;
    const setup = await setupRegistry(values);
    // Loaded here, not at the top: the gRPC packages come from npm, and every other command
    // (and every test that runs one) would otherwise need them fetched.
    const { startSnapshotter } = (await import(SERVICE_MODULE)) as ServiceModule;
    let running;
    try {
      running = await startSnapshotter({
        root,
        address,
        store: setup.store,
        tagTtlMs: setup.tagTtlMs,
        debug: setup.debug ? (line) => console.error(`fuse: ${line}`) : undefined,
      });
    } catch (e) {
      throw new UserError(`cannot start the snapshotter: ${(e as Error).message}`);
    }
    // Waiting for containerd's first Prepare: the code that opens a layer loads now, not
    // between that Prepare and its answer.
    after(IDLE_PRELOAD_MS, preloadLayerCode);
    let stopping = false;
    const stop = (sig: Deno.Signal) => {
      if (stopping) Deno.exit(1);
      stopping = true;
      console.error(`crfs: ${sig}: stopping the snapshotter`);
      running.close().catch((e) => console.error(`crfs: ${(e as Error).message}`));
    };
    const handlers = (["SIGINT", "SIGTERM"] as Deno.Signal[]).map((s) => {
      const h = () => stop(s);
      Deno.addSignalListener(s, h);
      return [s, h] as const;
    });
    console.error(
      `crfs: snapshotter serving ${address} (state in ${root}; Ctrl-C or SIGTERM stops)`,
    );
    await running.closed;
    await running.close();
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
    await setup.disk?.flush();
    console.error(`crfs: snapshotter stopped, unmounted ${running.fuse.mountpoint}`);
    return 0;
  },
});
