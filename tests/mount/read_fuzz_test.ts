/**
 * Fuzzing reads through a real `crfs mount`: mutated blobs of every layer format (bytes, whole
 * chunks, TOC fields re-serialized; see tests/fuzz/read_blobs.ts) are served from the local
 * directory (`layers/local/<n>.stargz/…`) and read at random offsets and sizes by Deno file
 * reads (several at once) and by `dd`. Every read gives exactly the source tar's bytes or fails
 * with EIO; nothing hangs, and the mount stays alive and keeps serving good blobs. `FUZZ_SEED`
 * replays a campaign, `FUZZ_MOUNT_CASES` sets the number of mutated blobs.
 *
 * @module
 */
import assert from "node:assert/strict";
import { rng } from "../unit/random_tar.ts";
import {
  type BaseBlob,
  baseBlobs,
  editTOC,
  type Mutant,
  mutateBytes,
  recompressedLegacy,
  swapChunks,
} from "../fuzz/read_blobs.ts";
import { fuseMountsAt, run, startMount, within } from "./helpers.ts";
import { requireRoot } from "../helpers/require_root.ts";

const CASES = Number(Deno.env.get("FUZZ_MOUNT_CASES") ?? 60);
const SEED = Number(Deno.env.get("FUZZ_SEED") ?? 20261202);
const READ_MS = 20_000;

/** Paths a mount shows as regular files with the tar's name (no whiteouts, plain names). */
function readable(base: BaseBlob): string[] {
  return [...base.truth.keys()].filter((p) =>
    /^[\x20-\x7e]+$/.test(p) && !p.split("/").some((c) => c.startsWith(".wh."))
  );
}

const isEIO = (e: unknown) => /os error 5\b|Input\/output error/i.test(String(e));

/** Reads `len` bytes at `off` (fewer at the end of the file) with Deno's file API. */
async function preadDeno(path: string, off: number, len: number): Promise<Uint8Array> {
  using f = await Deno.open(path);
  await f.seek(off, Deno.SeekMode.Start);
  const out = new Uint8Array(len);
  let got = 0;
  while (got < len) {
    const n = await f.read(out.subarray(got));
    if (n === null) break;
    got += n;
  }
  return out.subarray(0, got);
}

/** The same with `dd`; throws with its stderr when it fails. */
async function preadDd(path: string, off: number, len: number): Promise<Uint8Array> {
  const r = await run("dd", [
    `if=${path}`,
    "bs=65536",
    `skip=${off}`,
    `count=${len}`,
    "iflag=skip_bytes,count_bytes",
    "status=none",
  ], { timeoutMs: READ_MS });
  if (r.code !== 0) throw new Error(`dd: ${r.err.trim()}`);
  return r.bytes;
}

