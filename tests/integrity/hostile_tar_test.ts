/**
 * Hostile tar input to `crfs convert` (the real CLI): path traversal, a huge extension header,
 * a bad checksum, a truncated stream, not a tar at all. Each is one clear error line and exit 1,
 * and no output file — complete-looking or partial — is left behind.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  encodeHeader,
  END_OF_ARCHIVE,
  type TarHeader,
  tarHeader,
} from "../../format/tar_header.ts";
import { crfs } from "../cmd/helpers.ts";

function h(name: string, size = 0): TarHeader {
  return tarHeader({ name, size, mtimeSec: 0 });
}

function tarOf(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) (out.set(p, o), o += p.length);
  return out;
}

const good = tarOf(
  encodeHeader(h("ok.txt", 3)),
  new Uint8Array(512).fill(65, 0, 3),
  END_OF_ARCHIVE,
);
const badChecksum = good.slice();
badChecksum[150] ^= 1;
const hugePax = encodeHeader(h("x", 0));
// A PAX header claiming 1 GiB of records.
const paxBlock = new Uint8Array(512);
paxBlock.set(encodeHeader(h("PaxHeaders/x", 0)).subarray(0, 512));
paxBlock[156] = 0x78;
paxBlock.set(new TextEncoder().encode("10000000000\0"), 124);
paxBlock.fill(0x20, 148, 156);
let sum = 0;
for (const b of paxBlock) sum += b;
paxBlock.set(new TextEncoder().encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);

const cases: [string, Uint8Array, RegExp][] = [
  [
    "path traversal",
    tarOf(encodeHeader(h("../../etc/evil", 0)), END_OF_ARCHIVE),
    /'\.\.' component/,
  ],
  ["a huge extension header", tarOf(paxBlock, hugePax, END_OF_ARCHIVE), /too large/],
  ["a bad checksum", badChecksum, /checksum/],
  ["a truncated stream", good.subarray(0, 700), /truncated/],
  [
    "not a tar",
    new TextEncoder().encode("hello, this is not a tar archive at all ".repeat(30)),
    /tar/,
  ],
];

for (const [what, bytes, message] of cases) {
  Deno.test(`convert refuses ${what} with one clear line and leaves no output`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "crfs-hostile-tar-" });
    try {
      await Deno.writeFile(`${dir}/in.tar`, bytes);
      const r = await crfs(["convert", `${dir}/in.tar`, `${dir}/out.estargz`]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trim().split("\n").length, 1, `one line: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, / {4}at /, "no stack trace");
      const left = [];
      for await (const e of Deno.readDir(dir)) left.push(e.name);
      assert.deepEqual(left, ["in.tar"], "no output, no temporary file");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("convert of a well-formed tar next to these cases works", async () => {
  const dir = await Deno.makeTempDir({ prefix: "crfs-hostile-tar-" });
  try {
    await Deno.writeFile(`${dir}/in.tar`, good);
    const r = await crfs(["convert", "-q", `${dir}/in.tar`, `${dir}/out.estargz`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^sha256:[0-9a-f]{64}\n$/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
