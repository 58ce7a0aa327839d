/**
 * The mounts a snapshot is used through, as containerd receives them (it or the runtime shim
 * performs them): the semantics of containerd's overlayfs snapshotter.
 *
 * - No parent: a bind mount of the snapshot's own directory, read-write for an active snapshot,
 *   read-only for a view (an empty directory: overlayfs needs at least one lower directory).
 * - Active with parents: overlayfs with the parents' directories as lower directories (nearest
 *   parent first), the snapshot's `fs` as upper and `work` as work directory.
 * - View of one parent: a read-only bind mount of that parent's directory.
 * - View of several: a read-only overlayfs of the parents' directories only.
 *
 * A remote snapshot's directory is a symlink into crfs's FUSE tree; mount(2) and overlayfs
 * follow it, and the option string stays free of the `:` that registry hosts carry.
 * `index=off` keeps overlayfs from needing file handles of the lower filesystems.
 *
 * @module
 */

/** One mount, as `containerd.types.Mount`. */
export interface MountSpec {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

/**
 * The mounts of a snapshot. `upper` and `work` are its directories; `lowers` the directories of
 * its parent chain, nearest first.
 */
export function snapshotMounts(
  kind: "active" | "view",
  upper: string,
  work: string,
  lowers: string[],
): MountSpec[] {
  if (lowers.length === 0) {
    return [{ type: "bind", source: upper, options: [kind === "view" ? "ro" : "rw", "rbind"] }];
  }
  if (kind === "view" && lowers.length === 1) {
    return [{ type: "bind", source: lowers[0], options: ["ro", "rbind"] }];
  }
  const options = ["index=off"];
  if (kind === "active") options.push(`workdir=${work}`, `upperdir=${upper}`);
  options.push(`lowerdir=${lowers.join(":")}`);
  return [{ type: "overlay", source: "overlay", options }];
}
