/**
 * One FUSE request round trip, crfs's loop beside C libfuse's on the same machine: a caller in
 * this process makes synchronous `getxattr` calls (a name that is absent: GETXATTR → ENODATA,
 * never cached by the kernel) and `stat`s of a missing name (LOOKUP → ENOENT, not cached either)
 * against (1) the in-memory test filesystem served by `fs/fuse/session.ts` in a child Deno
 * process, (2) `bench/c/rt_ll.c`, a libfuse3 low-level server built here with gcc (needs
 * libfuse3-dev), with libfuse's single-threaded and multi-threaded loops, and (3) `crfs mount`
 * itself serving the image of bench/vs_stargz_store.ts from a loopback registry (getxattr of a
 * file in it; its negative lookups are cached by the kernel, so no lookup column), when that
 * bench has made its layer in bench/out/. Alternates the order; prints best-of µs per request
 * and the ratio to libfuse's single-threaded loop.
 *
 * Usage: deno run -A bench/fuse_roundtrip.ts [--calls N] [--rounds N]
 *   With `--serve MOUNTPOINT` it is the child that serves the test filesystem. Deno flags for
 *   the crfs children (e.g. `--cpu-prof`) can be given in CRFS_BENCH_CHILD_FLAGS.
 *
 * @module
 */
import { pushEStargzLayers } from "../convert/push.ts";
import { defaultDrivers } from "../drivers/mod.ts";
import { mount } from "../fs/fuse/mount.ts";
import { ROOT_ID } from "../fs/fuse/ops.ts";
import { MemFs } from "../tests/fuse/memfs.ts";
import { startRegistry, type TestRegistry } from "../tests/helpers/registry.ts";
import { DENO, MAIN, OUT, startMountServer } from "./common.ts";

function arg(name: string, def: number): number {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Number(Deno.args[i + 1]) : def;
}

const serveAt = Deno.args.indexOf("--serve");
if (serveAt >= 0) {
  const fs = new MemFs();
  fs.addFile(ROOT_ID, "file", "x");
  const m = await mount(Deno.args[serveAt + 1], fs);
  Deno.addSignalListener("SIGTERM", () => m.unmount({ graceMs: 1000 }));
  console.log("ready");
  await m.closed;
  console.error(`  crfs served ${m.stats.requests} requests, waited for ${m.stats.waits}`);
  Deno.exit(0);
}

const CALLS = arg("--calls", 5000);
type Row = { getxattr: number; lookup: number };
const ROUNDS = arg("--rounds", 3);

const libc = Deno.dlopen("libc.so.6", {
  getxattr: { parameters: ["buffer", "buffer", "buffer", "usize"], result: "isize" },
  stat: { parameters: ["buffer", "buffer"], result: "i32" },
});
const enc = new TextEncoder();
const cstr = (t: string) => enc.encode(`${t}\0`);

/** Best-of-`ROUNDS` µs per call of `call`, `CALLS` calls a round. */
function timeUs(call: () => void): number {
  let best = Infinity;
  for (let r = 0; r < ROUNDS; r++) {
    const t = performance.now();
    for (let i = 0; i < CALLS; i++) call();
    best = Math.min(best, (performance.now() - t) / CALLS * 1000);
  }
  return best;
}

/** µs per GETXATTR of `file` and (unless `file` is given) per LOOKUP of a missing name. */
function measure(root: string, file?: string): Row {
  const path = cstr(file ?? root);
  const name = cstr("user.crfs-bench-missing");
  const val = new Uint8Array(64);
  const missing = cstr(`${root}/no-such-name`);
  const st = new Uint8Array(256);
  // Warm up (JIT on both sides).
  for (let i = 0; i < 500; i++) libc.symbols.getxattr(path, name, val, 64n);
  return {
    getxattr: timeUs(() => libc.symbols.getxattr(path, name, val, 64n)),
    lookup: file ? NaN : timeUs(() => libc.symbols.stat(missing, st)),
  };
}

/** Starts `cmd`, waits for its "ready" line, measures, stops it and waits for the unmount. */
async function withServer(
  cmd: string,
  args: string[],
  mnt: string,
  stop: () => Promise<void>,
): Promise<Row> {
  await Deno.mkdir(mnt, { recursive: true });
  const child = new Deno.Command(cmd, { args, stdout: "piped", stderr: "inherit" }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("ready")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`${cmd} ended before it was ready`);
    out += value;
  }
  try {
    return measure(mnt);
  } finally {
    await stop();
    reader.releaseLock();
    await child.stdout.cancel().catch(() => {});
    const st = await child.status;
    if (!st.success) console.error(`${cmd} exited with ${st.code}`);
  }
}

