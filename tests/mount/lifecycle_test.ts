/**
 * `crfs mount` as a process, under stress and faults:
 *
 * - the registry is killed in the middle of reading a file: reads that need the registry fail
 *   with EIO within bounded time (no hang, never wrong bytes), what was fetched keeps being
 *   served; after the registry restarts (same port, same data) the same open file, new lookups
 *   and whole-file reads succeed with exact bytes;
 * - many readers at once on a cold mount (different files, the same file, a walk) get exact
 *   bytes;
 * - SIGINT and SIGTERM unmount and exit 0, also with a file held open and with kernel overlayfs
 *   stacked on the layers; SIGKILL leaves a stale mount (ENOTCONN) that the next `crfs mount`
 *   clears, even with an overlay still stacked on the dead one.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  bash,
  dropCaches,
  fuseMountsAt,
  mountOverlay,
  pushImage,
  Registry,
  run,
  sleep,
  startMount,
  tarTree,
  toEStargz,
  unmountAllUnder,
  within,
} from "./helpers.ts";
import { requireRoot } from "../helpers/require_root.ts";

const MiB = 1 << 20;

/** A layer with `data/big.bin` (40 MiB of random bytes) and a few small files. */
async function dataLayer(work: string, name: string, seedFile: string) {
  const dir = `${work}/${name}`;
  await bash(
    `mkdir -p "$1/data/small" && head -c ${
      40 * MiB
    } /dev/urandom > "$2" && cp "$2" "$1/data/big.bin"
    for i in $(seq 1 50); do head -c $((i * 3001)) /dev/urandom > "$1/data/small/f$i"; done`,
    [dir, seedFile],
  );
  await tarTree(dir, `${dir}.tar`);
  return await toEStargz(`${dir}.tar`);
}

async function readAt(f: Deno.FsFile, offset: number, length: number): Promise<Uint8Array> {
  await f.seek(offset, Deno.SeekMode.Start);
  const out = new Uint8Array(length);
  let n = 0;
  while (n < length) {
    const r = await f.read(out.subarray(n));
    if (r === null) break;
    n += r;
  }
  return out.subarray(0, n);
}

