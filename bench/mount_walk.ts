/**
 * Benchmark: `find` and `ls -lR` over the merged `images/` view of an image of more than 20,000
 * entries (a Debian root filesystem made with debootstrap, Go's sources and this machine's
 * /usr/include; three eStargz layers in a loopback docker-registry),
 * beside the same on a local `tar -x` extraction of the layers, in the same run.
 *
 * crfs cold is a fresh mount with an empty cache (it fetches the manifest and the TOCs); warm is
 * the second walk on that mount; local cold is after dropping the kernel's caches.
 * `deno task bench mount_walk`.
 *
 * @module
 */
import { layerTars, pushImage } from "./lazy.ts";
import { startRegistry } from "../tests/helpers/registry.ts";
import { dropCaches, mountCrfs, OUT, table, timeBash } from "./common.ts";

const MIN_ENTRIES = 20_000;

/** A third layer of real files, made once. */
async function extraTar(): Promise<string> {
  const tar = `${OUT}walk-extra.tar`;
  try {
    await Deno.stat(tar);
    return tar;
  } catch {
    await timeBash(`tar -cf "$1" -C / usr/include`, tar);
    return tar;
  }
}

if (import.meta.main) {
  const reg = await startRegistry();
  const work = await Deno.makeTempDir({ prefix: "crfs-bench-walk-" });
  const mnt = `${work}/mnt`;
  let stop: (() => Promise<void>) | undefined;
  try {
    const tars = [...await layerTars(), await extraTar()];
    await pushImage(reg, tars, "bench/walk");
    const tree = `${work}/local`;
    await Deno.mkdir(tree);
    for (const t of tars) await timeBash(`tar -xf "$1" --numeric-owner -C "$2"`, t, tree);
    const count = new TextDecoder().decode(
      (await new Deno.Command("sh", { args: ["-c", `find "$1" | wc -l`, "sh", tree] }).output())
        .stdout,
    );
    const entries = Number(count.trim());
    if (entries < MIN_ENTRIES) throw new Error(`only ${entries} entries`);
    const img = `${mnt}/images/${reg.host}/bench/walk/v1`;
    const find = (d: string) => timeBash(`find "$1" > /dev/null`, d);
    const ls = (d: string) => timeBash(`ls -lR "$1" > /dev/null`, d);

    stop = await mountCrfs(mnt, ["--cache-dir", `${work}/cache1`]);
    const findCold = await find(img);
    const findWarm = await find(img);
    const lsWarm = await ls(img);
    await stop();
    stop = await mountCrfs(mnt, ["--cache-dir", `${work}/cache2`]);
    const lsCold = await ls(img);
    await stop();
    stop = undefined;
    await dropCaches();
    const findLocalCold = await find(tree);
    const findLocal = await find(tree);
    await dropCaches();
    const lsLocalCold = await ls(tree);
    const lsLocal = await ls(tree);
    const f = (s: number) => s.toFixed(2);
    table(`walking images/ of an image of ${entries} entries (seconds)`, [
      "",
      "crfs cold (fresh mount, empty cache)",
      "crfs warm",
      "local cold (caches dropped)",
      "local warm",
    ], [
      ["find", f(findCold), f(findWarm), f(findLocalCold), f(findLocal)],
      ["ls -lR", f(lsCold), f(lsWarm), f(lsLocalCold), f(lsLocal)],
    ]);
  } finally {
    await stop?.();
    await timeBash(`! mountpoint -q "$1" || umount -l "$1"`, mnt).catch(() => {});
    await reg.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}