async function sh(args: string[]): Promise<void> {
  const r = await new Deno.Command(args[0], { args: args.slice(1), stderr: "piped" }).output();
  if (!r.success) throw new Error(`${args.join(" ")}: ${new TextDecoder().decode(r.stderr)}`);
}

const here = new URL(".", import.meta.url).pathname;
const rtBin = `${here}out/rt_ll`;
await Deno.mkdir(`${here}out`, { recursive: true });
await sh([
  "sh",
  "-c",
  `gcc -O2 -Wall -o "${rtBin}" "${here}c/rt_ll.c" $(pkg-config --cflags --libs fuse3)`,
]);

const tmp = await Deno.makeTempDir({ prefix: "crfs-rt-" });
const best = new Map<string, Row>();
const keep = (label: string, r: Row) => {
  const b = best.get(label);
  best.set(label, {
    getxattr: Math.min(b?.getxattr ?? Infinity, r.getxattr),
    lookup: Math.min(b?.lookup ?? Infinity, r.lookup),
  });
  console.error(`${label}: getxattr ${r.getxattr.toFixed(1)} µs, lookup ${r.lookup.toFixed(1)} µs`);
};
const childFlags = (Deno.env.get("CRFS_BENCH_CHILD_FLAGS") ?? "").split(" ").filter(Boolean);

/** A registry with bench/vs_stargz_store.ts's image, if that bench has made its layer. */
async function vsImage(): Promise<{ reg: TestRegistry; dir: string } | undefined> {
  let layer;
  try {
    const result = JSON.parse(await Deno.readTextFile(`${OUT}vs-layer.json`));
    layer = { blobPath: `${OUT}vs-layer.stargz`, result };
  } catch {
    console.error(
      "no bench/out/vs-layer.*: run `deno task bench vs_stargz_store` for the crfs row",
    );
    return undefined;
  }
  const reg = await startRegistry();
  const driver = defaultDrivers().forHost(reg.host);
  await pushEStargzLayers(driver, { host: reg.host, repository: "bench/rt" }, "v1", [layer]);
  return { reg, dir: `images/${reg.host}/bench/rt/v1` };
}

const image = await vsImage();
try {
  const servers: [string, (mnt: string) => Promise<Row>][] = [
    ["crfs loop, test filesystem", (mnt) =>
      withServer(
        DENO,
        ["run", "-A", ...childFlags, new URL(import.meta.url).pathname, "--serve", mnt],
        mnt,
        () => sh(["umount", mnt]),
      )],
    [
      "libfuse3, single-threaded loop",
      (mnt) => withServer(rtBin, [mnt], mnt, () => sh(["umount", mnt])),
    ],
    [
      "libfuse3, multi-threaded loop",
      (mnt) => withServer(rtBin, [mnt, "-mt"], mnt, () => sh(["umount", mnt])),
    ],
  ];
  if (image) {
    servers.push(["crfs mount, registry image", async (mnt) => {
      const srv = await startMountServer(
        DENO,
        ["run", "-A", ...childFlags, MAIN, "mount", mnt, "--cache-dir", `${mnt}-cache`],
        mnt,
        { signal: "SIGINT", pollMs: 2, what: "crfs mount" },
      );
      try {
        return measure(mnt, `${mnt}/${image.dir}/usr/include/stdio.h`);
      } finally {
        await srv.stop();
      }
    }]);
  }
  for (let run = 0; run < 2; run++) {
    const order = run % 2 === 0 ? servers : [...servers].reverse();
    for (const [label, go] of order) keep(label, await go(`${tmp}/mnt-${run}-${best.size}`));
  }
} finally {
  await image?.reg.stop();
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
}

const ref = best.get("libfuse3, single-threaded loop")!;
const w = Math.max(...[...best.keys()].map((k) => k.length));
console.log(`\nFUSE request round trip, µs per request (best of ${ROUNDS} × ${CALLS})\n`);
console.log(
  `${"server".padEnd(w)} | getxattr→ENODATA | ×libfuse | lookup→ENOENT | ×libfuse`,
);
console.log(`${"-".repeat(w)}-|------------------|----------|---------------|---------`);
for (const [label, r] of best) {
  console.log(
    `${label.padEnd(w)} | ${r.getxattr.toFixed(1).padStart(16)} | ${
      (r.getxattr / ref.getxattr).toFixed(2).padStart(8)
    } | ${(isNaN(r.lookup) ? "—" : r.lookup.toFixed(1)).padStart(13)} | ${
      (isNaN(r.lookup) ? "—" : (r.lookup / ref.lookup).toFixed(2)).padStart(8)
    }`,
  );
}
