/**
 * Directory listing through a real mount, with READDIRPLUS and with plain READDIR: 6000 entries
 * with names of many lengths come back complete and once each, offsets are stable
 * (telldir/seekdir from perl re-reads the same tail), and the lookup counts readdirplus hands
 * to the kernel are all returned by FORGETs once the kernel drops its caches.
 *
 * @module
 */
import assert from "node:assert/strict";
import { ROOT_ID } from "../../fs/fuse/ops.ts";
import { MemFs } from "./memfs.ts";
import { run, shOk, sleep, withMount } from "./helpers.ts";

const N = 6000;

function names(): string[] {
  const out: string[] = [];
  for (let i = 0; i < N; i++) out.push(`e${i}-${"abcdefghij".repeat(i % 25).slice(0, i % 230)}`);
  return out;
}

function build(plus: boolean): MemFs {
  const fs = new MemFs({ plus });
  const big = fs.addDir(ROOT_ID, "big");
  names().forEach((n, i) => {
    if (i % 500 === 0) fs.addDir(big, n);
    else fs.addFile(big, n, `content of ${n}\n`);
  });
  return fs;
}

const TELL_SEEK = `
  opendir(my $d, $ARGV[0]) or die "opendir: $!";
  my @first;
  for (1 .. $ARGV[1]) { push @first, scalar readdir($d) }
  my $pos = telldir($d);
  my @rest1 = readdir($d);
  seekdir($d, $pos);
  my @rest2 = readdir($d);
  rewinddir($d);
  my @all = readdir($d);
  print((join("/", @rest1) eq join("/", @rest2) ? "same" : "diff"),
    " ", scalar(@first) + scalar(@rest1), " ", scalar(@all), "\\n");
`;

for (const plus of [true, false]) {
  Deno.test(`readdir${plus ? "plus" : ""} of ${N} entries: complete, stable offsets`, async () => {
    const fs = build(plus);
    await withMount(fs, async (mp) => {
      const dir = `${mp}/big`;
      const r = await shOk(`find "$1" -mindepth 1 -maxdepth 1 -printf '%f\\n' | sort`, dir);
      assert.deepEqual(r.out.trimEnd().split("\n"), names().sort());
      assert.equal((await shOk(`ls -fa "$1" | wc -l`, dir)).out.trim(), String(N + 2));
      assert.equal((await shOk(`find "$1" -type d | wc -l`, dir)).out.trim(), String(1 + N / 500));
      const sizes = (await shOk(`ls -l "$1" | awk 'NR>1 {s += $5} END {print s}'`, dir)).out;
      const want = names().reduce(
        (s, n, i) => s + (i % 500 === 0 ? 4096 : `content of ${n}\n`.length),
        0,
      );
      assert.equal(Number(sizes), want);
      for (const at of [1, 2, 3, 100, 2999, N + 1]) {
        const t = await run("perl", ["-e", TELL_SEEK, dir, String(at)]);
        assert.equal(t.out.trim(), `same ${N + 2} ${N + 2}`, `tell/seek after ${at}: ${t.err}`);
      }
      if (plus) {
        assert.ok((fs.calls.get("readdirplusEntry") ?? 0) >= N, "entries came with readdirplus");
      }
      // Drop the kernel's caches: every lookup it was handed must come back as a FORGET.
      await shOk("sync; echo 2 > /proc/sys/vm/drop_caches");
      const end = Date.now() + 10_000;
      let held: number[] = [];
      while (Date.now() < end) {
        held = [...fs.lookups.entries()].filter(([id, n]) => id !== ROOT_ID && n !== 0)
          .map(([, n]) => n);
        if (held.length === 0) break;
        await shOk("echo 2 > /proc/sys/vm/drop_caches");
        await sleep(50);
      }
      // Only the directory "big" may still be pinned (by the kernel's dentry of the mount walk).
      assert.ok(held.every((n) => n > 0), "no node was forgotten more often than looked up");
      assert.ok(held.length <= 1, `lookups still held: ${held.length}`);
    });
  });
}
