/**
 * The headline benchmark: a real image of more than 300 MB (a Debian root filesystem made with
 * debootstrap, plus a second layer of Go's standard library sources from this machine), pushed
 * as eStargz to a local docker-registry, then
 *
 * - full pull: `skopeo copy` to an OCI directory, extract every layer, read a few files;
 * - crfs, cold cache: mount, read the same files; again after a remount (warm cache);
 * - worst case: `find` plus reading every file, crfs (cold) against the full pull;
 * - the same image as zstd:chunked, written by crfs and by skopeo (`--dest-compress-format
 *   zstd:chunked`, the peer tool of that format), read cold by crfs beside eStargz, with the
 *   image sizes against plain gzip and zstd of the same tars.
 *
 * Time to the first byte of the first file, total time, bytes and requests the registry served
 * (from its own log). Run with `deno task bench lazy`.
 *
 * @module
 */
import { defaultDrivers } from "../drivers/mod.ts";
import { pushEStargzImage } from "../convert/push.ts";
import { startRegistry, type TestRegistry } from "../tests/helpers/registry.ts";
import { crfsArgs, DENO, OUT, table } from "./common.ts";

/** The files "a container" reads: what a shell start and a Go tool start touch. */
const FILES = [
  "etc/os-release",
  "usr/bin/bash",
  "usr/lib/x86_64-linux-gnu/libc.so.6",
  "etc/passwd",
  "usr/share/go-1.19/src/fmt/print.go",
  "usr/lib/x86_64-linux-gnu/libtinfo.so.6",
];

async function run(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd: opts.cwd, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** The layer tarballs (made once, kept in bench/out/). */
export async function layerTars(): Promise<string[]> {
  await Deno.mkdir(OUT, { recursive: true });
  const rootTar = `${OUT}debian-rootfs.tar`;
  try {
    await Deno.stat(rootTar);
  } catch {
    const dir = `${OUT}debian-rootfs`;
    console.error("bench: debootstrap --variant=minbase bookworm (about a minute, once)");
    await run("debootstrap", [
      "--variant=minbase",
      "bookworm",
      dir,
      "http://deb.debian.org/debian",
    ]);
    await run("tar", ["-cf", rootTar, "--numeric-owner", "--xattrs", "-C", dir, "."]);
    await Deno.remove(dir, { recursive: true });
  }
  const goTar = `${OUT}go-src.tar`;
  try {
    await Deno.stat(goTar);
  } catch {
    await run("tar", ["-cf", goTar, "-C", "/", "usr/share/go-1.19"]);
  }
  return [rootTar, goTar];
}

/** Converts and pushes the image as REPO:v1; returns its total compressed size. */
export async function pushImage(
  reg: TestRegistry,
  tars: string[],
  repository = "bench/debian",
  format: "estargz" | "zstd:chunked" = "estargz",
): Promise<number> {
  const streams = [];
  for (const t of tars) streams.push((await Deno.open(t)).readable);
  const driver = defaultDrivers().forHost(reg.host);
  return (await pushEStargzImage(driver, { host: reg.host, repository }, "v1", streams, {
    format,
  })).size;
}

/**
 * Writes the tars as an image with skopeo's zstd:chunked (an OCI layout of the plain tars,
 * copied with `--dest-compress-format zstd:chunked` to another layout, then to the registry as
 * REPO:v1); returns the total layer size and skopeo's seconds for the conversion.
 */
async function pushSkopeoZstdChunked(
  reg: TestRegistry,
  tars: string[],
  work: string,
  repository: string,
): Promise<{ size: number; seconds: number }> {
  const src = `${work}/plain-layout`;
  await Deno.mkdir(`${src}/blobs/sha256`, { recursive: true });
  const enc = new TextEncoder();
  const hexOf = async (b: Uint8Array) =>
    Array.from(
      new Uint8Array(await crypto.subtle.digest("SHA-256", b as Uint8Array<ArrayBuffer>)),
      (x) => x.toString(16).padStart(2, "0"),
    ).join("");
  const layers = [];
  for (const t of tars) {
    const hex = (await run("sha256sum", [t])).split(" ")[0];
    await Deno.copyFile(t, `${src}/blobs/sha256/${hex}`);
    layers.push({
      mediaType: "application/vnd.oci.image.layer.v1.tar",
      digest: `sha256:${hex}`,
      size: (await Deno.stat(t)).size,
    });
  }
  const put = async (o: unknown) => {
    const b = enc.encode(JSON.stringify(o));
    const hex = await hexOf(b);
    await Deno.writeFile(`${src}/blobs/sha256/${hex}`, b);
    return { digest: `sha256:${hex}`, size: b.length };
  };
  const config = await put({
    architecture: "amd64",
    os: "linux",
    config: {},
    rootfs: { type: "layers", diff_ids: layers.map((l) => l.digest) },
  });
  const manifest = await put({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
    layers,
  });
  await Deno.writeTextFile(`${src}/oci-layout`, JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  await Deno.writeTextFile(
    `${src}/index.json`,
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        ...manifest,
        annotations: { "org.opencontainers.image.ref.name": "v1" },
      }],
    }),
  );
  const t0 = performance.now();
  await run("skopeo", [
    "copy",
    "--quiet",
    "--dest-compress-format",
    "zstd:chunked",
    `oci:${src}:v1`,
    `oci:${work}/zstd-layout:v1`,
  ]);
  const seconds = (performance.now() - t0) / 1000;
  await Deno.remove(src, { recursive: true });
  await run("skopeo", [
    "copy",
    "--quiet",
    "--dest-tls-verify=false",
    `oci:${work}/zstd-layout:v1`,
    `docker://${reg.host}/${repository}:v1`,
  ]);
  const index = JSON.parse(await Deno.readTextFile(`${work}/zstd-layout/index.json`));
  const m = JSON.parse(
    await Deno.readTextFile(
      `${work}/zstd-layout/blobs/sha256/${index.manifests[0].digest.slice(7)}`,
    ),
  );
  await Deno.remove(`${work}/zstd-layout`, { recursive: true });
  return { size: m.layers.reduce((n: number, l: { size: number }) => n + l.size, 0), seconds };
}

