/**
 * Benchmark: sequential read (`dd bs=1M`) of a 640 MB file through `crfs mount` — cold from a
 * loopback docker-registry, from crfs's disk cache after a remount, warm from the page cache —
 * beside reading the same file from a local `tar -x` extraction, cold (caches dropped) and warm,
 * in the same run. The file is real bytes of this machine (libraries and data files from /usr,
 * concatenated), in a one-layer eStargz image. `deno task bench mount_read`.
 *
 * @module
 */
import { pushImage } from "./lazy.ts";
import { startRegistry } from "../tests/helpers/registry.ts";
import { dropCaches, mountCrfs, OUT, table, timeBash } from "./common.ts";

const SIZE = 640_000_000;

/** The layer tarball holding big.bin (made once in bench/out/). */
async function bigFileTar(): Promise<string> {
  const tar = `${OUT}bigfile.tar`;
  try {
    if ((await Deno.stat(tar)).size > SIZE) return tar;
  } catch { /* make it */ }
  const dir = `${OUT}bigfile`;
  await Deno.mkdir(dir, { recursive: true });
  await timeBash(
    `find /usr/lib /usr/share -xdev -type f -size +100k 2>/dev/null | LC_ALL=C sort | ` +
      `xargs cat 2>/dev/null | head -c ${SIZE} > "$1/big.bin"`,
    dir,
  );
  await timeBash(`tar -cf "$1" -C "$2" big.bin && rm -r "$2"`, tar, dir);
  return tar;
}

if (import.meta.main) {
  const reg = await startRegistry();
  const work = await Deno.makeTempDir({ prefix: "crfs-bench-read-" });
  const mnt = `${work}/mnt`;
  let stop: (() => Promise<void>) | undefined;
  try {
    const tar = await bigFileTar();
    await pushImage(reg, [tar], "bench/big");
    const local = `${work}/local`;
    await Deno.mkdir(local);
    await timeBash(`tar -xf "$1" -C "$2"`, tar, local);
    const size = (await Deno.stat(`${local}/big.bin`)).size;
    const dd = (p: string) => timeBash(`dd if="$1" of=/dev/null bs=1M 2>/dev/null`, p);
    const file = `${mnt}/images/${reg.host}/bench/big/v1/big.bin`;
    const blobBytes = async () =>
      (await reg.accessLog()).filter((e) => e.method === "GET" && /\/blobs\//.test(e.path))
        .reduce((a, e) => a + e.bytes, 0);

    stop = await mountCrfs(mnt, ["--cache-dir", `${work}/cache`]);
    await dropCaches();
    reg.clearLog();
    const cold = await dd(file);
    const coldBytes = await blobBytes();
    const warm = await dd(file);
    await stop();
    stop = await mountCrfs(mnt, ["--cache-dir", `${work}/cache`]);
    await dropCaches();
    reg.clearLog();
    const disk = await dd(file);
    const diskBytes = await blobBytes();
    await stop();
    stop = undefined;
    await dropCaches();
    const localCold = await dd(`${local}/big.bin`);
    const localWarm = await dd(`${local}/big.bin`);

    const row = (name: string, s: number, fetched: number | string) => [
      name,
      s.toFixed(2),
      (size / 1e6 / s).toFixed(0),
      typeof fetched === "number" ? (fetched / 1e6).toFixed(1) : fetched,
    ];
    table(`sequential read of a ${(size / 1e6).toFixed(0)} MB file (dd bs=1M)`, [
      "source",
      "seconds",
      "MB/s",
      "MB from registry",
    ], [
      row("crfs, cold (loopback docker-registry)", cold, coldBytes),
      row("crfs, disk cache (remounted, caches dropped)", disk, diskBytes),
      row("crfs, warm (page cache)", warm, 0),
      row("local extraction, cold (caches dropped)", localCold, "-"),
      row("local extraction, warm (page cache)", localWarm, "-"),
    ]);
  } finally {
    await stop?.();
    await timeBash(`! mountpoint -q "$1" || umount -l "$1"`, mnt).catch(() => {});
    await reg.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}
