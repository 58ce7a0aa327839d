/**
 * crfs's disk cache, shared by every mount and command that points at the same directory:
 *
 * - `chunks/`: decompressed chunks keyed by layer digest and chunk offset, each file ending in
 *   the sha256 of its bytes, checked on every read (and against the TOC's chunk digest);
 * - `tails/`: the end of each layer blob (footer and TOC), so reopening a layer reads nothing;
 * - `objects/`: manifests and configs by digest, checked against the digest when read;
 * - `tags/`: the digest a tag resolved to and when, honoured for the tag TTL.
 *
 * Files are written to a temporary name and renamed, so a reader never sees half a file and
 * concurrent processes never clash. Chunks, tails and objects share one size budget with
 * least-recently-used eviction; a file evicted by another process is just a miss.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { ChunkCache, ChunkInfo } from "../format/reader.ts";
import type { RangeSource } from "../format/range_source.ts";

const sha256Hex = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** The default cache directory: /var/cache/crfs for root, ~/.cache/crfs otherwise. */
export function defaultCacheDir(): string {
  if (Deno.uid() === 0) return "/var/cache/crfs";
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  return `${xdg || `${Deno.env.get("HOME") ?? "/tmp"}/.cache`}/crfs`;
}

/** Counters of the disk cache. */
export interface DiskCacheStats {
  hits: number;
  misses: number;
  writes: number;
  evictions: number;
  /** Entries whose bytes did not match their hash (deleted, treated as misses). */
  corrupt: number;
  bytes: number;
}

/** Options of {@link DiskCache.open}. */
export interface DiskCacheOptions {
  /** Size budget in bytes. Default 10 GiB. */
  maxBytes?: number;
  /** Called once per problem (e.g. a full disk). */
  log?: (line: string) => void;
}

/** The disk cache (see the module documentation). */
export class DiskCache implements ChunkCache {
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
  readonly #log: (line: string) => void;
  #writeFailed = false;
  readonly #pending = new Set<Promise<void>>();

  private constructor(dir: string, opts: DiskCacheOptions) {
    this.dir = dir;
    this.maxBytes = opts.maxBytes ?? 10 * 1024 ** 3;
    this.#log = opts.log ?? ((l) => console.error(l));
  }

  /** Opens (creating if needed) the cache at `dir` and indexes what is there. */
  static async open(dir: string, opts: DiskCacheOptions = {}): Promise<DiskCache> {
    const c = new DiskCache(dir, opts);
    for (const sub of ["chunks", "tails", "objects", "tags", "repos", "tmp"]) {
      await Deno.mkdir(`${dir}/${sub}`, { recursive: true });
    }
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
    for (const sub of ["chunks", "tails", "objects"]) await walk(`${dir}/${sub}`);
    found.sort((a, b) => a.mtime - b.mtime);
    for (const f of found) c.#account(f.path, f.size);
    await c.#evict();
    return c;
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

  async #evict(): Promise<void> {
    for (const [path, size] of this.#lru) {
      if (this.stats.bytes <= this.maxBytes) break;
      this.#lru.delete(path);
      this.stats.bytes -= size;
      this.stats.evictions++;
      await Deno.remove(path).catch(() => {});
    }
  }

