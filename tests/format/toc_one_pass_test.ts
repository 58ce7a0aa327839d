/**
 * `indexTOC` (the reader's one pass: each entry checked as it is indexed) against `parseTOC`
 * then `buildIndex`: the same tree for random layers, and a refusal for every TOC either
 * refuses.
 *
 * @module
 */
import assert from "node:assert/strict";
import { parseTOC, serializeTOC, type TOC, TOCError } from "../../format/toc.ts";
import { buildIndex, chunksOf, indexTOC, type TOCNode } from "../../format/toc_index.ts";
import { randomTar } from "../unit/random_tar.ts";
import { convert } from "../unit/tree_helpers.ts";

/** The tree as plain data: every path with its attributes, chunks and children's names. */
function shape(byPath: Map<string, TOCNode>): unknown[] {
  return [...byPath].map(([p, n]) => ({
    p,
    ...n,
    xattrs: [...n.xattrs],
    content: chunksOf(n).map(({ node: _, ...chunk }) => chunk),
    children: n.children ? [...n.children.keys()] : undefined,
  }));
}

Deno.test("indexTOC gives the tree parseTOC then buildIndex give", async () => {
  for (let seed = 1; seed <= 6; seed++) {
    const { result } = await convert(randomTar({ seed, entries: 60, chunkSize: 3000 }), {
      chunkSize: 3000,
    });
    const json = serializeTOC(result.toc);
    const tocOffset = 2 ** 40;
    const one = indexTOC(json, tocOffset);
    const two = buildIndex(parseTOC(json), tocOffset);
    assert.deepEqual(one.toc, parseTOC(json), `seed ${seed}: the TOC`);
    assert.deepEqual(shape(one.index.byPath), shape(two.byPath), `seed ${seed}: the tree`);
    assert.deepEqual(
      one.index.chunks.map(({ node, ...chunk }) => [one.index.pathOf(node), chunk]),
      two.chunks.map(({ node, ...chunk }) => [two.pathOf(node), chunk]),
    );
  }
});

Deno.test("indexTOC refuses what parseTOC or buildIndex refuse", () => {
  const d = "sha256:" + "a".repeat(64);
  const file = { name: "f", type: "reg", size: 4, offset: 10, digest: d, chunkDigest: d };
  const bad: [string, unknown[]][] = [
    ["a negative size", [{ ...file, size: -1 }]],
    ["a malformed digest", [{ ...file, digest: "sha256:xyz" }]],
    ["an unknown type", [{ name: "x", type: "socket" }]],
    ["a bad modtime", [{ name: "d", type: "dir", modtime: "yesterday" }]],
    ["xattrs that are not strings", [{ name: "d", type: "dir", xattrs: { a: 1 } }]],
    ["a '..' name", [{ name: "../x", type: "dir" }]],
    ["a stray chunk", [{ name: "f", type: "chunk", offset: 20, chunkOffset: 2 }]],
    ["a file used as a directory", [file, { name: "f/g", type: "dir" }]],
    ["no name", [{ type: "dir" }]],
  ];
  for (const [what, entries] of bad) {
    const json = new TextEncoder().encode(JSON.stringify({ version: 1, entries }));
    assert.throws(() => buildIndex(parseTOC(json), 1000), TOCError, `${what}: two passes`);
    assert.throws(() => indexTOC(json, 1000), TOCError, `${what}: one pass`);
  }
  const ok: TOC = { version: 1, entries: [file as TOC["entries"][0]] };
  assert.equal(indexTOC(serializeTOC(ok), 1000).index.byPath.get("f")?.size, 4);
});
