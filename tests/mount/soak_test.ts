/**
 * A bounded soak of a real mount: 20 small eStargz images (1,000 files each, two tags each) in a
 * docker-registry, read round after round through `images/` (by tag) and walked through
 * `layers/`, the status file read, and the kernel's caches dropped between rounds (so the
 * kernel forgets nearly every node: FORGET and BATCH_FORGET storms). Per round it prints the
 * crfs process's resident memory (VmRSS), the number of nodes its inode table keeps (statfs
 * `f_files`), the round's wall time and crfs's CPU time in it (to tell a slow machine from a
 * slow crfs: one profile gave V8's collector a third of crfs's CPU time, the heap capped), and
 * asserts:
 *
 * - every round reads every byte right;
 * - after the caches are dropped the inode table holds no more than its idle budget (16,384)
 *   plus what the kernel still holds, although the rounds look up some 20,600 distinct nodes;
 * - resident memory after the last round is at most the warm-up's (rounds 0 and 1) plus 48 MiB
 *   (see `RSS_MARGIN_MIB`), with the V8 heap limited to `HEAP_MIB` so that VmRSS follows what
 *   is live.
 *
 * @module
 */
import assert from "node:assert/strict";
import { encodeHeader, END_OF_ARCHIVE, tarHeader } from "../../format/tar_header.ts";
import {
  bash,
  dropCaches,
  type Layer,
  pushImage,
  Registry,
  run,
  sleep,
  startMount,
  toEStargz,
} from "./helpers.ts";
import { requireRoot } from "../helpers/require_root.ts";

const IMAGES = 20;
const FILES = 1000;
const ROUNDS = 6;
/**
 * Rounds before memory is taken as warmed up: round 0 opens every layer and fills the tables;
 * round 1 is the first to look up again what the kernel forgot (nodes rebuilt, numbers given
 * back from the retired keys).
 */
const WARM_UP = 1;
/** The inode table's default idle budget (fs/inode_table.ts). */
const IDLE_NODES = 16_384;
/**
 * Nodes the kernel may still hold right after `drop_caches` (the mount's directories down to
 * the images, open directories of the shell): far below one image's tree.
 */
const HELD_MARGIN = 1_000;
/**
 * Allowed growth of VmRSS from the end of the warm-up to the last round. By then every layer is
 * open and every table full; what remains is collection timing within the heap limit (measured
 * here over 12 rounds: 185–214 MiB, up and down by 10–20 MiB between rounds). A leak of the
 * node tables (some 20,000 nodes a round, each with closures and, for directories, child maps)
 * or of status snapshots grows past it within the rounds, or runs out of heap.
 */
const RSS_MARGIN_MIB = 48;

/**
 * The crfs process's V8 old-generation limit. V8 otherwise lets garbage pile up for several
 * rounds before a major collection (measured: VmRSS +21 MiB a round up to +115 MiB, then back
 * down), which says nothing about what is kept. With the limit, collections come soon enough
 * for VmRSS to follow what is live, and memory that kept growing would end the process
 * (out of memory) instead of passing.
 */
const HEAP_MIB = 96;

const enc = new TextEncoder();

function content(image: number, file: number): Uint8Array {
  return enc.encode(`image ${image} file ${file}\n`);
}

async function imageTar(path: string, image: number): Promise<number> {
  const parts: Uint8Array[] = [];
  let bytes = 0;
  for (let d = 0; d < 10; d++) {
    parts.push(
      encodeHeader(tarHeader({ name: `d${d}/`, kind: "dir", mode: 0o755, mtimeSec: 1e9 })),
    );
    for (let f = d * (FILES / 10); f < (d + 1) * (FILES / 10); f++) {
      const body = content(image, f);
      bytes += body.length;
      parts.push(encodeHeader(tarHeader({
        name: `d${d}/f${f}`,
        kind: "reg",
        size: body.length,
        mode: 0o644,
        mtimeSec: 1e9,
      })));
      const block = new Uint8Array(512);
      block.set(body);
      parts.push(block);
    }
  }
  parts.push(END_OF_ARCHIVE);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  await Deno.writeFile(path, out);
  return bytes;
}