/** Bytes of `cmd args < tar` summed over the tars (plain gzip / zstd of the same layers). */
async function compressedSize(cmd: string, args: string[], tars: string[]): Promise<number> {
  let n = 0;
  for (const t of tars) {
    const out = await run("sh", ["-c", `${cmd} ${args.join(" ")} < "$1" | wc -c`, "sh", t]);
    n += Number(out.trim());
  }
  return n;
}

interface Measure {
  firstByteS: number;
  totalS: number;
  bytes: number;
  requests: number;
}

async function traffic(reg: TestRegistry): Promise<{ bytes: number; requests: number }> {
  const log = await reg.accessLog();
  let bytes = 0;
  for (const e of log) bytes += e.bytes;
  return { bytes, requests: log.length };
}

/** Reads files (cat > /dev/null), returning when the first finished and when all did. */
async function readFiles(root: string, t0: number): Promise<{ first: number; all: number }> {
  let first = 0;
  for (const f of FILES) {
    await run("sh", ["-c", `cat "$1" > /dev/null`, "sh", `${root}/${f}`]);
    if (!first) first = performance.now() - t0;
  }
  return { first, all: performance.now() - t0 };
}

async function fullPull(reg: TestRegistry, work: string, worst: boolean): Promise<Measure> {
  reg.clearLog();
  const oci = `${work}/oci`;
  const rootfs = `${work}/rootfs`;
  await Deno.remove(oci, { recursive: true }).catch(() => {});
  await Deno.remove(rootfs, { recursive: true }).catch(() => {});
  await Deno.mkdir(rootfs, { recursive: true });
  const t0 = performance.now();
  await run("skopeo", [
    "copy",
    "--src-tls-verify=false",
    `docker://${reg.host}/bench/debian:v1`,
    `oci:${oci}:v1`,
  ]);
  const index = JSON.parse(await Deno.readTextFile(`${oci}/index.json`));
  const manifest = JSON.parse(
    await Deno.readTextFile(`${oci}/blobs/sha256/${index.manifests[0].digest.slice(7)}`),
  );
  for (const l of manifest.layers) {
    await run("tar", [
      "-xzf",
      `${oci}/blobs/sha256/${l.digest.slice(7)}`,
      "--numeric-owner",
      "-C",
      rootfs,
    ]);
  }
  let first: number;
  let all: number;
  if (worst) {
    first = performance.now() - t0;
    await run("sh", ["-c", `find "$1" -type f -print0 | xargs -0 cat > /dev/null`, "sh", rootfs]);
    all = performance.now() - t0;
  } else ({ first, all } = await readFiles(rootfs, t0));
  const t = await traffic(reg);
  return { firstByteS: first / 1000, totalS: all / 1000, ...t };
}

