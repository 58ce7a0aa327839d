/**
 * Streaming tar reader: ustar, PAX (local and global headers) and GNU long name/link entries,
 * over any async stream of byte chunks. Each entry keeps the exact header bytes it was read from,
 * so a writer can copy them verbatim.
 *
 * @module
 */
import {
  BLOCK,
  concat,
  decodeHeaderBlock,
  isZeroBlock,
  paddingFor,
  parsePaxRecords,
  type PaxRecords,
  resolveHeader,
  TarError,
  type TarHeader,
} from "./tar_header.ts";

/** Largest PAX or GNU long-name body accepted (hostile-input bound). */
export const MAX_EXTENSION_BODY = 8 << 20;

/** Buffered exact reads over an async iterable of byte chunks. */
export class ByteReader {
  #it: AsyncIterator<Uint8Array>;
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #eof = false;
  /** Bytes consumed so far. */
  position = 0;

  constructor(input: AsyncIterable<Uint8Array>) {
    this.#it = input[Symbol.asyncIterator]();
  }

  async #fill(n: number): Promise<void> {
    while (this.#buffered < n && !this.#eof) {
      const r = await this.#it.next();
      if (r.done) this.#eof = true;
      else if (r.value.length > 0) {
        this.#chunks.push(r.value);
        this.#buffered += r.value.length;
      }
    }
  }

  /** Reads up to `n` bytes; fewer only at the end of the stream. */
  async read(n: number): Promise<Uint8Array> {
    await this.#fill(n);
    const take = Math.min(n, this.#buffered);
    let out: Uint8Array;
    const first = this.#chunks[0];
    if (first && first.length >= take) {
      out = first.subarray(0, take);
      if (first.length === take) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(take);
    } else {
      out = new Uint8Array(take);
      let o = 0;
      while (o < take) {
        const c = this.#chunks[0];
        const k = Math.min(c.length, take - o);
        out.set(c.subarray(0, k), o);
        o += k;
        if (k === c.length) this.#chunks.shift();
        else this.#chunks[0] = c.subarray(k);
      }
    }
    this.#buffered -= take;
    this.position += take;
    return out;
  }

  /** Reads exactly `n` bytes or throws a truncation error naming `what`. */
  async readExact(n: number, what: string): Promise<Uint8Array> {
    const b = await this.read(n);
    if (b.length !== n) {
      throw new TarError(`tar: stream truncated in ${what} (at byte ${this.position})`);
    }
    return b;
  }

  /** Skips `n` bytes, or throws on truncation. */
  async skip(n: number, what: string): Promise<void> {
    while (n > 0) {
      const b = await this.read(Math.min(n, 1 << 20));
      if (b.length === 0) throw new TarError(`tar: stream truncated in ${what}`);
      n -= b.length;
    }
  }

  /** True when no more bytes will come. */
  async atEnd(): Promise<boolean> {
    await this.#fill(1);
    return this.#buffered === 0;
  }
}

/** One entry of a tar stream. Its content must be read or skipped before the next entry. */
export interface TarEntry {
  header: TarHeader;
  /** Every header block of the entry as read (global/local PAX, GNU long names, the header). */
  rawHeader: Uint8Array;
  /** Content bytes not yet read. */
  readonly remaining: number;
  /** Reads up to `n` content bytes (fewer only when the content ends). */
  read(n: number): Promise<Uint8Array>;
  /** Reads the rest of the content. */
  readAll(): Promise<Uint8Array>;
}

/**
 * Iterates the entries of a tar stream. Stops at the end-of-archive marker (or a clean end of
 * the stream between entries); throws {@link TarError} on malformed or truncated input.
 */
export async function* readTar(input: AsyncIterable<Uint8Array>): AsyncGenerator<TarEntry> {
  const r = new ByteReader(input);
  const global: PaxRecords = new Map();
  while (true) {
    if (await r.atEnd()) return;
    const raws: Uint8Array[] = [];
    let local: PaxRecords | undefined;
    let longName: Uint8Array | undefined;
    let longLink: Uint8Array | undefined;
    let block: Uint8Array;
    let raw;
    while (true) {
      block = await r.readExact(BLOCK, "a header");
      if (isZeroBlock(block)) {
        if (raws.length > 0) throw new TarError("tar: end marker after an extension header");
        return; // end of archive (a second zero block and padding may follow)
      }
      raw = decodeHeaderBlock(block);
      const ext = raw.typeflag;
      if (ext !== "x" && ext !== "g" && ext !== "L" && ext !== "K") break;
      if (raw.size > MAX_EXTENSION_BODY) {
        throw new TarError(`tar: extension header of ${raw.size} bytes is too large`);
      }
      const body = await r.readExact(raw.size, "an extension header");
      const pad = await r.readExact(paddingFor(raw.size), "an extension header");
      raws.push(block.slice(), body.slice(), pad.slice());
      if (ext === "x") local = parsePaxRecords(body, local);
      else if (ext === "g") parsePaxRecords(body, global);
      else if (ext === "L") longName = body.slice();
      else longLink = body.slice();
    }
    raws.push(block.slice());
    let pax = global;
    if (local) {
      pax = new Map(global);
      for (const [k, v] of local) pax.set(k, v);
    }
    if (raw.typeflag === "V") continue; // GNU volume label: not a file
    const header = resolveHeader(raw, pax, longName, longLink);
    // Header-only types carry no content whatever their size field says (as GNU tar and Go's
    // archive/tar read them); regular files and GNU dump directories do.
    const headerOnly = "123456".includes(raw.typeflag);
    const contentSize = headerOnly ? 0 : pax.has("size") ? header.size : raw.size;
    const entry = new StreamEntry(r, header, concat(raws), contentSize);
    yield entry;
    await entry.finish();
  }
}

class StreamEntry implements TarEntry {
  #r: ByteReader;
  #left: number;
  #size: number;
  header: TarHeader;
  rawHeader: Uint8Array;
  constructor(r: ByteReader, header: TarHeader, rawHeader: Uint8Array, size: number) {
    this.#r = r;
    this.header = header;
    this.rawHeader = rawHeader;
    this.#left = size;
    this.#size = size;
  }
  get remaining(): number {
    return this.#left;
  }
  async read(n: number): Promise<Uint8Array> {
    const want = Math.min(n, this.#left);
    if (want === 0) return new Uint8Array();
    const b = await this.#r.readExact(want, `the content of ${JSON.stringify(this.header.name)}`);
    this.#left -= want;
    return b;
  }
  async readAll(): Promise<Uint8Array> {
    return (await this.read(this.#left)).slice();
  }
  async finish(): Promise<void> {
    await this.#r.skip(this.#left, `the content of ${JSON.stringify(this.header.name)}`);
    this.#left = 0;
    await this.#r.skip(paddingFor(this.#size), "padding");
  }
}
