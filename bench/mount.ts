/**
 * `crfs mount` throughput and metadata speed, each beside the same work on a local extraction
 * in the same run:
 *
 * - sequential read of a file of 640 MB (real library bytes from this machine): cold from the
 *   loopback registry, from the disk cache after a remount, and warm (page cache);
 * - `find` and `ls -lR` over an image of more than 20,000 entries (a Debian root filesystem
 *   plus Go's sources; see bench/lazy.ts).
 *
 * @module
 */
import { startRegistry } from "../tests/helpers/registry.ts";
import { layerTars, pushImage } from "./lazy.ts";
import { DENO, MAIN, OUT, table } from "./common.ts";

async function sh(script: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command("bash", {
    args: ["-c", script, "bash", ...args],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  if (!out.success) throw new Error(`${script}: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

async function timed(script: string, ...args: string[]): Promise<number> {
  const t = performance.now();
  await sh(script, ...args);
  return (performance.now() - t) / 1000;
}

const dropCaches = () => Deno.writeTextFile("/proc/sys/vm/drop_caches", "3\n").catch(() => {});

async function mount(mnt: string, cache: string): Promise<() => Promise<void>> {
  const child = new Deno.Command(DENO, {
    args: ["run", "-A", MAIN, "mount", mnt, "--cache-dir", cache],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let text = "";
  const reader = (async () => {
    for await (const c of child.stderr.pipeThrough(new TextDecoderStream())) text += c;
  })();
  for (let i = 0; !text.includes("mounted at"); i++) {
    if (i > 1000) throw new Error(`mount did not come up: ${text}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return async () => {
    child.kill("SIGTERM");
    await child.status;
    await reader;
  };
}

/** The big-file layer tarball: 640 MB of real shared libraries, made once. */
async function bigFileTar(): Promise<string> {
  const tar = `${OUT}bigfile.tar`;
  try {
    await Deno.stat(tar);
    return tar;
  } catch { /* make it */ }
  const dir = `${OUT}bigfile`;
  await Deno.mkdir(dir, { recursive: true });
  await sh(
    `find /usr/lib /usr/share -type f -size +100k 2>/dev/null | head -4000 | xargs cat 2>/dev/null | head -c 640000000 > "$1/big.bin"`,
    dir,
  );
  await sh(`tar -cf "$1" -C "$2" big.bin`, tar, dir);
  await Deno.remove(dir, { recursive: true });
  return tar;
}

const MB = 1e6;

if (import.meta.main) {
  const reg = await startRegistry();
  const work = await Deno.makeTempDir({ prefix: "crfs-bench-mount-" });
  const mnt = `${work}/mnt`;
  try {
    // ---- sequential read ----------------------------------------------------------------------
    const bigTar = await bigFileTar();
    await pushImage(reg, [bigTar], "bench/big");
    const local = `${work}/local-big`;
    await Deno.mkdir(local);
    await sh(`tar -xf "$1" -C "$2"`, bigTar, local);
    const size = (await Deno.stat(`${local}/big.bin`)).size;
    const dd = (p: string) => timed(`dd if="$1" of=/dev/null bs=1M 2>/dev/null`, p);
    let stop = await mount(mnt, `${work}/cache`);
    const file = `${mnt}/images/${reg.host}/bench/big/v1/big.bin`;
    await dropCaches();
    const cold = await dd(file);
    const warm = await dd(file);
    await stop();
    await dropCaches();
    stop = await mount(mnt, `${work}/cache`);
    const diskCache = await dd(file);
    await stop();
    await dropCaches();
    const localCold = await dd(`${local}/big.bin`);
    const localWarm = await dd(`${local}/big.bin`);
    await Deno.remove(local, { recursive: true });
    const rate = (s: number) => (size / MB / s).toFixed(0);
    table(`sequential read of a ${(size / MB).toFixed(0)} MB file (dd bs=1M)`, [
      "source",
      "seconds",
      "MB/s",
    ], [
      ["crfs, cold (from the loopback registry)", cold.toFixed(2), rate(cold)],
      ["crfs, from its disk cache (remounted)", diskCache.toFixed(2), rate(diskCache)],
      ["crfs, warm (page cache)", warm.toFixed(2), rate(warm)],
      ["local extraction, cold (caches dropped)", localCold.toFixed(2), rate(localCold)],
      ["local extraction, warm", localWarm.toFixed(2), rate(localWarm)],
    ]);

    // ---- metadata walk -----------------------------------------------------------------------
    const tars = await layerTars();
    await pushImage(reg, tars, "bench/debian");
    const tree = `${work}/local-tree`;
    await Deno.mkdir(tree);
    for (const t of tars) await sh(`tar -xf "$1" --numeric-owner -C "$2"`, t, tree);
    const entries = Number((await sh(`find "$1" | wc -l`, tree)).trim());
    stop = await mount(mnt, `${work}/cache2`);
    const img = `${mnt}/images/${reg.host}/bench/debian/v1`;
    const findCold = await timed(`find "$1" > /dev/null`, img);
    const findWarm = await timed(`find "$1" > /dev/null`, img);
    const lsWarm = await timed(`ls -lR "$1" > /dev/null`, img);
    await stop();
    stop = await mount(mnt, `${work}/cache3`);
    const lsCold = await timed(`ls -lR "$1" > /dev/null`, img);
    await stop();
    await dropCaches();
    const findLocalCold = await timed(`find "$1" > /dev/null`, tree);
    const findLocal = await timed(`find "$1" > /dev/null`, tree);
    await dropCaches();
    const lsLocalCold = await timed(`ls -lR "$1" > /dev/null`, tree);
    const lsLocal = await timed(`ls -lR "$1" > /dev/null`, tree);
    table(`walking an image of ${entries} entries`, [
      "",
      "crfs cold (fresh mount)",
      "crfs warm",
      "local cold",
      "local warm",
    ], [
      [
        "find",
        findCold.toFixed(2),
        findWarm.toFixed(2),
        findLocalCold.toFixed(2),
        findLocal.toFixed(2),
      ],
      ["ls -lR", lsCold.toFixed(2), lsWarm.toFixed(2), lsLocalCold.toFixed(2), lsLocal.toFixed(2)],
    ]);
    console.log("\n(crfs cold includes fetching the manifest and the TOCs from the registry)");
  } finally {
    await sh(`grep -q " $1 " /proc/mounts && umount -l "$1" || true`, mnt).catch(() => {});
    await reg.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}
