/**
 * Registry faults between crfs and a real docker-registry (through the fault-injecting proxy):
 * resets in the middle of a body, truncated bodies, 5xx, 429 with Retry-After, a wrong
 * Content-Range, Range ignored, corrupted bytes. Every file read through crfs's tree (the code
 * the mount and `crfs cat` use) gives exactly the right bytes or an error, within bounded time —
 * never a wrong byte — and reads succeed again once the faults stop.
 *
 * @module
 */
import assert from "node:assert/strict";
import { defaultDrivers } from "../../drivers/mod.ts";
import { ImageStore } from "../../fs/image_store.ts";
import { rootNode } from "../../fs/registry_tree.ts";
import type { FsNode } from "../../fs/node.ts";
import { MemoryChunkCache } from "../../format/reader.ts";
import { startRegistry } from "../helpers/registry.ts";
import { type Fault, startFaultProxy } from "../helpers/fault_proxy.ts";
import { randomTar } from "../unit/random_tar.ts";
import { expectedTree } from "../unit/tree_helpers.ts";
import { crfs } from "../cmd/helpers.ts";

async function* once(b: Uint8Array) {
  yield b;
}

/** The image's root in a fresh tree over `host` (no disk cache, a tiny memory cache). */
async function imageRoot(host: string): Promise<FsNode> {
  const store = new ImageStore(defaultDrivers({ retries: 3, backoffMs: 20, deadlineMs: 20_000 }), {
    log: () => {},
    prefetch: "off",
    chunkCache: new MemoryChunkCache(1),
  });
  let n: FsNode | undefined = rootNode(store);
  for (const c of ["images", host, "faults", "img", "v1"]) {
    n = await n!.lookup!(c);
    assert.ok(n, `lookup ${c}`);
  }
  return n!;
}

async function walk(root: FsNode, path: string): Promise<FsNode | undefined> {
  let n: FsNode | undefined = root;
  for (const c of path.split("/")) n = n ? await n.lookup!(c) : undefined;
  return n;
}

Deno.test("registry faults never turn into wrong bytes, and reads recover", async () => {
  const reg = await startRegistry();
  const proxy = startFaultProxy(reg.url);
  const work = await Deno.makeTempDir({ prefix: "crfs-faults-" });
  try {
    const tar = randomTar({ seed: 61, chunkSize: 50_000, entries: 80 });
    await Deno.writeFile(`${work}/layer.tar`, tar);
    const r = await crfs([
      "convert",
      "-q",
      "--chunk-size",
      "50000",
      `${work}/layer.tar`,
      `${reg.host}/faults/img:v1`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const truth = [...await expectedTree(once(tar))].filter(([, n]) =>
      n.type === "reg" && n.content!.length > 0
    );

    const faults: [string, Fault, number][] = [
      ["reset mid-body", { kind: "reset", afterBytes: 1000 }, 2],
      ["truncated body", { kind: "truncate", afterBytes: 777 }, 2],
      ["503", { kind: "status", status: 503 }, 2],
      ["429 + Retry-After", { kind: "status", status: 429, headers: { "Retry-After": "1" } }, 1],
      ["wrong Content-Range", { kind: "wrong-content-range", shift: 5 }, 2],
      ["Range ignored", { kind: "ignore-range" }, 3],
      ["corrupted bytes once", { kind: "corrupt" }, 1],
      ["corrupted bytes always", { kind: "corrupt" }, Infinity],
      ["503 always", { kind: "status", status: 503 }, Infinity],
    ];
    for (const [what, fault, times] of faults) {
      proxy.clear();
      const root = await imageRoot(proxy.host); // manifest and TOC read before faults start
      proxy.inject(fault, { match: /GET .*\/blobs\//, times });
      const started = Date.now();
      let ok = 0;
      let failed = 0;
      for (const [path, want] of truth) {
        const node = await walk(root, path);
        assert.ok(node?.read, `${what}: ${path}`);
        try {
          const got = await node.read(0, want.content!.length + 1);
          assert.deepEqual(got, want.content, `${what}: ${path} must be exact`);
          ok++;
        } catch (e) {
          if (e instanceof assert.AssertionError) throw e;
          failed++;
        }
      }
      const secs = (Date.now() - started) / 1000;
      assert.ok(secs < 60, `${what}: bounded time (${secs} s)`);
      if (times !== Infinity) assert.equal(failed, 0, `${what}: retried to success`);
      else assert.ok(failed > 0, `${what}: persistent faults are errors`);
      // Faults gone: the same tree reads everything.
      proxy.clear();
      for (const [path, want] of truth) {
        assert.deepEqual(
          await (await walk(root, path))!.read!(0, want.content!.length),
          want.content,
        );
      }
      void ok;
    }
  } finally {
    await proxy.stop();
    await reg.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
});
