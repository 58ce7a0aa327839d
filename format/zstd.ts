/**
 * Zstandard frames (RFC 8878), the unit a zstd:chunked blob is made of: compressing bytes into
 * one frame, walking a buffer frame by frame without decompressing it (every frame's extent is
 * known from its block headers, so truncated frames and frames that lie about their size are
 * caught before the decoder sees them), skippable frames for metadata, and decompression with a
 * hard limit on the output.
 *
 * The decoder is the native one of `node:zlib` (as fast as its inflate here). It is handed one
 * checked data frame at a time: on its own it accepts a truncated frame silently, decodes only
 * the first frame of a buffer, and returns nothing when a skippable frame comes first.
 *
 * @module
 */
import zlib from "node:zlib";
import { concat } from "./bytes.ts";

/** Magic number of a zstd data frame (little-endian on disk: `28 b5 2f fd`). */
export const ZSTD_MAGIC = 0xfd2fb528;
/** First of the 16 skippable-frame magic numbers (`50 2a 4d 18` … `5f 2a 4d 18`). */
export const SKIPPABLE_MAGIC = 0x184d2a50;
/** Bytes before a skippable frame's payload: magic and payload length. */
export const SKIPPABLE_HEADER_SIZE = 8;

/** A malformed or corrupt zstd stream. */
export class ZstdError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ZstdError";
  }
}

/** Decompressed output would exceed the caller's limit. */
export class ZstdLimitError extends ZstdError {
  constructor(limit: number) {
    super(`zstd: frame decompresses to more than ${limit} bytes`);
    this.name = "ZstdLimitError";
  }
}

/** Where one frame lies in a buffer. */
export interface ZstdFrame {
  /** Offset of the frame's magic number. */
  start: number;
  /** Offset just past the frame. */
  end: number;
  /** True for skippable frames (metadata the decoder ignores). */
  skippable: boolean;
  /** Skippable frames: offset of the payload. */
  payloadStart?: number;
  /** Data frames: the content size the header declares, if it declares one. */
  contentSize?: number;
}

// deno-lint-ignore no-explicit-any
const z = zlib as any;

/** True when `b` starts with a zstd data frame or a skippable frame. */
export function isZstd(b: Uint8Array): boolean {
  if (b.length < 4) return false;
  const m = (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
  return m === ZSTD_MAGIC || (m & 0xfffffff0) === SKIPPABLE_MAGIC;
}

/**
 * The frame starting at `off` in `buf`, found by reading its header and block headers only.
 * Throws {@link ZstdError} when the bytes there are not one whole frame.
 */
export function zstdFrameAt(buf: Uint8Array, off: number): ZstdFrame {
  if (off < 0 || buf.length - off < 8) throw new ZstdError("zstd: truncated frame header");
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magic = dv.getUint32(off, true);
  if ((magic & 0xfffffff0) === SKIPPABLE_MAGIC) {
    const size = dv.getUint32(off + 4, true);
    const end = off + SKIPPABLE_HEADER_SIZE + size;
    if (end > buf.length) throw new ZstdError("zstd: skippable frame runs past the data");
    return { start: off, end, skippable: true, payloadStart: off + SKIPPABLE_HEADER_SIZE };
  }
  if (magic !== ZSTD_MAGIC) throw new ZstdError("zstd: bad magic (not a zstd frame)");
  const fhd = buf[off + 4];
  if (fhd & 0x08) throw new ZstdError("zstd: reserved bit set in frame header");
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd >> 5) & 1;
  const checksum = (fhd >> 2) & 1;
  const dictFlag = fhd & 3;
  let p = off + 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][dictFlag];
  const fcsBytes = [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag];
  if (p + fcsBytes > buf.length) throw new ZstdError("zstd: truncated frame header");
  let contentSize: number | undefined;
  if (fcsBytes === 1) contentSize = buf[p];
  else if (fcsBytes === 2) contentSize = dv.getUint16(p, true) + 256;
  else if (fcsBytes === 4) contentSize = dv.getUint32(p, true);
  else if (fcsBytes === 8) {
    contentSize = dv.getUint32(p, true) + dv.getUint32(p + 4, true) * 2 ** 32;
  }
  p += fcsBytes;
  for (;;) {
    if (p + 3 > buf.length) throw new ZstdError("zstd: frame truncated (block header)");
    const h = buf[p] | (buf[p + 1] << 8) | (buf[p + 2] << 16);
    p += 3;
    const last = h & 1;
    const type = (h >> 1) & 3;
    const size = h >>> 3;
    if (type === 3) throw new ZstdError("zstd: reserved block type");
    if (size > 128 << 10) throw new ZstdError("zstd: block larger than 128 KiB");
    p += type === 1 ? 1 : size;
    if (p > buf.length) throw new ZstdError("zstd: frame truncated (block data)");
    if (last) break;
  }
  if (checksum) p += 4;
  if (p > buf.length) throw new ZstdError("zstd: frame truncated (checksum)");
  return { start: off, end: p, skippable: false, contentSize };
}

