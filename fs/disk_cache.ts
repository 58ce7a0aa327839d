/**
 * crfs's disk cache, shared by every mount and command that points at the same directory:
 *
 * - `ranges/`: byte ranges of layer blobs exactly as fetched from the registry (compressed),
 *   one file per range request (or per part of it the reader asks to keep: not the chunks it
 *   keeps decoded in `decoded/`), named by blob digest and offsets. Every read the stargz reader
 *   makes (footer and TOC, chunks) is served from here when a cached range covers it, so a
 *   second mount of an image fetches nothing. Bytes are still checked where they are used: gzip
 *   CRCs and chunk digests on decompression, the TOC digest on open; a range that fails is
 *   dropped ({@link CachingSource.invalidate}) and fetched again.
 * - `decoded/`: big chunks decompressed and verified, kept by `DecodedChunkCache` (see
 *   `decoded_cache.ts`) so that re-reads skip decompression; checked again on every read.
 * - `objects/`: manifests and configs by digest, checked against the digest when read;
 * - `tags/`, `repos/`: what a tag resolved to and which repositories answered, with times,
 *   honoured for the tag TTL.
 *
 * Small chunks are kept compressed: one file per range request instead of one per chunk —
 * measured, per-chunk files made a cold walk over 20,000 small files 40 % slower. Big chunks are
 * kept decoded only: writing their compressed bytes as well cost a cold read of a big file a
 * third more disk writes, and nothing read them again while their decoded files were there (a
 * decoded file dropped or evicted is fetched again). Files are written to a temporary name and
 * renamed, so a reader never sees half a file and concurrent processes never clash. Ranges and
 * objects share one size budget (with decoded chunks) with least-recently-used eviction; a file
 * evicted by another process is just a miss.
 *
 * @module
 */
import type { RangeReadOptions, RangeSource } from "../format/range_source.ts";
import { userDirs } from "./user_dirs.ts";
import { sha256Hex } from "../format/sha256.ts";
import { after } from "../format/timers.ts";

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

/**
 * The default cache directory: /var/cache/crfs for root, `$XDG_CACHE_HOME/crfs` (default
 * ~/.cache/crfs) otherwise (fs/user_dirs.ts).
 */
export function defaultCacheDir(): string {
  return `${userDirs().cache}/crfs`;
}

/** Counters of the disk cache. */
export interface DiskCacheStats {
  /** Reads served from cached ranges. */
  hits: number;
  /** Reads that went to the registry. */
  misses: number;
  writes: number;
  evictions: number;
  /** Cached ranges dropped because their bytes failed a check. */
  corrupt: number;
  /** Bytes on disk (ranges and objects). */
  bytes: number;
}

/** Options of {@link DiskCache.open}. */
export interface DiskCacheOptions {
  /** Size budget in bytes. Default 10 GiB. */
  maxBytes?: number;
  /** Called once per problem (e.g. a full disk). */
  log?: (line: string) => void;
}

/** One cached range of a blob. */
interface CachedRange {
  start: number;
  end: number;
  path: string;
}

/** The disk cache (see the module documentation). */
export class DiskCache {
  readonly dir: string;
  readonly maxBytes: number;
  readonly stats: DiskCacheStats = {
    hits: 0,
    misses: 0,
    writes: 0,
    evictions: 0,
    corrupt: 0,
    bytes: 0,
  };
  /** path → size, least recently used first. */
  readonly #lru = new Map<string, number>();
  /** Blob digest hex → its cached ranges, by start. */
  readonly #ranges = new Map<string, CachedRange[]>();
  readonly #madeDirs = new Set<string>();
  readonly #rescanned = new Map<string, number>();
  readonly #pending = new Set<Promise<void>>();
  /** Files {@link storeFile} is writing, by path. */
  readonly #writing = new Map<string, Promise<boolean>>();
  readonly #log: (line: string) => void;
  #writeFailed = false;
  #indexed: Promise<void> = Promise.resolve();

  private constructor(dir: string, opts: DiskCacheOptions) {
    this.dir = dir;
    this.maxBytes = opts.maxBytes ?? 10 * 1024 ** 3;
    this.#log = opts.log ?? ((l) => console.error(l));
  }

