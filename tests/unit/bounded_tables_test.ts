/**
 * Bounded memory for long runs: the inode table drops nodes the kernel forgot (FORGET and
 * BATCH_FORGET reach `CrfsFilesystem.forget`) and keeps at most its idle budget, while numbers
 * stay stable for held nodes, come back for the same file after a forget and are never given to
 * another file; the image store's open layers, manifests and tags, the tree's looked-up
 * hosts and the layer store's references stay within their bounds, and a layer reader still in use is found again, not reopened.
 *
 * @module
 */
import assert from "node:assert/strict";
import { CrfsFilesystem } from "../../fs/filesystem.ts";
import { answered, Errno, FuseError } from "../../fs/fuse/ops.ts";
import { bytesNode, type FsNode, staticDir } from "../../fs/node.ts";
import { ImageStore } from "../../fs/image_store.ts";
import { rootNode } from "../../fs/registry_tree.ts";
import { encodeRefName, layerStoreRoot } from "../../fs/layer_store.ts";
import { defaultDrivers } from "../../drivers/mod.ts";
import type { StargzReader } from "../../format/reader.ts";
import { convert } from "./tree_helpers.ts";
import { encodeHeader, END_OF_ARCHIVE, tarHeader } from "../../format/tar_header.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function bigDir(n: number): FsNode {
  const files: [string, FsNode][] = [];
  for (let i = 0; i < n; i++) files.push([`f${i}`, bytesNode(`file:${i}`, enc.encode(`${i}\n`))]);
  return staticDir("root", [["d", staticDir("dir:d", files)]]);
}

Deno.test("the inode table drops forgotten nodes and stays within its idle budget", async () => {
  const fs = new CrfsFilesystem(bigDir(5000), {
    tagTtlMs: 1000,
    log: () => {},
    inodes: { maxIdleNodes: 100, maxRetiredKeys: 100_000 },
  });
  const d = answered(await fs.lookup(1, enc.encode("d"))).nodeId;
  const held = answered(await fs.lookup(d, enc.encode("f0"))).nodeId;
  const first = new Map<string, number>();
  for (let round = 0; round < 2; round++) {
    for (let i = 1; i < 5000; i++) {
      const ino = answered(await fs.lookup(d, enc.encode(`f${i}`))).nodeId;
      // The same file gets its number back after the kernel forgot it.
      if (round === 0) first.set(`f${i}`, ino);
      else assert.equal(ino, first.get(`f${i}`), `f${i}`);
      fs.forget(ino, 1);
      assert.ok(fs.inodes.size <= 100 + 3, `table holds ${fs.inodes.size} nodes`);
    }
  }
  // Numbers the kernel holds keep their node.
  assert.equal((await fs.getattr(held)).attr.size, 2);
  assert.equal(answered(await fs.lookup(d, enc.encode("f0"))).nodeId, held);
  assert.deepEqual(await fs.read(held, 0, 0, 10), enc.encode("0\n"));
  // A forgotten, dropped number is unknown (the kernel no longer uses it).
  await assert.rejects(async () => await fs.getattr(first.get("f1")!));
  // Distinct files, distinct numbers.
  assert.equal(new Set([...first.values(), held, d]).size, first.size + 2);
});

Deno.test("numbers are never given to another file, even once their keys are retired", async () => {
  const fs = new CrfsFilesystem(bigDir(3000), {
    tagTtlMs: 1000,
    log: () => {},
    inodes: { maxIdleNodes: 10, maxRetiredKeys: 50 },
  });
  const d = answered(await fs.lookup(1, enc.encode("d"))).nodeId;
  const owner = new Map<number, string>();
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 3000; i += 1 + round) {
      const name = `f${i}`;
      const ino = answered(await fs.lookup(d, enc.encode(name))).nodeId;
      const had = owner.get(ino);
      assert.ok(had === undefined || had === name, `${ino} was ${had}, now ${name}`);
      owner.set(ino, name);
      // A second lookup before the forget: two to take back.
      await fs.lookup(d, enc.encode(name));
      fs.forget(ino, 1);
      assert.equal(fs.inodes.lookups(ino), 1);
      fs.forget(ino, 1);
    }
  }
  assert.ok(fs.inodes.size <= 10 + 2);
  assert.ok(fs.inodes.retiredKeys <= 50);
});

