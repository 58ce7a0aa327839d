/**
 * Benchmark: crfs beside the reference stargz-store (containerd's stargz-snapshotter library,
 * built from Debian's Go sources by `../shared/peers/stargz-store/build.sh`, binary cached in
 * `bench/out/`) on the SAME crfs-converted one-layer image (`/usr/include` of this machine plus a
 * 270 MB file of concatenated `/usr/lib` and `/usr/share` files; layer cached in `bench/out/`)
 * served by one loopback docker-registry. crfs is read through `crfs mount`
 * (`MNT/images/HOST/REPO/TAG/`), the peer through its plain FUSE view
 * (`MNT/<base64 of REF>/<layer digest>/diff/`). Each run starts from an empty cache directory
 * with kernel caches dropped; the two alternate which goes first; best of `--runs` (default 2).
 *
 * Rows: process start → first byte of a small file (with the server's CPU time, registry requests
 * and bytes before it; and again with only the executables read into the page cache after the
 * drop — Deno's 96 MB binary and crfs's module cache against the peer's binary — since a first
 * start from a cold disk is mostly paging the runtime in),
 * `find` cold and warm, `ls -lR`, `lstat` of every entry, one FUSE round trip (`getxattr`),
 * `dd` of the big file cold from the
 * registry, again after dropping kernel caches (same process), resident memory of the serving
 * process after all that (at once and 2 s later), and `dd` by a new process on the same cache directory with kernel caches
 * dropped. The last column is the time (or memory) ratio crfs/peer: below 1 means crfs is better.
 *
 * `deno task bench vs_stargz_store` (root: FUSE mounts and drop_caches).
 *
 * @module
 */
// The one import of the image-pushing helper (it may move to convert/ in a refactor).
import { type ConvertedLayer, pushEStargzLayers } from "../convert/push.ts";
import { defaultDrivers } from "../drivers/mod.ts";
import { writeEStargz } from "../format/writer.ts";
import { startRegistry, type TestRegistry } from "../tests/helpers/registry.ts";
import {
  crfsArgs,
  DENO,
  dropCaches,
  type MountServer,
  OUT,
  peerBinary,
  startMountServer,
  table,
  timeBash,
  timeCommand,
} from "./common.ts";

const BIG_SIZE = 270_000_000;
const MIN_ENTRIES = 6_000;
const REPO = "bench/vs";
const SMALL = "usr/include/stdio.h";
const BIG = "big.bin";

function arg(name: string, def: number): number {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Number(Deno.args[i + 1]) : def;
}
const RUNS = arg("--runs", 2);

