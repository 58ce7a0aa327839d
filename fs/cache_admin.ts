/**
 * Looking at and pruning crfs's disk cache from outside a running crfs (`crfs cache status`,
 * `crfs cache prune`), over the layout fs/disk_cache.ts writes:
 *
 * - `ranges/<blob hex>/<start>-<end>`: fetched byte ranges of layer blobs;
 * - `decoded/<2 hex>/<hex>`: big chunks kept decompressed (most of a big file read once);
 * - `objects/<hex>`: manifests and configs by digest;
 * - `tags/<hash>`, `repos/<hash>`: small JSON records (`{key, at, …}`) of tag resolutions and
 *   repositories seen;
 * - `tmp/`: files being written (renamed into place when complete).
 *
 * An entry's last use is the later of its modification and access times (the cache writes each
 * file once; reads show in the access time where the file system keeps it, e.g. `relatime`
 * updates it at least daily). Pruning removes files only: a running crfs that had indexed one
 * sees a miss and fetches the bytes again (see disk_cache.ts), so pruning is safe while mounts
 * run. Temporary files older than an hour are leftovers of killed writers and always go.
 *
 * @module
 */

/** One kind of entry and how much of it there is. */
export interface CacheKindStatus {
  /** Files. */
  files: number;
  /** Bytes (file sizes). */
  bytes: number;
}

/** What {@link cacheStatus} reports. */
export interface CacheStatus {
  /** The cache directory. */
  dir: string;
  /** Blob ranges. */
  ranges: CacheKindStatus & { blobs: number };
  /** Chunks kept decompressed. */
  decoded: CacheKindStatus;
  /** Manifests and configs. */
  objects: CacheKindStatus;
  /** Tag records. */
  tags: CacheKindStatus;
  /** Repository records. */
  repos: CacheKindStatus;
  /** Unfinished writes. */
  tmp: CacheKindStatus;
  /** All of it. */
  total: CacheKindStatus;
  /** Last use of the least recently used entry (ms since the epoch), if any. */
  oldestUse?: number;
  /** Last use of the most recently used entry, if any. */
  newestUse?: number;
}

/** One file of the cache. */
interface Entry {
  path: string;
  kind: (typeof KINDS)[number];
  size: number;
  lastUse: number;
}

/** Not a crfs cache directory (or unreadable). */
export class CacheAdminError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CacheAdminError";
  }
}

const KINDS = ["ranges", "decoded", "objects", "tags", "repos", "tmp"] as const;
/** Kinds whose files sit one directory down (blob or prefix directories). */
const NESTED = new Set<string>(["ranges", "decoded"]);
const TMP_MAX_AGE_MS = 3600_000;

async function walk(dir: string): Promise<Entry[]> {
  try {
    const st = await Deno.stat(dir);
    if (!st.isDirectory) throw new CacheAdminError(`${dir} is not a directory`);
  } catch (e) {
    if (e instanceof CacheAdminError) throw e;
    if (e instanceof Deno.errors.NotFound) throw new CacheAdminError(`no cache at ${dir}`);
    throw new CacheAdminError(`cannot read ${dir}: ${(e as Error).message}`);
  }
  if (!(await Promise.all(KINDS.map((k) => isDir(`${dir}/${k}`)))).some(Boolean)) {
    throw new CacheAdminError(
      `${dir} is not a crfs cache (no ranges/, decoded/, objects/, tags/, repos/ or tmp/ in it)`,
    );
  }
  const out: Entry[] = [];
  for (const kind of KINDS) {
    const rec = async (d: string, depth: number) => {
      let it: AsyncIterable<Deno.DirEntry>;
      try {
        it = Deno.readDir(d);
      } catch {
        return;
      }
      try {
        for await (const e of it) {
          const p = `${d}/${e.name}`;
          if (e.isDirectory && depth < 1) await rec(p, depth + 1);
          else if (e.isFile) {
            const st = await Deno.stat(p).catch(() => undefined);
            if (!st) continue; // removed meanwhile
            const lastUse = Math.max(st.mtime?.getTime() ?? 0, st.atime?.getTime() ?? 0);
            out.push({ path: p, kind, size: st.size, lastUse });
          }
        }
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) {
          throw new CacheAdminError(`cannot read ${d}: ${(e as Error).message}`);
        }
      }
    };
    await rec(`${dir}/${kind}`, NESTED.has(kind) ? 0 : 1);
  }
  return out;
}

async function isDir(p: string): Promise<boolean> {
  try {
    return (await Deno.stat(p)).isDirectory;
  } catch {
    return false;
  }
}

