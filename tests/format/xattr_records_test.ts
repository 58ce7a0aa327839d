/**
 * Only `SCHILY.xattr.*` PAX records are xattrs, as for the container runtimes' extraction and
 * the reference writers: a `LIBARCHIVE.xattr.*` record shows up neither in the header nor in a
 * converted blob's TOC.
 *
 * @module
 */
import assert from "node:assert/strict";
import { BytesSource } from "../../format/range_source.ts";
import { StargzReader } from "../../format/reader.ts";
import { readTar } from "../../format/tar_reader.ts";
import {
  checksum,
  encodeHeader,
  encodePaxRecords,
  END_OF_ARCHIVE,
  padToBlock,
  tarHeader,
} from "../../format/tar_header.ts";
import { writeEStargz } from "../../format/writer.ts";

/** A ustar block of type `x` (PAX extended header) carrying `body`. */
function paxBlock(body: Uint8Array): Uint8Array {
  const b = new Uint8Array(512);
  const put = (off: number, s: string) => b.set(new TextEncoder().encode(s), off);
  put(0, "PaxHeaders/f");
  put(100, "0000644\0");
  put(108, "0000000\0");
  put(116, "0000000\0");
  put(124, body.length.toString(8).padStart(11, "0") + "\0");
  put(136, "00000000000\0");
  put(156, "x");
  put(257, "ustar\x0000");
  b.fill(0x20, 148, 156);
  put(148, checksum(b).unsigned.toString(8).padStart(6, "0") + "\0 ");
  return b;
}

function tarWithBothRecords(): Uint8Array {
  const records = encodePaxRecords([
    ["SCHILY.xattr.user.schily", new TextEncoder().encode("s")],
    ["LIBARCHIVE.xattr.user.libarchive", new TextEncoder().encode(btoa("l"))],
  ]);
  const file = encodeHeader(tarHeader({ name: "f", kind: "reg", mode: 0o644, size: 3 }));
  const parts = [
    paxBlock(records),
    padToBlock(records),
    file,
    padToBlock(new Uint8Array([1, 2, 3])),
  ];
  const all = [...parts, END_OF_ARCHIVE];
  const out = new Uint8Array(all.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of all) (out.set(p, o), o += p.length);
  return out;
}

async function* once(b: Uint8Array) {
  yield b;
}

Deno.test("the tar reader takes SCHILY.xattr records as xattrs, not LIBARCHIVE.xattr ones", async () => {
  const names: string[][] = [];
  for await (const e of readTar(once(tarWithBothRecords()))) {
    names.push([...e.header.xattrs.keys()]);
    await e.readAll();
  }
  assert.deepEqual(names, [["user.schily"]]);
});

Deno.test("a converted blob's TOC and reader carry only the SCHILY xattr", async () => {
  const out: Uint8Array[] = [];
  await writeEStargz(once(tarWithBothRecords()), (b) => {
    out.push(b.slice());
  }, { workers: 0 });
  const blob = new Uint8Array(out.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of out) (blob.set(p, o), o += p.length);
  const r = await StargzReader.open(new BytesSource(blob));
  const entry = r.toc.entries.find((e) => e.name === "f")!;
  assert.deepEqual(Object.keys(entry.xattrs ?? {}), ["user.schily"]);
  assert.deepEqual([...r.lookup("f")!.xattrs.keys()], ["user.schily"]);
  assert.deepEqual(await r.readFile(r.lookup("f")!), new Uint8Array([1, 2, 3]));
});
