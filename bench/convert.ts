/**
 * Benchmark: `crfs convert` throughput on a real tarball of at least 200 MB from this machine,
 * beside `gzip -6` and `pigz -6` compressing the same input in the same run.
 *
 * @module
 */
import { best, DENO, have, MAIN, mbps, OUT, table, timeCommand } from "./common.ts";

/** Real directories to tar, in order, until the tarball is big enough. */
const SOURCES = [
  "usr/share/go-1.19",
  "usr/lib/go-1.19",
  "usr/lib/x86_64-linux-gnu",
  "usr/share/locale",
  "usr/lib",
];
const MIN_BYTES = 200e6;

/** Makes (or reuses) the benchmark tarball and returns its path. */
export async function realTarball(): Promise<string> {
  await Deno.mkdir(OUT, { recursive: true });
  const path = `${OUT}real.tar`;
  try {
    if ((await Deno.stat(path)).size >= MIN_BYTES) return path;
  } catch { /* make it */ }
  const dirs: string[] = [];
  for (const d of SOURCES) {
    try {
      await Deno.stat(`/${d}`);
    } catch {
      continue;
    }
    dirs.push(d);
    await timeCommand("tar", ["-cf", path, "-C", "/", ...dirs]);
    if ((await Deno.stat(path)).size >= MIN_BYTES) return path;
  }
  throw new Error("could not gather 200 MB of real files for the benchmark");
}

if (import.meta.main) {
  const tar = await realTarball();
  const size = (await Deno.stat(tar)).size;
  const runs = Number(Deno.env.get("BENCH_RUNS") ?? 2);
  const rows: (string | number)[][] = [];
  const row = async (name: string, secs: number, out: string) => {
    rows.push([
      name,
      secs.toFixed(2),
      mbps(size, secs),
      ((await Deno.stat(out)).size / 1e6).toFixed(1),
    ]);
  };
  const crfsOut = `${OUT}real.estargz`;
  await row(
    `crfs convert (eStargz, level 6, ${navigator.hardwareConcurrency} workers)`,
    await best(runs, () => timeCommand(DENO, ["run", "-A", MAIN, "convert", "-q", tar, crfsOut])),
    crfsOut,
  );
  const gz = `${OUT}real.tar.gz`;
  await row(
    "gzip -6 (one thread)",
    await best(runs, () => timeCommand("gzip", ["-6", "-c", tar], { stdoutFile: gz })),
    gz,
  );
  if (await have("pigz")) {
    const pgz = `${OUT}real.pigz.gz`;
    await row(
      `pigz -6 (${navigator.hardwareConcurrency} threads)`,
      await best(runs, () => timeCommand("pigz", ["-6", "-c", tar], { stdoutFile: pgz })),
      pgz,
    );
  }
  table(`convert: ${(size / 1e6).toFixed(0)} MB real tarball (${tar}), best of ${runs}`, [
    "tool",
    "seconds",
    "MB/s",
    "output MB",
  ], rows);
}