Deno.test("readdir's items stay resolvable for READDIRPLUS and count no lookup", async () => {
  const fs = new CrfsFilesystem(bigDir(50), { tagTtlMs: 1000, log: () => {} });
  const d = answered(await fs.lookup(1, enc.encode("d"))).nodeId;
  // Directories are read without OPENDIR (the kernel is told ENOSYS), so with no handle.
  await assert.rejects(async () => await fs.opendir(d), FuseError);
  const fh = 0;
  const items = await fs.readdir(d, fh, 0, 20);
  for (const it of items.slice(2)) {
    assert.equal(fs.inodes.lookups(it.ino), 0);
    const e = await fs.readdirplusEntry(d, it);
    assert.equal(e.nodeId, it.ino);
    assert.equal(fs.inodes.lookups(it.ino), 1);
  }
  fs.releasedir(d, fh);
});

async function stargzFile(path: string, i: number): Promise<void> {
  const body = enc.encode(`file ${i}\n`);
  const pad = new Uint8Array(512);
  pad.set(body);
  const tar = Uint8Array.from([
    ...encodeHeader(
      tarHeader({ name: "x", kind: "reg", size: body.length, mode: 0o644, mtimeSec: 1e9 + i }),
    ),
    ...pad,
    ...END_OF_ARCHIVE,
  ]);
  await Deno.writeFile(path, (await convert(tar)).blob);
}

