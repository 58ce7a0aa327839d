/**
 * A map that holds at most `capacity` entries, dropping the least recently used one (reads and
 * writes both count as use) when a new key would exceed it. The tables of a long-running mount
 * (manifests, tags, layers, host names) use it so that their memory stays bounded however many
 * images are walked.
 *
 * @module
 */

/** A bounded map with least-recently-used eviction. */
export class LruMap<K, V> {
  readonly capacity: number;
  readonly #map = new Map<K, V>();
  readonly #onEvict?: (key: K, value: V) => void;

  /**
   * A map of at most `capacity` (≥ 1) entries; `onEvict` hears of every entry dropped to make
   * room (not of `delete`).
   *
   * @example
   * ```ts
   * const m = new LruMap<string, number>(2);
   * m.set("a", 1); m.set("b", 2); m.get("a"); m.set("c", 3); // drops "b"
   * ```
   */
  constructor(capacity: number, onEvict?: (key: K, value: V) => void) {
    this.capacity = Math.max(1, Math.floor(capacity));
    this.#onEvict = onEvict;
  }

  /** The value of `key` (now the most recently used), or undefined. */
  get(key: K): V | undefined {
    const v = this.#map.get(key);
    if (v === undefined && !this.#map.has(key)) return undefined;
    this.#map.delete(key);
    this.#map.set(key, v as V);
    return v;
  }

  /** The value of `key` without counting it as a use. */
  peek(key: K): V | undefined {
    return this.#map.get(key);
  }

  /** Whether `key` is present (not a use). */
  has(key: K): boolean {
    return this.#map.has(key);
  }

  /** Sets `key` (now the most recently used), evicting the least recently used beyond capacity. */
  set(key: K, value: V): this {
    this.#map.delete(key);
    this.#map.set(key, value);
    while (this.#map.size > this.capacity) {
      const [k, v] = this.#map.entries().next().value as [K, V];
      this.#map.delete(k);
      this.#onEvict?.(k, v);
    }
    return this;
  }

  /** Removes `key`; true when it was present. */
  delete(key: K): boolean {
    return this.#map.delete(key);
  }

  /** Number of entries. */
  get size(): number {
    return this.#map.size;
  }

  /** Keys, least recently used first (not a use). */
  keys(): IterableIterator<K> {
    return this.#map.keys();
  }

  /** Values, least recently used first (not a use). */
  values(): IterableIterator<V> {
    return this.#map.values();
  }
}
