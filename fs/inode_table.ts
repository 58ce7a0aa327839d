/**
 * The inode table: one number per node key, for the node's whole life in the mount. Node ids
 * given to the kernel are these numbers, so a name looked up again after the kernel's entry
 * timeout (or through overlayfs) gets the same id and never ESTALE. Numbers are never reused.
 *
 * @module
 */
import type { FsNode } from "./node.ts";

/** Maps node keys to stable inode numbers and inode numbers to their nodes. */
export class InodeTable {
  readonly #byKey = new Map<string, number>();
  readonly #nodes = new Map<number, FsNode>();
  #next = 2;

  /** Registers the root as inode 1. */
  constructor(root: FsNode) {
    this.#byKey.set(root.key, 1);
    this.#nodes.set(1, root);
  }

  /** The inode number of `node` (assigned on first sight); the node is kept for that number. */
  assign(node: FsNode): number {
    let ino = this.#byKey.get(node.key);
    if (ino === undefined) {
      ino = this.#next++;
      this.#byKey.set(node.key, ino);
    }
    // Keep the newest object for the key: for dynamic nodes (tags) it has the fresh state.
    this.#nodes.set(ino, node);
    return ino;
  }

  /** The node for an inode number, or undefined. */
  get(ino: number): FsNode | undefined {
    return this.#nodes.get(ino);
  }

  /** Number of inodes assigned so far. */
  get size(): number {
    return this.#nodes.size;
  }
}
