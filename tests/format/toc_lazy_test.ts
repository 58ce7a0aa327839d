/**
 * What a reader derives after its open instead of at it: `reader.toc` (parsed again from the
 * blob's TOC on first use), `index.byPath` (built from the tree on first use) and `lookup`
 * (walked through the tree). Each must give exactly what the blob's TOC and tree say.
 *
 * @module
 */
import assert from "node:assert/strict";
import { BytesSource } from "../../format/range_source.ts";
import { StargzReader } from "../../format/reader.ts";
import { parseTOC, serializeTOC } from "../../format/toc.ts";
import { buildIndex, nodeAt, type TOCNode } from "../../format/toc_index.ts";
import { randomTar } from "../unit/random_tar.ts";
import { convert } from "../unit/tree_helpers.ts";

Deno.test("reader.toc is the blob's TOC, the same object on every use", async () => {
  for (let seed = 1; seed <= 4; seed++) {
    const { blob, result } = await convert(randomTar({ seed, entries: 50, chunkSize: 2000 }), {
      chunkSize: 2000,
    });
    const r = await StargzReader.open(new BytesSource(blob));
    assert.deepEqual(r.toc, parseTOC(serializeTOC(result.toc)), `seed ${seed}`);
    assert.equal(r.toc, r.toc, `seed ${seed}: parsed once`);
  }
});

Deno.test("index.byPath and lookup name every node of the tree, as buildIndex's do", async () => {
  for (let seed = 1; seed <= 4; seed++) {
    const { blob, result } = await convert(randomTar({ seed, entries: 80, chunkSize: 3000 }), {
      chunkSize: 3000,
    });
    const r = await StargzReader.open(new BytesSource(blob));
    // Every name reachable from the root, with its node (hardlink names give their target).
    const walked = new Map<string, TOCNode>([["", r.root]]);
    const walk = (d: TOCNode, at: string) => {
      for (const [name, c] of d.children!) {
        const path = at === "" ? name : `${at}/${name}`;
        walked.set(path, c);
        if (c.type === "dir") walk(c, path);
      }
    };
    walk(r.root, "");
    assert.deepEqual([...r.index.byPath.keys()].sort(), [...walked.keys()].sort(), `${seed}`);
    const two = buildIndex(parseTOC(serializeTOC(result.toc)), r.footer.tocOffset);
    assert.deepEqual([...r.index.byPath.keys()].sort(), [...two.byPath.keys()].sort());
    for (const [p, n] of walked) {
      assert.equal(r.index.byPath.get(p), n, `${seed}: byPath ${p}`);
      assert.equal(nodeAt(r.root, p), n, `${seed}: nodeAt ${p}`);
      assert.equal(r.lookup(`/${p}`), n, `${seed}: lookup /${p}`);
      assert.equal(r.lookup(`./${p}/`), n, `${seed}: lookup ./${p}/`);
    }
    assert.equal(r.lookup("/no/such/file"), undefined);
    const file = [...walked].find(([, n]) => n.type === "reg");
    if (file) assert.equal(nodeAt(r.root, `${file[0]}/below`), undefined, "below a file");
  }
});