/** The converted layer (blob + what the writer said), made once into bench/out/. */
async function convertedLayer(): Promise<ConvertedLayer> {
  const blobPath = `${OUT}vs-layer.stargz`;
  const meta = `${OUT}vs-layer.json`;
  try {
    const result = JSON.parse(await Deno.readTextFile(meta));
    if ((await Deno.stat(blobPath)).size === result.blobSize) return { blobPath, result };
  } catch { /* make it */ }
  await Deno.mkdir(OUT, { recursive: true });
  console.error("bench: building and converting the one-layer image (once)");
  const dir = await Deno.makeTempDir({ dir: OUT, prefix: "vs-src-" });
  try {
    await timeBash(
      `find /usr/lib /usr/share -xdev -type f -size +100k 2>/dev/null | LC_ALL=C sort | ` +
        `xargs cat 2>/dev/null | head -c ${BIG_SIZE} > "$1/${BIG}"`,
      dir,
    );
    await timeBash(`tar -cf "$1/layer.tar" -C / usr/include -C "$1" ${BIG}`, dir);
    const input = await Deno.open(`${dir}/layer.tar`);
    const out = await Deno.open(blobPath, { write: true, create: true, truncate: true });
    let r;
    try {
      r = await writeEStargz(input.readable, async (b) => {
        for (let o = 0; o < b.length;) o += await out.write(b.subarray(o));
      });
    } finally {
      out.close();
    }
    const result = {
      blobDigest: r.blobDigest,
      blobSize: r.blobSize,
      diffId: r.diffId,
      tocDigest: r.tocDigest,
      uncompressedSize: r.uncompressedSize,
      entries: r.toc.entries.length,
    };
    await Deno.writeTextFile(meta, JSON.stringify(result));
    return { blobPath, result };
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** A running server (crfs or the peer). */
type Server = MountServer;

/** Spawns `cmd args`, resolves once stderr says "mounted at". */
function startServer(cmd: string, args: string[], mnt: string): Promise<Server> {
  return startMountServer(cmd, args, mnt, {
    signal: "SIGINT",
    pollMs: 2,
    what: `${cmd} ${args.join(" ")}`,
    afterStop: () =>
      timeBash(`! mountpoint -q "$1" || umount -l "$1"`, mnt).then(() => {}, () => {}),
  });
}

/** One of the two systems measured. */
interface System {
  name: string;
  start(mnt: string, cache: string): Promise<Server>;
  /** The directory holding the image's files. */
  root(mnt: string): string;
  /** Reads the system's executable code into the page cache (nothing of the image). */
  warmExecutables(): Promise<void>;
}

/** The rows, in table order. */
interface Result {
  firstByteS: number;
  /** The same with the executables in the page cache (a fresh cache dir, image never seen). */
  firstByteWarmExeS: number;
  /** CPU time (user + system) of the serving process up to that byte, in seconds. */
  firstByteCpuS: number;
  requests: number;
  bytes: number;
  findColdS: number;
  findWarmS: number;
  lsS: number;
  lstatS: number;
  roundTripUs: number;
  ddColdMBps: number;
  ddDiskMBps: number;
  rssMB: number;
  /** The same two seconds later, nothing read meanwhile. */
  rssSettledMB: number;
  ddRestartMBps: number;
}

/** User + system CPU seconds a process has used so far (`/proc/PID/stat`, 10 ms ticks). */
async function cpuSeconds(pid: number): Promise<number> {
  const s = await Deno.readTextFile(`/proc/${pid}/stat`);
  const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}

async function rssMB(pid: number): Promise<number> {
  const s = await Deno.readTextFile(`/proc/${pid}/status`);
  const m = /VmRSS:\s+(\d+) kB/.exec(s);
  return m ? Number(m[1]) / 1024 : NaN;
}

const libc = Deno.dlopen("libc.so.6", {
  getxattr: { parameters: ["buffer", "buffer", "buffer", "usize"], result: "isize" },
});
const cstr = (t: string) => new TextEncoder().encode(`${t}\0`);

/**
 * One FUSE request round trip, in µs: `getxattr` of a name the file lacks (the kernel caches
 * neither the answer nor ENODATA, so each call is one GETXATTR), best of 3 × 2,000.
 */
function roundTripUs(path: string): number {
  const p = cstr(path);
  const name = cstr("user.crfs-bench-missing");
  const buf = new Uint8Array(64);
  let bestUs = Infinity;
  for (let r = 0; r < 3; r++) {
    const t = performance.now();
    for (let i = 0; i < 2000; i++) libc.symbols.getxattr(p, name, buf, BigInt(buf.length));
    bestUs = Math.min(bestUs, (performance.now() - t) / 2000 * 1000);
  }
  return bestUs;
}

/** Opens `path` and reads one byte (in this process, no spawn cost). */
async function firstByte(path: string): Promise<void> {
  const f = await Deno.open(path);
  try {
    const n = await f.read(new Uint8Array(1));
    if (n !== 1) throw new Error(`no first byte of ${path}`);
  } finally {
    f.close();
  }
}

async function measure(
  sys: System,
  reg: TestRegistry,
  work: string,
  run: number,
  bigSize: number,
): Promise<Result> {
  const mnt = `${work}/mnt-${sys.name}-${run}`;
  const cache = `${work}/cache-${sys.name}-${run}`;
  const root = sys.root(mnt);
  const dd = async (p: string) =>
    bigSize / 1e6 / await timeBash(`dd if="$1" of=/dev/null bs=1M 2>/dev/null`, p);
  await dropCaches();
  await sys.warmExecutables();
  const tw = performance.now();
  let server = await sys.start(mnt, `${cache}-exe-warm`);
  try {
    await firstByte(`${root}/${SMALL}`);
  } finally {
    await server.stop();
  }
  const firstByteWarmExeS = (performance.now() - tw) / 1000;
  await dropCaches();
  reg.clearLog();
  const t0 = performance.now();
  server = await sys.start(mnt, cache);
  try {
    await firstByte(`${root}/${SMALL}`);
    const firstByteS = (performance.now() - t0) / 1000;
    const firstByteCpuS = await cpuSeconds(server.pid);
    const log = await reg.accessLog();
    const before = log.filter((e) => !e.path.includes("marker"));
    const list = `${work}/list-${sys.name}-${run}`;
    const findColdS = await timeCommand("find", [root], { stdoutFile: list });
    const findWarmS = await timeBash(`find "$1" > /dev/null`, root);
    const lsS = await timeBash(`ls -lR "$1" > /dev/null`, root);
    const lstatS = await timeBash(`xargs -d '\\n' -a "$1" stat -c %s > /dev/null`, list);
    const entries = (await Deno.readTextFile(list)).split("\n").length - 1;
    if (entries < MIN_ENTRIES) throw new Error(`${sys.name}: only ${entries} entries`);
    const rtUs = roundTripUs(`${root}/${SMALL}`);
    const ddColdMBps = await dd(`${root}/${BIG}`);
    await dropCaches();
    const ddDiskMBps = await dd(`${root}/${BIG}`);
    const rss = await rssMB(server.pid);
    await new Promise((r) => setTimeout(r, 2000));
    const rssSettled = await rssMB(server.pid);
    await server.stop();
    server = await sys.start(mnt, cache);
    await dropCaches();
    const ddRestartMBps = await dd(`${root}/${BIG}`);
    return {
      firstByteS,
      firstByteWarmExeS,
      firstByteCpuS,
      requests: before.length,
      bytes: before.reduce((a, e) => a + e.bytes, 0),
      findColdS,
      findWarmS,
      lsS,
      lstatS,
      roundTripUs: rtUs,
      ddColdMBps,
      ddDiskMBps,
      rssMB: rss,
      rssSettledMB: rssSettled,
      ddRestartMBps,
    };
  } finally {
    await server.stop();
  }
}

function bestOf(rs: Result[]): Result {
  const min = (k: keyof Result) => Math.min(...rs.map((r) => r[k]));
  const max = (k: keyof Result) => Math.max(...rs.map((r) => r[k]));
  const fb = rs.reduce((a, r) => r.firstByteS < a.firstByteS ? r : a);
  return {
    firstByteS: fb.firstByteS,
    firstByteWarmExeS: min("firstByteWarmExeS"),
    firstByteCpuS: min("firstByteCpuS"),
    requests: fb.requests,
    bytes: fb.bytes,
    findColdS: min("findColdS"),
    findWarmS: min("findWarmS"),
    lsS: min("lsS"),
    lstatS: min("lstatS"),
    roundTripUs: min("roundTripUs"),
    ddColdMBps: max("ddColdMBps"),
    ddDiskMBps: max("ddDiskMBps"),
    rssMB: min("rssMB"),
    rssSettledMB: min("rssSettledMB"),
    ddRestartMBps: max("ddRestartMBps"),
  };
}

if (import.meta.main) {
  const peer = await peerBinary("stargz-store");
  const layer = await convertedLayer();
  const reg = await startRegistry();
  const work = await Deno.makeTempDir({ prefix: "crfs-bench-vs-" });
  try {
    const driver = defaultDrivers().forHost(reg.host);
    await pushEStargzLayers(driver, { host: reg.host, repository: REPO }, "v1", [layer]);
    const ref = `${reg.host}/${REPO}:v1`;
    const digest = layer.result.blobDigest;
    const crfs: System = {
      name: "crfs",
      start: (mnt, cache) => startServer(DENO, crfsArgs("mount", mnt, "--cache-dir", cache), mnt),
      root: (mnt) => `${mnt}/images/${reg.host}/${REPO}/v1`,
      warmExecutables: async () => {
        await timeBash(`cat "$1" > /dev/null`, DENO);
        await timeCommand(DENO, crfsArgs("mount", "--help"));
      },
    };
    const stargz: System = {
      name: "stargz-store",
      start: (mnt, cache) => startServer(peer, ["-root", cache, mnt], mnt),
      root: (mnt) => `${mnt}/${btoa(ref)}/${digest}/diff`,
      warmExecutables: () => timeBash(`cat "$1" > /dev/null`, peer).then(() => {}),
    };
    const results: Record<string, Result[]> = { crfs: [], "stargz-store": [] };
    for (let run = 0; run < RUNS; run++) {
      const order = run % 2 === 0 ? [crfs, stargz] : [stargz, crfs];
      for (const sys of order) {
        const r = await measure(sys, reg, work, run, BIG_SIZE);
        console.error(`bench: run ${run} ${sys.name}: ${JSON.stringify(r)}`);
        results[sys.name].push(r);
      }
    }
    const c = bestOf(results.crfs);
    const p = bestOf(results["stargz-store"]);
    const s = (x: number) => `${x.toFixed(3)} s`;
    const mb = (x: number) => `${x.toFixed(0)} MB/s`;
    const ratio = (a: number, b: number) => (a / b).toFixed(2);
    const meta = layer.result as typeof layer.result & { entries?: number };
    table(
      `crfs vs stargz-store: one-layer image of ${meta.entries ?? "?"} entries, ` +
        `${(layer.result.uncompressedSize / 1e6).toFixed(0)} MB (blob ` +
        `${(layer.result.blobSize / 1e6).toFixed(0)} MB), a ${BIG_SIZE / 1e6} MB file; ` +
        `empty caches, kernel caches dropped, best of ${RUNS} alternating`,
      ["row", "crfs", "stargz-store", "crfs/peer (below 1 = crfs better)"],
      [
        [
          `process start → first byte of ${SMALL}`,
          s(c.firstByteS),
          s(p.firstByteS),
          ratio(c.firstByteS, p.firstByteS),
        ],
        [
          "the same, executables already in the page cache",
          s(c.firstByteWarmExeS),
          s(p.firstByteWarmExeS),
          ratio(c.firstByteWarmExeS, p.firstByteWarmExeS),
        ],
        [
          "CPU (user + system) of the server up to that byte",
          s(c.firstByteCpuS),
          s(p.firstByteCpuS),
          ratio(c.firstByteCpuS, p.firstByteCpuS),
        ],
        [
          "registry requests / KB before that byte",
          `${c.requests} / ${(c.bytes / 1e3).toFixed(0)}`,
          `${p.requests} / ${(p.bytes / 1e3).toFixed(0)}`,
          ratio(c.bytes, p.bytes),
        ],
        [
          "`find` right after (cold)",
          s(c.findColdS),
          s(p.findColdS),
          ratio(c.findColdS, p.findColdS),
        ],
        ["`find` again (warm)", s(c.findWarmS), s(p.findWarmS), ratio(c.findWarmS, p.findWarmS)],
        ["`ls -lR`", s(c.lsS), s(p.lsS), ratio(c.lsS, p.lsS)],
        [
          "`lstat` of every entry (`xargs stat`)",
          s(c.lstatS),
          s(p.lstatS),
          ratio(c.lstatS, p.lstatS),
        ],
        [
          "FUSE request round trip (`getxattr` → ENODATA)",
          `${c.roundTripUs.toFixed(1)} µs`,
          `${p.roundTripUs.toFixed(1)} µs`,
          ratio(c.roundTripUs, p.roundTripUs),
        ],
        [
          `\`dd\` of ${BIG}, cold from the registry`,
          mb(c.ddColdMBps),
          mb(p.ddColdMBps),
          ratio(p.ddColdMBps, c.ddColdMBps),
        ],
        [
          "again after dropping kernel caches (same process)",
          mb(c.ddDiskMBps),
          mb(p.ddDiskMBps),
          ratio(p.ddDiskMBps, c.ddDiskMBps),
        ],
        [
          "resident memory (VmRSS) of the serving process after that",
          `${c.rssMB.toFixed(0)} MB`,
          `${p.rssMB.toFixed(0)} MB`,
          ratio(c.rssMB, p.rssMB),
        ],
        [
          "the same 2 s later (nothing read meanwhile)",
          `${c.rssSettledMB.toFixed(0)} MB`,
          `${p.rssSettledMB.toFixed(0)} MB`,
          ratio(c.rssSettledMB, p.rssSettledMB),
        ],
        [
          "new process on the same cache dir, kernel caches dropped",
          mb(c.ddRestartMBps),
          mb(p.ddRestartMBps),
          ratio(p.ddRestartMBps, c.ddRestartMBps),
        ],
      ],
    );
  } finally {
    await reg.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}
