/**
 * Benchmark: `podman pull` + `podman run CMD` of a real Debian image (debootstrap minbase,
 * about 210 MB uncompressed) from a local docker-registry, in the same run:
 *
 * - normal pull of the ordinary gzip image;
 * - normal pull of the eStargz image `crfs convert` made of it (valid tar.gz too);
 * - the eStargz image through `crfs store` (Additional Layer Store), cold cache;
 * - the same again from a second, empty podman storage while the store keeps running.
 *
 * Wall time of the pull, of the run and of both, and the bytes and requests the registry
 * served (from its own access log). Every measurement uses a fresh podman storage. Run with
 * `deno task bench podman` (root, podman, docker-registry, debootstrap the first time).
 *
 * @module
 */
import { createHash } from "node:crypto";
import { defaultDrivers, pusher } from "../drivers/mod.ts";
import { MediaType } from "../drivers/manifest.ts";
import { startRegistry, type TestRegistry } from "../tests/helpers/registry.ts";
import { Podman, startStore, type StoreProcess } from "../tests/podman/helpers.ts";
import { DENO, have, MAIN, mb, measurePullRun, type PullRunMeasure, table } from "./common.ts";
import { layerTars } from "./lazy.ts";

const enc = new TextEncoder();
const sha256 = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/** What the container runs: a shell, its libraries, a directory listing, a config file. */
const CMD = ["/bin/bash", "-c", ". /etc/os-release; echo $PRETTY_NAME; ls /usr/bin | wc -l"];

async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** sha256 of a file, streamed. */
async function fileDigest(path: string): Promise<string> {
  const h = createHash("sha256");
  using f = await Deno.open(path);
  for await (const chunk of f.readable) h.update(chunk);
  return `sha256:${h.digest("hex")}`;
}

/** Pushes the rootfs tarball as an ordinary gzip image `bench/debian:gzip`; returns its ref. */
async function pushGzipImage(reg: TestRegistry, tar: string): Promise<string> {
  const gz = `${tar}.gz`;
  const fresh = await Deno.stat(gz).then(
    async (g) => (g.mtime?.getTime() ?? 0) >= ((await Deno.stat(tar)).mtime?.getTime() ?? 0),
    () => false,
  );
  if (!fresh) {
    const tool = await have("pigz") ? "pigz" : "gzip";
    await run("sh", ["-c", `${tool} -6 -n -c "$1" > "$2"`, "sh", tar, gz]);
  }
  const repo = { host: reg.host, repository: "bench/debian" };
  const driver = pusher(defaultDrivers().forHost(reg.host));
  const layerDigest = await fileDigest(gz);
  const layerSize = (await Deno.stat(gz)).size;
  {
    using f = await Deno.open(gz);
    await driver.uploadBlob(repo, layerDigest, layerSize, f.readable);
  }
  const config = enc.encode(JSON.stringify({
    architecture: "amd64",
    os: "linux",
    config: { Env: ["PATH=/usr/local/bin:/usr/bin:/bin"], Cmd: ["/bin/bash"] },
    rootfs: { type: "layers", diff_ids: [await fileDigest(tar)] },
  }));
  await driver.uploadBlob(repo, sha256(config), config.length, config);
  const manifest = enc.encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.OCI_MANIFEST,
    config: { mediaType: MediaType.OCI_CONFIG, digest: sha256(config), size: config.length },
    layers: [{ mediaType: MediaType.OCI_LAYER_GZIP, digest: layerDigest, size: layerSize }],
  }));
  await driver.putManifest(repo, "gzip", MediaType.OCI_MANIFEST, manifest);
  return `${reg.host}/bench/debian:gzip`;
}

/** Blob bytes of an image's layers, from the registry. */
async function layerBytes(reg: TestRegistry, ref: string): Promise<number> {
  const [, repo, tag] = /^[^/]+\/(.+):([^:]+)$/.exec(ref)!;
  const m = await (await fetch(`${reg.url}/v2/${repo}/manifests/${tag}`, {
    headers: { accept: MediaType.OCI_MANIFEST },
  })).json();
  return (m.layers as { size: number }[]).reduce((a, l) => a + l.size, 0);
}

