/**
 * The snapshot semantics of a containerd snapshotter, as containerd's own overlayfs snapshotter
 * has them, over a {@link MetadataStore} and a directory per snapshot:
 *
 * ```
 * ROOT/metadata.json           the table (see metadata.ts)
 * ROOT/snapshots/<id>/fs       the snapshot's files (upper directory while active), or for a
 *                              remote snapshot a symlink to its crfs layer directory
 * ROOT/snapshots/<id>/work     overlayfs's work directory (active snapshots)
 * ```
 *
 * - `prepare(key, parent)` makes an active snapshot, `view` a read-only one; the parent must be
 *   committed. `commit(name, key)` turns an active snapshot into a committed one named `name`
 *   (its directory stays). `remove` refuses snapshots with children. Only labels can change
 *   (`update`). Errors carry containerd's codes: `ALREADY_EXISTS`, `NOT_FOUND`,
 *   `FAILED_PRECONDITION`, `INVALID_ARGUMENT`.
 * - Remote snapshots: when `prepare` gets `containerd.io/snapshot.ref` (the chain ID containerd
 *   is about to unpack) and the {@link RemoteLayers} says the layer the labels name can be
 *   served lazily, the snapshot is committed under that name at once, labelled
 *   `containerd.io/snapshot/remote`, and `prepare` answers `ALREADY_EXISTS`: containerd then
 *   finds it by that label and skips downloading the layer. Anything else takes the normal path.
 *
 * @module
 */
import { type MetadataStore, type RemoteLayer, type SnapshotRecord } from "./metadata.ts";
import { type MountSpec, snapshotMounts } from "./mounts.ts";
import { type FieldLookup, matchesAny, parseFilters } from "./filters.ts";
import { diskUsage, type Usage } from "./disk_usage.ts";

/** Label containerd puts on a snapshot it prepares for unpacking: the chain ID to commit as. */
export const SNAPSHOT_REF_LABEL = "containerd.io/snapshot.ref";
/** Label marking a snapshot whose content is served lazily by crfs. */
export const REMOTE_LABEL = "containerd.io/snapshot/remote";
/** Its value (the one containerd's stargz snapshotter uses too). */
export const REMOTE_LABEL_VALUE = "remote snapshot";

/** The error codes, named as gRPC names them. */
export type SnapshotErrorCode =
  | "ALREADY_EXISTS"
  | "NOT_FOUND"
  | "FAILED_PRECONDITION"
  | "INVALID_ARGUMENT";

/** A refusal with containerd's meaning. */
export class SnapshotError extends Error {
  readonly code: SnapshotErrorCode;
  constructor(code: SnapshotErrorCode, message: string) {
    super(message);
    this.name = "SnapshotError";
    this.code = code;
  }
}

/** What `stat` and `list` tell about a snapshot (containerd's `snapshots.Info`). */
export interface SnapshotInfo {
  name: string;
  parent: string;
  kind: "active" | "view" | "committed";
  created: Date;
  updated: Date;
  labels: Record<string, string>;
}

/** Decides which layers are served lazily, and where their directories are. */
export interface RemoteLayers {
  /**
   * The layer the Prepare labels name, when it can be served lazily (checked: readable,
   * verified); undefined to take the normal path. May throw (logged, normal path).
   */
  resolve(labels: Record<string, string>): Promise<RemoteLayer | undefined>;
  /** The directory serving `layer` (absolute, in the FUSE tree). */
  layerDir(layer: RemoteLayer): string;
  /** Called for every remote snapshot found at start, before it is used again. */
  restore?(layer: RemoteLayer): void;
}

/** Options of {@link Snapshotter.open}. */
export interface SnapshotterOptions {
  remote?: RemoteLayers;
  log?: (line: string) => void;
}

/**
 * A snapshotter rooted at a directory.
 *
 * @example
 * ```ts
 * const sn = await Snapshotter.open(await MetadataStore.open(root), root);
 * const mounts = await sn.prepare("k1", "", {});
 * await sn.commit("layer1", "k1", {});
 * ```
 */
export class Snapshotter {
  readonly root: string;
  readonly #meta: MetadataStore;
  readonly #remote?: RemoteLayers;
  readonly #log: (line: string) => void;
  #lock: Promise<unknown> = Promise.resolve();

