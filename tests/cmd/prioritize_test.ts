/**
 * The prefetch loop end to end, with real processes and a real registry: `crfs mount --record`
 * writes what a workload reads; `crfs convert --prioritize-file` puts those files first behind
 * a `.prefetch.landmark`; a fresh mount fetches them in the background as soon as the layer
 * opens, so reading them afterwards makes no registry request.
 *
 * @module
 */
import { BytesSource } from "../../format/range_source.ts";
import { StargzReader } from "../../format/reader.ts";
import { startRegistry } from "../helpers/registry.ts";
import { randomBytes } from "../helpers/images.ts";
import { assert, assertEquals, crfs, run } from "./helpers.ts";

const DENO = Deno.execPath();
const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** Runs `crfs mount` in the background until the returned stop function is called. */
async function mountProcess(mnt: string, args: string[]) {
  const child = new Deno.Command(DENO, {
    args: ["run", "-A", MAIN, "mount", mnt, ...args],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const err = new Response(child.stderr).text();
  for (let i = 0;; i++) {
    try {
      await Deno.stat(`${mnt}/README-crfs.txt`);
      break;
    } catch {
      if (i > 500) {
        child.kill("SIGKILL");
        throw new Error(`mount did not come up: ${await err}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  return async () => {
    child.kill("SIGTERM");
    await child.status;
    await err;
  };
}

Deno.test("record, prioritize, prefetch: recorded files are fetched before they are read", async () => {
  const reg = await startRegistry();
  const work = await Deno.makeTempDir({ prefix: "crfs-prio-" });
  const mnt = `${work}/mnt`;
  try {
    // A one-layer image of many files; the workload reads three of them, out of tar order.
    const src = `${work}/src`;
    await Deno.mkdir(`${src}/app`, { recursive: true });
    for (let i = 0; i < 200; i++) {
      await Deno.writeFile(`${src}/app/f${i}.bin`, randomBytes(20_000 + i, i));
    }
    await run("tar", ["-cf", `${work}/layer.tar`, "-C", src, "app"]);
    const plain = `${reg.host}/prio/app:plain`;
    const converted = await crfs(["convert", "-q", `${work}/layer.tar`, plain]);
    assertEquals(converted.code, 0, converted.stderr);

    // 1. Record what a workload reads.
    let stop = await mountProcess(mnt, [
      "--cache-dir",
      `${work}/cache1`,
      "--record",
      `${work}/rec.txt`,
    ]);
    const img = `${mnt}/images/${reg.host}/prio/app/plain`;
    for (const f of ["app/f150.bin", "app/f7.bin", "app/f99.bin"]) {
      await run("cat", [`${img}/${f}`]);
    }
    await stop();
    assertEquals((await Deno.readTextFile(`${work}/rec.txt`)).trim().split("\n"), [
      "/app/f150.bin",
      "/app/f7.bin",
      "/app/f99.bin",
    ]);

    // 2. Convert with those files first.
    const ref = `${reg.host}/prio/app:fast`;
    const r = await crfs([
      "convert",
      "-q",
      "--prioritize-file",
      `${work}/rec.txt`,
      `${work}/layer.tar`,
      ref,
    ]);
    assertEquals(r.code, 0, r.stderr);
    const manifest = JSON.parse(
      await (await fetch(`http://${reg.host}/v2/prio/app/manifests/fast`, {
        headers: { Accept: "application/vnd.oci.image.manifest.v1+json" },
      })).text(),
    );
    const layer = manifest.layers[0];
    const blob = new Uint8Array(
      await (await fetch(`http://${reg.host}/v2/prio/app/blobs/${layer.digest}`)).arrayBuffer(),
    );
    const reader = await StargzReader.open(new BytesSource(blob));
    const landmark = reader.index.prefetchLandmark;
    assert(landmark !== undefined, "the layer has a .prefetch.landmark");
    for (const chunk of reader.index.chunks) {
      const path = reader.index.pathOf(chunk.node)!;
      const first = ["app/f150.bin", "app/f7.bin", "app/f99.bin"].includes(path);
      assertEquals(
        chunk.offset < landmark,
        first,
        `${path} is ${first ? "before" : "after"} the landmark`,
      );
    }

    // 3. A fresh mount prefetches them; reading them then asks the registry for nothing.
    stop = await mountProcess(mnt, ["--cache-dir", `${work}/cache2`]);
    try {
      const fast = `${mnt}/images/${reg.host}/prio/app/fast`;
      await run("ls", [fast]); // opens the layer; prefetch starts
      let status;
      for (let i = 0; i < 100; i++) {
        status = JSON.parse(await Deno.readTextFile(`${mnt}/crfs-status.json`));
        if (status.total.backgroundBytes > 0) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert(status.total.backgroundBytes > 0, "prefetch fetched in the background");
      assert(status.total.backgroundBytes <= landmark, "and only the prioritized region");
      const before = (await reg.accessLog()).length;
      for (const f of ["app/f7.bin", "app/f99.bin", "app/f150.bin"]) {
        const bytes = await Deno.readFile(`${fast}/${f}`);
        assertEquals(bytes.length, 20_000 + Number(f.slice(5, -4)));
      }
      assertEquals((await reg.accessLog()).length, before, "no request for prefetched files");
    } finally {
      await stop();
    }
  } finally {
    await reg.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
});
