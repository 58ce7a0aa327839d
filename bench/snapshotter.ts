/**
 * Benchmark: containerd pull + `ctr run` of the same image, in one run, three ways:
 *
 * - a normal pull of the ordinary gzip image with containerd's overlayfs snapshotter
 *   (`ctr image pull`, containerd downloads and unpacks every layer);
 * - `ctr-remote image rpull --snapshotter crfs` of the eStargz image `crfs convert` made of it,
 *   through `crfs snapshotter` (empty cache);
 * - the same through containerd-stargz-grpc, the peer, built from Debian's stargz-snapshotter
 *   library (`../shared/peers/stargz-grpc/build.sh`, once into bench/out/).
 *
 * The image: this machine's shell, coreutils and libraries (the test image's base layer) plus
 * the Go 1.19 source tree (/usr/share/go-1.19, about 146 MB, 10k files). The container walks
 * one directory of it and hashes a listing and one file. Each measurement gets a fresh
 * containerd (its own root) and a fresh snapshotter with an empty cache; crfs and the peer
 * alternate which goes first, best of `BENCH_RUNS` (default 3) each (the normal pulls: one each);
 * times are wall clock, bytes and requests come from the registry's access log over pull and
 * run. The last columns are crfs's pull and pull + run over the peer's (below 1: faster). Run
 * with `deno task bench snapshotter` (root, containerd, ctr-remote, docker-registry, skopeo,
 * golang for the peer); `BENCH_REMOTE_ONLY=1` leaves out the two normal pulls.
 *
 * @module
 */
import { baseLayer } from "../tests/podman/helpers.ts";
import { buildTarImage, type Spec } from "../tests/cmd/helpers.ts";
import { skopeoCopy, writeOciLayout } from "../tests/helpers/images.ts";
import { startRegistry, type TestRegistry } from "../tests/helpers/registry.ts";
import { Containerd, type Ran, run, startSnapshotter } from "../tests/snapshotter/helpers.ts";
import {
  crfsArgs,
  DENO,
  mb,
  measurePullRun,
  peerBinary,
  type PullRunMeasure,
  table,
} from "./common.ts";

const GO_TREE = "/usr/share/go-1.19";
const CMD = [
  "/bin/sh",
  "-c",
  `find ${GO_TREE}/src/net | sort | sha256sum; sha256sum ${GO_TREE}/src/go/build/doc.go`,
];

/** The Go tree as a layer spec (files, directories, symlinks). */
async function treeSpec(dir: string, at: string): Promise<Record<string, Spec>> {
  const out: Record<string, Spec> = {};
  const walk = async (p: string, rel: string) => {
    for await (const e of Deno.readDir(p)) {
      const full = `${p}/${e.name}`;
      const r = `${rel}/${e.name}`;
      const st = await Deno.lstat(full);
      if (e.isSymlink) out[r] = { symlink: await Deno.readLink(full) };
      else if (e.isDirectory) {
        out[r] = { dir: true, mode: st.mode! & 0o7777 };
        await walk(full, r);
      } else if (e.isFile) out[r] = { file: await Deno.readFile(full), mode: st.mode! & 0o7777 };
    }
  };
  await walk(dir, at);
  return out;
}

async function ok(cmd: string, args: string[]): Promise<Ran> {
  const r = await run(cmd, args, { timeoutMs: 600_000 });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.out}${r.err}`);
  return r;
}

/** The peer serving `sock`, state in `root`; resolves once its socket exists. */
async function startPeer(bin: string, root: string, sock: string) {
  const child = new Deno.Command(bin, {
    args: ["-root", root, "-address", sock],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let err = "";
  const pump = (async () => {
    for await (const t of child.stderr.pipeThrough(new TextDecoderStream())) err += t;
  })();
  const end = Date.now() + 30_000;
  while (!(await Deno.lstat(sock).then(() => true, () => false))) {
    if (Date.now() > end) throw new Error(`stargz-grpc did not start:\n${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    async stop() {
      child.kill("SIGINT");
      await child.status;
      await pump;
      // The peer leaves its FUSE mounts for the next start to reuse: clear them.
      const mounts = (await Deno.readTextFile("/proc/self/mounts")).split("\n")
        .map((l) => l.split(" ")[1]).filter((m) => m?.startsWith(root))
        .sort((a, b) => b.length - a.length);
      for (const m of mounts) await run("umount", ["-l", m]);
    },
  };
}

type Measure = PullRunMeasure;

async function measure(
  reg: TestRegistry,
  c: Containerd,
  pull: string[],
  runArgs: string[],
  remote: boolean,
): Promise<Measure> {
  return await measurePullRun(reg, async () => {
    const p = remote ? await c.ctrRemote(pull, 600_000) : await c.ctr(pull, 600_000);
    if (p.code !== 0) throw new Error(`pull failed: ${p.out}${p.err}`);
  }, async () => (await c.ctrOk(runArgs, 600_000)).out);
}

/** `ctr image pull` + `ctr run` (container `name`) of `ref` in a fresh containerd (overlayfs). */
async function normalPull(reg: TestRegistry, ref: string, name: string): Promise<Measure> {
  await using c = await Containerd.start();
  return await measure(reg, c, ["image", "pull", "--plain-http", ref], [
    "run",
    "--rm",
    ref,
    name,
    ...CMD,
  ], false);
}

