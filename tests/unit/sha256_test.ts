/**
 * SHA-256 without `node:crypto` up front: Web Crypto, the synchronous TypeScript one, the bulk
 * one and the incremental one all give `node:crypto`'s digest, at every padding edge.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  BULK_MIN,
  newSha256,
  sha256Hex,
  sha256HexBulk,
  sha256HexSync,
} from "../../format/sha256.ts";
import { randomBytes } from "../helpers/images.ts";

const node = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

Deno.test("sha256: known vectors", async () => {
  const abc = new TextEncoder().encode("abc");
  const want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  assert.equal(sha256HexSync(abc), want);
  assert.equal(await sha256Hex(abc), want);
  assert.equal(await sha256HexBulk(abc), want);
  const empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  assert.equal(sha256HexSync(new Uint8Array()), empty);
  assert.equal(await sha256Hex(new Uint8Array()), empty);
});

Deno.test("sha256: every way gives node:crypto's digest, lengths 0 to 200 and large", async () => {
  for (let n = 0; n <= 200; n++) {
    const data = randomBytes(n + 5, n).subarray(5); // an unaligned view
    const want = node(data);
    assert.equal(sha256HexSync(data), want, `sync, ${n} bytes`);
    assert.equal(await sha256Hex(data), want, `Web Crypto, ${n} bytes`);
    assert.equal(await sha256HexBulk(data), want, `bulk, ${n} bytes`);
  }
  for (const n of [BULK_MIN - 1, BULK_MIN, (4 << 20) + 3]) {
    const data = randomBytes(n, n);
    const want = node(data);
    assert.equal(await sha256Hex(data), want);
    assert.equal(await sha256HexBulk(data.subarray(0)), want);
  }
  assert.equal(sha256HexSync(randomBytes(100_000, 9)), node(randomBytes(100_000, 9)));
});

Deno.test("sha256: the incremental hash over pieces is the digest of the whole", async () => {
  const data = randomBytes(300_000, 3);
  const hash = await newSha256();
  for (let o = 0; o < data.length; o += 77_777) hash.update(data.subarray(o, o + 77_777));
  assert.equal(hash.digestHex(), node(data));
});