Deno.test({
  name:
    `crfs mount: reads at random offsets over ${CASES} mutated local blobs give the truth or EIO`,
  async fn() {
    requireRoot("FUSE mounts");
    const work = await Deno.makeTempDir({ prefix: "crfs-mount-fuzz-" });
    let stop: (() => Promise<unknown>) | undefined;
    try {
      const bases = await baseBlobs();
      const r = rng(SEED);
      const blobs: { name: string; base: BaseBlob; what: string }[] = [];
      await Deno.mkdir(`${work}/local`);
      for (let i = 0; i < bases.length; i++) {
        await Deno.writeFile(`${work}/local/good${i}.stargz`, bases[i].blob);
      }
      for (let i = 0; i < CASES; i++) {
        const base = bases[i % bases.length];
        const x = r();
        const m: Mutant = x < 0.4
          ? mutateBytes(base.blob, r)
          : x < 0.6
          ? await swapChunks(base.blob, r)
          : await editTOC(base.blob, r);
        await Deno.writeFile(`${work}/local/m${i}.stargz`, m.blob);
        blobs.push({ name: `m${i}.stargz`, base, what: `${base.name}, ${m.what}` });
      }
      const m = await startMount(`${work}/mnt`, ["--local-dir", `${work}/local`]);
      stop = m.stop;
      const layer = (name: string) => `${m.mnt}/layers/local/${name}`;

      let served = 0;
      let eio = 0;
      /** One read; asserts truth or EIO. */
      const check = async (name: string, base: BaseBlob, where: string, path: string) => {
        const want = base.truth.get(path)!;
        const file = `${layer(name)}/${path}`;
        const y = r();
        const off = y < 0.2 ? 0 : y < 0.3 ? want.length : Math.floor(r() * (want.length + 1));
        const len = r() < 0.2 ? 1 : 1 + Math.floor(r() * 200_000);
        const dd = r() < 0.25;
        const at = `${where}: ${path} [${off}+${len}] by ${dd ? "dd" : "Deno"}`;
        let got: Uint8Array;
        try {
          got = await within(
            READ_MS,
            at,
            dd ? preadDd(file, off, len) : preadDeno(file, off, len),
          );
        } catch (e) {
          if (/no answer within/.test(String(e))) throw e;
          // A blob that does not open makes its files unreachable (EIO, or ENOENT through an
          // empty listing); a file that does not verify fails its reads with EIO.
          assert.ok(isEIO(e) || e instanceof Deno.errors.NotFound, `${at}: ${e}`);
          eio++;
          return;
        }
        const expect = want.subarray(off, off + got.length);
        assert.ok(got.length <= Math.max(0, want.length - off), `${at}: ${got.length} bytes`);
        let diff = -1;
        for (let k = 0; k < got.length && diff < 0; k++) if (got[k] !== expect[k]) diff = k;
        assert.equal(diff, -1, `${at}: wrong byte at ${diff}`);
        served++;
      };

      // The unmutated blobs read back as their tars through the mount.
      for (let i = 0; i < bases.length; i++) {
        for (const p of readable(bases[i]).slice(0, 6)) {
          const got = await within(READ_MS, p, Deno.readFile(`${layer(`good${i}.stargz`)}/${p}`));
          assert.deepEqual(got, bases[i].truth.get(p), `good${i}: ${p}`);
        }
      }
      for (const b of blobs) {
        const where = `${b.name} (FUZZ_SEED=${SEED}, ${b.what})`;
        const paths = readable(b.base);
        // Half the reads go to the biggest files: many chunks, where lies and swaps land.
        const big = [...paths].sort((x, y) =>
          b.base.truth.get(y)!.length - b.base.truth.get(x)!.length
        ).slice(0, 4);
        for (let round = 0; round < 3; round++) {
          const batch = [];
          for (let k = 0; k < 3; k++) {
            const from = r() < 0.5 ? big : paths;
            batch.push(check(b.name, b.base, where, from[Math.floor(r() * from.length)]));
          }
          await Promise.all(batch);
        }
      }
      // The mount is alive and still serves good blobs.
      assert.equal(await fuseMountsAt(m.mnt), 1, "still mounted");
      for (let i = 0; i < bases.length; i++) {
        const p = readable(bases[i]).at(-1)!;
        assert.deepEqual(
          await within(READ_MS, p, Deno.readFile(`${layer(`good${i}.stargz`)}/${p}`)),
          bases[i].truth.get(p),
        );
      }
      assert.ok(served > 0 && eio > 0, `served ${served}, EIO ${eio}`);
      const status = await Promise.race([m.status, new Promise((r) => setTimeout(r, 10, "up"))]);
      assert.equal(status, "up", "crfs mount still running");
    } finally {
      await stop?.();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "crfs mount --verify strict: a recompressed legacy member fails partial reads with EIO",
  async fn() {
    requireRoot("FUSE mounts");
    const work = await Deno.makeTempDir({ prefix: "crfs-mount-strict-" });
    let stop: (() => Promise<unknown>) | undefined;
    try {
      const { blob, at } = await recompressedLegacy();
      await Deno.mkdir(`${work}/local`);
      await Deno.writeFile(`${work}/local/bad.stargz`, blob);
      const m = await startMount(`${work}/mnt`, [
        "--local-dir",
        `${work}/local`,
        "--verify",
        "strict",
      ]);
      stop = m.stop;
      const dir = `${m.mnt}/layers/local/bad.stargz/data`;
      // Reads the kernel sends as parts of the file: the changed chunk, and the untouched start.
      for (const [off, len] of [[at, 1], [0, 4096], [at - 10, 20]]) {
        await assert.rejects(
          within(READ_MS, `dd ${off}`, preadDd(`${dir}/big.bin`, off, len)),
          /Input\/output error/,
          `big.bin [${off}+${len}]`,
        );
      }
      assert.equal(await Deno.readTextFile(`${dir}/hello.txt`), "hello\n");
    } finally {
      await stop?.();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});
