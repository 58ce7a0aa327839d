/**
 * Zstandard frames (RFC 8878), the unit a zstd:chunked blob is made of: compressing bytes into
 * one frame and decompression with a hard limit on the output. Walking a buffer frame by frame
 * without decompressing it (every frame's extent is known from its block headers, so truncated
 * frames and frames that lie about their size are caught before the decoder sees them) and
 * skippable frames for metadata live in `zstd_frame.ts`, re-exported here, which needs nothing of
 * Node's: this file (and `node:zlib`) loads only for zstd layers.
 *
 * The decoder is the native one of `node:zlib` (as fast as its inflate here). It is handed one
 * checked data frame at a time: on its own it accepts a truncated frame silently, decodes only
 * the first frame of a buffer, and returns nothing when a skippable frame comes first.
 *
 * @module
 */
import zlib from "node:zlib";
import { concat } from "./bytes.ts";
import {
  SKIPPABLE_MAGIC,
  ZSTD_MAGIC,
  ZstdError,
  type ZstdFrame,
  zstdFrameAt,
  zstdFrames,
  ZstdLimitError,
} from "./zstd_frame.ts";

export {
  isZstd,
  SKIPPABLE_HEADER_SIZE,
  SKIPPABLE_MAGIC,
  skippableFrame,
  ZSTD_MAGIC,
  ZstdError,
  type ZstdFrame,
  zstdFrameAt,
  zstdFrames,
  ZstdLimitError,
} from "./zstd_frame.ts";

// deno-lint-ignore no-explicit-any
const z = zlib as any;

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
