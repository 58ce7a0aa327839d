/**
 * eStargz with several small files in one gzip member (`innerOffset`): written with
 * `minChunkSize`, read byte-exact (on this thread and in the decode pool), each shared member
 * fetched and decompressed once, hostile inner offsets refused; and the size it buys.
 *
 * @module
 */
import assert from "node:assert/strict";
import zlib from "node:zlib";
import { DecodePool } from "../../format/decode_pool.ts";
import { BytesSource } from "../../format/range_source.ts";
import { IntegrityError, StargzReader } from "../../format/reader.ts";
import { type TOCEntry, TOCError } from "../../format/toc.ts";
import { writeEStargz, type WriterOptions } from "../../format/writer.ts";
import { randomTar, rng } from "../unit/random_tar.ts";
import { assertSameTree, expectedTree } from "../unit/tree_helpers.ts";
import { encodeHeader, END_OF_ARCHIVE, paddingFor, tarHeader } from "../../format/tar_header.ts";
import { gzipMember } from "../../format/gzip.ts";
import { estargzFooter } from "../../format/footer.ts";

async function* once(b: Uint8Array) {
  yield b;
}

async function convert(tar: Uint8Array, opts: WriterOptions) {
  const out: Uint8Array[] = [];
  const result = await writeEStargz(once(tar), (b) => {
    out.push(b.slice());
  }, { workers: 0, ...opts });
  const blob = new Uint8Array(result.blobSize);
  let o = 0;
  for (const p of out) (blob.set(p, o), o += p.length);
  return { blob, result };
}

/** Entries whose offset another entry shares. */
function shared(entries: TOCEntry[]): TOCEntry[] {
  const count = new Map<number, number>();
  for (const e of entries) if (e.offset) count.set(e.offset, (count.get(e.offset) ?? 0) + 1);
  return entries.filter((e) => e.offset && count.get(e.offset)! > 1);
}

for (
  const [seed, minChunkSize, chunkSize] of [[1, 4096, 1000], [2, 65536, 3000], [
    3,
    1 << 20,
    1 << 16,
  ]]
) {
  Deno.test(`random tree ${seed} with minChunkSize ${minChunkSize} reads back exactly`, async () => {
    const tar = randomTar({ seed, chunkSize, entries: 150 });
    const { blob, result } = await convert(tar, { minChunkSize, chunkSize });
    const sharing = shared(result.toc.entries);
    assert.ok(sharing.length > 10, `${sharing.length} entries share a member`);
    assert.ok(sharing.some((e) => (e.innerOffset ?? 0) > 0));
    const expected = await expectedTree(once(tar));
    await assertSameTree(await StargzReader.open(new BytesSource(blob)), expected, seed);
    const pool = new DecodePool(2);
    try {
      // Workers ready first: reads decode inline while none is.
      await pool.warm();
      const r = await StargzReader.open(new BytesSource(blob), { decodePool: pool });
      await r.prefetch("all");
      await assertSameTree(r, expected, seed + 100);
      assert.equal(r.stats.chunksFetched, r.index.chunks.length, "each chunk fetched once");
    } finally {
      pool.close();
    }
  });
}

Deno.test("reading one small file fetches its member once and caches its neighbours", async () => {
  const tar = randomTar({ seed: 9, chunkSize: 2000, entries: 120 });
  const { blob } = await convert(tar, { minChunkSize: 1 << 20, chunkSize: 2000 });
  const src = new BytesSource(blob);
  const r = await StargzReader.open(src, { fetchWindow: 0, readAhead: 0 });
  const members = new Set(r.index.chunks.map((c) => c.offset));
  for (const { node } of r.index.chunks) await r.readFile(node);
  assert.ok(
    r.stats.requests <= members.size,
    `${r.stats.requests} requests, ${members.size} members`,
  );
});