/**
 * `ctr image rpull` + `ctr run` (container `name`) of `ref` through the remote snapshotter
 * `snapshotter`, which `server` serves on `sock`; the server is stopped afterwards.
 */
async function remotePull(
  reg: TestRegistry,
  ref: string,
  name: string,
  snapshotter: "crfs" | "stargz",
  server: { stop(): Promise<void> },
  sock: string,
): Promise<Measure> {
  try {
    await using c = await Containerd.start(
      snapshotter === "crfs" ? { crfsSocket: sock } : { stargzSocket: sock },
    );
    return await measure(
      reg,
      c,
      ["image", "rpull", "--plain-http", "--snapshotter", snapshotter, ref],
      ["run", "--rm", "--snapshotter", snapshotter, ref, name, ...CMD],
      true,
    );
  } finally {
    await server.stop();
  }
}

if (import.meta.main) {
  const reg = await startRegistry();
  const work = await Deno.makeTempDir({ prefix: "crfs-bench-snap-" });
  try {
    const peer = await peerBinary("stargz-grpc");
    console.error("bench: building the image");
    const image = await buildTarImage([
      await baseLayer(),
      await treeSpec(GO_TREE, GO_TREE.slice(1)),
    ], work);
    await writeOciLayout(`${work}/layout`, [...image.layers, image.config, image.manifest], {
      v1: image.manifest,
    });
    const gzipRef = `${reg.host}/bench/go:gzip`;
    await skopeoCopy(`oci:${work}/layout:v1`, `docker://${gzipRef}`);
    const estargzRef = `${reg.host}/bench/go:estargz`;
    await ok(DENO, crfsArgs("convert", "-q", "--no-cache", gzipRef, estargzRef));
    const gzipBytes = image.layers.reduce((a, l) => a + l.bytes.length, 0);
    const uncompressed = image.layers.reduce((a, l) => a + l.tar.length, 0);

    const results: [string, Measure][] = [];
    // BENCH_REMOTE_ONLY=1: only the two snapshotters (the normal pulls take most of the time).
    if (Deno.env.get("BENCH_REMOTE_ONLY") !== "1") {
      results.push([
        "normal pull (overlayfs), gzip image",
        await normalPull(reg, gzipRef, "b1"),
      ]);
      results.push([
        "normal pull (overlayfs), eStargz image",
        await normalPull(reg, estargzRef, "b2"),
      ]);
    }
    // crfs and the peer, alternating which goes first; best of `runs` each.
    const runs = Number(Deno.env.get("BENCH_RUNS") ?? 3);
    const remote = {
      crfs: [] as Measure[],
      stargz: [] as Measure[],
    };
    for (let n = 0; n < runs; n++) {
      for (const which of n % 2 === 0 ? ["crfs", "stargz"] as const : ["stargz", "crfs"] as const) {
        const sock = `${work}/${which}-${n}.sock`;
        const m = await remotePull(
          reg,
          estargzRef,
          `r-${which}-${n}`,
          which,
          which === "crfs"
            ? await startSnapshotter(`${work}/crfs-root-${n}`, sock)
            : await startPeer(peer, `${work}/stargz-root-${n}`, sock),
          sock,
        );
        console.error(
          `bench: run ${n} ${which}: pull ${m.pullS.toFixed(3)} s, run ${m.runS.toFixed(3)} s, ` +
            `${m.requests} requests`,
        );
        remote[which].push(m);
      }
    }
    const bestOf = (ms: Measure[]) =>
      ms.reduce((a, m) => m.pullS + m.runS < a.pullS + a.runS ? m : a);
    const crfs = bestOf(remote.crfs);
    const peerBest = bestOf(remote.stargz);
    results.push([`crfs snapshotter, rpull (cold cache), best of ${runs}`, crfs]);
    results.push([`containerd-stargz-grpc (peer), rpull, best of ${runs}`, peerBest]);
    const want = results[0][1].output;
    for (const [name, m] of results) {
      if (m.output !== want) throw new Error(`${name}: output differs: ${m.output} vs ${want}`);
    }
    table(
      `containerd pull + run: shell + Go 1.19 sources, ${mb(uncompressed)} MB uncompressed in ` +
        `2 layers (${mb(gzipBytes)} MB gzip)`,
      [
        "method",
        "pull (s)",
        "run (s)",
        "pull + run (s)",
        "MB from registry",
        "requests",
        "pull / peer's",
        "pull + run / peer's",
      ],
      results.map(([name, m]) => [
        name,
        m.pullS.toFixed(2),
        m.runS.toFixed(2),
        (m.pullS + m.runS).toFixed(2),
        mb(m.bytes),
        m.requests,
        (m.pullS / peerBest.pullS).toFixed(2),
        ((m.pullS + m.runS) / (peerBest.pullS + peerBest.runS)).toFixed(2),
      ]),
    );
    console.log(`\nContainer output: ${JSON.stringify(want.trim())}`);
  } finally {
    await reg.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}
