/**
 * Benchmark: `podman pull` + `podman run CMD` of a real Debian image (debootstrap minbase,
 * about 210 MB uncompressed) from a local docker-registry, in the same run:
 *
 * - normal pull of the ordinary gzip image;
 * - normal pull of the eStargz image `crfs convert` made of it (valid tar.gz too);
 * - the eStargz image through `crfs store` (Additional Layer Store), cold cache;
 * - the same through the peer, stargz-store (containerd's stargz-snapshotter library built from
 *   Debian's Go sources by `../shared/peers/stargz-store/build.sh`, once into `bench/out/`),
 *   cold cache;
 * - each of the two again from a second, empty podman storage while the store keeps running.
 *
 * Wall time of the pull, of the run and of both, and the bytes and requests the registry
 * served (from its own access log). Every measurement uses a fresh podman storage; every store
 * measurement a fresh store process with an empty cache, kernel caches dropped; crfs and the peer
 * alternate which goes first; best of `BENCH_RUNS` (default 3). The last column is pull + run
 * over the peer's (cold rows over the peer's cold row, second-storage rows over its own): below 1
 * means faster than stargz-store. Run with `deno task bench podman` (root, podman,
 * docker-registry, debootstrap the first time, golang for the peer the first time);
 * `BENCH_STORES_ONLY=1` leaves out the two normal pulls, `BENCH_DROP_CACHES=0` keeps the kernel's
 * caches between measurements.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { defaultDrivers, pusher } from "../drivers/mod.ts";
import { MediaType } from "../drivers/manifest.ts";
import { startRegistry, type TestRegistry } from "../tests/helpers/registry.ts";
import { Podman, startStore } from "../tests/podman/helpers.ts";
import {
  crfsArgs,
  DENO,
  dropCaches,
  have,
  mb,
  measurePullRun,
  type MountServer,
  peerBinary,
  type PullRunMeasure,
  startMountServer,
  table,
} from "./common.ts";
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

/** stargz-store serving an Additional Layer Store at `mnt`, its state (cache) in `root`. */
async function startPeer(bin: string, root: string, mnt: string): Promise<MountServer> {
  return await startMountServer(bin, ["-root", root, mnt], mnt, {
    signal: "SIGINT",
    pollMs: 10,
    what: "stargz-store",
    afterStop: async () => {
      await new Deno.Command("umount", { args: ["-l", mnt], stderr: "null" }).output();
    },
  });
}

/** A layer store (crfs or the peer) serving at `dir` until stopped. */
interface LayerStore {
  dir: string;
  stop(): Promise<void>;
}

