/**
 * Random access to a registry blob with HTTP `Range` requests: each `read` asks for exactly the
 * bytes wanted and accepts only a `206` whose `Content-Range` and body length match. A server
 * that ignores `Range` (answers `200` with the whole blob) is detected: small blobs are then
 * read once, verified against their digest and served from memory; large ones are streamed and
 * sliced per read. A `416`, a wrong range or a short body is an error (the short or wrong ones
 * are retried first) — wrong bytes are never returned.
 *
 * @module
 */
import type { BlobSource } from "./driver.ts";
import { digestLike, digestMismatch } from "./digest.ts";
import { RegistryError } from "./errors.ts";
import { responseError, RetryableError } from "./http.ts";

/**
 * Sends an authenticated, retried `GET` of the blob with `headers` and hands the response to
 * `consume` (inside the retry loop); see `HttpClient.requestWith`.
 */
export type BlobFetch = <T>(
  headers: Record<string, string>,
  consume: (res: Response) => Promise<T>,
  signal?: AbortSignal,
) => Promise<T>;

/** Options for {@link RegistryBlobSource}. */
export interface RegistryBlobSourceOptions {
  /** Names the blob in errors, e.g. `host/repo@sha256:…`. */
  what: string;
  /** Largest blob kept in memory when the server ignores `Range`. Default 16 MiB. */
  wholeBlobLimit?: number;
  /** Debug log sink. */
  log?: (line: string) => void;
}

/** A {@link BlobSource} over HTTP range requests; see the module documentation. */
export class RegistryBlobSource implements BlobSource {
  readonly digest: string;
  readonly size: number;
  /** HTTP responses consumed (for tests and statistics). */
  requests = 0;
  /** Body bytes received. */
  bytesFetched = 0;
  /** Whether the server was seen ignoring `Range`. */
  rangeIgnored = false;
  readonly #fetch: BlobFetch;
  readonly #what: string;
  readonly #limit: number;
  readonly #log?: (line: string) => void;
  #whole?: Promise<Uint8Array>;

