/**
 * A running crfs snapshotter, put together: the metadata under `ROOT`, crfs's FUSE tree at
 * `ROOT/fuse` (remote snapshots' layers, re-served lazily after a restart), the snapshot
 * semantics and the gRPC socket. `close()` stops the socket first, then unmounts the tree.
 *
 * @module
 */
import type { ImageStore } from "../image_store.ts";
import type { FuseMount } from "../fuse/mount.ts";
import { mountCrfsTree } from "./crfs_tree.ts";
import { serveSnapshots, type SnapshotsServer } from "./grpc_service.ts";
import { MetadataStore } from "./metadata.ts";
import { CrfsRemoteLayers } from "./remote_layers.ts";
import { Snapshotter } from "./snapshots.ts";

/** Options of {@link startSnapshotter}. */
export interface StartOptions {
  /** State directory (metadata, snapshot directories, the FUSE mount point `fuse`). */
  root: string;
  /** Unix socket path to serve on. */
  address: string;
  /** The image store (drivers, caches, verification, prefetch). */
  store: ImageStore;
  /** TTL of tags and listings in the tree, in ms. */
  tagTtlMs: number;
  /** FUSE debug lines. */
  debug?: (line: string) => void;
  /** One line per event (remote snapshots, fallbacks, failures). */
  log?: (line: string) => void;
}

/** A snapshotter being served. */
export interface RunningSnapshotter {
  readonly snapshotter: Snapshotter;
  readonly server: SnapshotsServer;
  readonly fuse: FuseMount;
  /** Resolves when the FUSE connection ends (unmounted from outside, too). */
  readonly closed: Promise<void>;
  /** Stops serving and unmounts. */
  close(): Promise<void>;
}

/**
 * Starts serving containerd's snapshots API at `opts.address`.
 *
 * @example
 * ```ts
 * const s = await startSnapshotter({ root, address, store, tagTtlMs: 60_000 });
 * // … containerd uses it …
 * await s.close();
 * ```
 */
export async function startSnapshotter(opts: StartOptions): Promise<RunningSnapshotter> {
  const root = opts.root.replace(/\/+$/, "") || "/";
  await Deno.mkdir(root, { recursive: true, mode: 0o700 });
  const meta = await MetadataStore.open(root);
  const fuse = await mountCrfsTree(opts.store, `${root}/fuse`, {
    tagTtlMs: opts.tagTtlMs,
    debug: opts.debug,
  });
  let server: SnapshotsServer | undefined;
  try {
    const remote = new CrfsRemoteLayers(opts.store, fuse.mountpoint, opts.log);
    const snapshotter = await Snapshotter.open(meta, root, { remote, log: opts.log });
    await snapshotter.cleanup();
    server = await serveSnapshots(snapshotter, opts.address, opts.log);
    const srv = server;
    let closing: Promise<void> | undefined;
    return {
      snapshotter,
      server: srv,
      fuse,
      closed: fuse.closed,
      close() {
        closing ??= (async () => {
          await srv.close();
          opts.store.stopBackground();
          await fuse.unmount();
        })();
        return closing;
      },
    };
  } catch (e) {
    await server?.close();
    await fuse.unmount().catch(() => {});
    throw e;
  }
}