/** Every frame of `buf`, which must hold whole frames only. */
export function zstdFrames(buf: Uint8Array): ZstdFrame[] {
  const out: ZstdFrame[] = [];
  for (let off = 0; off < buf.length;) {
    const f = zstdFrameAt(buf, off);
    out.push(f);
    off = f.end;
  }
  return out;
}

/**
 * Compresses `data` into one zstd frame (content size and checksum recorded), level 1–19, in a
 * buffer of its own.
 */
export function zstdCompress(data: Uint8Array, level = 3): Uint8Array {
  const C = zlib.constants as unknown as Record<string, number>;
  const out: Uint8Array = z.zstdCompressSync(data, {
    pledgedSrcSize: data.length,
    params: {
      [C.ZSTD_c_compressionLevel]: level,
      [C.ZSTD_c_checksumFlag]: 1,
      [C.ZSTD_c_contentSizeFlag]: 1,
    },
  });
  const frame = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  // A buffer of its own (small results may share a pooled one), so it can be transferred.
  return frame.byteOffset === 0 && frame.byteLength === frame.buffer.byteLength
    ? frame
    : frame.slice();
}

/** `payload` wrapped in a skippable frame (magic `50 2a 4d 18`). */
export function skippableFrame(payload: Uint8Array): Uint8Array {
  if (payload.length > 0xffffffff) throw new RangeError("skippable frame payload too big");
  const out = new Uint8Array(SKIPPABLE_HEADER_SIZE + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, SKIPPABLE_MAGIC, true);
  dv.setUint32(4, payload.length, true);
  out.set(payload, SKIPPABLE_HEADER_SIZE);
  return out;
}

/**
 * Decompresses the one data frame `frame` (exactly its bytes), refusing more than `maxOutput`
 * bytes and a content size that differs from what the header declares.
 */
