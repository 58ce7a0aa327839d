/**
 * The TOC's JSON text is what `decodeName` gives for its bytes, whatever they hold: ASCII, other
 * UTF-8, a real U+FFFD, bytes that are not UTF-8 (escaped as names escape them), a BOM.
 *
 * @module
 */
import assert from "node:assert/strict";
import { decodeName } from "../../format/names.ts";
import { parseTOCUnchecked } from "../../format/toc.ts";

const enc = new TextEncoder();

/** TOC JSON bytes with one entry whose name is the raw bytes `name`. */
function tocWithName(name: Uint8Array): Uint8Array {
  const head = enc.encode('{"version":1,"entries":[{"type":"reg","size":0,"name":"');
  const tail = enc.encode('"}]}');
  const out = new Uint8Array(head.length + name.length + tail.length);
  out.set(head);
  out.set(name, head.length);
  out.set(tail, head.length + name.length);
  return out;
}

Deno.test("TOC text: the same as decodeName's for every kind of bytes", () => {
  const names: Uint8Array[] = [
    enc.encode("usr/bin/ls"),
    enc.encode("usr/share/zoneinfo/América/São_Paulo ✓ 日本"),
    enc.encode("replacement \uFFFD char"),
    new Uint8Array([0x61, 0xff, 0x62, 0xc3]), // not UTF-8
    new Uint8Array([0x61, 0xef, 0xbf, 0xbd, 0xfe]), // a real U+FFFD and a bad byte
    enc.encode("\uFEFFbom inside"),
  ];
  for (const name of names) {
    const json = tocWithName(name);
    const want = JSON.parse(decodeName(json));
    const got = parseTOCUnchecked(json);
    assert.equal(got.entries[0].name, want.entries[0].name, decodeName(name));
  }
  // A BOM before the JSON is kept (and refused by JSON), as before.
  const bom = new Uint8Array([0xef, 0xbb, 0xbf, ...enc.encode('{"version":1,"entries":[]}')]);
  assert.throws(() => JSON.parse(decodeName(bom)));
  assert.throws(() => parseTOCUnchecked(bom));
});
