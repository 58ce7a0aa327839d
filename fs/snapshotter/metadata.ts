/**
 * The snapshotter's metadata on disk: every snapshot by key (kind, parent, labels, times, the
 * directory id, the usage recorded at commit, and for remote snapshots the layer they show), in
 * one JSON file under the snapshotter's root. Each change rewrites the file crash-safely: the new
 * state goes to a temporary file that is flushed to disk, renamed over the old one, and the
 * directory is flushed too, so after a crash the file holds either the old or the new state,
 * never a mix.
 *
 * @module
 */

/** The three kinds of snapshots containerd knows. */
export type SnapshotKind = "active" | "view" | "committed";

/** Where a remote snapshot's layer comes from (the registry image and layer it shows). */
export interface RemoteLayer {
  /** Registry host (`127.0.0.1:5000`, `registry-1.docker.io`). */
  host: string;
  /** Repository path on the host. */
  repository: string;
  /** Digest of the single-platform manifest that lists the layer. */
  manifest: string;
  /** Digest of the layer blob. */
  layer: string;
}

/** One snapshot as stored. */
export interface SnapshotRecord {
  /** Name of its directory under `snapshots/` (never reused). */
  id: string;
  kind: SnapshotKind;
  /** Key of the parent (always a committed snapshot); absent for a base snapshot. */
  parent?: string;
  labels: Record<string, string>;
  /** ISO times. */
  created: string;
  updated: string;
  /** Disk usage recorded at commit (bytes and inodes). */
  size?: number;
  inodes?: number;
  /** Set for snapshots whose content is a crfs layer directory. */
  remote?: RemoteLayer;
}

interface FileState {
  version: 1;
  nextId: number;
  snapshots: Record<string, SnapshotRecord>;
}

/**
 * The snapshot table, loaded once and written through on every change. Callers serialize
 * changes (the snapshotter holds a lock around each mutation).
 *
 * @example
 * ```ts
 * const meta = await MetadataStore.open("/var/lib/crfs/snapshotter");
 * const id = meta.allocateId();
 * await meta.put("k1", { id, kind: "active", labels: {}, created: now, updated: now });
 * ```
 */
export class MetadataStore {
  readonly path: string;
  #state: FileState;

  private constructor(path: string, state: FileState) {
    this.path = path;
    this.#state = state;
  }

  /** Opens (or starts) `ROOT/metadata.json`. A damaged file is an error, not an empty table. */
  static async open(root: string): Promise<MetadataStore> {
    await Deno.mkdir(root, { recursive: true });
    const path = `${root}/metadata.json`;
    let state: FileState = { version: 1, nextId: 1, snapshots: {} };
    try {
      const text = await Deno.readTextFile(path);
      const parsed = JSON.parse(text) as FileState;
      if (
        parsed?.version !== 1 || typeof parsed.nextId !== "number" ||
        typeof parsed.snapshots !== "object" || parsed.snapshots === null
      ) {
        throw new Error("not a crfs snapshotter metadata file");
      }
      state = parsed;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) {
        throw new Error(`${path}: ${(e as Error).message}`);
      }
    }
    return new MetadataStore(path, state);
  }

  /** The snapshot stored under `key`. */
  get(key: string): SnapshotRecord | undefined {
    return Object.hasOwn(this.#state.snapshots, key) ? this.#state.snapshots[key] : undefined;
  }

  /** Every snapshot, as [key, record]. */
  entries(): [string, SnapshotRecord][] {
    return Object.entries(this.#state.snapshots);
  }

  /** Keys of the snapshots whose parent is `key`. */
  children(key: string): string[] {
    return this.entries().filter(([, r]) => r.parent === key).map(([k]) => k);
  }

  /** A fresh directory id (persisted with the next write). */
  allocateId(): string {
    return String(this.#state.nextId++);
  }

  /** Stores `record` under `key` (replacing any), then writes the file. */
  async put(key: string, record: SnapshotRecord): Promise<void> {
    this.#state.snapshots[key] = record;
    await this.#write();
  }

  /** Applies several changes in one write: `remove` keys first, then `put` entries. */
  async change(put: [string, SnapshotRecord][], remove: string[] = []): Promise<void> {
    for (const k of remove) delete this.#state.snapshots[k];
    for (const [k, r] of put) this.#state.snapshots[k] = r;
    await this.#write();
  }

  /** Removes `key`, then writes the file. */
  async delete(key: string): Promise<void> {
    delete this.#state.snapshots[key];
    await this.#write();
  }

  async #write(): Promise<void> {
    const tmp = `${this.path}.tmp`;
    const f = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
    try {
      const bytes = new TextEncoder().encode(JSON.stringify(this.#state));
      for (let o = 0; o < bytes.length;) o += await f.write(bytes.subarray(o));
      await f.sync();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, this.path);
    const dir = await Deno.open(this.path.slice(0, this.path.lastIndexOf("/")) || "/");
    try {
      await dir.sync();
    } catch {
      // some filesystems cannot flush a directory; the rename is still atomic
    } finally {
      dir.close();
    }
  }
}
