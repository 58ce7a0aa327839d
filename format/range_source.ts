/**
 * The one abstraction the stargz reader reads through: random access to the bytes of a blob.
 * Registry drivers, local files and in-memory buffers all provide it.
 *
 * @module
 */

/** Options of {@link RangeSource.read}. */
export interface RangeReadOptions {
  /**
   * The parts of the range worth keeping in a cache of fetched bytes (blob offsets `[start,
   * end)`, in order): the caller keeps the rest in a form of its own (decoded chunks on disk).
   * Default: all of it. Sources that keep nothing ignore it.
   */
  keep?: readonly (readonly [number, number])[];
}

/** Random read access to an immutable blob of known size. */
export interface RangeSource {
  /** The blob's total size in bytes. */
  readonly size: number;
  /**
   * Returns exactly `length` bytes starting at `offset` (fewer only past the end of the blob).
   * Must reject rather than return partial or wrong data.
   */
  read(
    offset: number,
    length: number,
    signal?: AbortSignal,
    options?: RangeReadOptions,
  ): Promise<Uint8Array>;
  /**
   * Optional: forget any cached copy of `[offset, offset + length)` because its bytes failed a
   * check; the next read must fetch them afresh.
   */
  invalidate?(offset: number, length: number): Promise<void>;
}

/** The rejection every source gives a range that is not two whole numbers ≥ 0. */
export function badRange(offset: number, length: number): RangeError | undefined {
  if (Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0) {
    return undefined;
  }
  return new RangeError(`bad range offset=${offset} length=${length}`);
}

/** A {@link RangeSource} over bytes already in memory. */
export class BytesSource implements RangeSource {
  readonly #bytes: Uint8Array;
  /** Number of `read` calls made, for tests and statistics. */
  reads = 0;
  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
  }
  get size(): number {
    return this.#bytes.length;
  }
  read(offset: number, length: number): Promise<Uint8Array> {
    this.reads++;
    const bad = badRange(offset, length);
    if (bad) return Promise.reject(bad);
    return Promise.resolve(
      this.#bytes.subarray(offset, Math.min(offset + length, this.#bytes.length)),
    );
  }
}

/** A {@link RangeSource} over a local file, read with positioned reads. */
export class FileSource implements RangeSource {
  readonly #file: Deno.FsFile;
  readonly size: number;
  #queue: Promise<unknown> = Promise.resolve();
  reads = 0;
  private constructor(file: Deno.FsFile, size: number) {
    this.#file = file;
    this.size = size;
  }
  /** Opens `path` for reading. */
  static async open(path: string): Promise<FileSource> {
    const file = await Deno.open(path, { read: true });
    const { size } = await file.stat();
    return new FileSource(file, size);
  }
  read(offset: number, length: number): Promise<Uint8Array> {
    this.reads++;
    const bad = badRange(offset, length);
    if (bad) return Promise.reject(bad);
    const end = Math.min(offset + length, this.size);
    const out = new Uint8Array(Math.max(0, end - offset));
    // Seek+read pairs must not interleave: serialize them on one handle.
    const p = this.#queue.then(async () => {
      await this.#file.seek(offset, Deno.SeekMode.Start);
      let got = 0;
      while (got < out.length) {
        const n = await this.#file.read(out.subarray(got));
        if (n === null) throw new Error(`unexpected end of file at ${offset + got}`);
        got += n;
      }
      return out;
    });
    this.#queue = p.catch(() => {});
    return p;
  }
  /** Closes the file. */
  close(): void {
    this.#file.close();
  }
}
