/**
 * CRC-32 without `node:zlib`: libdeflate's and the TypeScript table's agree with known vectors
 * and with `node:zlib`'s on random data of every length, whole or continued from a prefix.
 *
 * @module
 */
import assert from "node:assert/strict";
import zlib from "node:zlib";
import { crc32, crc32Table } from "../../format/crc32.ts";
import { haveLibdeflate } from "../../format/libdeflate.ts";
import { randomBytes } from "../helpers/images.ts";

// deno-lint-ignore no-explicit-any
const zlibCrc32 = (b: Uint8Array, prev = 0) => (zlib as any).crc32(b, prev) >>> 0;
const text = (s: string) => new TextEncoder().encode(s);

Deno.test("crc32: known vectors, through libdeflate and by table", () => {
  assert.ok(haveLibdeflate(), "libdeflate.so.0 missing: apt-get install libdeflate0");
  const vectors: [Uint8Array, number][] = [
    [new Uint8Array(), 0],
    [text("a"), 0xe8b7be43],
    [text("abc"), 0x352441c2],
    [text("123456789"), 0xcbf43926],
    [text("The quick brown fox jumps over the lazy dog"), 0x414fa339],
    [new Uint8Array(32), 0x190a55ad],
    [new Uint8Array(32).fill(0xff), 0xff6cab0b],
  ];
  for (const [data, want] of vectors) {
    assert.equal(crc32(data), want);
    assert.equal(crc32Table(data), want);
  }
});

Deno.test("crc32: random data of every length up to 300 and large, as node:zlib's", () => {
  for (let n = 0; n <= 300; n++) {
    const data = randomBytes(n, n + 1);
    const want = zlibCrc32(data);
    assert.equal(crc32(data), want, `libdeflate, ${n} bytes`);
    assert.equal(crc32Table(data), want, `table, ${n} bytes`);
    // Unaligned views and a continuation from a prefix give the same.
    const cut = n >> 1;
    assert.equal(crc32(data.subarray(cut), crc32(data.subarray(0, cut))), want);
    assert.equal(crc32Table(data.subarray(cut), crc32Table(data.subarray(0, cut))), want);
  }
  for (const n of [4095, 65536, 1 << 20, (4 << 20) + 7]) {
    const data = randomBytes(n, n);
    const want = zlibCrc32(data);
    assert.equal(crc32(data), want, `libdeflate, ${n} bytes`);
    assert.equal(crc32Table(data), want, `table, ${n} bytes`);
    assert.equal(crc32(data.subarray(3), zlibCrc32(data.subarray(0, 3))), want);
  }
});