Deno.test("an image of many small files is no bigger than gzip of its tar plus 2 %", async () => {
  // Text-like files of 1–30 KB, as in /usr/share/perl5 or /usr/lib/python3.
  const r = rng(4);
  const words = Array.from({ length: 400 }, (_, i) => `w${(i * 7919).toString(36)}`);
  const parts: Uint8Array[] = [];
  for (let i = 0; i < 1500; i++) {
    let text = "";
    const len = 1000 + Math.floor(r() * 29000);
    while (text.length < len) {
      text += words[Math.floor(r() ** 2 * words.length)] + (r() < 0.1 ? "\n" : " ");
    }
    const body = new TextEncoder().encode(text);
    parts.push(
      encodeHeader(
        tarHeader({
          name: `lib/m${i % 37}/f${i}.py`,
          kind: "reg",
          mode: 0o644,
          size: body.length,
          mtimeSec: 1_700_000_000,
        }),
      ),
    );
    parts.push(body, new Uint8Array(paddingFor(body.length)));
  }
  parts.push(END_OF_ARCHIVE);
  const tar = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) (tar.set(p, o), o += p.length);
  const gzip = zlib.gzipSync(tar, { level: 6 }).length;
  const plain = (await convert(tar, {})).blob.length;
  const packed = (await convert(tar, { minChunkSize: 1 << 20 })).blob.length;
  assert.ok(
    packed <= gzip * 1.02,
    `packed ${packed} vs gzip ${gzip} (+${((packed / gzip - 1) * 100).toFixed(2)} %)`,
  );
  assert.ok(packed < plain, `packed ${packed} < one member per file ${plain}`);
});

/** A blob with two small files in one member, and its TOC entries to tamper with. */
function twoInOne(): { blob: (es: TOCEntry[]) => Uint8Array; entries: TOCEntry[] } {
  const a = new TextEncoder().encode("first file");
  const b = new TextEncoder().encode("second");
  const hb = encodeHeader(tarHeader({ name: "b", kind: "reg", mode: 0o644, size: b.length }));
  const ha = encodeHeader(tarHeader({ name: "a", kind: "reg", mode: 0o644, size: a.length }));
  const head = gzipMember([ha]);
  const plain = [
    a,
    new Uint8Array(paddingFor(a.length)),
    hb,
    b,
    new Uint8Array(paddingFor(b.length)),
  ];
  const member = gzipMember(plain);
  const inner = a.length + paddingFor(a.length) + hb.length;
  const entries: TOCEntry[] = [
    { name: "a", type: "reg", mode: 0o644, size: a.length, offset: head.length },
    {
      name: "b",
      type: "reg",
      mode: 0o644,
      size: b.length,
      offset: head.length,
      innerOffset: inner,
    },
  ];
  const blob = (es: TOCEntry[]) => {
    const json = new TextEncoder().encode(JSON.stringify({ version: 1, entries: es }));
    const th = encodeHeader(
      tarHeader({ name: "stargz.index.json", kind: "reg", size: json.length }),
    );
    const tocTar = new Uint8Array(th.length + json.length + paddingFor(json.length) + 1024);
    tocTar.set(th);
    tocTar.set(json, th.length);
    tocTar.set(END_OF_ARCHIVE, tocTar.length - 1024);
    const toc = gzipMember([tocTar]);
    const tocOffset = head.length + member.length;
    const out = new Uint8Array(tocOffset + toc.length + 51);
    out.set(head);
    out.set(member, head.length);
    out.set(toc, tocOffset);
    out.set(estargzFooter(tocOffset), tocOffset + toc.length);
    return out;
  };
  return { blob, entries };
}

Deno.test("a hand-made member with two files reads both", async () => {
  const { blob, entries } = twoInOne();
  const r = await StargzReader.open(new BytesSource(blob(entries)));
  assert.equal(new TextDecoder().decode(await r.readFile(r.lookup("a")!)), "first file");
  assert.equal(new TextDecoder().decode(await r.readFile(r.lookup("b")!)), "second");
});

Deno.test("hostile inner offsets are refused or fail their read cleanly", async () => {
  const { blob, entries } = twoInOne();
  const [a, b] = entries;
  const open = (es: TOCEntry[]) => StargzReader.open(new BytesSource(blob(es)));
  await assert.rejects(
    () => open([a, { ...b, innerOffset: 0 }]),
    (e: Error) => e instanceof TOCError && /share the blob offset/.test(e.message),
  );
  await assert.rejects(
    () => open([a, { ...b, innerOffset: 3 }]),
    (e: Error) => e instanceof TOCError && /overlap/.test(e.message),
  );
  for (const innerOffset of [10_000, 2 ** 40]) {
    const r = await open([a, { ...b, innerOffset }]);
    await assert.rejects(
      () => r.readFile(r.lookup("b")!),
      IntegrityError,
      `innerOffset ${innerOffset}`,
    );
    assert.equal(new TextDecoder().decode(await r.readFile(r.lookup("a")!)), "first file");
  }
});
