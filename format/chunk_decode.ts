/**
 * Decompressing one chunk from its gzip member and checking it: the CRC and length of the whole
 * member when it is small enough to inflate whole, the size the TOC gives, and the chunk's
 * sha256 digest when the TOC has one. Pure, so it runs on the main thread or in a worker.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { GzipError, GzipLimitError, inflateMember, inflatePrefix } from "./gzip.ts";

/** Decompressed bytes allowed after a chunk inside its member (tar headers of later entries). */
export const MEMBER_SLACK = 16 << 20;

/** Where a chunk is, for decoding. */
export interface ChunkSpec {
  /** Offset of the chunk's member within the bytes handed over. */
  start: number;
  /** End of the chunk's compressed extent within those bytes. */
  end: number;
  /** Offset of the chunk within the decompressed member. */
  innerOffset: number;
  /** Uncompressed size. */
  size: number;
  /** `sha256:…` to check, if any. */
  digest?: string;
}

/** A chunk that failed to decode or verify. */
export class ChunkDecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ChunkDecodeError";
  }
}

/** The chunk's bytes (a buffer of their own), or throws {@link ChunkDecodeError}. */
export async function decodeChunk(
  bytes: Uint8Array,
  c: ChunkSpec,
  verify: boolean,
): Promise<Uint8Array> {
  const compressed = bytes.subarray(c.start, c.end);
  const want = c.innerOffset + c.size;
  let data: Uint8Array;
  try {
    try {
      // Whole member (CRC checked): the chunk plus the headers that ride after it.
      data = inflateMember(compressed, 0, want + MEMBER_SLACK, want).data;
    } catch (e) {
      if (!(e instanceof GzipLimitError)) throw e;
      // Tens of MB of headers after one chunk: decompress just the chunk.
      data = await inflatePrefix(compressed, want);
    }
  } catch (e) {
    throw new ChunkDecodeError(e instanceof GzipError ? e.message : String(e));
  }
  if (data.length < want) {
    throw new ChunkDecodeError(`member holds ${data.length} bytes, the TOC says ${want}`);
  }
  const chunk = data.subarray(c.innerOffset, want);
  if (verify && c.digest) {
    const got = `sha256:${createHash("sha256").update(chunk).digest("hex")}`;
    if (got !== c.digest) throw new ChunkDecodeError("fails its digest");
  }
  // Keep only the chunk's bytes alive, in a buffer of its own.
  const whole = chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength;
  return whole ? chunk : chunk.slice();
}
