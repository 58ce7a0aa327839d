/**
 * Test helpers: the tree a tar stream describes, computed independently of the stargz code
 * (tar semantics: later entries replace earlier ones, hardlinks share their target's content),
 * for comparing against what a reader or a mount shows.
 *
 * @module
 */
import assert from "node:assert/strict";
import { readTar } from "../../format/tar_reader.ts";
import type { StargzReader } from "../../format/reader.ts";
import { writeEStargz } from "../../format/writer.ts";
import { pieces, rng } from "./random_tar.ts";
import { gunzipStream, isGzip } from "../../format/gzip.ts";
import { cleanPath, parentOf } from "../../format/names.ts";

/** Directory of the shared legacy fixtures. */
export const FIXTURES = new URL("../../../shared/fixtures/crfs-legacy", import.meta.url).pathname;

/** What a tar says about one path. */
export interface ExpectedNode {
  type: "reg" | "dir" | "symlink" | "char" | "block" | "fifo";
  mode: number;
  uid: number;
  gid: number;
  mtimeSec: number;
  mtimeNsec: number;
  linkName: string;
  devMajor: number;
  devMinor: number;
  xattrs: Map<string, Uint8Array>;
  content?: Uint8Array;
  nlink: number;
  /** Identity shared by hardlinked names. */
  id: number;
}

/** Streams a file's bytes. */
export async function* fileStream(path: string): AsyncGenerator<Uint8Array> {
  using f = await Deno.open(path);
  const buf = new Uint8Array(1 << 20);
  while (true) {
    const n = await f.read(buf);
    if (n === null) return;
    yield buf.slice(0, n);
  }
}

async function* maybeGunzip(input: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const it = input[Symbol.asyncIterator]();
  const first = await it.next();
  if (first.done) return;
  const rest = { [Symbol.asyncIterator]: () => it };
  async function* all() {
    yield first.value;
    yield* rest;
  }
  if (isGzip(first.value)) yield* gunzipStream(all());
  else yield* all();
}

/**
 * The tree of a tar (or tar.gz) stream: clean path → node, with nlink computed like a
 * filesystem would. `lossyNames` replaces non-UTF-8 bytes by U+FFFD (what google/crfs stored).
 * Paths named in `skip` (clean) are left out.
 */
export async function expectedTree(
  input: AsyncIterable<Uint8Array>,
  opts: { lossyNames?: boolean; skip?: string[] } = {},
): Promise<Map<string, ExpectedNode>> {
  const lossy = (s: string) => opts.lossyNames ? s.replace(/[\udc80-\udcff]/g, "\ufffd") : s;
  const tree = new Map<string, ExpectedNode>();
  let nextId = 1;
  const dir = (): ExpectedNode => ({
    type: "dir",
    mode: 0o755,
    uid: 0,
    gid: 0,
    mtimeSec: 0,
    mtimeNsec: 0,
    linkName: "",
    devMajor: 0,
    devMinor: 0,
    xattrs: new Map(),
    nlink: 2,
    id: nextId++,
  });
  tree.set("", dir());
  const ensureParents = (p: string) => {
    const parent = parentOf(p);
    if (!tree.has(parent)) {
      ensureParents(parent);
      tree.set(parent, dir());
    }
  };
  for await (const e of readTar(maybeGunzip(input))) {
    const h = e.header;
    const path = cleanPath(lossy(h.name));
    if (typeof path !== "string") throw new Error(`bad name ${h.name}`);
    if (opts.skip?.includes(path)) continue;
    ensureParents(path);
    // Replacing a directory with a non-directory drops its subtree.
    const old = tree.get(path);
    if (old?.type === "dir" && h.kind !== "dir") {
      for (const k of [...tree.keys()]) if (k.startsWith(path + "/")) tree.delete(k);
    }
    const attrs = () => ({
      mode: h.mode,
      uid: h.uid,
      gid: h.gid,
      mtimeSec: h.mtimeSec,
      mtimeNsec: h.mtimeNsec,
      linkName: h.kind === "symlink" ? lossy(h.linkName) : "",
      devMajor: h.kind === "char" || h.kind === "block" ? h.devMajor : 0,
      devMinor: h.kind === "char" || h.kind === "block" ? h.devMinor : 0,
      xattrs: h.xattrs,
    });
    if (h.kind === "hardlink") {
      const target = tree.get(cleanPath(lossy(h.linkName)) as string);
      if (!target) throw new Error(`hardlink to missing ${h.linkName}`);
      tree.set(path, target);
      continue;
    }
    if (h.kind === "dir" && old?.type === "dir") {
      Object.assign(old, attrs());
      continue;
    }
    const node: ExpectedNode = { ...dir(), ...attrs(), type: h.kind };
    if (h.kind === "reg") node.content = await e.readAll();
    tree.set(path, node);
  }
  // Link counts: names per identity; directories 2 + subdirectories.
  const names = new Map<ExpectedNode, number>();
  for (const n of tree.values()) names.set(n, (names.get(n) ?? 0) + 1);
  for (const [n, count] of names) n.nlink = n.type === "dir" ? 2 : count;
  for (const [p, n] of tree) {
    if (p !== "" && n.type === "dir") tree.get(parentOf(p))!.nlink++;
  }
  return tree;
}

