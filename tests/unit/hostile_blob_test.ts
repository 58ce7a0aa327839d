/**
 * Corrupt, truncated and hostile blobs: every failure is a clear error of a known kind, never a
 * crash, a hang or a wrong byte.
 *
 * @module
 */
import assert from "node:assert/strict";
import { BytesSource } from "../../format/range_source.ts";
import { IntegrityError, StargzFormatError, StargzReader } from "../../format/reader.ts";
import { type TOCEntry, TOCError } from "../../format/toc.ts";
import { gzipMember } from "../../format/gzip.ts";
import { encodeHeader, END_OF_ARCHIVE, paddingFor, tarHeader } from "../../format/tar_header.ts";
import { estargzFooter } from "../../format/footer.ts";
import { randomTar, rng } from "./random_tar.ts";
import { convert, expectedTree } from "./tree_helpers.ts";

const KNOWN = [IntegrityError, StargzFormatError, TOCError];

function isKnown(e: unknown): boolean {
  return KNOWN.some((k) => e instanceof k);
}

async function* once(b: Uint8Array) {
  yield b;
}

/** Replaces a blob's TOC with `entries` (content members stay). */
function withTOC(blob: Uint8Array, tocOffset: number, toc: unknown): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(toc));
  const h = encodeHeader(tarHeader({ name: "stargz.index.json", size: json.length }));
  const plain = new Uint8Array(h.length + json.length + paddingFor(json.length) + 1024);
  plain.set(h);
  plain.set(json, h.length);
  plain.set(END_OF_ARCHIVE, plain.length - 1024);
  const member = gzipMember([plain]);
  const out = new Uint8Array(tocOffset + member.length + 51);
  out.set(blob.subarray(0, tocOffset));
  out.set(member, tocOffset);
  out.set(estargzFooter(tocOffset), tocOffset + member.length);
  return out;
}

const tar = randomTar({ seed: 77, chunkSize: 1000, entries: 60 });
const base = await convert(tar, { chunkSize: 1000 });
const baseReader = await StargzReader.open(new BytesSource(base.blob));
const tocOffset = baseReader.footer.tocOffset;
const entries: TOCEntry[] = baseReader.toc.entries;
const firstReg = entries.find((e) =>
  e.type === "reg" && (e.size ?? 0) > 0 && !e.chunkSize && !e.name.includes("landmark")
)!;

