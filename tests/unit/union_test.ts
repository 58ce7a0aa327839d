/**
 * The merged image view against an independent implementation of the OCI image spec's
 * "applying changesets": layers applied bottom to top, each layer's whiteouts first (they act on
 * the layers below), then its entries. Random multi-layer images with whiteouts, opaque
 * directories and files replacing directories must give the same tree and the same bytes.
 *
 * @module
 */
import assert from "node:assert/strict";
import { BytesSource } from "../../format/range_source.ts";
import { StargzReader } from "../../format/reader.ts";
import {
  encodeHeader,
  END_OF_ARCHIVE,
  type TarHeader,
  tarHeader,
} from "../../format/tar_header.ts";
import { unionRoot } from "../../fs/union.ts";
import { layerRoot } from "../../fs/layer_tree.ts";
import type { FsNode } from "../../fs/node.ts";
import { rng } from "./random_tar.ts";
import { convert } from "./tree_helpers.ts";
import { concat } from "../../format/bytes.ts";

interface Spec {
  kind: "dir" | "reg" | "symlink";
  content?: string;
}

function h(name: string, kind: TarHeader["kind"], size = 0, linkName = ""): TarHeader {
  return tarHeader({
    name,
    kind,
    size,
    linkName,
    mode: kind === "dir" ? 0o755 : 0o644,
    mtimeSec: 1_700_000_000,
  });
}

function tarOf(entries: [string, Spec | "whiteout" | "opaque"][]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const [path, spec] of entries) {
    if (spec === "whiteout" || spec === "opaque") {
      const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/") + 1) : "";
      const base = path.slice(path.lastIndexOf("/") + 1);
      parts.push(
        encodeHeader(h(spec === "opaque" ? `${path}/.wh..wh..opq` : `${dir}.wh.${base}`, "reg")),
      );
    } else if (spec.kind === "reg") {
      const body = new TextEncoder().encode(spec.content);
      parts.push(encodeHeader(h(path, "reg", body.length)));
      const p = new Uint8Array(Math.ceil(body.length / 512) * 512);
      p.set(body);
      parts.push(p);
    } else if (spec.kind === "symlink") {
      parts.push(encodeHeader(h(path, "symlink", 0, spec.content)));
    } else parts.push(encodeHeader(h(path + "/", "dir")));
  }
  parts.push(END_OF_ARCHIVE);
  return concat(parts);
}

/** Applies layers per the OCI spec; returns path → spec of the final tree. */
export function applyLayers(layers: [string, Spec | "whiteout" | "opaque"][][]): Map<string, Spec> {
  const tree = new Map<string, Spec>();
  const removeTree = (p: string) => {
    tree.delete(p);
    for (const k of [...tree.keys()]) if (k.startsWith(p + "/")) tree.delete(k);
  };
  for (const layer of layers) {
    for (const [path, spec] of layer) {
      if (spec === "whiteout") removeTree(path);
      if (spec === "opaque") {
        for (const k of [...tree.keys()]) if (k.startsWith(path + "/")) tree.delete(k);
      }
    }
    for (const [path, spec] of layer) {
      // Parents become directories (replacing files), also for a whiteout's own directory.
      const parts = path.split("/");
      for (let i = 1; i < parts.length; i++) {
        const p = parts.slice(0, i).join("/");
        if (tree.get(p)?.kind !== "dir") {
          removeTree(p);
          tree.set(p, { kind: "dir" });
        }
      }
      if (spec === "whiteout" || spec === "opaque") continue;
      const old = tree.get(path);
      if (old && !(old.kind === "dir" && spec.kind === "dir")) removeTree(path);
      if (spec.kind !== "dir" || !old || old.kind !== "dir") tree.set(path, spec);
    }
  }
  return tree;
}

/** Walks a node tree into path → spec. */
async function walk(root: FsNode): Promise<Map<string, Spec>> {
  const out = new Map<string, Spec>();
  const visit = async (node: FsNode, path: string) => {
    for (const [name, child] of await node.list!()) {
      const p = path ? `${path}/${name}` : name;
      const a = child.attr();
      assert.equal(await node.lookup!(name), await node.lookup!(name), "lookups are stable");
      if (a.type === "dir") {
        out.set(p, { kind: "dir" });
        await visit(child, p);
      } else if (a.type === "reg") {
        out.set(p, {
          kind: "reg",
          content: new TextDecoder().decode(await child.read!(0, a.size + 10)),
        });
      } else if (a.type === "symlink") {
        out.set(p, { kind: "symlink", content: a.linkName });
      } else throw new Error(`unexpected ${a.type} at ${p}`);
    }
  };
  await visit(root, "");
  return out;
}