  /**
   * Opens (creating if needed) the cache at `dir`. What is already there is indexed in the
   * background (a big cache takes a while to walk): lookups of a blob index its directory on
   * demand meanwhile, and eviction waits for the walk.
   */
  static async open(dir: string, opts: DiskCacheOptions = {}): Promise<DiskCache> {
    const c = new DiskCache(dir, opts);
    for (const sub of ["ranges", "decoded", "objects", "tags", "repos", "tmp"]) {
      await Deno.mkdir(`${dir}/${sub}`, { recursive: true });
    }
    c.#indexed = c.#indexAll().catch((e) => c.#log(`crfs: cache: cannot index ${dir}: ${e}`));
    return c;
  }

  /** Completes when the initial walk of the cache has. */
  whenIndexed(): Promise<void> {
    return this.#indexed;
  }

  async #indexAll(): Promise<void> {
    const dir = this.dir;
    const found: { path: string; size: number; mtime: number }[] = [];
    const walk = async (d: string) => {
      for await (const e of Deno.readDir(d)) {
        const p = `${d}/${e.name}`;
        if (e.isDirectory) await walk(p);
        else if (e.isFile) {
          const st = await Deno.stat(p).catch(() => undefined);
          if (st) found.push({ path: p, size: st.size, mtime: st.mtime?.getTime() ?? 0 });
        }
      }
    };
    await walk(`${dir}/ranges`);
    await walk(`${dir}/objects`);
    await walk(`${dir}/decoded`);
    found.sort((a, b) => a.mtime - b.mtime);
    // Entries touched since the walk began stay the most recently used.
    const recent = [...this.#lru];
    for (const f of found) {
      if (this.#lru.has(f.path)) continue;
      this.#account(f.path, f.size);
      this.#indexRange(f.path);
    }
    for (const [p] of recent) this.#touch(p);
    await this.#evict(false);
  }

  #account(path: string, size: number): void {
    const old = this.#lru.get(path);
    if (old !== undefined) {
      this.stats.bytes -= old;
      this.#lru.delete(path);
    }
    this.#lru.set(path, size);
    this.stats.bytes += size;
  }

