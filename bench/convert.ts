/**
 * Benchmark: `crfs convert` throughput on a real tarball of at least 200 MB from this machine,
 * as eStargz (one member per chunk, and small files packed with `--min-chunk-size 1M`) and as
 * zstd:chunked, beside `gzip -6`, `pigz -6` and `zstd` compressing the same input and skopeo
 * writing zstd:chunked of it (the peer tool of that format), in the same run. The output sizes
 * compare each lazy format with plain gzip and zstd of the same tar.
 *
 * @module
 */
import { best, crfsArgs, DENO, have, mbps, OUT, table, timeCommand } from "./common.ts";
import { writeOciLayout } from "../tests/format/helpers.ts";

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
    await best(runs, () => crfsConvert([tar, crfsOut])),
    crfsOut,
  );
  const packedOut = `${OUT}real.packed.estargz`;
  await row(
    "crfs convert --min-chunk-size 1M (eStargz, innerOffset)",
    await best(runs, () => crfsConvert(["--min-chunk-size", "1M", tar, packedOut])),
    packedOut,
  );
  const zstdChunkedOut = `${OUT}real.zstd-chunked`;
  await row(
    `crfs convert --format zstd:chunked (level 10, ${navigator.hardwareConcurrency} workers)`,
    await best(runs, () => crfsConvert(["--format", "zstd:chunked", tar, zstdChunkedOut])),
    zstdChunkedOut,
  );
  if (await have("skopeo")) {
    const layout = await tarLayout(tar);
    const dst = `${OUT}real-skopeo-zstd`;
    let secs = Infinity;
    for (let i = 0; i < runs; i++) {
      await Deno.remove(dst, { recursive: true }).catch(() => {});
      const s = await timeCommand("skopeo", [
        "copy",
        "--quiet",
        "--dest-compress-format",
        "zstd:chunked",
        `oci:${layout}:t`,
        `oci:${dst}:t`,
      ]);
      secs = Math.min(secs, s);
    }
    await row("skopeo copy --dest-compress-format zstd:chunked", secs, await onlyLayer(dst));
  }
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
  if (await have("zstd")) {
    for (const level of [3, 10]) {
      const zst = `${OUT}real.tar.${level}.zst`;
      await row(
        `zstd -${level} -T0 (plain zstd, not lazy)`,
        await best(
          runs,
          () => timeCommand("zstd", [`-${level}`, "-T0", "-q", "-c", tar], { stdoutFile: zst }),
        ),
        zst,
      );
    }
  }
  table(`convert: ${(size / 1e6).toFixed(0)} MB real tarball (${tar}), best of ${runs}`, [
    "tool",
    "seconds",
    "MB/s",
    "output MB",
  ], rows);
}

/** An OCI layout `bench/out/real-layout` holding `tar` as the only (uncompressed) layer. */
/** Times one `crfs convert -q ARGS…` run, in seconds. */
function crfsConvert(args: string[]): Promise<number> {
  return timeCommand(DENO, crfsArgs("convert", "-q", ...args));
}

async function tarLayout(tar: string): Promise<string> {
  const dir = `${OUT}real-layout`;
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  await writeOciLayout(dir, tar);
  return dir;
}

/** The path of the only layer blob of the image tagged `t` in the OCI layout `dir`. */
async function onlyLayer(dir: string): Promise<string> {
  const blob = (d: string) => `${dir}/blobs/sha256/${d.slice(7)}`;
  const index = JSON.parse(await Deno.readTextFile(`${dir}/index.json`));
  const manifest = JSON.parse(await Deno.readTextFile(blob(index.manifests[0].digest)));
  return blob(manifest.layers[0].digest);
}
