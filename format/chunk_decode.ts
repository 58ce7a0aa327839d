/**
 * Decompressing one chunk from its gzip member or zstd frame and checking it: the CRC and length
 * of the whole member (the frame's structure, content size and checksum) when it is small enough
 * to decompress whole, the size the TOC gives, and the chunk's sha256 digest when the TOC has
 * one. Pure, so it runs on the main thread or in a worker. Gzip members inflate through libdeflate
 * when it is there (`gzip_member.ts`), else through `node:zlib` (`gzip.ts`, imported only then);
 * zstd frames through `zstd.ts`, imported on the first zstd chunk. A gzip chunk decoded through
 * libdeflate loads nothing of Node's.
 *
 * @module
 */
import { GzipError, GzipLimitError, inflateMemberFast } from "./gzip_member.ts";
import { sha256HexBulk } from "./sha256.ts";
import { ZstdError, zstdFrameAt, ZstdLimitError } from "./zstd_frame.ts";

/** How chunks of a blob are compressed: gzip members (stargz, eStargz) or zstd frames. */
export type ChunkCodec = "gzip" | "zstd";

/** Decompressed bytes allowed after a chunk inside its member (tar headers of later entries). */
export const MEMBER_SLACK = 16 << 20;

/**
 * Largest chunk decoded, counting the bytes before it in a shared member (`innerOffset`):
 * 128 MiB, the most the image store's chunk cache holds. Writers use 4 MiB; a TOC asking for
 * more is refused before anything is inflated or allocated.
 */
export const MAX_CHUNK_BYTES = 128 << 20;

/** Bytes past a chunk's end its own buffer may hold (see {@link decodeChunk}). */
const OWN_SLACK = 4096;
/** Chunks smaller than this are always copied (small buffers may be slices of a shared pool). */
const OWN_MIN = 64 << 10;

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
  /** Default `gzip`. */
  codec?: ChunkCodec;
}

/**
 * Decompressed members of one fetched buffer by their `start`, so that chunks sharing a member
 * (eStargz `innerOffset`) decompress it once. Valid for one buffer only.
 */
export type MemberMemo = Map<number, Uint8Array>;

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
  memo?: MemberMemo,
): Promise<Uint8Array> {
  const compressed = bytes.subarray(c.start, c.end);
  const want = c.innerOffset + c.size;
  if (want > MAX_CHUNK_BYTES) {
    throw new ChunkDecodeError(
      `chunk of ${c.size} bytes at ${c.innerOffset} in its member exceeds the ${
        MAX_CHUNK_BYTES >> 20
      } MiB limit`,
    );
  }
  let data = memo?.get(c.start);
  if (!data || data.length < want) {
    try {
      data = c.codec === "zstd"
        ? await zstdMember(compressed, want)
        : await gzipMember(compressed, want);
    } catch (e) {
      const known = e instanceof GzipError || e instanceof ZstdError;
      throw new ChunkDecodeError(known ? (e as Error).message : String(e));
    }
    if (memo && c.innerOffset + c.size < data.length) memo.set(c.start, data);
  }
  if (data.length < want) {
    throw new ChunkDecodeError(`member holds ${data.length} bytes, the TOC says ${want}`);
  }
  const chunk = data.subarray(c.innerOffset, want);
  if (verify && c.digest) {
    const got = `sha256:${await sha256HexBulk(chunk)}`;
    if (got !== c.digest) throw new ChunkDecodeError("fails its digest");
  }
  // Keep only the chunk's bytes alive, in a buffer of its own: a copy, unless the chunk starts
  // its member and fills nearly all of a buffer that no other chunk uses (inflating into a
  // buffer of the expected size leaves it a little room; copying it cost a second 4 MiB buffer
  // per chunk).
  const own = chunk.byteOffset === 0 && chunk.byteLength >= OWN_MIN &&
    chunk.buffer.byteLength - chunk.byteLength <= OWN_SLACK && memo?.get(c.start) !== data;
  return own ? chunk : chunk.slice();
}

/**
 * The member at the start of `compressed`, whole (CRC checked) or, when huge, its prefix. A
 * member that holds just about its chunks inflates through libdeflate into a buffer of their size
 * (with {@link OWN_SLACK} of room); anything else — no libdeflate, more bytes than that room, bad
 * data — through `node:zlib`, which also gives the errors.
 */
async function gzipMember(compressed: Uint8Array, want: number): Promise<Uint8Array> {
  const fast = inflateMemberFast(compressed, 0, want + OWN_SLACK);
  if (fast) return fast.data;
  const { inflateMember, inflatePrefix } = await import("./gzip.ts");
  try {
    // Whole member: the chunk plus the headers that ride after it.
    return inflateMember(compressed, 0, want + MEMBER_SLACK, want).data;
  } catch (e) {
    if (!(e instanceof GzipLimitError)) throw e;
    // Tens of MB of headers after one chunk: decompress just the chunk.
    return await inflatePrefix(compressed, want);
  }
}

/**
 * The first data frame of `compressed` (its structure, content size and checksum checked), or,
 * when it is huge, its first `want` bytes.
 */
async function zstdMember(compressed: Uint8Array, want: number): Promise<Uint8Array> {
  const { unzstdFrame, unzstdPrefix } = await import("./zstd.ts");
  try {
    return unzstdFrame(compressed, 0, want + MEMBER_SLACK).data;
  } catch (e) {
    if (!(e instanceof ZstdLimitError)) throw e;
    const f = zstdFrameAt(compressed, 0);
    return await unzstdPrefix(compressed.subarray(f.start, f.end), want);
  }
}