  constructor(digest: string, size: number, fetch: BlobFetch, options: RegistryBlobSourceOptions) {
    if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`bad blob size ${size}`);
    this.digest = digest;
    this.size = size;
    this.#fetch = fetch;
    this.#what = options.what;
    this.#limit = options.wholeBlobLimit ?? 16 * 1024 * 1024;
    this.#log = options.log;
  }

  /** Reads `length` bytes at `offset` (fewer only at the end of the blob). */
  async read(offset: number, length: number, signal?: AbortSignal): Promise<Uint8Array> {
    if (
      !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0
    ) {
      throw new RangeError(`bad range offset=${offset} length=${length}`);
    }
    const end = Math.min(offset + length, this.size);
    if (end <= offset) return new Uint8Array(0);
    if (this.#whole) return (await this.#whole).slice(offset, end);
    if (this.rangeIgnored && this.size <= this.#limit) {
      return (await this.#loadWhole(signal)).slice(offset, end);
    }
    const range = `bytes=${offset}-${end - 1}`;
    return await this.#fetch({ range }, async (res) => {
      this.requests++;
      if (res.status === 206) return await this.#partial(res, offset, end);
      if (res.status === 200) {
        this.#noteIgnored();
        if (this.size <= this.#limit) {
          const all = await this.#readWhole(res);
          this.#whole ??= Promise.resolve(all);
          return all.slice(offset, end);
        }
        return await this.#skipTo(res, offset, end);
      }
      if (res.status === 416) {
        await res.body?.cancel();
        throw new RegistryError(
          `${this.#what}: the registry refused bytes ${offset}-${
            end - 1
          } of a ${this.size} byte blob (HTTP 416)`,
          { code: "RANGE_NOT_SATISFIABLE", status: 416, reference: this.#what },
        );
      }
      throw await responseError(res, this.#what);
    }, signal);
  }

  #noteIgnored(): void {
    if (!this.rangeIgnored) {
      this.#log?.(`${this.#what}: the server ignores Range requests; falling back to whole reads`);
    }
    this.rangeIgnored = true;
  }

  #loadWhole(signal?: AbortSignal): Promise<Uint8Array> {
    if (!this.#whole) {
      const p = this.#fetch({}, async (res) => {
        this.requests++;
        if (res.status !== 200) throw await responseError(res, this.#what);
        return await this.#readWhole(res);
      }, signal);
      this.#whole = p;
      p.catch(() => {
        if (this.#whole === p) this.#whole = undefined;
      });
    }
    return this.#whole;
  }

  async #readWhole(res: Response): Promise<Uint8Array> {
    const len = res.headers.get("content-length");
    if (len !== null && Number(len) !== this.size) {
      await res.body?.cancel();
      throw new RegistryError(
        `${this.#what}: the registry sent ${len} bytes for a blob of ${this.size}`,
        {
          code: "BAD_RESPONSE",
          reference: this.#what,
        },
      );
    }
    const all = await this.#readExactly(res, this.size);
    const actual = await digestLike(this.digest, all);
    if (actual !== this.digest) {
      const err = digestMismatch(this.#what, this.digest, actual);
      throw new RegistryError(err.message, {
        code: err.code,
        reference: this.#what,
        detail: err.detail,
        transient: true,
      });
    }
    return all;
  }

  async #partial(res: Response, offset: number, end: number): Promise<Uint8Array> {
    const cr = res.headers.get("content-range");
    const m = cr ? /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i.exec(cr) : null;
    if (!m) {
      await res.body?.cancel();
      throw new RetryableError(
        `206 response with ${
          cr ? `a malformed Content-Range ${JSON.stringify(cr)}` : "no Content-Range"
        }`,
      );
    }
    const [first, last, total] = [Number(m[1]), Number(m[2]), m[3]];
    if (total !== "*" && Number(total) !== this.size) {
      await res.body?.cancel();
      throw new RegistryError(
        `${this.#what}: the registry says the blob is ${total} bytes, expected ${this.size}`,
        {
          code: "BAD_RESPONSE",
          reference: this.#what,
        },
      );
    }
    if (first !== offset || last !== end - 1) {
      await res.body?.cancel();
      throw new RetryableError(
        `asked for bytes ${offset}-${end - 1}, the registry sent ${first}-${last}`,
      );
    }
    return await this.#readExactly(res, end - offset);
  }

  /** Reads exactly `n` bytes of the body; a short or long body is a retryable error. */
  async #readExactly(res: Response, n: number): Promise<Uint8Array> {
    const out = new Uint8Array(n);
    let got = 0;
    if (!res.body) {
      if (n === 0) return out;
      throw new RetryableError(`empty body, expected ${n} bytes`);
    }
    const reader = res.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (got + value.length > n) {
          await reader.cancel();
          throw new RetryableError(`the registry sent more than the ${n} bytes asked for`);
        }
        out.set(value, got);
        got += value.length;
        this.bytesFetched += value.length;
      }
    } finally {
      reader.releaseLock();
    }
    if (got !== n) throw new RetryableError(`body ended after ${got} of ${n} bytes`);
    return out;
  }

  /** Takes bytes [offset, end) from a whole-blob body, discarding the rest. */
  async #skipTo(res: Response, offset: number, end: number): Promise<Uint8Array> {
    const out = new Uint8Array(end - offset);
    if (!res.body) throw new RetryableError("empty body");
    const reader = res.body.getReader();
    let pos = 0;
    try {
      while (pos < end) {
        const { done, value } = await reader.read();
        if (done) break;
        this.bytesFetched += value.length;
        const a = Math.max(offset, pos);
        const b = Math.min(end, pos + value.length);
        if (b > a) out.set(value.subarray(a - pos, b - pos), a - offset);
        pos += value.length;
      }
      if (pos < end) throw new RetryableError(`body ended after ${pos} of ${this.size} bytes`);
      await reader.cancel();
    } finally {
      reader.releaseLock();
    }
    return out;
  }
}