type Measure = PullRunMeasure;

/** Pull + run in a fresh podman storage; registry traffic over both. */
async function pullAndRun(reg: TestRegistry, ref: string, store?: StoreProcess): Promise<Measure> {
  await using pod = await Podman.create({ storeFlag: store?.dir });
  return await measurePullRun(
    reg,
    () => pod.ok(["pull", "--quiet", "--tls-verify=false", ref]),
    () => pod.ok(pod.runArgs(ref, ...CMD)),
  );
}

/** The better (by total time) of `n` measurements. */
async function best(n: number, f: () => Promise<Measure>): Promise<Measure> {
  let b: Measure | undefined;
  for (let i = 0; i < n; i++) {
    const m = await f();
    if (!b || m.pullS + m.runS < b.pullS + b.runS) b = m;
  }
  return b!;
}

if (import.meta.main) {
  const [rootTar] = await layerTars();
  const runs = Number(Deno.env.get("BENCH_RUNS") ?? 2);
  const reg = await startRegistry();
  const work = await Deno.makeTempDir({ prefix: "crfs-bench-podman-" });
  try {
    const gzipRef = await pushGzipImage(reg, rootTar);
    const estargzRef = `${reg.host}/bench/debian:estargz`;
    await run(DENO, ["run", "-A", MAIN, "convert", "-q", "--no-cache", gzipRef, estargzRef]);
    const gzipSize = await layerBytes(reg, gzipRef);
    const estargzSize = await layerBytes(reg, estargzRef);
    const uncompressed = (await Deno.stat(rootTar)).size;

    const normalGzip = await best(runs, () => pullAndRun(reg, gzipRef));
    const normalEstargz = await best(runs, () => pullAndRun(reg, estargzRef));
    // crfs: a fresh store (empty cache) per measurement; then a second podman storage pulling
    // from the store that is already running.
    let startS = Infinity;
    let warm: Measure | undefined;
    const cold = await best(runs, async () => {
      const dir = `${work}/store`;
      const t = performance.now();
      const store = await startStore(dir);
      startS = Math.min(startS, (performance.now() - t) / 1000);
      try {
        const m = await pullAndRun(reg, estargzRef, store);
        const w = await pullAndRun(reg, estargzRef, store);
        if (!warm || w.pullS + w.runS < warm.pullS + warm.runS) warm = w;
        return m;
      } finally {
        await store.stop();
      }
    });
    for (const m of [normalEstargz, cold, warm!]) {
      if (m.output !== normalGzip.output) {
        throw new Error(`outputs differ: ${JSON.stringify([normalGzip.output, m.output])}`);
      }
    }
    const total = (m: Measure) => m.pullS + m.runS;
    const row = (name: string, m: Measure) => [
      name,
      m.pullS.toFixed(2),
      m.runS.toFixed(2),
      total(m).toFixed(2),
      mb(m.bytes),
      m.requests,
    ];
    table(
      `podman pull + run: Debian minbase, ${mb(uncompressed)} MB uncompressed, one layer ` +
        `(${mb(gzipSize)} MB gzip, ${mb(estargzSize)} MB eStargz), best of ${runs}`,
      ["method", "pull (s)", "run (s)", "pull + run (s)", "MB from registry", "requests"],
      [
        row("normal pull, gzip image", normalGzip),
        row("normal pull, eStargz image", normalEstargz),
        row("crfs store, cold cache", cold),
        row("crfs store, second podman storage", warm!),
      ],
    );
    console.log(
      `\ncrfs store (cold) vs normal pull: ${
        (total(normalGzip) / total(cold)).toFixed(1)
      }× faster than the gzip image, ${
        (total(normalEstargz) / total(cold)).toFixed(1)
      }× faster than the same eStargz image; ${
        (normalEstargz.bytes / Math.max(1, cold.bytes)).toFixed(0)
      }× fewer bytes. Starting crfs store took ${startS.toFixed(2)} s (not counted). ` +
        `Container output: ${JSON.stringify(cold.output.trim())}`,
    );
  } finally {
    await reg.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}