function summarize(dir: string, entries: Entry[]): CacheStatus {
  const z = () => ({ files: 0, bytes: 0 });
  const s: CacheStatus = {
    dir,
    ranges: { ...z(), blobs: 0 },
    decoded: z(),
    objects: z(),
    tags: z(),
    repos: z(),
    tmp: z(),
    total: z(),
  };
  const blobs = new Set<string>();
  for (const e of entries) {
    s[e.kind].files++;
    s[e.kind].bytes += e.size;
    s.total.files++;
    s.total.bytes += e.size;
    if (e.kind === "ranges") blobs.add(e.path.slice(0, e.path.lastIndexOf("/")));
    if (e.kind !== "tmp") {
      s.oldestUse = Math.min(s.oldestUse ?? Infinity, e.lastUse);
      s.newestUse = Math.max(s.newestUse ?? 0, e.lastUse);
    }
  }
  s.ranges.blobs = blobs.size;
  return s;
}

/**
 * Sizes and ages of what the cache at `dir` holds.
 *
 * @example
 * ```ts
 * const s = await cacheStatus("/var/cache/crfs");
 * console.log(`${s.total.bytes} bytes in ${s.ranges.blobs} blobs`);
 * ```
 */
export async function cacheStatus(dir: string): Promise<CacheStatus> {
  return summarize(dir, await walk(dir));
}

/** Options of {@link pruneCache}. */
export interface PruneOptions {
  /** Remove entries last used more than this many milliseconds ago. */
  olderThanMs?: number;
  /** Then remove least recently used entries until at most this many bytes remain. */
  toBytes?: number;
  /** Only report what would go. */
  dryRun?: boolean;
  /** The current time (tests); default `Date.now()`. */
  now?: number;
}

/** What {@link pruneCache} did. */
export interface PruneResult {
  /** Files removed (or that would be, with `dryRun`). */
  removedFiles: number;
  /** Their bytes. */
  removedBytes: number;
  /** The cache before. */
  before: CacheStatus;
  /** The cache after (as computed; with `dryRun`, as it would be). */
  after: CacheStatus;
}

/**
 * Prunes the cache at `dir`: leftovers in `tmp/` older than an hour, then entries unused for
 * longer than `olderThanMs`, then the least recently used until the cache fits `toBytes`. Empty
 * blob directories are removed too. Without either option only `tmp/` leftovers go.
 *
 * @example
 * ```ts
 * const r = await pruneCache("/var/cache/crfs", { olderThanMs: 30 * 86400_000, toBytes: 5 << 30 });
 * console.log(`freed ${r.removedBytes} bytes`);
 * ```
 */
export async function pruneCache(dir: string, options: PruneOptions = {}): Promise<PruneResult> {
  const now = options.now ?? Date.now();
  const entries = await walk(dir);
  const before = summarize(dir, entries);
  const doomed = new Set<Entry>();
  for (const e of entries) {
    if (e.kind === "tmp" && now - e.lastUse > TMP_MAX_AGE_MS) doomed.add(e);
    if (
      e.kind !== "tmp" && options.olderThanMs !== undefined && now - e.lastUse > options.olderThanMs
    ) {
      doomed.add(e);
    }
  }
  if (options.toBytes !== undefined) {
    let bytes = entries.reduce((n, e) => n + (doomed.has(e) ? 0 : e.size), 0);
    const lru = entries.filter((e) => !doomed.has(e) && e.kind !== "tmp")
      .sort((a, b) => a.lastUse - b.lastUse);
    for (const e of lru) {
      if (bytes <= options.toBytes) break;
      doomed.add(e);
      bytes -= e.size;
    }
  }
  let removedBytes = 0;
  let removedFiles = 0;
  const left: Entry[] = [];
  const touchedDirs = new Set<string>();
  for (const e of entries) {
    if (!doomed.has(e)) {
      left.push(e);
      continue;
    }
    if (!options.dryRun) {
      try {
        await Deno.remove(e.path);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) {
          throw new CacheAdminError(`cannot remove ${e.path}: ${(err as Error).message}`);
        }
      }
      if (NESTED.has(e.kind)) touchedDirs.add(e.path.slice(0, e.path.lastIndexOf("/")));
    }
    removedFiles++;
    removedBytes += e.size;
  }
  for (const d of touchedDirs) await Deno.remove(d).catch(() => {}); // only if empty
  return { removedFiles, removedBytes, before, after: summarize(dir, left) };
}

/** Parses a duration such as `30d`, `12h`, `90m`, `45s`, `2w` (or plain seconds) into ms. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?$/i.exec(text.trim());
  if (!m) throw new CacheAdminError(`not a duration: ${JSON.stringify(text)} (e.g. 30d, 12h, 90m)`);
  const unit = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[
    (m[2] ?? "s").toLowerCase() as "s"
  ];
  return Number(m[1]) * unit * 1000;
}
