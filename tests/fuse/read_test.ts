/**
 * Reading through a real mount: a 50 MiB file read whole and at odd offsets/sizes (through the
 * page cache and with direct I/O, so READ requests carry the callers' exact offsets), many
 * concurrent reads completing while one read is stuck, a stuck read released by killing its
 * reader (INTERRUPT), and ops that throw (EIO, or the FuseError's errno) without harming the
 * mount.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Errno } from "../../fs/fuse/abi.ts";
import { FuseError, ROOT_ID } from "../../fs/fuse/ops.ts";
import { MemFs, Pattern } from "./memfs.ts";
import { gate, run, sameBytes, sh, shOk, sleep, withMount } from "./helpers.ts";

const BIG = 50 * 1024 * 1024 + 12_345;

function sha256(p: Pattern): string {
  const h = createHash("sha256");
  for (let off = 0; off < p.size; off += 1 << 20) h.update(p.slice(off, 1 << 20));
  return h.digest("hex");
}

function dd(path: string, skip: number, count: number, bs = 65536) {
  return run("dd", [
    `if=${path}`,
    `bs=${bs}`,
    "iflag=skip_bytes,count_bytes",
    `skip=${skip}`,
    `count=${count}`,
    "status=none",
  ]);
}

async function waitUntil(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const RANGES: [number, number][] = [
  [0, 1],
  [1, 7],
  [4095, 2],
  [4097, 4096],
  [65_535, 131_073],
  [(1 << 20) - 3, 1_000_003],
  [33_333_333, 3_000_001],
  [BIG - 10, 10],
  [BIG - 1, 100],
  [BIG - 5000, 1 << 20],
  [BIG, 10],
  [BIG + 4096, 10],
];

Deno.test("a big file reads back exactly, whole and at odd offsets and sizes", async () => {
  const fs = new MemFs();
  const p = new Pattern(BIG, 7);
  fs.addFile(ROOT_ID, "big", p);
  fs.addFile(ROOT_ID, "bigdirect", p, { directIo: true });
  await withMount(fs, async (mp) => {
    const want = sha256(p);
    for (const name of ["big", "bigdirect"]) {
      const sum = (await shOk(`sha256sum < "$1"`, `${mp}/${name}`)).out.split(" ")[0];
      assert.equal(sum, want, `${name} sha256`);
      for (const [off, n] of RANGES) {
        for (const bs of [4096, 65_536, 1_000_001]) {
          const r = await dd(`${mp}/${name}`, off, n, bs);
          assert.equal(r.code, 0, r.err);
          sameBytes(r.stdout, p.slice(off, n), `${name} [${off}, +${n}) bs=${bs}`);
        }
      }
    }
    // Random positional reads from this process (async file API: the blocking pool does them).
    const f = await Deno.open(`${mp}/bigdirect`);
    try {
      let seed = 42;
      for (let i = 0; i < 40; i++) {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        const off = seed % BIG;
        const n = 1 + (seed % 300_000);
        await f.seek(off, Deno.SeekMode.Start);
        const buf = new Uint8Array(n);
        let got = 0;
        while (got < n) {
          const k = await f.read(buf.subarray(got));
          if (k === null) break;
          got += k;
        }
        sameBytes(buf.subarray(0, got), p.slice(off, n), `pread ${off}+${n}`);
      }
    } finally {
      f.close();
    }
  });
});

Deno.test("many concurrent reads complete while one read is stuck", async () => {
  const fs = new MemFs();
  const g = gate();
  fs.addFile(ROOT_ID, "slow", "finally here\n", { gate: g.promise });
  const files: Pattern[] = [];
  for (let i = 0; i < 24; i++) {
    files.push(new Pattern(200_000 + i * 9_999, 100 + i));
    fs.addFile(ROOT_ID, `f${i}`, files[i], { directIo: i % 2 === 1 });
  }
  const big = new Pattern(8 << 20, 3);
  fs.addFile(ROOT_ID, "big", big, { directIo: true });
  await withMount(fs, async (mp) => {
    let slowDone = false;
    const slow = run("cat", [`${mp}/slow`]).then((r) => {
      slowDone = true;
      return r;
    });
    await waitUntil(() => (fs.calls.get("gated") ?? 0) >= 1, "the slow read to arrive");
    const jobs: Promise<void>[] = [];
    for (let i = 0; i < files.length; i++) {
      jobs.push(
        run("cat", [`${mp}/f${i}`]).then((r) => {
          assert.equal(r.code, 0, r.err);
          sameBytes(r.stdout, files[i].slice(0, files[i].size), `f${i}`);
        }),
      );
    }
    for (let i = 0; i < 16; i++) {
      const off = i * 511_111;
      jobs.push(
        dd(`${mp}/big`, off, 300_007, 100_003).then((r) => {
          assert.equal(r.code, 0, r.err);
          sameBytes(r.stdout, big.slice(off, 300_007), `big @${off}`);
        }),
      );
    }
    await Promise.all(jobs);
    assert.equal(slowDone, false, "the slow read is still waiting");
    g.open();
    const r = await slow;
    assert.equal(r.code, 0);
    assert.equal(r.out, "finally here\n");
  });
});

Deno.test("killing a reader stuck in a read interrupts it (INTERRUPT aborts the op)", async () => {
  const fs = new MemFs();
  const never = gate();
  fs.addFile(ROOT_ID, "stuck", "never\n", { gate: never.promise, directIo: true });
  fs.addFile(ROOT_ID, "ok", "fine\n");
  await withMount(fs, async (mp) => {
    const child = new Deno.Command("cat", {
      args: [`${mp}/stuck`],
      stdout: "null",
      stderr: "null",
    }).spawn();
    await waitUntil(() => (fs.calls.get("gated") ?? 0) >= 1, "the stuck read to arrive");
    child.kill("SIGKILL");
    const st = await Promise.race([child.status, sleep(5000).then(() => "hung" as const)]);
    assert.notEqual(st, "hung", "the killed reader exited");
    await waitUntil(() => (fs.calls.get("aborted") ?? 0) >= 1, "the read op to be aborted");
    assert.equal((await shOk(`cat "$1/ok"`, mp)).out, "fine\n");
  });
});

Deno.test("ops that throw are answered with EIO or their errno; the mount stays healthy", async () => {
  const fs = new MemFs();
  fs.addFile(ROOT_ID, "boom", "x", { failRead: new Error("kaboom"), directIo: true });
  fs.addFile(ROOT_ID, "eperm", "x", { failRead: new FuseError(Errno.EPERM) });
  fs.addFile(ROOT_ID, "typeerr", "x", { failRead: new TypeError("bug") });
  fs.addFile(ROOT_ID, "fine", "still fine\n");
  fs.failLookup.add("badname");
  const errors: string[] = [];
  await withMount(fs, async (mp) => {
    for (let round = 0; round < 3; round++) {
      const boom = await sh(`cat "$1/boom"`, mp);
      assert.match(boom.err, /Input\/output error/);
      const eperm = await sh(`cat "$1/eperm"`, mp);
      assert.match(eperm.err, /Operation not permitted/);
      const te = await sh(`cat "$1/typeerr"`, mp);
      assert.match(te.err, /Input\/output error/);
      const bad = await sh(`stat "$1/badname"`, mp);
      assert.match(bad.err, /Input\/output error/);
      assert.equal((await shOk(`cat "$1/fine"`, mp)).out, "still fine\n");
      assert.equal((await shOk(`ls "$1" | wc -l`, mp)).out.trim(), "4");
    }
    assert.ok(errors.some((e) => e.startsWith("READ")), "onError saw the READ exception");
    assert.ok(errors.some((e) => e.startsWith("LOOKUP")), "onError saw the LOOKUP exception");
    assert.ok(!errors.some((e) => e.includes("FuseError")), "FuseErrors are not reported");
  }, { onError: (err, op) => errors.push(`${op} ${err}`) });
});