  #touch(path: string): void {
    const size = this.#lru.get(path);
    if (size === undefined) return;
    this.#lru.delete(path);
    this.#lru.set(path, size);
  }

  #forget(path: string): void {
    const size = this.#lru.get(path);
    if (size !== undefined) {
      this.#lru.delete(path);
      this.stats.bytes -= size;
    }
    const m = /\/ranges\/([0-9a-f]{64})\/(\d+)-(\d+)$/.exec(path);
    if (m) {
      const list = this.#ranges.get(m[1]);
      const i = list?.findIndex((r) => r.path === path) ?? -1;
      if (list && i >= 0) list.splice(i, 1);
    }
  }

  async #evict(waitForIndex = true): Promise<void> {
    if (this.stats.bytes <= this.maxBytes) return;
    if (waitForIndex) await this.#indexed;
    for (const [path] of this.#lru) {
      if (this.stats.bytes <= this.maxBytes) break;
      this.#forget(path);
      this.stats.evictions++;
      await Deno.remove(path).catch(() => {});
    }
  }

  /** Writes `bytes` to `path` atomically; `accounted` files count against the budget. */
  async #write(path: string, bytes: Uint8Array | Uint8Array[], accounted = true): Promise<boolean> {
    if (this.#writeFailed) return false;
    const tmp = `${this.dir}/tmp/${crypto.randomUUID()}`;
    try {
      const parent = path.slice(0, path.lastIndexOf("/"));
      if (!this.#madeDirs.has(parent)) {
        await Deno.mkdir(parent, { recursive: true });
        this.#madeDirs.add(parent);
      }
      const parts = bytes instanceof Uint8Array ? [bytes] : bytes;
      let size = 0;
      {
        using f = await Deno.open(tmp, { write: true, createNew: true });
        for (const part of parts) {
          for (let o = 0; o < part.length;) o += await f.write(part.subarray(o));
          size += part.length;
        }
      }
      await Deno.rename(tmp, path);
      this.stats.writes++;
      if (accounted) {
        this.#account(path, size);
        await this.#evict();
      }
      return true;
    } catch (e) {
      await Deno.remove(tmp).catch(() => {});
      this.#writeFailed = true;
      this.#log(
        `crfs: cache: cannot write to ${this.dir} (${(e as Error).message}); caching stops`,
      );
      return false;
    }
  }

  /** Runs a write in the background; {@link flush} waits for it. */
  #background(p: Promise<unknown>): void {
    const q = p.then(() => {}, () => {});
    this.#pending.add(q);
    q.finally(() => this.#pending.delete(q));
  }

  /**
   * Runs `write` (a record for a later process: {@link putObject}, {@link putTag},
   * {@link putRepository}) in the background, once the work under way has had the thread: what
   * asked for the bytes gets them without waiting for the disk. {@link flush} waits for it; a
   * failure stops caching as any write's does.
   */
  later(write: () => Promise<unknown>): void {
    this.#background(deferred().then(write));
  }

  /** Whether files are still written (false once a write failed: caching stopped). */
  get writable(): boolean {
    return !this.#writeFailed;
  }

  /** Waits for background writes (before a command exits). */
  async flush(): Promise<void> {
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
  }

  #indexRange(path: string): void {
    const m = /\/ranges\/([0-9a-f]{64})\/(\d+)-(\d+)$/.exec(path);
    if (!m) return;
    const list = this.#ranges.get(m[1]) ?? [];
    if (list.some((r) => r.path === path)) return;
    list.push({ start: Number(m[2]), end: Number(m[3]), path });
    list.sort((a, b) => a.start - b.start);
    this.#ranges.set(m[1], list);
  }

  #covering(hex: string, start: number, end: number): CachedRange | undefined {
    for (const r of this.#ranges.get(hex) ?? []) {
      if (r.start > start) break;
      if (r.end >= end) return r;
    }
    return undefined;
  }

  /** Picks up ranges other processes cached for this blob since we looked. */
  async #rescan(hex: string): Promise<void> {
    // At most once a second per blob: a cold read of a whole layer misses hundreds of times in
    // a row, and other processes' writes are picked up soon enough.
    const now = Date.now();
    if (now - (this.#rescanned.get(hex) ?? 0) < 1000) return;
    this.#rescanned.set(hex, now);
    try {
      for await (const e of Deno.readDir(`${this.dir}/ranges/${hex}`)) {
        const path = `${this.dir}/ranges/${hex}/${e.name}`;
        if (!this.#lru.has(path) && /^\d+-\d+$/.test(e.name)) {
          const st = await Deno.stat(path).catch(() => undefined);
          if (!st) continue;
          this.#account(path, st.size);
          this.#indexRange(path);
        }
      }
    } catch { /* nothing cached for this blob */ }
  }

  /** @internal Bytes `[start, end)` of a blob from a cached range, or undefined. */
  async readRange(hex: string, start: number, end: number): Promise<Uint8Array | undefined> {
    let r = this.#covering(hex, start, end);
    if (!r) {
      await this.#rescan(hex);
      r = this.#covering(hex, start, end);
    }
    if (!r) return undefined;
    try {
      using f = await Deno.open(r.path);
      const out = new Uint8Array(end - start);
      await f.seek(start - r.start, Deno.SeekMode.Start);
      for (let o = 0; o < out.length;) {
        const n = await f.read(out.subarray(o));
        if (n === null) throw new Error("short cache file");
        o += n;
      }
      this.#touch(r.path);
      return out;
    } catch {
      this.#forget(r.path); // evicted by another process, or truncated
      return undefined;
    }
  }

  /** @internal Stores bytes `[start, start + bytes.length)` of a blob (in the background). */
  storeRange(hex: string, start: number, bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    const path = `${this.dir}/ranges/${hex}/${start}-${start + bytes.length}`;
    // After the reader has used the bytes (a TOC is parsed and answered first): the write's
    // file operations would otherwise take turns with that work on the one thread.
    this.#background(
      deferred().then(() => this.#write(path, bytes)).then((ok) => ok && this.#indexRange(path)),
    );
  }

  /** @internal Drops every cached range of a blob that overlaps `[start, end)`. */
  async dropRanges(hex: string, start: number, end: number): Promise<void> {
    for (const r of [...(this.#ranges.get(hex) ?? [])]) {
      if (r.start < end && r.end > start) {
        this.#forget(r.path);
        this.stats.corrupt++;
        await Deno.remove(r.path).catch(() => {});
      }
    }
  }

  /**
   * @internal Writes `parts` to `path` (under this cache's directory) atomically in the
   * background, counted against the budget.
   */
  storeFile(path: string, parts: Uint8Array[]): void {
    if (this.#writing.has(path)) return; // the same bytes are on their way
    const p = this.#write(path, parts);
    this.#writing.set(path, p);
    p.finally(() => this.#writing.delete(path)).catch(() => {});
    this.#background(p);
  }

  /**
   * @internal The background write of `path` under way ({@link storeFile}): resolves true once
   * the file is there, false if it could not be written; undefined when none is under way.
   */
  writing(path: string): Promise<boolean> | undefined {
    return this.#writing.get(path);
  }

  /**
   * @internal The bytes of a file under this cache's directory, or undefined. `expected`, the
   * size the caller wants, reads that many bytes (a file of another size is returned with its
   * true length, for the caller's check) without asking the file's size first.
   *
   * The bytes land in a buffer made here: `Deno.readFile`'s buffers are made outside the
   * JavaScript heap and V8 does not count them towards collecting, so a re-read of a big file
   * piled up hundreds of MB of dead 4 MiB buffers (measured: 200 reads of a 4 MiB file held
   * 800 MB, against 20 MB when read into buffers made here, and 2.5× faster).
   */
  async readFile(path: string, expected?: number): Promise<Uint8Array | undefined> {
    let bytes: Uint8Array;
    try {
      bytes = await readWhole(path, expected);
    } catch {
      this.#forget(path); // evicted, perhaps by another process
      return undefined;
    }
    if (this.#lru.has(path)) this.#touch(path);
    else this.#account(path, bytes.length); // written by another process
    return bytes;
  }

  /** @internal Whether the cache holds the file at `path` (as far as this process knows). */
  hasFile(path: string): boolean {
    return this.#lru.has(path);
  }

  /** @internal Counts a read of the file at `path` as a use (least recently used goes first). */
  touchFile(path: string): void {
    this.#touch(path);
  }

  /** @internal Removes a file whose bytes failed a check. */
  async dropFile(path: string): Promise<void> {
    this.#forget(path);
    this.stats.corrupt++;
    await Deno.remove(path).catch(() => {});
  }

  /** Wraps a layer blob's source so its reads are served from and kept in the cache. */
  caching(digest: string, source: RangeSource): CachingSource {
    return new CachingSource(this, digest, source);
  }

  /** A manifest or config by digest, checked against the digest. */
  async object(digest: string): Promise<Uint8Array | undefined> {
    if (!DIGEST_RE.test(digest)) return undefined;
    const path = `${this.dir}/objects/${digest.slice(7)}`;
    let b: Uint8Array;
    try {
      b = await Deno.readFile(path);
    } catch {
      return undefined;
    }
    if (`sha256:${await sha256Hex(b)}` !== digest) {
      this.#forget(path);
      this.stats.corrupt++;
      await Deno.remove(path).catch(() => {});
      return undefined;
    }
    this.#touch(path);
    return b;
  }

  /** Stores a manifest or config whose bytes match `digest`. */
  async putObject(digest: string, bytes: Uint8Array): Promise<void> {
    if (!DIGEST_RE.test(digest) || `sha256:${await sha256Hex(bytes)}` !== digest) return;
    await this.#write(`${this.dir}/objects/${digest.slice(7)}`, bytes);
  }

  async #record(sub: string, key: string, value: Record<string, unknown>): Promise<void> {
    const rec = JSON.stringify({ ...value, key, at: Date.now() });
    await this.#write(
      `${this.dir}/${sub}/${await sha256Hex(new TextEncoder().encode(key))}`,
      new TextEncoder().encode(rec),
      false,
    );
  }

  /** The digest `ref` (host/repo:tag@platform) resolved to, if recorded less than `ttlMs` ago. */
  async tag(ref: string, ttlMs: number): Promise<string | undefined> {
    try {
      const path = `${this.dir}/tags/${await sha256Hex(new TextEncoder().encode(ref))}`;
      const rec = JSON.parse(await Deno.readTextFile(path));
      if (rec.key === ref && Date.now() - rec.at < ttlMs && DIGEST_RE.test(rec.digest)) {
        return rec.digest;
      }
    } catch { /* no record */ }
    return undefined;
  }

  /** Records what `ref` resolved to now. */
  putTag(ref: string, digest: string): Promise<void> {
    return this.#record("tags", ref, { digest });
  }

  /** Records that repository `name` (host/repository) answered now. */
  putRepository(name: string): Promise<void> {
    return this.#record("repos", name, {});
  }

  /** Repositories (host/repository) recorded less than `ttlMs` ago. */
  async repositories(ttlMs: number): Promise<string[]> {
    const out: string[] = [];
    try {
      for await (const e of Deno.readDir(`${this.dir}/repos`)) {
        try {
          const rec = JSON.parse(await Deno.readTextFile(`${this.dir}/repos/${e.name}`));
          if (typeof rec.key === "string" && Date.now() - rec.at < ttlMs) out.push(rec.key);
        } catch { /* a damaged record is no record */ }
      }
    } catch { /* no records */ }
    return out;
  }
}

/**
 * Resolves once the thread is free: after the work queued now (a macrotask later, not only
 * after microtasks), so that background writes start behind what a caller waits for.
 */
function deferred(): Promise<void> {
  return new Promise((resolve) => after(0, () => resolve()));
}

/**
 * The bytes of the file at `path`, read into a buffer of `expected` bytes (or of its size): one
 * byte more is asked for, so that a longer file comes back longer than `expected` (by one byte)
 * and a shorter one short.
 */
async function readWhole(path: string, expected?: number): Promise<Uint8Array> {
  using f = await Deno.open(path);
  const size = expected ?? (await f.stat()).size;
  const out = new Uint8Array(size + 1);
  let got = 0;
  while (got < out.length) {
    const n = await f.read(out.subarray(got));
    if (n === null) break;
    got += n;
  }
  return got > size ? out : out.subarray(0, got);
}

/**
 * A blob source backed by the disk cache: reads a cached range covers come from disk; others
 * go to the registry and are kept. {@link invalidate} drops ranges whose bytes failed a check.
 */
export class CachingSource implements RangeSource {
  readonly #cache: DiskCache;
  readonly #hex: string;
  readonly #source: RangeSource;

  constructor(cache: DiskCache, digest: string, source: RangeSource) {
    this.#cache = cache;
    this.#hex = digest.replace(/^sha256:/, "");
    this.#source = source;
  }

  get size(): number {
    return this.#source.size;
  }

  /**
   * Bytes `[offset, offset + length)`: from a cached range, or from the source, keeping what
   * `options.keep` names (default all of it) as ranges.
   */
  async read(
    offset: number,
    length: number,
    signal?: AbortSignal,
    options?: RangeReadOptions,
  ): Promise<Uint8Array> {
    const end = Math.min(offset + length, this.size);
    if (end <= offset) return new Uint8Array();
    const hit = await this.#cache.readRange(this.#hex, offset, end);
    if (hit) {
      this.#cache.stats.hits++;
      return hit;
    }
    this.#cache.stats.misses++;
    const bytes = await this.#source.read(offset, length, signal);
    if (bytes.length === end - offset) {
      for (const [from, to] of options?.keep ?? [[offset, end]]) {
        const a = Math.max(from, offset);
        const b = Math.min(to, end);
        if (a < b) this.#cache.storeRange(this.#hex, a, bytes.subarray(a - offset, b - offset));
      }
    }
    return bytes;
  }

  /** Forgets cached bytes of `[offset, offset + length)`: the next read fetches them again. */
  invalidate(offset: number, length: number): Promise<void> {
    return this.#cache.dropRanges(this.#hex, offset, offset + length);
  }
}