  /** Writes `bytes` to `path` atomically and accounts for it. */
  async #write(path: string, bytes: Uint8Array, accounted = true): Promise<void> {
    if (this.#writeFailed) return;
    const tmp = `${this.dir}/tmp/${crypto.randomUUID()}`;
    try {
      await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
      await Deno.writeFile(tmp, bytes);
      await Deno.rename(tmp, path);
      this.stats.writes++;
      if (accounted) {
        this.#account(path, bytes.length);
        await this.#evict();
      }
    } catch (e) {
      await Deno.remove(tmp).catch(() => {});
      this.#writeFailed = true;
      this.#log(
        `crfs: cache: cannot write to ${this.dir} (${(e as Error).message}); caching stops`,
      );
    }
  }

  async #read(path: string): Promise<Uint8Array | undefined> {
    try {
      const b = await Deno.readFile(path);
      this.#touch(path);
      return b;
    } catch {
      this.#lru.delete(path);
      return undefined;
    }
  }

  async #drop(path: string): Promise<void> {
    const size = this.#lru.get(path);
    if (size !== undefined) {
      this.#lru.delete(path);
      this.stats.bytes -= size;
    }
    this.stats.corrupt++;
    await Deno.remove(path).catch(() => {});
  }

  #chunkPath(key: string): string {
    // Keys are "<layer digest>:<offset>".
    const [algo, hex, offset] = key.split(":");
    return `${this.dir}/chunks/${hex.slice(0, 2)}/${algo}-${hex}/${offset}`;
  }

  /** A cached chunk, verified; undefined on a miss. */
  async get(key: string, info: ChunkInfo): Promise<Uint8Array | undefined> {
    const path = this.#chunkPath(key);
    const b = await this.#read(path);
    if (!b) {
      this.stats.misses++;
      return undefined;
    }
    const data = b.subarray(0, b.length - 64);
    const hash = new TextDecoder().decode(b.subarray(b.length - 64));
    const actual = sha256Hex(data);
    if (
      b.length !== info.size + 64 || hash !== actual ||
      (info.digest && info.digest !== `sha256:${actual}`)
    ) {
      await this.#drop(path);
      this.stats.misses++;
      return undefined;
    }
    this.stats.hits++;
    return data;
  }

  /** Stores a chunk (in the background; {@link flush} waits for it). */
  set(key: string, value: Uint8Array, info: ChunkInfo): void {
    const hex = info.digest?.startsWith("sha256:") ? info.digest.slice(7) : sha256Hex(value);
    const file = new Uint8Array(value.length + 64);
    file.set(value);
    file.set(new TextEncoder().encode(hex), value.length);
    const p = this.#write(this.#chunkPath(key), file);
    this.#pending.add(p);
    p.finally(() => this.#pending.delete(p));
  }

  /** Waits for background writes (before a command exits). */
  async flush(): Promise<void> {
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
  }

  /** A manifest or config by digest, checked against the digest. */
  async object(digest: string): Promise<Uint8Array | undefined> {
    if (!/^sha256:[0-9a-f]{64}$/.test(digest)) return undefined;
    const path = `${this.dir}/objects/${digest.slice(7)}`;
    const b = await this.#read(path);
    if (b && `sha256:${sha256Hex(b)}` !== digest) {
      await this.#drop(path);
      return undefined;
    }
    return b;
  }

  /** Stores a manifest or config whose bytes match `digest`. */
  async putObject(digest: string, bytes: Uint8Array): Promise<void> {
    if (!/^sha256:[0-9a-f]{64}$/.test(digest) || `sha256:${sha256Hex(bytes)}` !== digest) return;
    await this.#write(`${this.dir}/objects/${digest.slice(7)}`, bytes);
  }

  #tagPath(ref: string): string {
    return `${this.dir}/tags/${sha256Hex(new TextEncoder().encode(ref))}`;
  }

  /** The digest `ref` (host/repo:tag@platform) resolved to, if recorded less than `ttlMs` ago. */
  async tag(ref: string, ttlMs: number): Promise<string | undefined> {
    try {
      const rec = JSON.parse(await Deno.readTextFile(this.#tagPath(ref)));
      if (
        rec.ref === ref && Date.now() - rec.at < ttlMs && /^sha256:[0-9a-f]{64}$/.test(rec.digest)
      ) {
        return rec.digest;
      }
    } catch { /* no record */ }
    return undefined;
  }

  /** Records what `ref` resolved to now. */
  async putTag(ref: string, digest: string): Promise<void> {
    const rec = JSON.stringify({ ref, digest, at: Date.now() });
    await this.#write(this.#tagPath(ref), new TextEncoder().encode(rec), false);
  }

  /** Records that repository `name` (host/repository) answered now. */
  async putRepository(name: string): Promise<void> {
    const rec = JSON.stringify({ name, at: Date.now() });
    const path = `${this.dir}/repos/${sha256Hex(new TextEncoder().encode(name))}`;
    await this.#write(path, new TextEncoder().encode(rec), false);
  }

  /** Repositories (host/repository) recorded less than `ttlMs` ago. */
  async repositories(ttlMs: number): Promise<string[]> {
    const out: string[] = [];
    try {
      for await (const e of Deno.readDir(`${this.dir}/repos`)) {
        try {
          const rec = JSON.parse(await Deno.readTextFile(`${this.dir}/repos/${e.name}`));
          if (typeof rec.name === "string" && Date.now() - rec.at < ttlMs) out.push(rec.name);
        } catch { /* a damaged record is no record */ }
      }
    } catch { /* no records */ }
    return out;
  }

  /** Wraps a layer blob's source so reads of its end (footer and TOC) are kept on disk. */
  tailCaching(digest: string, source: RangeSource): RangeSource {
    return new TailCachingSource(this, digest, source);
  }

  /** @internal The cached tail of a blob: its start offset and bytes. */
  async readTail(digest: string): Promise<{ start: number; bytes: Uint8Array } | undefined> {
    const b = await this.#read(`${this.dir}/tails/${digest.replace(":", "-")}`);
    if (!b || b.length < 8) return undefined;
    const start = Number(new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0));
    return { start, bytes: b.subarray(8) };
  }

  /** @internal Stores the tail of a blob starting at `start`. */
  async writeTail(digest: string, start: number, bytes: Uint8Array): Promise<void> {
    const file = new Uint8Array(8 + bytes.length);
    new DataView(file.buffer).setBigUint64(0, BigInt(start));
    file.set(bytes, 8);
    await this.#write(`${this.dir}/tails/${digest.replace(":", "-")}`, file);
  }

  /** Forgets a blob's cached tail (after it failed to parse). */
  async dropTail(digest: string): Promise<void> {
    await this.#drop(`${this.dir}/tails/${digest.replace(":", "-")}`);
  }
}

