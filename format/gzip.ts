/**
 * Gzip members (RFC 1952), the unit a stargz blob is made of: deterministic compression of one
 * member, decompression of one member at a position with its CRC and length checked, and
 * decompression of whole concatenated streams, all through `node:zlib`. The header, the errors,
 * CRC-32 and the libdeflate path for one member need nothing of Node's: they live in
 * `gzip_member.ts` and `crc32.ts` (re-exported here), which is what a read imports; it loads this
 * file only when libdeflate cannot do the work.
 *
 * @module
 */
import zlib from "node:zlib";
import { concat } from "./bytes.ts";
import { crc32 } from "./crc32.ts";
import { GzipError, gzipHeaderLength, GzipLimitError } from "./gzip_member.ts";

export { crc32 } from "./crc32.ts";
export { GzipError, gzipHeaderLength, GzipLimitError, isGzip } from "./gzip_member.ts";

/**
 * Compresses `parts` (concatenated) into one gzip member with a fixed header (no name, mtime 0,
 * OS 255), so the same input and level always give the same bytes.
 */
export function gzipMember(parts: Uint8Array[], level = 6): Uint8Array {
  let size = 0;
  for (const p of parts) size += p.length;
  let data: Uint8Array;
  if (parts.length === 1) data = parts[0];
  else {
    data = new Uint8Array(size);
    let o = 0;
    for (const p of parts) {
      data.set(p, o);
      o += p.length;
    }
  }
  const deflated = zlib.deflateRawSync(data, { level });
  const out = new Uint8Array(10 + deflated.length + 8);
  out.set([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, level === 9 ? 2 : level === 1 ? 4 : 0, 0xff]);
  out.set(deflated, 10);
  const dv = new DataView(out.buffer);
  dv.setUint32(10 + deflated.length, crc32(data), true);
  dv.setUint32(14 + deflated.length, size >>> 0, true);
  return out;
}

/**
 * Decompresses the single gzip member starting at `off`, checking its CRC-32 and length.
 * Returns the data and the offset just past the member. Throws {@link GzipLimitError} when the
 * output would exceed `maxOutput` bytes. `expected`, the size the member should decompress to
 * (when known), lets it inflate into one buffer of that size instead of joining pieces.
 */
export function inflateMember(
  buf: Uint8Array,
  off = 0,
  maxOutput = 1 << 30,
  expected?: number,
): { data: Uint8Array; end: number } {
  const start = off + gzipHeaderLength(buf, off);
  let res: { buffer: Uint8Array; engine: { bytesWritten: number } };
  try {
    // deno-lint-ignore no-explicit-any
    res = (zlib.inflateRawSync as any)(buf.subarray(start), {
      info: true,
      maxOutputLength: maxOutput,
      // Room past the expected end, so that the end of the stream fits in the same buffer.
      ...(expected !== undefined && expected < 64 << 20 ? { chunkSize: expected + 1024 } : {}),
    });
  } catch (e) {
    if ((e as { code?: string }).code === "ERR_BUFFER_TOO_LARGE") {
      throw new GzipLimitError(maxOutput);
    }
    throw new GzipError(`gzip: corrupt deflate data (${(e as Error).message})`);
  }
  const data = new Uint8Array(res.buffer.buffer, res.buffer.byteOffset, res.buffer.byteLength);
  const trailer = start + res.engine.bytesWritten;
  if (trailer + 8 > buf.length) throw new GzipError("gzip: member truncated");
  const dv = new DataView(buf.buffer, buf.byteOffset + trailer, 8);
  if (dv.getUint32(0, true) !== crc32(data)) throw new GzipError("gzip: CRC mismatch");
  if (dv.getUint32(4, true) !== (data.length >>> 0)) throw new GzipError("gzip: length mismatch");
  return { data, end: trailer + 8 };
}

/**
 * Decompresses every member in `buf` (which must hold whole members) and concatenates them,
 * refusing more than `maxOutput` bytes in all.
 */
export function inflateMembers(buf: Uint8Array, maxOutput = 1 << 30): Uint8Array {
  const out: Uint8Array[] = [];
  let off = 0;
  let total = 0;
  // The last member's trailer says its size (mod 2^32): when `buf` is one member (a TOC), that
  // is the output's, inflated into one buffer instead of pieces joined. Only a size hint: the
  // CRC and length are checked as ever.
  const lastSize = buf.length >= 18
    ? new DataView(buf.buffer, buf.byteOffset + buf.length - 4, 4).getUint32(0, true)
    : 0;
  while (off < buf.length) {
    const room = Math.max(1, maxOutput - total);
    const hint = off === 0 && lastSize > 0 && lastSize <= room ? lastSize : undefined;
    const { data, end } = inflateMember(buf, off, room, hint);
    out.push(data);
    total += data.length;
    off = end;
  }
  return concat(out, false);
}

/**
 * Decompresses only the first `n` bytes of the gzip member at the start of `buf`, for members
 * too large to inflate whole. The CRC cannot be checked this way: callers verify by digest.
 */
export async function inflatePrefix(buf: Uint8Array, n: number): Promise<Uint8Array> {
  const start = gzipHeaderLength(buf, 0);
  const inflater = zlib.createInflateRaw({ chunkSize: 1 << 20 });
  const out = new Uint8Array(n);
  let got = 0;
  await new Promise<void>((resolve, reject) => {
    inflater.on("data", (b: Uint8Array) => {
      const k = Math.min(b.length, n - got);
      out.set(b.subarray(0, k), got);
      got += k;
      if (got >= n) {
        inflater.destroy();
        resolve();
      }
    });
    inflater.on(
      "error",
      (e: Error) => reject(new GzipError(`gzip: corrupt deflate data (${e.message})`)),
    );
    inflater.on("end", () => resolve());
    inflater.on("close", () => resolve());
    inflater.end(buf.subarray(start));
  });
  if (got < n) throw new GzipError(`gzip: member holds ${got} bytes, fewer than ${n}`);
  return out;
}

/**
 * Decompresses a gzip stream of any number of members, chunk by chunk. Corrupt input rejects
 * the iteration with {@link GzipError}.
 */
export async function* gunzipStream(
  input: AsyncIterable<Uint8Array>,
): AsyncGenerator<Uint8Array> {
  const gunzip = zlib.createGunzip({ chunkSize: 256 << 10 });
  const queue: Uint8Array[] = [];
  let error: Error | undefined;
  let ended = false;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  gunzip.on("data", (b: Uint8Array) => {
    queue.push(new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
    notify();
  });
  gunzip.on("end", () => {
    ended = true;
    notify();
  });
  gunzip.on("error", (e: Error) => {
    error = new GzipError(`gzip: ${e.message}`);
    notify();
  });
  const pump = (async () => {
    try {
      for await (const chunk of input) {
        if (error) break;
        if (!gunzip.write(chunk)) {
          await new Promise<void>((resolve) => {
            const done = () => {
              gunzip.off("drain", done);
              gunzip.off("error", done);
              gunzip.off("close", done);
              resolve();
            };
            gunzip.on("drain", done);
            gunzip.on("error", done);
            gunzip.on("close", done);
          });
        }
      }
      gunzip.end();
    } catch (e) {
      error = e as Error;
      notify();
    }
  })();
  try {
    while (true) {
      if (queue.length > 0) {
        yield queue.shift()!;
        continue;
      }
      if (error) throw error;
      if (ended) break;
      await new Promise<void>((r) => (wake = r));
    }
  } finally {
    gunzip.destroy();
    await pump.catch(() => {});
  }
}