/** Converts bytes in memory. */
export async function convert(
  tar: Uint8Array,
  opts: { chunkSize?: number; workers?: number } = {},
) {
  const out: Uint8Array[] = [];
  const result = await writeEStargz(pieces(tar, tar.length), (b) => {
    out.push(b.slice());
  }, opts);
  const blob = new Uint8Array(out.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of out) {
    blob.set(p, o);
    o += p.length;
  }
  return { blob, result };
}

/** Asserts that the reader shows exactly the tree the tar describes. */
export async function assertSameTree(
  r: StargzReader,
  expected: Map<string, ExpectedNode>,
  seed: number,
): Promise<void> {
  assert.deepEqual([...r.index.byPath.keys()].sort(), [...expected.keys()].sort());
  const rand = rng(seed);
  const ids = new Map<number, unknown>();
  for (const [path, want] of expected) {
    const node = r.lookup(path)!;
    const at = JSON.stringify(path);
    assert.equal(node.type, want.type, `${at} type`);
    assert.equal(node.mode, want.mode, `${at} mode`);
    assert.equal(node.uid, want.uid, `${at} uid`);
    assert.equal(node.gid, want.gid, `${at} gid`);
    assert.equal(node.mtimeSec, want.mtimeSec, `${at} mtime`);
    assert.equal(node.mtimeNsec, want.mtimeNsec, `${at} mtime ns`);
    assert.equal(node.nlink, want.nlink, `${at} nlink`);
    assert.equal(node.linkName, want.linkName, `${at} link target`);
    assert.equal(node.devMajor, want.devMajor, `${at} devMajor`);
    assert.equal(node.devMinor, want.devMinor, `${at} devMinor`);
    assert.deepEqual(node.xattrs, want.xattrs, `${at} xattrs`);
    // Hardlinked names are one node.
    if (ids.has(want.id)) assert.equal(ids.get(want.id), node, `${at} shares its node`);
    ids.set(want.id, node);
    if (want.type !== "reg") continue;
    const content = want.content!;
    assert.equal(node.size, content.length, `${at} size`);
    assert.deepEqual(await r.readFile(node), content, `${at} content`);
    for (let k = 0; k < 3 && content.length > 0; k++) {
      const off = Math.floor(rand() * content.length);
      const len = Math.floor(rand() * (content.length - off + 10));
      assert.deepEqual(
        await r.read(node, off, len),
        content.subarray(off, off + len),
        `${at} [${off}+${len}]`,
      );
    }
  }
}
