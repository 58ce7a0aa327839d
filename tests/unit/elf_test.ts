/**
 * format/elf.ts on this machine's own binaries (interpreter, needed libraries) and on damaged
 * copies of them: truncated or flipped bytes give an answer or undefined, never a throw.
 *
 * @module
 */
import assert from "node:assert/strict";
import { elfDeps, isElf } from "../../format/elf.ts";

const real = async (p: string) => await Deno.readFile(await Deno.realPath(p));

Deno.test("elf: a dynamic executable's interpreter and needed libraries, a library's own", async () => {
  const sh = elfDeps(await real("/bin/sh"));
  assert.ok(sh, "parsed");
  assert.deepEqual(sh.machine, 62);
  assert.deepEqual(sh.interpreter, "/lib64/ld-linux-x86-64.so.2");
  assert.ok(sh.needed.includes("libc.so.6"), JSON.stringify(sh.needed));
  const libc = elfDeps(await real("/lib/x86_64-linux-gnu/libc.so.6"));
  assert.ok(libc?.needed.includes("ld-linux-x86-64.so.2"), JSON.stringify(libc));
  const ld = elfDeps(await real("/lib64/ld-linux-x86-64.so.2"));
  assert.deepEqual(ld?.needed, [], "the loader needs nothing");
});

Deno.test("elf: not ELF, truncated, or damaged: undefined or an answer, never a throw", async () => {
  assert.deepEqual(elfDeps(new TextEncoder().encode("#!/bin/sh\necho hi\n")), undefined);
  assert.deepEqual(elfDeps(new Uint8Array(0)), undefined);
  assert.ok(!isElf(new Uint8Array([0x7f, 0x45])));
  const sh = await real("/bin/sh");
  let answered = 0;
  for (const n of [4, 16, 52, 63, 64, 100, 1000, 5000, 20000, sh.length - 1]) {
    if (elfDeps(sh.subarray(0, n))) answered++;
  }
  assert.ok(answered < 10, "short copies lose their dynamic section");
  let seed = 7;
  for (let i = 0; i < 300; i++) {
    const bad = sh.slice(0, 64 << 10);
    for (let k = 0; k < 8; k++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      bad[seed % 4096] ^= 1 << (seed >>> 29);
    }
    const d = elfDeps(bad);
    if (d) { for (const n of d.needed) assert.ok(typeof n === "string"); }
  }
});