async function rssMiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kb = Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]);
  return Math.round(kb / 102.4) / 10;
}

/** CPU seconds (user + system) the process has used so far, from /proc/PID/stat. */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks
}

async function tableNodes(mnt: string): Promise<number> {
  return Number((await run("stat", ["-f", "-c", "%c", mnt])).out.trim());
}

Deno.test({
  name: "crfs mount soak: memory and the inode table stay flat over rounds with forget storms",
  async fn() {
    requireRoot("FUSE mounts");
    const work = await Deno.makeTempDir({ prefix: "crfs-mount-soak-" });
    let reg: Registry | undefined;
    let stop: (() => Promise<unknown>) | undefined;
    try {
      reg = await Registry.create();
      const expected: number[] = [];
      for (let i = 0; i < IMAGES; i++) {
        const tar = `${work}/img${i}.tar`;
        expected.push(await imageTar(tar, i));
        const layer: Layer = await toEStargz(tar);
        for (const tag of ["v1", "latest"]) await pushImage(reg.host, `soak/img${i}`, tag, [layer]);
      }
      const m = await startMount(`${work}/mnt`, ["--prefetch", "off"], {
        denoArgs: [`--v8-flags=--max-old-space-size=${HEAP_MIB}`],
      });
      stop = m.stop;
      const I = `${m.mnt}/images/${reg.host}/soak`;
      const L = `${m.mnt}/layers/${reg.host}/soak`;
      const rss: number[] = [];
      for (let round = 0; round <= ROUNDS; round++) {
        const t0 = performance.now();
        const cpu0 = await cpuSeconds(m.pid);
        for (let i = 0; i < IMAGES; i++) {
          const tag = (round + i) % 2 === 0 ? "v1" : "latest";
          const r = await bash(
            `find "$1" -type f -print0 | xargs -0 cat | wc -c; ` +
              `find -H "$2" -type f | wc -l; cat "$3" > /dev/null`,
            [`${I}/img${i}/${tag}`, `${L}/img${i}/v1/0`, `${m.mnt}/crfs-status.json`],
            { timeoutMs: 120_000 },
          );
          const [bytes, files] = r.out.trim().split("\n").map(Number);
          assert.equal(bytes, expected[i], `round ${round}, image ${i}: bytes read`);
          assert.equal(files, FILES, `round ${round}, image ${i}: files in layers/`);
        }
        const wallS = (performance.now() - t0) / 1000;
        const cpuS = await cpuSeconds(m.pid) - cpu0;
        const before = await tableNodes(m.mnt);
        await dropCaches();
        await sleep(500);
        const nodes = await tableNodes(m.mnt);
        rss.push(await rssMiB(m.pid));
        console.log(
          `soak round ${round}${round <= WARM_UP ? " (warm-up)" : ""}: VmRSS ${rss[round]} MiB, ` +
            `inode table ${before} nodes after the round, ${nodes} after drop_caches; ` +
            `${wallS.toFixed(1)} s, crfs ${cpuS.toFixed(1)} CPU s (${
              Math.round(cpuS / wallS * 100)
            } %)`,
        );
        assert.ok(
          nodes <= IDLE_NODES + HELD_MARGIN,
          `round ${round}: the inode table keeps ${nodes} nodes`,
        );
      }
      const warm = Math.max(...rss.slice(0, WARM_UP + 1));
      assert.ok(
        rss[ROUNDS] <= warm + RSS_MARGIN_MIB,
        `VmRSS grew from ${warm} MiB (warm-up) to ${rss[ROUNDS]} MiB: ${rss.join(", ")}`,
      );
      assert.equal((await m.stop()).code, 0, m.stderr());
      stop = undefined;
    } finally {
      await stop?.();
      await reg?.close();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});
