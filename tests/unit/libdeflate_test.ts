/**
 * Chunks inflate through libdeflate when they fit the buffer of their size, and through
 * `node:zlib` otherwise: the same bytes either way, and damage (bad deflate data, a wrong CRC or
 * length, a truncated member) is refused with the errors it always had.
 *
 * @module
 */
import assert from "node:assert/strict";
import zlib from "node:zlib";
import { createHash } from "node:crypto";
import { ChunkDecodeError, decodeChunk } from "../../format/chunk_decode.ts";
import { gzipMember } from "../../format/gzip.ts";
import { haveLibdeflate, inflateRawInto } from "../../format/libdeflate.ts";

const sha = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/** `n` bytes that compress somewhat (text-like), from `seed`. */
function bytes(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = 97 + ((x >>> 16) % 13);
  }
  return b;
}

Deno.test("libdeflate is there (Debian's libdeflate0) and inflates raw deflate", () => {
  assert.ok(haveLibdeflate(), "libdeflate.so.0 missing: apt-get install libdeflate0");
  const data = bytes(300_000, 1);
  const raw = zlib.deflateRawSync(data);
  const out = new Uint8Array(data.length + 10);
  const r = inflateRawInto(raw, out);
  assert.deepEqual(r, { read: raw.length, written: data.length });
  assert.deepEqual(out.subarray(0, data.length), data);
  assert.equal(inflateRawInto(raw, new Uint8Array(data.length - 1)), undefined, "no room");
  assert.equal(inflateRawInto(new Uint8Array([0xff, 0xff, 0xff, 0xff]), out), undefined, "bad");
});

Deno.test("a chunk decodes to the same bytes whether its member fits its buffer or not", async () => {
  const a = bytes(200_000, 2);
  const b = bytes(150_000, 3);
  // One chunk per member (libdeflate), and two chunks sharing one member (node:zlib).
  const own = gzipMember([a]);
  assert.deepEqual(
    await decodeChunk(own, {
      start: 0,
      end: own.length,
      innerOffset: 0,
      size: a.length,
      digest: sha(a),
    }, true),
    a,
  );
  const shared = gzipMember([a, b]);
  const first = { start: 0, end: shared.length, innerOffset: 0, size: a.length, digest: sha(a) };
  const second = { ...first, innerOffset: a.length, size: b.length, digest: sha(b) };
  assert.deepEqual(await decodeChunk(shared, first, true), a);
  assert.deepEqual(await decodeChunk(shared, second, true), b);
  // A member with a few bytes after the chunk (tar padding) still fits.
  const padded = gzipMember([a, new Uint8Array(512)]);
  assert.deepEqual(
    await decodeChunk(
      padded,
      { start: 0, end: padded.length, innerOffset: 0, size: a.length },
      true,
    ),
    a,
  );
});

Deno.test("damaged members are refused, fast path or not", async () => {
  const a = bytes(200_000, 4);
  const member = gzipMember([a]);
  const spec = { start: 0, end: member.length, innerOffset: 0, size: a.length, digest: sha(a) };
  const crc = member.slice();
  crc[crc.length - 8] ^= 1;
  await assert.rejects(decodeChunk(crc, spec, true), /CRC mismatch/);
  const len = member.slice();
  len[len.length - 1] ^= 1;
  await assert.rejects(decodeChunk(len, spec, true), /length mismatch/);
  const bad = member.slice();
  bad.fill(0xff, 12, 40);
  await assert.rejects(decodeChunk(bad, spec, true), ChunkDecodeError);
  const short = member.subarray(0, member.length - 4);
  await assert.rejects(decodeChunk(short, { ...spec, end: short.length }, true), ChunkDecodeError);
  await assert.rejects(decodeChunk(member, { ...spec, digest: sha(bytes(10, 5)) }, true), /digest/);
});