export function randomLayers(seed: number): [string, Spec | "whiteout" | "opaque"][][] {
  const r = rng(seed);
  const names = ["a", "b", "c", "d"];
  const randPath = (depth: number) => {
    const n = 1 + Math.floor(r() * depth);
    return Array.from({ length: n }, () => names[Math.floor(r() * names.length)]).join("/");
  };
  const layers: [string, Spec | "whiteout" | "opaque"][][] = [];
  for (let l = 0; l < 4; l++) {
    const entries = new Map<string, Spec | "whiteout" | "opaque">();
    for (let i = 0; i < 12; i++) {
      const p = randPath(3);
      const x = r();
      // Skip entries whose parent path is a file in this same layer (invalid in one tar).
      const clash = [...entries].some(([q, s]) =>
        (p.startsWith(q + "/") && s !== "opaque" && (s === "whiteout" || s.kind !== "dir")) ||
        q.startsWith(p + "/")
      );
      if (entries.has(p) || clash) continue;
      if (l > 0 && x < 0.15) entries.set(p, "whiteout");
      else if (l > 0 && x < 0.25) entries.set(p, "opaque");
      else if (x < 0.5) entries.set(p, { kind: "dir" });
      else if (x < 0.9) entries.set(p, { kind: "reg", content: `layer ${l} file ${p} #${i}` });
      else entries.set(p, { kind: "symlink", content: `target-${l}-${i}` });
    }
    layers.push([...entries]);
  }
  return layers;
}

for (let seed = 1; seed <= 40; seed++) {
  Deno.test(`merged view of random image ${seed} equals the OCI application of its layers`, async () => {
    const layers = randomLayers(seed);
    // Opaque markers need their directory to exist in that layer's tar: add it.
    const withDirs = layers.map((l) => {
      const out: [string, Spec | "whiteout" | "opaque"][] = [];
      for (const [p, s] of l) {
        if (s === "opaque") out.push([p, { kind: "dir" }]);
        out.push([p, s]);
      }
      return out;
    });
    const readers = [];
    for (const [i, l] of withDirs.entries()) {
      const { blob } = await convert(tarOf(l));
      readers.push({ reader: await StargzReader.open(new BytesSource(blob)), id: `layer${i}` });
    }
    const got = await walk(unionRoot(readers, "img"));
    const want = applyLayers(withDirs);
    assert.deepEqual(
      [...got].sort(([a], [b]) => a < b ? -1 : 1),
      [...want].sort(([a], [b]) => a < b ? -1 : 1),
    );
  });
}

Deno.test("a layer view shows whiteouts as 0/0 character devices and marks opaque directories", async () => {
  const { blob } = await convert(tarOf([
    ["etc", { kind: "dir" }],
    ["etc/gone", "whiteout"],
    ["etc/sub", { kind: "dir" }],
    ["etc/sub", "opaque"],
    ["etc/sub/kept", { kind: "reg", content: "x" }],
  ]));
  const root = layerRoot(await StargzReader.open(new BytesSource(blob)), "l");
  const etc = (await root.lookup!("etc"))!;
  assert.deepEqual((await etc.list!()).map(([n]) => n).sort(), ["gone", "sub"]);
  const gone = (await etc.lookup!("gone"))!.attr();
  assert.equal(gone.type, "char");
  assert.equal(gone.devMajor, 0);
  assert.equal(gone.devMinor, 0);
  assert.equal(await etc.lookup!(".wh.gone"), undefined);
  const sub = (await etc.lookup!("sub"))!;
  assert.deepEqual((await sub.list!()).map(([n]) => n), ["kept"]);
  assert.equal(new TextDecoder().decode(sub.attr().xattrs.get("trusted.overlay.opaque")), "y");
  assert.equal(await root.lookup!("stargz.index.json"), undefined);
  assert.equal(await root.lookup!(".no.prefetch.landmark"), undefined);
});
