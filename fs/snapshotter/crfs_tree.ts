/**
 * The one place the snapshotter touches crfs's FUSE tree: it mounts the same tree `crfs mount`
 * serves (layers/ and images/, from the shared {@link ImageStore}) at `ROOT/fuse`, and names the
 * directory of one layer in it. Remote snapshots are symlinks to such layer directories, so
 * this path scheme must stay what fs/registry_tree.ts serves:
 *
 * ```
 * ROOT/fuse/layers/<host>/<repository>/sha256-<manifest>/sha256-<layer>/
 * ```
 *
 * @module
 */
import { CrfsFilesystem } from "../filesystem.ts";
import { type FuseMount, mount } from "../fuse/mount.ts";
import { rootNode } from "../registry_tree.ts";
import type { ImageStore } from "../image_store.ts";
import type { RemoteLayer } from "./metadata.ts";

/** Options of {@link mountCrfsTree}. */
export interface TreeMountOptions {
  /** TTL of tags and listings, in ms. */
  tagTtlMs: number;
  /** Kernel readahead in KiB. */
  readAheadKb?: number;
  /** Receives FUSE debug lines. */
  debug?: (line: string) => void;
}

/**
 * Mounts crfs's tree at `mountpoint` (a stale mount there is cleared), readable by every user
 * (containers run as any user through overlayfs).
 */
export async function mountCrfsTree(
  store: ImageStore,
  mountpoint: string,
  opts: TreeMountOptions,
): Promise<FuseMount> {
  const root = rootNode(store);
  const fs = new CrfsFilesystem(root, { tagTtlMs: opts.tagTtlMs });
  return await mount(mountpoint, fs, {
    debug: opts.debug,
    allowOther: true,
    readAheadKb: opts.readAheadKb ?? 1024,
    fsName: "crfs-snapshotter",
  });
}

const hex = (digest: string) => digest.slice(digest.indexOf(":") + 1);

/** The directory of `layer` under a tree mounted at `mountpoint`. */
export function layerDirectory(mountpoint: string, layer: RemoteLayer): string {
  return `${mountpoint}/layers/${layer.host}/${layer.repository}/sha256-${hex(layer.manifest)}/` +
    `sha256-${hex(layer.layer)}`;
}
