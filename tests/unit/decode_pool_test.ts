/**
 * The decode pool: chunks decoded on workers come back byte for byte (or with why they failed),
 * the caller's fetched bytes are left as they were, and the buffers the fetched bytes travel in
 * are handed back and reused (not one made per fetch), and let go when the workers stop.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { ChunkSpec } from "../../format/chunk_decode.ts";
import { DecodePool } from "../../format/decode_pool.ts";
import { gzipMember } from "../../format/gzip.ts";

const sha = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/** `n` pseudo-random, somewhat compressible bytes. */
function bytesOf(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = (x >>> 24) & 0x3f;
  }
  return b;
}

/** A fetched range of `count` gzip members of `size` bytes each, and their chunk specs. */
function fetched(count: number, size: number, seed: number) {
  const datas = Array.from({ length: count }, (_, i) => bytesOf(size, seed + i));
  const members = datas.map((d) => gzipMember([d]));
  const bytes = new Uint8Array(members.reduce((a, m) => a + m.length, 0));
  const chunks: ChunkSpec[] = [];
  let o = 0;
  members.forEach((m, i) => {
    bytes.set(m, o);
    chunks.push({ start: o, end: o + m.length, innerOffset: 0, size: size, digest: sha(datas[i]) });
    o += m.length;
  });
  return { bytes, chunks, datas };
}

Deno.test("decoded on workers byte for byte; input buffers handed back and reused", async () => {
  const pool = new DecodePool(2, 60_000);
  try {
    await pool.warm();
    for (let round = 0; round < 12; round++) {
      const { bytes, chunks, datas } = fetched(2, 300_000 + 1000 * round, round);
      const before = bytes.slice();
      const out = await pool.decode(bytes, chunks, true);
      assert.equal(out.length, 2);
      out.forEach((d, i) => assert.deepEqual(d, datas[i], `round ${round} chunk ${i}`));
      assert.deepEqual(bytes, before, "the caller's bytes are untouched");
    }
    const { made, spare } = pool.inputBuffers;
    assert.ok(made <= 2, `one buffer reused for fetches of near sizes (made ${made})`);
    assert.ok(spare >= 1);
    // Concurrent fetches each get a buffer of their own.
    const jobs = [0, 1, 2, 3].map((k) => fetched(1, 200_000, 100 + k));
    const outs = await Promise.all(jobs.map((j) => pool.decode(j.bytes, j.chunks, true)));
    outs.forEach((o, k) => assert.deepEqual(o[0], jobs[k].datas[0], `concurrent ${k}`));
    assert.ok(pool.inputBuffers.spare <= pool.size + 1, "spares bounded");
  } finally {
    pool.close();
  }
  assert.equal(pool.inputBuffers.spare, 0, "spares let go when the workers stop");
});

Deno.test("a chunk that fails its digest says why; the others and the buffer still come back", async () => {
  const pool = new DecodePool(1, 60_000);
  try {
    const { bytes, chunks, datas } = fetched(3, 100_000, 7);
    chunks[1] = { ...chunks[1], digest: sha(new Uint8Array(1)) };
    const out = await pool.decode(bytes, chunks, true);
    assert.deepEqual(out[0], datas[0]);
    assert.equal(out[1], "fails its digest");
    assert.deepEqual(out[2], datas[2]);
    // Damaged compressed bytes: a message, never bytes.
    const bad = fetched(1, 100_000, 9);
    bad.bytes[bad.chunks[0].end - 3] ^= 0xff; // inside the gzip trailer (CRC or length)
    const [r] = await pool.decode(bad.bytes, bad.chunks, true);
    assert.equal(typeof r, "string");
    assert.equal(pool.inputBuffers.spare, 1, "the buffer came back both times");
  } finally {
    pool.close();
  }
});

Deno.test("a fetch of several chunks is shared out among the workers, members kept whole", async () => {
  for (const workers of [2, 3]) {
    const pool = new DecodePool(workers, 60_000);
    try {
      const a = fetched(2, 150_000, 20);
      // One member holding two chunks (eStargz innerOffset), between and after others.
      const d1 = bytesOf(70_000, 30);
      const d2 = bytesOf(90_000, 31);
      const shared = gzipMember([d1, d2]);
      const b = fetched(2, 120_000, 40);
      const bytes = new Uint8Array(a.bytes.length + shared.length + b.bytes.length);
      bytes.set(a.bytes);
      bytes.set(shared, a.bytes.length);
      bytes.set(b.bytes, a.bytes.length + shared.length);
      const s = a.bytes.length;
      const e = s + shared.length;
      const chunks: ChunkSpec[] = [
        ...a.chunks,
        { start: s, end: e, innerOffset: 0, size: d1.length, digest: sha(d1) },
        { start: s, end: e, innerOffset: d1.length, size: d2.length, digest: sha(d2) },
        ...b.chunks.map((c) => ({ ...c, start: c.start + e, end: c.end + e })),
      ];
      const out = await pool.decode(bytes, chunks, true);
      const want = [...a.datas, d1, d2, ...b.datas];
      assert.equal(out.length, want.length);
      out.forEach((d, i) => assert.deepEqual(d, want[i], `${workers} workers, chunk ${i}`));
      assert.ok(pool.inputBuffers.made >= 2, "more than one job");
    } finally {
      pool.close();
    }
  }
});