Deno.test("every flipped byte gives a known error or the right bytes", async () => {
  const expected = await expectedTree(once(tar));
  const r = rng(5);
  let errors = 0;
  let intact = 0;
  for (let i = 0; i < 400; i++) {
    const bad = base.blob.slice();
    const pos = Math.floor(r() * bad.length);
    bad[pos] ^= 1 + Math.floor(r() * 255);
    let reader: StargzReader;
    try {
      reader = await StargzReader.open(new BytesSource(bad));
    } catch (e) {
      assert.ok(isKnown(e), `open with byte ${pos} flipped: ${e}`);
      errors++;
      continue;
    }
    for (const [path, want] of expected) {
      if (want.type !== "reg") continue;
      const node = reader.lookup(path);
      if (!node) continue; // a flip inside a name can rename an entry; its bytes are checked below
      try {
        const got = await reader.readFile(node);
        assert.deepEqual(got, want.content, `${path} with byte ${pos} flipped`);
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

Deno.test("a truncated blob is refused at every length", async () => {
  for (let len = 0; len < base.blob.length; len += Math.max(1, Math.floor(base.blob.length / 97))) {
    await assert.rejects(
      () => StargzReader.open(new BytesSource(base.blob.subarray(0, len))),
      (e) => isKnown(e),
      `length ${len}`,
    );
  }
});

Deno.test("a TOC digest that does not match the annotation is refused", async () => {
  await assert.rejects(
    () => StargzReader.open(new BytesSource(base.blob), { tocDigest: `sha256:${"0".repeat(64)}` }),
    IntegrityError,
  );
});

const hostile: [string, (es: TOCEntry[]) => unknown, RegExp][] = [
  [
    "a '..' component",
    (es) => ({ version: 1, entries: [...es, { name: "../../etc/passwd", type: "reg" }] }),
    /\.\./,
  ],
  [
    "a '..' in the middle",
    (es) => ({ version: 1, entries: [...es, { name: "a/../../x", type: "dir" }] }),
    /\.\./,
  ],
  [
    "an unknown type",
    (es) => ({ version: 1, entries: [...es, { name: "x", type: "socket" }] }),
    /unknown type/,
  ],
  [
    "a negative size",
    (es) => ({ version: 1, entries: [...es, { name: "x", type: "reg", size: -1 }] }),
    /bad size/,
  ],
  [
    "an enormous size",
    (es) => ({
      version: 1,
      entries: [...es, { name: "x", type: "reg", size: 2 ** 60, offset: 10 }],
    }),
    /bad size/,
  ],
  [
    "an offset past the data",
    (es) => ({
      version: 1,
      entries: [...es, { name: "x", type: "reg", size: 5, offset: tocOffset + 10 }],
    }),
    /outside/,
  ],
  [
    "two files at one offset",
    (es) => ({ version: 1, entries: [...es, { ...firstReg, name: "copy" }] }),
    /share the blob offset/,
  ],
  ["chunks that overlap", (es) => ({
    version: 1,
    entries: [...es, { name: "x", type: "reg", size: 10, offset: 1, chunkSize: 6 }, {
      name: "x",
      type: "chunk",
      offset: 2,
      chunkOffset: 4,
      chunkSize: 6,
    }],
  }), /tile/],
  ["a chunk past the file's end", (es) => ({
    version: 1,
    entries: [...es, { name: "x", type: "reg", size: 10, offset: 1, chunkSize: 6 }, {
      name: "x",
      type: "chunk",
      offset: 2,
      chunkOffset: 6,
      chunkSize: 6,
    }],
  }), /cover|tile/],
  [
    "a stray chunk",
    (es) => ({
      version: 1,
      entries: [{ name: "x", type: "chunk", offset: 2, chunkSize: 1 }, ...es],
    }),
    /does not follow/,
  ],
  [
    "a file used as a directory",
    (es) => ({
      version: 1,
      entries: [...es, { name: "f", type: "fifo" }, { name: "f/x", type: "fifo" }],
    }),
    /used as a directory/,
  ],
  ["a wrong version", (es) => ({ version: 2, entries: es }), /version/],
  ["no entries", () => ({ version: 1 }), /entries/],
  [
    "a bad digest",
    (es) => ({ version: 1, entries: [...es, { name: "x", type: "dir", digest: "md5:1" }] }),
    /malformed digest/,
  ],
  [
    "a bad modtime",
    (es) => ({ version: 1, entries: [...es, { name: "x", type: "dir", modtime: "yesterday" }] }),
    /modtime/,
  ],
  [
    "a NUL in a name",
    (es) => ({ version: 1, entries: [...es, { name: "a\0b", type: "dir" }] }),
    /NUL/,
  ],
  [
    "too deep",
    (es) => ({ version: 1, entries: [...es, { name: "d/".repeat(2000) + "x", type: "dir" }] }),
    /too deep/,
  ],
];

for (const [what, make, message] of hostile) {
  Deno.test(`a TOC with ${what} is refused with a clear error`, async () => {
    const blob = withTOC(base.blob, tocOffset, make(entries));
    await assert.rejects(() => StargzReader.open(new BytesSource(blob)), (e: Error) => {
      assert.ok(isKnown(e), String(e));
      assert.match(e.message, message);
      return true;
    });
  });
}

Deno.test("hardlinks to missing files or directories are left out with a warning", async () => {
  const blob = withTOC(base.blob, tocOffset, {
    version: 1,
    entries: [
      ...entries,
      { name: "l1", type: "hardlink", linkName: "nope" },
      { name: "d", type: "dir" },
      { name: "l2", type: "hardlink", linkName: "d" },
      { name: "l3", type: "hardlink", linkName: "l3" },
    ],
  });
  const r = await StargzReader.open(new BytesSource(blob));
  assert.equal(r.lookup("l1"), undefined);
  assert.equal(r.lookup("l2"), undefined);
  assert.equal(r.lookup("l3"), undefined);
  assert.equal(r.index.warnings.length, 3);
});

Deno.test("a chunk whose bytes do not match its digest gives IntegrityError, not data", async () => {
  const es = entries.map((e) =>
    e === firstReg ? { ...e, chunkDigest: `sha256:${"1".repeat(64)}` } : e
  );
  const r = await StargzReader.open(
    new BytesSource(withTOC(base.blob, tocOffset, { version: 1, entries: es })),
  );
  const node = r.lookup(firstReg.name)!;
  await assert.rejects(() => r.read(node, 0, 1), IntegrityError);
  // With verification off, the same read returns the (here genuine) bytes.
  const lax = await StargzReader.open(
    new BytesSource(withTOC(base.blob, tocOffset, { version: 1, entries: es })),
    {
      verify: "none",
    },
  );
  assert.equal((await lax.read(lax.lookup(firstReg.name)!, 0, 1)).length, 1);
});

Deno.test("a TOC larger than the limit is refused before it is decompressed", async () => {
  await assert.rejects(
    () => StargzReader.open(new BytesSource(base.blob), { maxTocBytes: 100 }),
    StargzFormatError,
  );
});
