/**
 * Hostile zstd and zstd:chunked input: bad frames, frames that lie about their size, skippable
 * frames and footers pointing anywhere, a manifest that decompresses to far more than allowed,
 * flipped bytes anywhere — a clean error of a known kind or the right bytes, never a crash, a
 * hang or unbounded memory.
 *
 * @module
 */
import assert from "node:assert/strict";
import zlib from "node:zlib";
import { BytesSource } from "../../format/range_source.ts";
import { IntegrityError, StargzFormatError, StargzReader } from "../../format/reader.ts";
import { TOCError } from "../../format/toc.ts";
import {
  decompressFrame,
  skippableFrame,
  unzstd,
  zstdCompress,
  ZstdError,
  zstdFrameAt,
  ZstdLimitError,
} from "../../format/zstd.ts";
import { parseZstdChunkedFooter, zstdChunkedFooter } from "../../format/zstd_chunked.ts";
import { writeZstdChunked } from "../../format/zstd_chunked_writer.ts";
import { randomTar, rng } from "../unit/random_tar.ts";
import { expectedTree } from "../unit/tree_helpers.ts";

const KNOWN = [IntegrityError, StargzFormatError, TOCError];
const isKnown = (e: unknown) => KNOWN.some((k) => e instanceof k);

async function* once(b: Uint8Array) {
  yield b;
}

const tar = randomTar({ seed: 21, chunkSize: 1500, entries: 50 });
const parts: Uint8Array[] = [];
const written = await writeZstdChunked(once(tar), (b) => {
  parts.push(b.slice());
}, { chunkSize: 1500 });
const blob = new Uint8Array(written.blobSize);
{
  let o = 0;
  for (const p of parts) (blob.set(p, o), o += p.length);
}
const [manifestOffset, manifestLength, manifestRaw] = written
  .annotations["io.github.containers.zstd-chunked.manifest-position"].split(":").map(Number);

Deno.test("frame walking refuses truncated frames, bad magic, reserved bits and big blocks", () => {
  const f = zstdCompress(new TextEncoder().encode("hello hello hello hello"));
  assert.equal(zstdFrameAt(f, 0).end, f.length);
  for (let n = 0; n < f.length; n++) {
    assert.throws(() => zstdFrameAt(f.subarray(0, n), 0), ZstdError, `truncated to ${n}`);
  }
  const bad = f.slice();
  bad[0] ^= 1;
  assert.throws(() => zstdFrameAt(bad, 0), /bad magic/);
  const reserved = f.slice();
  reserved[4] |= 0x08;
  assert.throws(() => zstdFrameAt(reserved, 0), /reserved/);
  const skip = skippableFrame(new Uint8Array(10));
  new DataView(skip.buffer).setUint32(4, 1000, true);
  assert.throws(() => zstdFrameAt(skip, 0), /past the data/);
});

Deno.test("a frame lying about its content size is refused", () => {
  const data = new TextEncoder().encode("0123456789".repeat(10));
  const f = zstdCompress(data);
  const frame = zstdFrameAt(f, 0);
  assert.equal(frame.contentSize, 100);
  // The single-segment 1-byte size field sits right after the frame header descriptor.
  const lying = f.slice();
  assert.equal(lying[5], 100);
  lying[5] = 99;
  assert.throws(() => decompressFrame(lying, zstdFrameAt(lying, 0), 1000), ZstdError);
  lying[5] = 200;
  assert.throws(() => decompressFrame(lying, zstdFrameAt(lying, 0), 1000), ZstdError);
  assert.throws(() => decompressFrame(f, frame, 50), ZstdLimitError);
});

Deno.test("decompression stops at its limit: 64 MiB of zeros with a 1 MiB bound", () => {
  const zeros = new Uint8Array(64 << 20);
  // deno-lint-ignore no-explicit-any
  const noSize: Uint8Array = (zlib as any).zstdCompressSync(zeros, {
    params: { [zlib.constants.ZSTD_c_contentSizeFlag]: 0 },
  });
  const f = new Uint8Array(noSize.buffer, noSize.byteOffset, noSize.byteLength);
  assert.equal(zstdFrameAt(f, 0).contentSize, undefined);
  assert.throws(() => unzstd(f, 1 << 20), ZstdLimitError);
  assert.throws(() => unzstd(zstdCompress(zeros), 1 << 20), ZstdLimitError);
});