/** How close to the end of a blob a read must end to count as a tail read. */
const TAIL_SLACK = 64;

/**
 * A blob source that serves reads of the blob's end from the disk cache and stores them there:
 * opening a layer a second time (another mount, another command) reads nothing from the
 * registry. Other reads pass through.
 */
class TailCachingSource implements RangeSource {
  readonly #cache: DiskCache;
  readonly #digest: string;
  readonly #source: RangeSource;
  #tail?: Promise<{ start: number; bytes: Uint8Array } | undefined>;

  constructor(cache: DiskCache, digest: string, source: RangeSource) {
    this.#cache = cache;
    this.#digest = digest;
    this.#source = source;
  }

  get size(): number {
    return this.#source.size;
  }

  async read(offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    const end = Math.min(offset + length, this.size);
    this.#tail ??= this.#cache.readTail(this.#digest);
    const tail = await this.#tail;
    if (tail && offset >= tail.start && end <= tail.start + tail.bytes.length) {
      return tail.bytes.subarray(offset - tail.start, end - tail.start);
    }
    const bytes = await this.#source.read(offset, length, signal);
    if (end >= this.size - TAIL_SLACK && bytes.length === end - offset) {
      // Keep the union of what the reader asked for at the end of the blob.
      let start = offset;
      let merged = bytes;
      if (tail && tail.start + tail.bytes.length >= offset && tail.start < offset) {
        merged = new Uint8Array(end - tail.start);
        merged.set(tail.bytes.subarray(0, offset - tail.start));
        merged.set(bytes, offset - tail.start);
        start = tail.start;
      } else if (tail && tail.start >= offset && tail.start + tail.bytes.length > end) {
        merged = new Uint8Array(tail.start + tail.bytes.length - offset);
        merged.set(bytes);
        merged.set(tail.bytes.subarray(end - tail.start), end - offset);
      }
      const updated = { start, bytes: merged };
      this.#tail = Promise.resolve(updated);
      await this.#cache.writeTail(this.#digest, start, merged);
    }
    return bytes;
  }
}

/** A fast cache in front of a slower one: hits in the second are copied into the first. */
export class TieredChunkCache implements ChunkCache {
  readonly #front: ChunkCache;
  readonly #back: ChunkCache;
  constructor(front: ChunkCache, back: ChunkCache) {
    this.#front = front;
    this.#back = back;
  }
  async get(key: string, info: ChunkInfo): Promise<Uint8Array | undefined> {
    const hit = await this.#front.get(key, info);
    if (hit) return hit;
    const slow = await this.#back.get(key, info);
    if (slow) this.#front.set(key, slow, info);
    return slow;
  }
  set(key: string, value: Uint8Array, info: ChunkInfo): void {
    this.#front.set(key, value, info);
    this.#back.set(key, value, info);
  }
}