async function crfsRun(
  reg: TestRegistry,
  work: string,
  cache: string,
  worst: boolean,
  repository = "bench/debian",
): Promise<Measure> {
  reg.clearLog();
  const mnt = `${work}/mnt`;
  const t0 = performance.now();
  const child = new Deno.Command(DENO, {
    args: crfsArgs("mount", mnt, "--cache-dir", cache, ...EXTRA),
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const errText = new Response(child.stderr).text();
  try {
    // Ready when the root is served.
    for (let i = 0;; i++) {
      try {
        await Deno.stat(`${mnt}/README-crfs.txt`);
        break;
      } catch {
        if (i > 400) throw new Error(`crfs mount did not come up: ${await errText}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    const img = `${mnt}/images/${reg.host}/${repository}/v1`;
    let first: number;
    let all: number;
    if (worst) {
      await run("ls", [img]);
      first = performance.now() - t0;
      await run("sh", ["-c", `find "$1" -type f -print0 | xargs -0 cat > /dev/null`, "sh", img]);
      all = performance.now() - t0;
    } else ({ first, all } = await readFiles(img, t0));
    const t = await traffic(reg);
    return { firstByteS: first / 1000, totalS: all / 1000, ...t };
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await errText;
  }
}

const mb = (n: number) => (n / 1e6).toFixed(1);
/** Extra `crfs mount` flags for experiments (`BENCH_CRFS_ARGS="--prefetch all"`). */
const EXTRA = (Deno.env.get("BENCH_CRFS_ARGS") ?? "").split(" ").filter(Boolean);

async function main(): Promise<void> {
  const tars = await layerTars();
  const reg = await startRegistry();
  const work = await Deno.makeTempDir({ prefix: "crfs-bench-lazy-" });
  try {
    const size = await pushImage(reg, tars);
    let uncompressed = 0;
    for (const t of tars) uncompressed += (await Deno.stat(t)).size;
    const cache = `${work}/cache`;
    if (Deno.env.get("BENCH_FORMATS_ONLY")) {
      await formatsTable(reg, tars, work, size);
      return;
    }
    if (Deno.env.get("BENCH_WORST_ONLY")) {
      await Deno.remove(cache, { recursive: true }).catch(() => {});
      const w = await crfsRun(reg, work, cache, true);
      console.log(
        `crfs worst case ${EXTRA.join(" ")}: ${w.totalS.toFixed(2)} s, ${
          mb(w.bytes)
        } MB, ${w.requests} requests`,
      );
      return;
    }
    // The better of two full pulls: the first one also warms this machine's own caches.
    const full1 = await fullPull(reg, work, false);
    const full2 = await fullPull(reg, work, false);
    const full = full1.totalS < full2.totalS ? full1 : full2;
    const cold = await crfsRun(reg, work, cache, false);
    const warm = await crfsRun(reg, work, cache, false);
    const row = (name: string, m: Measure) => [
      name,
      m.firstByteS.toFixed(2),
      m.totalS.toFixed(2),
      mb(m.bytes),
      m.requests,
    ];
    table(
      `lazy pull: ${FILES.length} files of a ${mb(uncompressed)} MB image (${
        mb(size)
      } MB as eStargz, 2 layers)`,
      ["method", "first byte (s)", "total (s)", "MB from registry", "requests"],
      [
        row("full pull (skopeo copy + tar -x)", full),
        row("crfs, cold cache", cold),
        row("crfs, warm cache (remount)", warm),
      ],
    );
    console.log(
      `\ncrfs cold vs full pull: ${
        (full.firstByteS / cold.firstByteS).toFixed(1)
      }× faster to first byte, ${
        (full.bytes / Math.max(1, cold.bytes)).toFixed(0)
      }× fewer bytes; warm remount: ${warm.bytes} bytes, ${warm.requests} requests`,
    );
    const fullWorst = await fullPull(reg, work, true);
    await Deno.remove(cache, { recursive: true });
    const crfsWorst = await crfsRun(reg, work, cache, true);
    table("worst case: find + read every file", [
      "method",
      "total (s)",
      "MB from registry",
      "requests",
    ], [
      [
        "full pull, then read everything",
        fullWorst.totalS.toFixed(2),
        mb(fullWorst.bytes),
        fullWorst.requests,
      ],
      ["crfs (cold cache)", crfsWorst.totalS.toFixed(2), mb(crfsWorst.bytes), crfsWorst.requests],
    ]);
    console.log(
      `\ncrfs / full pull, worst case: ${(crfsWorst.totalS / fullWorst.totalS).toFixed(2)}×`,
    );
    if (!Deno.env.get("BENCH_NO_ZSTD")) await formatsTable(reg, tars, work, size);
  } finally {
    await reg.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

/**
 * The lazy formats beside each other: the image as zstd:chunked written by crfs and by skopeo,
 * each read cold by crfs like the eStargz one (pushed as `bench/debian`, `size` bytes).
 */
async function formatsTable(reg: TestRegistry, tars: string[], work: string, size: number) {
  const cache = `${work}/cache`;

  // The same image as zstd:chunked, by crfs and by skopeo, read cold beside eStargz.
  const zSize = await pushImage(reg, tars, "bench/debian-zstd", "zstd:chunked");
  const peer = await pushSkopeoZstdChunked(reg, tars, work, "bench/debian-skopeo");
  const lazyRows = [];
  for (
    const [name, repo, bytes] of [
      ["eStargz (crfs)", "bench/debian", size],
      ["zstd:chunked (crfs)", "bench/debian-zstd", zSize],
      ["zstd:chunked (skopeo)", "bench/debian-skopeo", peer.size],
    ] as const
  ) {
    await Deno.remove(cache, { recursive: true }).catch(() => {});
    const m = await crfsRun(reg, work, cache, false, repo);
    lazyRows.push([
      name,
      mb(bytes),
      m.firstByteS.toFixed(2),
      m.totalS.toFixed(2),
      mb(m.bytes),
      m.requests,
    ]);
  }
  const gzip = await compressedSize("gzip", ["-6", "-c"], tars);
  const zstd = await compressedSize("zstd", ["-3", "-T0", "-q", "-c"], tars);
  table(
    `lazy formats: crfs cold, ${FILES.length} files; image ${mb(gzip)} MB as gzip -6, ${
      mb(zstd)
    } MB as zstd -3 (skopeo's zstd:chunked conversion took ${peer.seconds.toFixed(0)} s)`,
    ["layers", "image MB", "first byte (s)", "total (s)", "MB from registry", "requests"],
    lazyRows,
  );
}

if (import.meta.main) await main();