Deno.test("a manifest that decompresses past the limit is refused before it is held", async () => {
  const bomb = zstdCompress(new TextEncoder().encode(" ".repeat(32 << 20)));
  const body = blob.subarray(0, manifestOffset - 8);
  const frame = skippableFrame(bomb);
  const footer = zstdChunkedFooter({
    manifestOffset: body.length + 8,
    manifestLength: bomb.length,
    manifestUncompressed: 32 << 20,
  }, false);
  const evil = new Uint8Array(body.length + frame.length + footer.length);
  evil.set(body);
  evil.set(frame, body.length);
  evil.set(footer, body.length + frame.length);
  await assert.rejects(
    () => StargzReader.open(new BytesSource(evil), { maxTocBytes: 1 << 20 }),
    StargzFormatError,
  );
  // Announced small but really big: the announced size is the bound.
  const lying = evil.slice();
  lying.set(
    zstdChunkedFooter({
      manifestOffset: body.length + 8,
      manifestLength: bomb.length,
      manifestUncompressed: 1000,
    }, false),
    body.length + frame.length,
  );
  await assert.rejects(() => StargzReader.open(new BytesSource(lying)), StargzFormatError);
  const huge = {
    "io.containers.zstd-chunked.manifest-position": `${manifestOffset}:${manifestLength}:${
      2 ** 40
    }:1`,
  };
  await assert.rejects(
    () => StargzReader.open(new BytesSource(blob), { annotations: huge }),
    /limit/,
  );
});

Deno.test("footers and positions pointing anywhere give a clean error", async () => {
  const body = blob.subarray(0, blob.length - 48);
  const r = rng(3);
  const places = [
    0,
    1,
    7,
    8,
    9,
    manifestOffset - 8,
    manifestOffset + 1,
    body.length - 1,
    body.length,
    body.length + 40,
    2 ** 40,
    2 ** 53,
  ];
  for (let i = 0; i < 40; i++) places.push(Math.floor(r() * blob.length));
  for (const at of places) {
    for (const length of [manifestLength, 1, 0, 100, 2 ** 31]) {
      const footer = zstdChunkedFooter({
        manifestOffset: at,
        manifestLength: length,
        manifestUncompressed: manifestRaw,
      }, false);
      const evil = new Uint8Array(body.length + footer.length);
      evil.set(body);
      evil.set(footer, body.length);
      try {
        const reader = await StargzReader.open(new BytesSource(evil));
        assert.equal(at, manifestOffset, `only the true position opens (${at}:${length})`);
        assert.equal(reader.tocDigest, written.tocDigest);
      } catch (e) {
        assert.ok(isKnown(e), `${at}:${length}: ${e}`);
      }
      const annotations = {
        "io.github.containers.zstd-chunked.manifest-position": `${at}:${length}:${manifestRaw}:1`,
      };
      try {
        await StargzReader.open(new BytesSource(blob), { annotations });
        assert.equal(at, manifestOffset, `only the true position opens (${at}:${length})`);
      } catch (e) {
        assert.ok(isKnown(e), `annotation ${at}:${length}: ${e}`);
      }
    }
  }
});

Deno.test("every flipped byte of a zstd:chunked blob gives a known error or the right bytes", async () => {
  const expected = await expectedTree(once(tar));
  const r = rng(8);
  let errors = 0;
  let intact = 0;
  for (let i = 0; i < 300; i++) {
    const bad = blob.slice();
    const pos = Math.floor(r() * bad.length);
    bad[pos] ^= 1 + Math.floor(r() * 255);
    let reader: StargzReader;
    try {
      reader = await StargzReader.open(
        new BytesSource(bad),
        i % 2 ? { annotations: written.annotations } : {},
      );
    } catch (e) {
      assert.ok(isKnown(e), `open with byte ${pos} flipped: ${e}`);
      errors++;
      continue;
    }
    for (const [path, want] of expected) {
      if (want.type !== "reg") continue;
      const node = reader.lookup(path);
      if (!node) continue;
      try {
        assert.deepEqual(
          await reader.readFile(node),
          want.content,
          `${path} with byte ${pos} flipped`,
        );
        intact++;
      } catch (e) {
        assert.ok(isKnown(e), `read with byte ${pos} flipped: ${e}`);
        errors++;
      }
    }
  }
  assert.ok(errors > 50, `corruption was detected (${errors} errors)`);
  assert.ok(intact > 0);
});

Deno.test("random and mutated tails never make the footer parser throw", () => {
  const r = rng(11);
  const real = blob.subarray(blob.length - 200);
  for (let i = 0; i < 5000; i++) {
    const tail = i % 2 ? real.slice() : new Uint8Array(Math.floor(r() * 120));
    if (i % 2) { for (let k = 0; k < 3; k++) tail[Math.floor(r() * tail.length)] ^= 1 << (i % 8); }
    else for (let k = 0; k < tail.length; k++) tail[k] = r() < 0.5 ? 0 : Math.floor(r() * 256);
    const f = parseZstdChunkedFooter(tail);
    if (!f) continue;
    for (const v of [f.manifestOffset, f.manifestLength, f.manifestUncompressed]) {
      assert.ok(Number.isSafeInteger(v) && v >= 0);
    }
  }
});