export function decompressFrame(frame: Uint8Array, f: ZstdFrame, maxOutput: number): Uint8Array {
  if (f.contentSize !== undefined && f.contentSize > maxOutput) throw new ZstdLimitError(maxOutput);
  let out: Uint8Array;
  try {
    out = z.zstdDecompressSync(frame, { maxOutputLength: Math.max(1, maxOutput) });
  } catch (e) {
    if ((e as { code?: string }).code === "ERR_BUFFER_TOO_LARGE") {
      throw new ZstdLimitError(maxOutput);
    }
    throw new ZstdError(`zstd: corrupt frame (${(e as Error).message})`);
  }
  if (out.length > maxOutput) throw new ZstdLimitError(maxOutput);
  if (f.contentSize !== undefined && out.length !== f.contentSize) {
    throw new ZstdError(
      `zstd: frame holds ${out.length} bytes, its header says ${f.contentSize}`,
    );
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/**
 * Decompresses the first data frame at or after `off` (skippable frames before it are
 * skipped). Returns its bytes and the offset just past it.
 */
export function unzstdFrame(
  buf: Uint8Array,
  off = 0,
  maxOutput = 1 << 30,
): { data: Uint8Array; end: number } {
  for (;;) {
    const f = zstdFrameAt(buf, off);
    if (f.skippable) {
      off = f.end;
      continue;
    }
    return { data: decompressFrame(buf.subarray(f.start, f.end), f, maxOutput), end: f.end };
  }
}

/**
 * Decompresses every data frame of `buf` (whole frames only; skippable ones skipped) and
 * concatenates them, refusing more than `maxOutput` bytes in all.
 */
export function unzstd(buf: Uint8Array, maxOutput = 1 << 30): Uint8Array {
  const parts: Uint8Array[] = [];
  let total = 0;
  for (const f of zstdFrames(buf)) {
    if (f.skippable) continue;
    const d = decompressFrame(buf.subarray(f.start, f.end), f, maxOutput - total);
    parts.push(d);
    total += d.length;
  }
  return concat(parts, false);
}

/**
 * The first `want` decompressed bytes of the data frame `frame`, decoding no more than needed
 * (for a frame whose whole content is bigger than the caller wants to hold).
 */
export async function unzstdPrefix(frame: Uint8Array, want: number): Promise<Uint8Array> {
  const out = new Uint8Array(want);
  let got = 0;
  const d = z.createZstdDecompress();
  await new Promise<void>((resolve, reject) => {
    d.on("data", (c: Uint8Array) => {
      const n = Math.min(c.length, want - got);
      out.set(c.subarray(0, n), got);
      got += n;
      if (got >= want) {
        d.destroy();
        resolve();
      }
    });
    d.on("error", (e: Error) => reject(new ZstdError(`zstd: corrupt frame (${e.message})`)));
    d.on("end", () => resolve());
    d.on("close", () => resolve());
    d.end(frame);
  });
  if (got < want) throw new ZstdError(`zstd: frame holds ${got} bytes, ${want} wanted`);
  return out;
}

/** Marks the end of a data frame in {@link frameStream}'s output. */
const FRAME_END = Symbol("zstd frame end");

/**
 * Splits a stream of zstd frames into the bytes of each data frame (skippable frames dropped),
 * each frame followed by {@link FRAME_END}, reading headers only. Throws {@link ZstdError} on
 * malformed or truncated input.
 */
async function* frameStream(
  input: AsyncIterable<Uint8Array>,
): AsyncGenerator<Uint8Array | typeof FRAME_END> {
  type State = "header" | "skip" | "blockHeader" | "block" | "checksum";
  let state: State = "header";
  const head = new Uint8Array(18); // magic, frame header (or skippable size)
  let headLen = 0;
  let headNeed = 5;
  const block = new Uint8Array(3);
  let blockLen = 0;
  let remaining = 0;
  let last = false;
  let checksum = false;
  for await (const chunk of input) {
    let i = 0;
    let run = -1; // start of the bytes of this chunk passed through
    const pass = function* (to: number): Generator<Uint8Array> {
      if (run >= 0 && to > run) yield chunk.subarray(run, to);
      run = -1;
    };
    while (i < chunk.length) {
      if (state === "header") {
        head[headLen++] = chunk[i++];
        if (headLen === 4 || headLen === 5) {
          const magic = (head[0] | (head[1] << 8) | (head[2] << 16) | (head[3] << 24)) >>> 0;
          const skippable = (magic & 0xfffffff0) === SKIPPABLE_MAGIC;
          if (!skippable && magic !== ZSTD_MAGIC) throw new ZstdError("zstd: bad magic");
          if (skippable) headNeed = 8;
          else if (headLen === 5) {
            const fhd = head[4];
            if (fhd & 0x08) throw new ZstdError("zstd: reserved bit set in frame header");
            const single = (fhd >> 5) & 1;
            checksum = ((fhd >> 2) & 1) === 1;
            headNeed = 5 + (single ? 0 : 1) + [0, 1, 2, 4][fhd & 3] +
              [single ? 1 : 0, 2, 4, 8][fhd >> 6];
          }
        }
        if (headLen < headNeed) continue;
        const magic = (head[0] | (head[1] << 8) | (head[2] << 16) | (head[3] << 24)) >>> 0;
        if ((magic & 0xfffffff0) === SKIPPABLE_MAGIC) {
          remaining = new DataView(head.buffer).getUint32(4, true);
          state = "skip";
        } else {
          yield head.slice(0, headLen);
          state = "blockHeader";
          blockLen = 0;
          run = i;
        }
        headLen = 0;
        headNeed = 5;
      } else if (state === "skip") {
        const n = Math.min(remaining, chunk.length - i);
        i += n;
        remaining -= n;
        if (remaining === 0) state = "header";
      } else if (state === "blockHeader") {
        if (run < 0) run = i;
        block[blockLen++] = chunk[i++];
        if (blockLen < 3) continue;
        const h = block[0] | (block[1] << 8) | (block[2] << 16);
        last = (h & 1) === 1;
        const type = (h >> 1) & 3;
        const size = h >>> 3;
        if (type === 3) throw new ZstdError("zstd: reserved block type");
        if (size > 128 << 10) throw new ZstdError("zstd: block larger than 128 KiB");
        remaining = type === 1 ? 1 : size;
        blockLen = 0;
        state = "block";
      } else {
        if (run < 0) run = i;
        const n = Math.min(remaining, chunk.length - i);
        i += n;
        remaining -= n;
      }
      if ((state === "block" || state === "checksum") && remaining === 0) {
        if (state === "block" && !last) {
          state = "blockHeader";
        } else if (state === "block" && checksum) {
          state = "checksum";
          remaining = 4;
        } else {
          yield* pass(i);
          yield FRAME_END;
          state = "header";
        }
      }
    }
    yield* pass(i);
  }
  if (state !== "header" || headLen > 0) throw new ZstdError("zstd: stream truncated");
}

/** One streaming decoder for one data frame, read with backpressure (bounded memory). */
class FrameDecoder {
  readonly #d = z.createZstdDecompress({ chunkSize: 1 << 20 });
  #ended = false;
  #error?: Error;
  #wake?: () => void;
  constructor() {
    const kick = () => {
      const w = this.#wake;
      this.#wake = undefined;
      w?.();
    };
    this.#d.on("readable", kick);
    this.#d.on("drain", kick);
    this.#d.on("end", () => {
      this.#ended = true;
      kick();
    });
    this.#d.on("error", (e: Error) => {
      this.#error = new ZstdError(`zstd: corrupt frame (${e.message})`);
      kick();
    });
  }
  #wait(): Promise<void> {
    return new Promise((resolve) => (this.#wake = resolve));
  }
  *#ready(): Generator<Uint8Array> {
    for (let c = this.#d.read(); c !== null; c = this.#d.read()) {
      yield new Uint8Array(c.buffer, c.byteOffset, c.byteLength);
    }
    if (this.#error) throw this.#error;
  }
  /** Writes frame bytes; yields output until the decoder takes more input. */
  async *write(b: Uint8Array): AsyncGenerator<Uint8Array> {
    this.#d.write(b);
    for (;;) {
      yield* this.#ready();
      if (!this.#d.writableNeedDrain) return;
      await this.#wait();
    }
  }
  /** Ends the frame; yields the rest of its output. */
  async *finish(): AsyncGenerator<Uint8Array> {
    this.#d.end();
    for (;;) {
      yield* this.#ready();
      if (this.#ended) return;
      await this.#wait();
    }
  }
  /** Stops the decoder early. */
  destroy(): void {
    this.#d.destroy();
  }
}

/**
 * Decompresses a stream of zstd frames (a plain `.tar.zst` layer, or a zstd:chunked blob read
 * as one), skipping skippable frames, in bounded memory whatever the frames' sizes.
 */
export async function* unzstdStream(input: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  let d: FrameDecoder | undefined;
  try {
    for await (const t of frameStream(input)) {
      if (t === FRAME_END) {
        if (d) yield* d.finish();
        d = undefined;
        continue;
      }
      d ??= new FrameDecoder();
      yield* d.write(t);
    }
  } finally {
    d?.destroy();
  }
}