Deno.test({
  name: "crfs mount: registry killed mid-read gives EIO (no hang, no wrong bytes), then recovers",
  async fn() {
    requireRoot("FUSE mounts");
    const work = await Deno.makeTempDir({ prefix: "crfs-mount-eio-" });
    let reg: Registry | undefined;
    let stop: (() => Promise<unknown>) | undefined;
    let f: Deno.FsFile | undefined;
    try {
      reg = await Registry.create();
      const big = `${work}/big.expected`;
      const layer = await dataLayer(work, "l", big);
      await pushImage(reg.host, "eio/img", "v1", [layer]);
      await pushImage(reg.host, "eio/img", "other", [await dataLayer(work, "o", `${big}.o`)]);
      const want = await Deno.readFile(big);
      // Fetch only what is read: no prefetch, no read-ahead, no disk cache.
      const m = await startMount(`${work}/mnt`, ["--no-background-fetch", "--no-cache"]);
      stop = m.stop;
      const img = `${m.mnt}/images/${reg.host}/eio/img`;
      f = await Deno.open(`${img}/v1/data/big.bin`);
      // One reader going through the file in order, 1 MiB at a time; the registry dies after
      // its fifth read. Every byte it got is right, and then it gets EIO, in bounded time.
      let off = 0;
      let err: Error | undefined;
      const t0 = performance.now();
      let tKill = 0;
      while (off < want.length) {
        if (off === 5 * MiB) {
          await reg.kill();
          tKill = performance.now();
        }
        let got: Uint8Array;
        try {
          got = await within(90_000, `read at ${off} with the registry down`, readAt(f, off, MiB));
        } catch (e) {
          err = e as Error;
          break;
        }
        assert.deepEqual(got, want.subarray(off, off + MiB), `bytes at ${off}`);
        off += got.length;
      }
      assert.ok(err, "reads of bytes not fetched yet fail while the registry is down");
      assert.match(err.message, /Input\/output error|os error 5/);
      assert.ok(off >= 5 * MiB && off < want.length, `failed at ${off}`);
      console.log(
        `  EIO at offset ${off} after ${(performance.now() - tKill).toFixed(0)} ms ` +
          `(${((tKill - t0) / 1000).toFixed(1)} s of reading before)`,
      );
      // What was fetched is still served, exactly; other tools see EIO too, in bounded time.
      assert.deepEqual(await readAt(f, 4096, 8192), want.subarray(4096, 4096 + 8192));
      const dd = await run("dd", [
        `if=${img}/v1/data/big.bin`,
        "of=/dev/null",
        "bs=1M",
        "skip=20",
        "count=1",
        "iflag=direct",
      ], { timeoutMs: 90_000 });
      assert.notEqual(dd.code, 0);
      assert.match(dd.err, /Input\/output error/);
      // An image not opened yet cannot be looked up now; the failure is not remembered.
      const ls = await run("ls", [`${img}/other/data`], { timeoutMs: 90_000 });
      assert.notEqual(ls.code, 0);
      assert.match(ls.err, /Input\/output error/);

      await reg.start(); // same port, same data directory
      // The same open file goes on where it failed, to the end, with exact bytes.
      for (; off < want.length; off += MiB) {
        assert.deepEqual(await readAt(f, off, MiB), want.subarray(off, off + MiB), `at ${off}`);
      }
      const sum = await run("sha256sum", [`${img}/v1/data/big.bin`]);
      const sumWant = await run("sha256sum", [big]);
      assert.equal(sum.out.split(" ")[0], sumWant.out.split(" ")[0]);
      const other = await run("cmp", [`${img}/other/data/big.bin`, `${big}.o`]);
      assert.equal(other.code, 0, other.err + other.out);
      assert.match(m.stderr(), /crfs: .*(refused|connect|error)/i, "the failure was logged");
    } finally {
      f?.close();
      await stop?.();
      await reg?.close();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "crfs mount: many readers at once on a cold mount get exact bytes",
  async fn() {
    requireRoot("FUSE mounts");
    const work = await Deno.makeTempDir({ prefix: "crfs-mount-par-" });
    let reg: Registry | undefined;
    let stop: (() => Promise<unknown>) | undefined;
    try {
      reg = await Registry.create();
      const big = `${work}/big.expected`;
      const layer = await dataLayer(work, "l", big);
      await pushImage(reg.host, "par/img", "v1", [layer]);
      await bash(`mkdir "$1/x" && tar -xf "$2" -C "$1/x"`, [work, layer.tar]);
      const want = (await bash(`cd "$1/x" && find . -type f -exec sha256sum {} + | LC_ALL=C sort`, [
        work,
      ])).out;
      const m = await startMount(`${work}/mnt`);
      stop = m.stop;
      await dropCaches();
      const img = `${m.mnt}/images/${reg.host}/par/img/v1`;
      const [all, ...same] = await within(
        240_000,
        "parallel readers",
        Promise.all([
          bash(
            `cd "$1" && find . -type f -print0 | xargs -0 -n 2 -P 16 sha256sum | LC_ALL=C sort`,
            [img],
          ),
          ...[0, 1, 2, 3].map((i) =>
            bash(`dd if="$1" bs=${[4096, 65536, 1 << 20, 333333][i]} 2>/dev/null | sha256sum`, [
              `${img}/data/big.bin`,
            ])
          ),
          bash(`ls -lR "$1" > /dev/null && find "$1" -ls > /dev/null`, [img]),
        ]),
      );
      assert.equal(all.out, want);
      const bigSum = want.split("\n").find((l) => l.endsWith("./data/big.bin"))!.split(" ")[0];
      for (const s of same.slice(0, 4)) assert.equal(s.out.split(" ")[0], bigSum);
    } finally {
      await stop?.();
      await reg?.close();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "crfs mount: SIGINT/SIGTERM unmount (file held open, overlay stacked); SIGKILL recovery",
  async fn(t) {
    requireRoot("FUSE mounts");
    const work = await Deno.makeTempDir({ prefix: "crfs-mount-sig-" });
    let reg: Registry | undefined;
    const stops: (() => Promise<unknown>)[] = [];
    try {
      reg = await Registry.create();
      const big = `${work}/big.expected`;
      const layers = [await dataLayer(work, "l0", big), await dataLayer(work, "l1", `${big}.1`)];
      await pushImage(reg.host, "sig/img", "v1", layers);
      const mnt = `${work}/mnt`;
      const img = (m: string) => `${m}/images/${reg!.host}/sig/img/v1`;

      await t.step("SIGINT: unmounted, exit 0", async () => {
        const m = await startMount(mnt);
        stops.push(m.stop);
        assert.equal((await run("ls", [`${img(m.mnt)}/data`])).out, "big.bin\nsmall\n");
        m.kill("SIGINT");
        const s = await within(30_000, "exit after SIGINT", m.status);
        assert.equal(s.code, 0, m.stderr());
        assert.equal(await fuseMountsAt(m.mnt), 0);
        assert.match(m.stderr(), /crfs: unmounted /);
      });

      await t.step("SIGTERM with a file held open: exits within the grace period", async () => {
        const m = await startMount(mnt);
        stops.push(m.stop);
        const holder = new Deno.Command("bash", {
          args: [
            "-c",
            `exec 3< "$1"; head -c 1000 <&3 > /dev/null; sleep 30`,
            "bash",
            `${img(m.mnt)}/data/big.bin`,
          ],
        }).spawn();
        try {
          await sleep(500);
          const t0 = performance.now();
          m.kill("SIGTERM");
          const s = await within(30_000, "exit after SIGTERM", m.status);
          assert.equal(s.code, 0, m.stderr());
          assert.ok(performance.now() - t0 < 15_000);
          assert.equal(await fuseMountsAt(m.mnt), 0);
        } finally {
          holder.kill("SIGKILL");
          await holder.status;
        }
      });

      await t.step("SIGTERM with overlayfs stacked on the layers", async () => {
        const m = await startMount(mnt);
        stops.push(m.stop);
        const L = `${m.mnt}/layers/${reg!.host}/sig/img/v1`;
        const merged = await mountOverlay([`${L}/1`, `${L}/0`], `${work}/ov1`);
        try {
          assert.equal((await run("cmp", [`${merged}/data/big.bin`, `${big}.1`])).code, 0);
          m.kill("SIGTERM");
          const s = await within(60_000, "exit after SIGTERM", m.status);
          assert.equal(s.code, 0, m.stderr());
          assert.equal(await fuseMountsAt(m.mnt), 0);
          // The overlay's lower layers are gone: an error, not a hang.
          const r = await run("cat", [`${merged}/data/small/f1`], { timeoutMs: 30_000 });
          assert.notEqual(r.code, 0);
        } finally {
          await unmountAllUnder(`${work}/ov1`);
        }
      });

      await t.step("SIGKILL leaves a stale mount; the next crfs mount clears it", async () => {
        const m1 = await startMount(mnt);
        stops.push(m1.stop);
        const L = `${m1.mnt}/layers/${reg!.host}/sig/img/v1`;
        const merged = await mountOverlay([`${L}/1`, `${L}/0`], `${work}/ov2`);
        try {
          assert.equal((await run("cmp", [`${merged}/data/big.bin`, `${big}.1`])).code, 0);
          m1.kill("SIGKILL");
          await m1.status;
          const dead = await run("cat", [`${merged}/data/small/f2`], { timeoutMs: 30_000 });
          assert.notEqual(dead.code, 0, "the overlay on the dead mount fails, without a hang");
          const r = await run("ls", [m1.mnt], { timeoutMs: 30_000 });
          assert.match(r.err, /Transport endpoint is not connected/);
          assert.equal(await fuseMountsAt(m1.mnt), 1);
          // The next crfs mount at the same place clears it, with the overlay still on it.
          const m2 = await startMount(mnt);
          stops.push(m2.stop);
          assert.equal(await fuseMountsAt(m2.mnt), 1);
          const cmp = await run("cmp", [`${img(m2.mnt)}/data/big.bin`, `${big}.1`]);
          assert.equal(cmp.code, 0, cmp.out + cmp.err);
          assert.match(m2.stderr(), /mounted at/);
          const s = await m2.stop();
          assert.equal(s.code, 0);
          assert.equal(await fuseMountsAt(m2.mnt), 0);
        } finally {
          await unmountAllUnder(`${work}/ov2`);
        }
      });
    } finally {
      await unmountAllUnder(`${work}/ov1`).catch(() => {});
      await unmountAllUnder(`${work}/ov2`).catch(() => {});
      for (const s of stops.reverse()) await s().catch(() => {});
      await reg?.close();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});
