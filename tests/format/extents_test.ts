/**
 * Every chunk's compressed extent ends at the next member offset the TOC names (or at the TOC),
 * whatever order the TOC lists its files in and however many chunks share a member.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { TOC, TOCEntry } from "../../format/toc.ts";
import { buildIndex } from "../../format/toc_index.ts";

Deno.test("chunk extents end at the next larger member offset, in any TOC order", () => {
  let x = 99;
  const rand = (n: number) => (x = (x * 1103515245 + 12345) % 2 ** 31) % n;
  for (let round = 0; round < 40; round++) {
    const tocOffset = 1_000_000;
    // Distinct member offsets; some members hold two files (innerOffset 0 and 10).
    const members = new Set<number>();
    while (members.size < 30 + rand(40)) members.add(1 + rand(tocOffset - 2));
    const entries: TOCEntry[] = [];
    let n = 0;
    for (const offset of members) {
      entries.push({ name: `f${n++}`, type: "reg", size: 10, offset });
      if (rand(4) === 0) {
        entries.push({ name: `f${n++}`, type: "reg", size: 5, offset, innerOffset: 10 });
      }
    }
    // In blob order for half the rounds, shuffled for the others.
    if (round % 2) entries.sort((a, b) => a.offset! - b.offset!);
    else {
      for (let i = entries.length - 1; i > 0; i--) {
        const j = rand(i + 1);
        [entries[i], entries[j]] = [entries[j], entries[i]];
      }
    }
    const toc: TOC = { version: 1, entries };
    const index = buildIndex(toc, tocOffset);
    const sorted = [...members].sort((a, b) => a - b);
    for (const chunk of index.chunks) {
      const next = sorted.find((o) => o > chunk.offset) ?? tocOffset;
      assert.equal(chunk.end, next, `round ${round}: chunk at ${chunk.offset}`);
    }
    assert.equal(index.chunks.length, entries.length);
  }
});