Deno.test("the image store keeps open layers, manifests and tags within bounds; held readers are reused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "crfs-bounds-" });
  try {
    for (let i = 0; i < 8; i++) await stargzFile(`${dir}/f${i}.stargz`, i);
    const store = new ImageStore(defaultDrivers({ localDir: dir }), {
      log: () => {},
      prefetch: "off",
      limits: { layers: 2, manifests: 3, tags: 4, repositories: 2 },
    });
    const readers: StargzReader[] = [];
    for (let round = 0; round < 2; round++) {
      for (let i = 0; i < 8; i++) {
        const repo = { host: "local", repository: `f${i}` };
        const digest = await store.resolveTag(repo, "latest");
        const m = (await store.imageManifest(repo, digest!))!;
        const { reader } = await store.layer(repo, m.json.layers[0]);
        // Still held here (as an open file's node would hold it): the same reader again.
        if (round === 0) readers.push(reader);
        else assert.equal(reader, readers[i], `layer of f${i} opened twice`);
        const sizes = store.tableSizes;
        assert.ok(sizes.layers <= 2, JSON.stringify(sizes));
        assert.ok(sizes.manifests <= 3 && sizes.configs <= 3, JSON.stringify(sizes));
        assert.ok(sizes.tags <= 4 && sizes.repositories <= 2, JSON.stringify(sizes));
      }
    }
    const x = readers[5].lookup("x")!;
    assert.equal(new TextDecoder().decode(await readers[5].read(x, 0, 100)), "file 5\n");
    store.stopBackground();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the image store lets go of its open layers on request; a reader still held is found again", async () => {
  const dir = await Deno.makeTempDir({ prefix: "crfs-bounds-" });
  try {
    for (let i = 0; i < 3; i++) await stargzFile(`${dir}/f${i}.stargz`, i);
    const store = new ImageStore(defaultDrivers({ localDir: dir }), {
      log: () => {},
      prefetch: "off",
    });
    const open = async (i: number) => {
      const repo = { host: "local", repository: `f${i}` };
      const m = (await store.imageManifest(repo, (await store.resolveTag(repo, "latest"))!))!;
      return (await store.layer(repo, m.json.layers[0])).reader;
    };
    const held = await open(0);
    await open(1);
    await open(2);
    assert.equal(store.tableSizes.layers, 3);
    await new Promise((r) => setTimeout(r, 0)); // their opening has settled
    store.releaseOpenLayers();
    // Let the dropped promises settle (the readers move to the weakly held ones).
    await new Promise((r) => setTimeout(r, 0));
    assert.equal(store.tableSizes.layers, 0, JSON.stringify(store.tableSizes));
    assert.equal(await open(0), held, "a reader still in use is not opened twice");
    const x = held.lookup("x")!;
    assert.equal(new TextDecoder().decode(await held.read(x, 0, 100)), "file 0\n");
    store.stopBackground();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the tree remembers a bounded number of looked-up hosts", async () => {
  const store = new ImageStore(defaultDrivers({ localDir: "/nonexistent" }), { log: () => {} });
  const root = rootNode(store, { hosts: ["fixed.example"], maxLookedUpHosts: 3 });
  const layers = (await root.lookup!("layers"))!;
  for (let i = 0; i < 20; i++) assert.ok(await layers.lookup!(`host${i}.example`));
  const names = (await layers.list!()).map(([n]) => n);
  assert.deepEqual(names, [
    "local",
    "fixed.example",
    "host17.example",
    "host18.example",
    "host19.example",
  ]);
});

Deno.test("the layer store remembers a bounded number of references", async () => {
  const store = new ImageStore(defaultDrivers({ localDir: "/nonexistent" }), { log: () => {} });
  const root = layerStoreRoot(store);
  for (let i = 0; i < 1100; i++) {
    assert.ok(await root.lookup!(encodeRefName(`registry.example/app${i}:v1`)));
  }
  const names = (await root.list!()).map(([n]) => n);
  assert.equal(names.length, 1024);
  assert.ok(names.includes(encodeRefName("registry.example/app1099:v1")));
  assert.ok(!names.includes(encodeRefName("registry.example/app0:v1")));
});

Deno.test("directories are read without OPENDIR: ENOSYS, and offsets continue each directory's own listing", async () => {
  const files: [string, FsNode][] = [];
  for (let i = 0; i < 30; i++) files.push([`f${i}`, bytesNode(`file:${i}`, enc.encode(`${i}\n`))]);
  const fs = new CrfsFilesystem(
    staticDir("root", [["a", staticDir("a", files)], [
      "b",
      staticDir("b", [["x", bytesNode("x", enc.encode("x"))]]),
    ]]),
    { tagTtlMs: 1000, log: () => {} },
  );
  const a = answered(await fs.lookup(1, enc.encode("a"))).nodeId;
  const b = answered(await fs.lookup(1, enc.encode("b"))).nodeId;
  await assert.rejects(
    async () => await fs.opendir(a),
    (e) => (e as FuseError).errno === Errno.ENOSYS,
  );
  const first = await fs.readdir(a, 0, 0, 10);
  // Another directory read in between does not disturb the first one's offsets.
  assert.deepEqual((await fs.readdir(b, 0, 0)).map((i) => dec.decode(i.name)), [".", "..", "x"]);
  const rest = await fs.readdir(a, 0, first.at(-1)!.next);
  const names = [...first, ...rest].map((i) => dec.decode(i.name)).slice(2);
  assert.equal(names.length, 30);
  assert.equal(new Set(names).size, 30);
});

Deno.test("two readers of a directory that changes meanwhile each go on with the listing they started", async () => {
  const enc2 = new TextEncoder();
  let names = Array.from({ length: 20 }, (_, i) => `t${i}`);
  // A tag directory: its listing changes between reads.
  const tags: FsNode = {
    key: "tags",
    volatility: "tag",
    attr: () => staticDir("x", []).attr(),
    lookup: (n) =>
      Promise.resolve(names.includes(n) ? bytesNode(`tag:${n}`, enc2.encode(n)) : undefined),
    list: () => Promise.resolve(names.map((n) => [n, bytesNode(`tag:${n}`, enc2.encode(n))])),
  };
  const fs = new CrfsFilesystem(staticDir("root", [["tags", tags]]), {
    tagTtlMs: 1000,
    log: () => {},
  });
  const d = answered(await fs.lookup(1, enc.encode("tags"))).nodeId;
  const one = await fs.readdir(d, 0, 0, 8);
  names = names.slice(5).concat(["new1", "new2"]); // five tags gone, two new ones
  const two = await fs.readdir(d, 0, 0, 8);
  const oneRest = await fs.readdir(d, 0, one.at(-1)!.next);
  const twoRest = await fs.readdir(d, 0, two.at(-1)!.next);
  const seen = (items: { name: Uint8Array }[]) => items.map((i) => dec.decode(i.name)).slice(2);
  assert.deepEqual(seen([...one, ...oneRest]), Array.from({ length: 20 }, (_, i) => `t${i}`));
  assert.deepEqual(seen([...two, ...twoRest]), names);
  // The offsets of the first reader name its own listing, not the second's.
  assert.notEqual(Math.floor(one[0].next / 2 ** 32), Math.floor(two[0].next / 2 ** 32));
});