/** Pull + run in a fresh podman storage; registry traffic over both. */
async function pullAndRun(reg: TestRegistry, ref: string, store?: LayerStore): Promise<Measure> {
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
  const runs = Number(Deno.env.get("BENCH_RUNS") ?? 3);
  const reg = await startRegistry();
  const work = await Deno.makeTempDir({ prefix: "crfs-bench-podman-" });
  try {
    const gzipRef = await pushGzipImage(reg, rootTar);
    const estargzRef = `${reg.host}/bench/debian:estargz`;
    await run(DENO, crfsArgs("convert", "-q", "--no-cache", gzipRef, estargzRef));
    const gzipSize = await layerBytes(reg, gzipRef);
    const estargzSize = await layerBytes(reg, estargzRef);
    const uncompressed = (await Deno.stat(rootTar)).size;

    // BENCH_STORES_ONLY=1: only the two layer stores (the normal pulls take most of the time).
    const storesOnly = Deno.env.get("BENCH_STORES_ONLY") === "1";
    // BENCH_DROP_CACHES=0: keep the kernel's caches between measurements.
    const dropKernelCaches = Deno.env.get("BENCH_DROP_CACHES") !== "0";
    const normalGzip = storesOnly ? undefined : await best(runs, () => pullAndRun(reg, gzipRef));
    const normalEstargz = storesOnly
      ? undefined
      : await best(runs, () => pullAndRun(reg, estargzRef));
    // crfs and the peer: a fresh store (empty cache) per measurement, kernel caches dropped;
    // then a second podman storage pulling from the store that is already running. The two
    // alternate which goes first.
    const peer = await peerBinary("stargz-store");
    const stores = [
      {
        name: "crfs store",
        start: (n: number) => startStore(`${work}/crfs-${n}`),
      },
      {
        name: "stargz-store",
        start: async (n: number): Promise<LayerStore> => {
          const mnt = `${work}/peer-${n}`;
          const server = await startPeer(peer, `${work}/peer-state-${n}`, mnt);
          return { dir: mnt, stop: server.stop };
        },
      },
    ];
    const results = new Map(
      stores.map((
        s,
      ) => [s.name, { cold: [] as Measure[], warm: [] as Measure[], startS: Infinity }]),
    );
    for (let n = 0; n < runs; n++) {
      for (const s of n % 2 === 0 ? stores : [...stores].reverse()) {
        const r = results.get(s.name)!;
        if (dropKernelCaches) await dropCaches();
        const t = performance.now();
        const store = await s.start(n);
        r.startS = Math.min(r.startS, (performance.now() - t) / 1000);
        try {
          const m = await pullAndRun(reg, estargzRef, store);
          const w = await pullAndRun(reg, estargzRef, store);
          console.error(
            `bench: run ${n} ${s.name}: cold ${m.pullS.toFixed(3)} + ${m.runS.toFixed(3)} s, ` +
              `${m.requests} requests; second storage ${w.pullS.toFixed(3)} + ${
                w.runS.toFixed(3)
              } s`,
          );
          r.cold.push(m);
          r.warm.push(w);
        } finally {
          await store.stop();
        }
      }
    }
    const bestOf = (ms: Measure[]) =>
      ms.reduce((a, m) => m.pullS + m.runS < a.pullS + a.runS ? m : a);
    const crfs = results.get("crfs store")!;
    const stargz = results.get("stargz-store")!;
    const cold = bestOf(crfs.cold);
    const warm = bestOf(crfs.warm);
    const peerCold = bestOf(stargz.cold);
    const peerWarm = bestOf(stargz.warm);
    const startS = crfs.startS;
    const want = (normalGzip ?? peerCold).output;
    for (const m of [normalEstargz ?? cold, cold, warm, peerCold, peerWarm]) {
      if (m.output !== want) {
        throw new Error(`outputs differ: ${JSON.stringify([want, m.output])}`);
      }
    }
    const total = (m: Measure) => m.pullS + m.runS;
    const row = (name: string, m: Measure, peerM = peerCold) => [
      name,
      m.pullS.toFixed(2),
      m.runS.toFixed(2),
      total(m).toFixed(2),
      mb(m.bytes),
      m.requests,
      (total(m) / total(peerM)).toFixed(2),
    ];
    table(
      `podman pull + run: Debian minbase, ${mb(uncompressed)} MB uncompressed, one layer ` +
        `(${mb(gzipSize)} MB gzip, ${mb(estargzSize)} MB eStargz), best of ${runs}`,
      [
        "method",
        "pull (s)",
        "run (s)",
        "pull + run (s)",
        "MB from registry",
        "requests",
        "pull + run / stargz-store's (below 1 = faster)",
      ],
      [
        ...(normalGzip ? [row("normal pull, gzip image", normalGzip)] : []),
        ...(normalEstargz ? [row("normal pull, eStargz image", normalEstargz)] : []),
        row("crfs store, cold cache", cold),
        row("stargz-store (peer), cold cache", peerCold),
        row("crfs store, second podman storage", warm, peerWarm),
        row("stargz-store, second podman storage", peerWarm, peerWarm),
      ],
    );
    const vsNormal = normalGzip && normalEstargz
      ? `crfs store (cold) vs normal pull: ${
        (total(normalGzip) / total(cold)).toFixed(1)
      }× faster than the gzip image, ${
        (total(normalEstargz) / total(cold)).toFixed(1)
      }× faster than the same eStargz image; ${
        (normalEstargz.bytes / Math.max(1, cold.bytes)).toFixed(0)
      }× fewer bytes; `
      : "";
    console.log(
      `\n${vsNormal}crfs store (cold) took ${
        (total(cold) / total(peerCold)).toFixed(2)
      }× stargz-store's time. ` +
        `Starting crfs store took ${startS.toFixed(2)} s, stargz-store ` +
        `${stargz.startS.toFixed(2)} s (not counted). ` +
        `Container output: ${JSON.stringify(cold.output.trim())}`,
    );
  } finally {
    await reg.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}
