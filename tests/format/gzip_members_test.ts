/**
 * `inflateMembers` (the TOC's decompression): one member or several, the size its trailer
 * claims only a hint — a wrong one still gives the right bytes or the trailer's error.
 *
 * @module
 */
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { GzipError, inflateMembers } from "../../format/gzip.ts";

const bytes = (n: number, seed: number) => {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * seed + (i >> 7)) & 0xff;
  return b;
};

Deno.test("inflateMembers gives every member's bytes, one member or several", () => {
  const a = bytes(300_000, 7);
  const b = bytes(5_000, 13);
  assert.deepEqual(inflateMembers(gzipSync(a)), a);
  const two = new Uint8Array([...gzipSync(a), ...gzipSync(b)]);
  assert.deepEqual(inflateMembers(two), new Uint8Array([...a, ...b]));
  const small = new Uint8Array([...gzipSync(b), ...gzipSync(a)]);
  assert.deepEqual(inflateMembers(small), new Uint8Array([...b, ...a]));
});

Deno.test("a trailer lying about the size is refused, never trusted", () => {
  const a = bytes(100_000, 3);
  const z = new Uint8Array(gzipSync(a));
  for (const size of [1, 50_000, 100_001, 200_000, 0xffffffff]) {
    const bad = z.slice();
    new DataView(bad.buffer).setUint32(bad.length - 4, size, true);
    assert.throws(() => inflateMembers(bad), GzipError, `ISIZE ${size}`);
  }
  assert.throws(() => inflateMembers(z, 1000), Error, "over the limit");
});
