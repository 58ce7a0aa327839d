/**
 * The inode table: one number per node key, and the node objects for the numbers the kernel
 * may ask about. Node ids given to the kernel are these numbers.
 *
 * Memory stays bounded in a long run while numbers keep their meaning:
 *
 * - Every entry reply (LOOKUP, READDIRPLUS) counts one lookup of its number; FORGET and
 *   BATCH_FORGET take them back. A number the kernel holds (count above 0) keeps its node and
 *   key, so it is stable for as long as the kernel may use it.
 * - Nodes nobody holds (forgotten, or only listed by READDIR) stay cached up to
 *   `maxIdleNodes`, least recently used out.
 * - A dropped node's key keeps its number in a compact key → number map (up to
 *   `maxRetiredKeys`), so a file looked up again after the kernel forgot it gets its old number
 *   back (keys name immutable content, so the number still means the same file).
 * - Numbers are never reused: a key whose number was retired and dropped gets a fresh one, and
 *   no other key ever gets a number once given.
 *
 * @module
 */
import type { FsNode } from "./node.ts";
import { LruMap } from "./lru_map.ts";

/** Bounds of an {@link InodeTable}. */
export interface InodeTableOptions {
  /** Node objects kept for numbers the kernel does not hold. Default 16384. */
  maxIdleNodes?: number;
  /** Keys of dropped nodes whose numbers are remembered. Default 131072. */
  maxRetiredKeys?: number;
  /** Hears of each number whose node was dropped (to drop what is kept beside it). */
  onDrop?: (ino: number) => void;
}

interface Entry {
  /** The node (its key is the entry's). */
  node: FsNode;
  /** Lookups the kernel holds. */
  lookups: number;
}

/** Maps node keys to stable inode numbers and inode numbers to their nodes. */
export class InodeTable {
  /** Numbers with a node: held by the kernel, idle, or the root. */
  readonly #live = new Map<number, Entry>();
  readonly #liveKeys = new Map<string | number, number>();
  /** Numbers with a node the kernel does not hold, least recently used first. */
  readonly #idle: LruMap<number, true>;
  /** Keys of dropped nodes, with their numbers. */
  readonly #retired: LruMap<string | number, number>;
  readonly #onDrop?: (ino: number) => void;
  #next = 2;

  /** Registers the root as inode 1 (never dropped). */
  constructor(root: FsNode, options: InodeTableOptions = {}) {
    this.#onDrop = options.onDrop;
    this.#retired = new LruMap(options.maxRetiredKeys ?? 131_072);
    this.#idle = new LruMap(options.maxIdleNodes ?? 16_384, (ino) => this.#drop(ino));
    this.#live.set(1, { node: root, lookups: Infinity });
    this.#liveKeys.set(root.key, 1);
  }

  /**
   * The inode number of `node` (its key's number, assigned on first sight); the node is kept
   * for that number. Counts no lookup: see {@link lookedUp}.
   */
  assign(node: FsNode): number {
    const key = node.key;
    let ino = this.#liveKeys.get(key);
    if (ino !== undefined) {
      const e = this.#live.get(ino)!;
      // Keep the newest object for the key: for dynamic nodes (tags) it has the fresh state.
      e.node = node;
      if (e.lookups === 0) this.#idle.set(ino, true);
      return ino;
    }
    ino = this.#retired.size === 0 ? undefined : this.#retired.peek(key);
    if (ino !== undefined) this.#retired.delete(key);
    else ino = this.#next++;
    this.#live.set(ino, { node, lookups: 0 });
    this.#liveKeys.set(key, ino);
    this.#idle.set(ino, true);
    return ino;
  }

  /** The kernel was given `ino` in an entry reply (one more lookup it holds). */
  lookedUp(ino: number): void {
    const e = this.#live.get(ino);
    if (!e) return;
    if (e.lookups === 0) this.#idle.delete(ino);
    e.lookups++;
  }

  /** The kernel forgot `nlookup` lookups of `ino`; at zero its node may be dropped. */
  forget(ino: number, nlookup: number): void {
    const e = this.#live.get(ino);
    if (!e || e.lookups === 0 || e.lookups === Infinity) return;
    e.lookups = Math.max(0, e.lookups - nlookup);
    if (e.lookups === 0) this.#idle.set(ino, true);
  }

  #drop(ino: number): void {
    const e = this.#live.get(ino);
    if (!e || e.lookups > 0) return;
    this.#live.delete(ino);
    const key = e.node.key;
    this.#liveKeys.delete(key);
    this.#retired.set(key, ino);
    this.#onDrop?.(ino);
  }

  /** The node for an inode number, or undefined (never assigned, or dropped). */
  get(ino: number): FsNode | undefined {
    return this.#live.get(ino)?.node;
  }

  /** Lookups the kernel holds of `ino` (0 when none or unknown). */
  lookups(ino: number): number {
    return this.#live.get(ino)?.lookups ?? 0;
  }

  /** Number of nodes kept now (held, idle and the root). */
  get size(): number {
    return this.#live.size;
  }

  /** Number of keys whose numbers are remembered without a node. */
  get retiredKeys(): number {
    return this.#retired.size;
  }

  /** Numbers given so far (the highest is one less). */
  get assigned(): number {
    return this.#next - 2;
  }
}
