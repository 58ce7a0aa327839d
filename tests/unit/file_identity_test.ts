/**
 * Inode identity follows the file, not its name: a layer where `b` is a hardlink to `a` and a
 * later entry gives the name `a` to a new file (GNU tar `--append`, writers that keep both
 * entries, such as the reference Go `estargz.Writer`; crfs's own writer turns `b` into a file of
 * its own, so that case holds either way) has two files, and they get two inode
 * numbers with their own bytes, in the layer view and in the merged view. Also: whiteouts that
 * would hide `.` or `..` (`.wh..`, `.wh...`) are ignored.
 *
 * @module
 */
import assert from "node:assert/strict";
import { BytesSource } from "../../format/range_source.ts";
import { StargzReader } from "../../format/reader.ts";
import { chunksOf } from "../../format/toc_index.ts";
import { encodeHeader, END_OF_ARCHIVE, tarHeader } from "../../format/tar_header.ts";
import { CrfsFilesystem } from "../../fs/filesystem.ts";
import { answered } from "../../fs/fuse/ops.ts";
import { layerRoot } from "../../fs/layer_tree.ts";
import { unionRoot } from "../../fs/union.ts";
import { staticDir } from "../../fs/node.ts";
import { appendWithReference } from "../helpers/reference.ts";
import { appendedHardlinkTar } from "../helpers/hardlink_tar.ts";
import { convert } from "./tree_helpers.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

async function fsOf(blob: Uint8Array) {
  const reader = await StargzReader.open(new BytesSource(blob));
  const root = staticDir("test-root", [
    ["layer", layerRoot(reader, "sha256:l")],
    ["image", unionRoot([{ reader, id: "sha256:l" }], "sha256:i")],
  ]);
  return new CrfsFilesystem(root, { tagTtlMs: 1000, log: () => {} });
}

async function lookupPath(fs: CrfsFilesystem, path: string): Promise<number> {
  let ino = 1;
  for (const name of path.split("/")) ino = answered(await fs.lookup(ino, enc.encode(name))).nodeId;
  assert.ok(ino > 0, path);
  return ino;
}

async function assertTwoFiles(blob: Uint8Array, what: string) {
  const fs = await fsOf(blob);
  for (const view of ["layer", "image"]) {
    const a = await lookupPath(fs, `${view}/a`);
    const b = await lookupPath(fs, `${view}/b`);
    assert.notEqual(a, b, `${what}: ${view}/a and ${view}/b share inode ${a}`);
    // Read b first: the table must not hand b's number the new a's node (or the other way).
    assert.equal(dec.decode(await fs.read(b, 0, 0, 100)), "old\n", `${what}: ${view}/b`);
    assert.equal(dec.decode(await fs.read(a, 0, 0, 100)), "newer-content\n", `${what}: ${view}/a`);
    assert.equal((await fs.getattr(b)).attr.size, 4);
    assert.equal((await fs.getattr(a)).attr.size, 14);
  }
  // The same file keeps its number in both views.
  assert.equal(await lookupPath(fs, "layer/b"), await lookupPath(fs, "image/b"));
}

Deno.test("a hardlink's file and a new file under its first name get two inodes (GNU tar --append, crfs writer)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "crfs-identity-" });
  try {
    const tar = await Deno.readFile(await appendedHardlinkTar(dir));
    const { blob } = await convert(tar);
    await assertTwoFiles(blob, "crfs writer over GNU tar --append");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a hardlink's file and a new file under its first name get two inodes (reference Go estargz.Writer)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "crfs-identity-" });
  try {
    const tar = await appendedHardlinkTar(dir);
    await appendWithReference(tar, `${dir}/ref.esgz`);
    await assertTwoFiles(await Deno.readFile(`${dir}/ref.esgz`), "reference Go writer");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("whiteouts named .wh.. and .wh... are ignored in the layer and merged views", async () => {
  const h = (name: string, kind: "reg" | "dir", size = 0) =>
    encodeHeader(tarHeader({ name, kind, size, mode: 0o644, mtimeSec: 1_700_000_000 }));
  const body = enc.encode("x");
  const pad = new Uint8Array(512);
  pad.set(body);
  const parts = [
    h("d/", "dir"),
    h(".wh..", "reg"),
    h(".wh...", "reg"),
    h("d/.wh..", "reg"),
    h("d/.wh...", "reg"),
    h("d/f", "reg", 1),
    pad,
    END_OF_ARCHIVE,
  ];
  const tar = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) tar.set(p, (o += p.length) - p.length);
  const { blob } = await convert(tar);
  const reader = await StargzReader.open(new BytesSource(blob));
  const bottom = await convert(
    Uint8Array.from([...h("d/", "dir"), ...h("d/g", "reg", 1), ...pad, ...END_OF_ARCHIVE]),
  );
  const lower = await StargzReader.open(new BytesSource(bottom.blob));
  const layer = layerRoot(reader, "sha256:l");
  const image = unionRoot([{ reader: lower, id: "sha256:b" }, { reader, id: "sha256:l" }], "i");
  const names = async (dir: typeof layer, path: string[]) => {
    let n = dir;
    for (const p of path) n = (await n.lookup!(p))!;
    return (await n.list!()).map(([name]) => name).sort();
  };
  assert.deepEqual(await names(layer, []), ["d"]);
  assert.deepEqual(await names(layer, ["d"]), ["f"]);
  assert.equal(await layer.lookup!("."), undefined);
  assert.equal(await layer.lookup!(".."), undefined);
  assert.deepEqual(await names(image, []), ["d"]);
  // The lower layer's d/g stays: `.wh..` in d hides nothing.
  assert.deepEqual(await names(image, ["d"]), ["f", "g"]);
});

Deno.test("file keys are numbers distinct across layers; a node's path and digest come from the tree", async () => {
  const h = (name: string, kind: "reg" | "dir", size = 0) =>
    encodeHeader(tarHeader({ name, kind, size, mode: 0o644, mtimeSec: 1_700_000_000 }));
  const pad = new Uint8Array(512);
  pad.set(enc.encode("x"));
  const tar = Uint8Array.from([
    ...h("d/", "dir"),
    ...h("d/f", "reg", 1),
    ...pad,
    ...END_OF_ARCHIVE,
  ]);
  const reader = await StargzReader.open(new BytesSource((await convert(tar)).blob));
  const other = await StargzReader.open(new BytesSource((await convert(tar)).blob));
  const f = (root: ReturnType<typeof layerRoot>) =>
    root.lookup!("d").then((d) => d!.lookup!("f")).then((n) => n!);
  const a = await f(layerRoot(reader, "sha256:one"));
  const b = await f(layerRoot(other, "sha256:two"));
  assert.equal(typeof a.key, "number");
  assert.notEqual(a.key, b.key, "same entry index in two layers, two files");
  // The merged view gives the layer's file its layer key (one inode in both views).
  const merged = await f(unionRoot([{ reader, id: "sha256:one" }], "sha256:img"));
  assert.equal(merged.key, a.key);
  assert.equal(a.path, "d/f");
  const node = reader.lookup("d/f")!;
  assert.equal(reader.index.pathOf(node), "d/f");
  assert.equal(reader.index.pathOf(reader.root), "");
  // A file of one chunk: the chunk's digest is the file's.
  assert.match(node.digest!, /^sha256:[0-9a-f]{64}$/);
  assert.equal(chunksOf(node)[0].digest, node.digest);
  assert.equal(chunksOf(node)[0].node, node);
  assert.equal(dec.decode(await reader.readFile(node)), "x");
});