  private constructor(meta: MetadataStore, root: string, opts: SnapshotterOptions) {
    this.#meta = meta;
    this.root = root;
    this.#remote = opts.remote;
    this.#log = opts.log ?? ((l) => console.error(l));
  }

  /**
   * Opens the snapshotter over `meta`; remote snapshots' symlinks are pointed at the current
   * layer directories and announced to `remote.restore`.
   */
  static async open(
    meta: MetadataStore,
    root: string,
    opts: SnapshotterOptions = {},
  ): Promise<Snapshotter> {
    await Deno.mkdir(`${root}/snapshots`, { recursive: true, mode: 0o700 });
    const sn = new Snapshotter(meta, root, opts);
    for (const [, r] of meta.entries()) {
      if (!r.remote || !opts.remote) continue;
      opts.remote.restore?.(r.remote);
      await sn.#linkRemote(r.id, opts.remote.layerDir(r.remote));
    }
    return sn;
  }

  /** Runs `f` with the table to itself. */
  #locked<T>(f: () => Promise<T>): Promise<T> {
    const p = this.#lock.then(f);
    this.#lock = p.catch(() => {});
    return p;
  }

  #dir(id: string): string {
    return `${this.root}/snapshots/${id}`;
  }

  #need(key: string): SnapshotRecord {
    const r = key === "" ? undefined : this.#meta.get(key);
    if (!r) throw new SnapshotError("NOT_FOUND", `snapshot ${JSON.stringify(key)} does not exist`);
    return r;
  }

  /** Directories of the parent chain of `parent`, nearest first. */
  #lowers(parent: string | undefined): string[] {
    const out: string[] = [];
    for (let p = parent; p;) {
      const r = this.#need(p);
      out.push(`${this.#dir(r.id)}/fs`);
      p = r.parent;
    }
    return out;
  }

  #mounts(r: SnapshotRecord): MountSpec[] {
    if (r.kind === "committed") {
      throw new SnapshotError("FAILED_PRECONDITION", "a committed snapshot has no mounts");
    }
    const d = this.#dir(r.id);
    return snapshotMounts(r.kind, `${d}/fs`, `${d}/work`, this.#lowers(r.parent));
  }

  #info(name: string, r: SnapshotRecord): SnapshotInfo {
    return {
      name,
      parent: r.parent ?? "",
      kind: r.kind,
      created: new Date(r.created),
      updated: new Date(r.updated),
      labels: { ...r.labels },
    };
  }

  #checkParent(parent: string): void {
    if (!parent) return;
    const p = this.#meta.get(parent);
    if (!p) throw new SnapshotError("NOT_FOUND", `parent ${JSON.stringify(parent)} does not exist`);
    if (p.kind !== "committed") {
      throw new SnapshotError(
        "INVALID_ARGUMENT",
        `parent ${JSON.stringify(parent)} is not a committed snapshot`,
      );
    }
  }

  async #linkRemote(id: string, target: string): Promise<void> {
    const dir = this.#dir(id);
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    const link = `${dir}/fs`;
    const now = await Deno.readLink(link).catch(() => undefined);
    if (now === target) return;
    if (now !== undefined) await Deno.remove(link);
    await Deno.symlink(target, link);
  }

  async #create(
    kind: "active" | "view",
    key: string,
    parent: string,
    labels: Record<string, string>,
  ): Promise<MountSpec[]> {
    if (!key) throw new SnapshotError("INVALID_ARGUMENT", "a snapshot needs a key");
    const target = labels[SNAPSHOT_REF_LABEL];
    if (target && kind === "active" && this.#remote) {
      const existing = this.#meta.get(target);
      if (existing?.kind === "committed" && (existing.parent ?? "") === parent) {
        throw new SnapshotError("ALREADY_EXISTS", `target snapshot ${JSON.stringify(target)}`);
      }
      if (!existing && !this.#meta.get(key)) {
        let layer: RemoteLayer | undefined;
        const t0 = performance.now();
        try {
          layer = await this.#remote.resolve(labels);
        } catch (e) {
          this.#log(`crfs snapshotter: ${target}: not lazily served: ${(e as Error).message}`);
        }
        if (layer) {
          await this.#commitRemote(key, target, parent, labels, layer, performance.now() - t0);
        }
      }
    }
    return await this.#locked(async () => {
      if (this.#meta.get(key)) {
        throw new SnapshotError("ALREADY_EXISTS", `snapshot ${JSON.stringify(key)}`);
      }
      this.#checkParent(parent);
      const id = this.#meta.allocateId();
      const dir = this.#dir(id);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      await Deno.mkdir(`${dir}/fs`, { recursive: true, mode: 0o755 });
      await Deno.chmod(dir, 0o700);
      if (kind === "active") await Deno.mkdir(`${dir}/work`, { mode: 0o711 });
      const now = new Date().toISOString();
      const record: SnapshotRecord = {
        id,
        kind,
        ...(parent ? { parent } : {}),
        labels: { ...labels },
        created: now,
        updated: now,
      };
      try {
        await this.#meta.put(key, record);
      } catch (e) {
        await Deno.remove(dir, { recursive: true }).catch(() => {});
        throw e;
      }
      return this.#mounts(record);
    });
  }

  /** Commits `layer` as `target` and answers ALREADY_EXISTS (or the reason it could not). */
  #commitRemote(
    key: string,
    target: string,
    parent: string,
    labels: Record<string, string>,
    layer: RemoteLayer,
    checkMs: number,
  ): Promise<never> {
    return this.#locked(async () => {
      if (this.#meta.get(key)) {
        throw new SnapshotError("ALREADY_EXISTS", `snapshot ${JSON.stringify(key)}`);
      }
      if (this.#meta.get(target)) {
        throw new SnapshotError("ALREADY_EXISTS", `target snapshot ${JSON.stringify(target)}`);
      }
      this.#checkParent(parent);
      const id = this.#meta.allocateId();
      await Deno.remove(this.#dir(id), { recursive: true }).catch(() => {});
      await this.#linkRemote(id, this.#remote!.layerDir(layer));
      const now = new Date().toISOString();
      await this.#meta.put(target, {
        id,
        kind: "committed",
        ...(parent ? { parent } : {}),
        labels: { ...labels, [REMOTE_LABEL]: REMOTE_LABEL_VALUE },
        created: now,
        updated: now,
        size: 0,
        inodes: 0,
        remote: layer,
      });
      this.#log(
        `crfs snapshotter: ${target}: remote snapshot of ` +
          `${layer.host}/${layer.repository}@${layer.layer} (checked in ${checkMs.toFixed(0)} ms)`,
      );
      throw new SnapshotError("ALREADY_EXISTS", `target snapshot ${JSON.stringify(target)}`);
    });
  }

  /** An active snapshot on `parent` (`""`: none); returns its mounts. */
  prepare(key: string, parent: string, labels: Record<string, string> = {}): Promise<MountSpec[]> {
    return this.#create("active", key, parent, labels);
  }

  /** A read-only view of `parent`; returns its mounts. */
  view(key: string, parent: string, labels: Record<string, string> = {}): Promise<MountSpec[]> {
    return this.#create("view", key, parent, labels);
  }

  /** The mounts of an active snapshot or a view. */
  mounts(key: string): Promise<MountSpec[]> {
    return this.#locked(() => Promise.resolve(this.#mounts(this.#need(key))));
  }

  /** Commits active snapshot `key` as `name` (with `labels`); the key is gone afterwards. */
  commit(name: string, key: string, labels: Record<string, string> = {}): Promise<void> {
    return this.#locked(async () => {
      const r = this.#need(key);
      if (r.kind !== "active") {
        throw new SnapshotError(
          "FAILED_PRECONDITION",
          `snapshot ${JSON.stringify(key)} is not active`,
        );
      }
      if (!name) throw new SnapshotError("INVALID_ARGUMENT", "a committed snapshot needs a name");
      if (this.#meta.get(name)) {
        throw new SnapshotError("ALREADY_EXISTS", `committed snapshot ${JSON.stringify(name)}`);
      }
      const usage = await diskUsage(`${this.#dir(r.id)}/fs`);
      const now = new Date().toISOString();
      await this.#meta.change([[name, {
        id: r.id,
        kind: "committed",
        ...(r.parent ? { parent: r.parent } : {}),
        labels: { ...labels },
        created: now,
        updated: now,
        size: usage.size,
        inodes: usage.inodes,
      }]], [key]);
      await Deno.remove(`${this.#dir(r.id)}/work`, { recursive: true }).catch(() => {});
    });
  }

  /** Removes a snapshot without children, and its directory. */
  remove(key: string): Promise<void> {
    return this.#locked(async () => {
      const r = this.#need(key);
      if (this.#meta.children(key).length > 0) {
        throw new SnapshotError(
          "FAILED_PRECONDITION",
          `cannot remove snapshot ${JSON.stringify(key)} with children`,
        );
      }
      await this.#meta.delete(key);
      await this.#removeDir(r.id);
    });
  }

  async #removeDir(id: string): Promise<void> {
    try {
      await Deno.remove(this.#dir(id), { recursive: true });
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) {
        // still mounted, say: Cleanup retries
        this.#log(`crfs snapshotter: cannot remove ${this.#dir(id)}: ${(e as Error).message}`);
      }
    }
  }

  /** What is known about snapshot `key`. */
  stat(key: string): Promise<SnapshotInfo> {
    return this.#locked(() => Promise.resolve(this.#info(key, this.#need(key))));
  }

  /**
   * Changes the labels of `info.name`: all of them (no `paths`, or `labels`), or those named
   * `labels.<key>` (a key absent from `info.labels` is removed). Other fields are immutable.
   */
  update(
    info: { name: string; labels?: Record<string, string> },
    paths: string[] = [],
  ): Promise<SnapshotInfo> {
    return this.#locked(async () => {
      const r = this.#need(info.name);
      const given = info.labels ?? {};
      let labels = { ...r.labels };
      if (paths.length === 0) labels = { ...given };
      for (const p of paths) {
        if (p === "labels") labels = { ...given };
        else if (p.startsWith("labels.")) {
          const k = p.slice("labels.".length);
          if (Object.hasOwn(given, k)) labels[k] = given[k];
          else delete labels[k];
        } else {
          throw new SnapshotError(
            "INVALID_ARGUMENT",
            `cannot update ${JSON.stringify(p)} of snapshot ${JSON.stringify(info.name)}`,
          );
        }
      }
      const next = { ...r, labels, updated: new Date().toISOString() };
      await this.#meta.put(info.name, next);
      return this.#info(info.name, next);
    });
  }

  /** Disk usage: measured now for an active snapshot, as recorded at commit otherwise. */
  async usage(key: string): Promise<Usage> {
    const r = await this.#locked(() => Promise.resolve(this.#need(key)));
    if (r.kind === "active") return await diskUsage(`${this.#dir(r.id)}/fs`);
    return { size: r.size ?? 0, inodes: r.inodes ?? 0 };
  }

  /** The snapshots matching any of `filters` (containerd's filter syntax; none: all). */
  list(filters: string[] = []): Promise<SnapshotInfo[]> {
    let parsed;
    try {
      parsed = parseFilters(filters);
    } catch (e) {
      return Promise.reject(new SnapshotError("INVALID_ARGUMENT", (e as Error).message));
    }
    return this.#locked(() => {
      const out: SnapshotInfo[] = [];
      for (const [name, r] of this.#meta.entries()) {
        const lookup: FieldLookup = (path) => {
          switch (path[0]) {
            case "name":
              return path.length === 1 ? name : undefined;
            case "parent":
              return path.length === 1 ? r.parent ?? "" : undefined;
            case "kind":
              return path.length === 1 ? r.kind : undefined;
            case "labels": {
              const k = path.slice(1).join(".");
              return Object.hasOwn(r.labels, k) ? r.labels[k] : undefined;
            }
          }
          return undefined;
        };
        if (matchesAny(parsed, lookup)) out.push(this.#info(name, r));
      }
      return Promise.resolve(out);
    });
  }

  /** Removes directories under `snapshots/` that no snapshot owns (left by a crash). */
  cleanup(): Promise<string[]> {
    return this.#locked(async () => {
      const owned = new Set(this.#meta.entries().map(([, r]) => r.id));
      const removed: string[] = [];
      for await (const e of Deno.readDir(`${this.root}/snapshots`)) {
        if (owned.has(e.name)) continue;
        await this.#removeDir(e.name);
        removed.push(e.name);
      }
      return removed;
    });
  }

  /** The metadata of every remote snapshot (for the status line and tests). */
  remoteSnapshots(): [string, RemoteLayer][] {
    return this.#meta.entries().flatMap(([k, r]) => r.remote ? [[k, r.remote]] : []) as [
      string,
      RemoteLayer,
    ][];
  }
}
