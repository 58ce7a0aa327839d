/**
 * Compatibility with the reference eStargz implementation (containerd/stargz-snapshotter's Go
 * `estargz` package, from Debian): blobs crfs writes open and verify there (TOC digest, every
 * chunk digest, every file's bytes), and blobs the reference writes read back exactly in crfs.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { FileSource } from "../../format/range_source.ts";
import { StargzReader } from "../../format/reader.ts";
import { buildWithReference, verifyWithReference } from "../helpers/reference.ts";
import { randomTar } from "../unit/random_tar.ts";
import { convert, expectedTree, fileStream, FIXTURES } from "../unit/tree_helpers.ts";

const sha = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

async function* once(b: Uint8Array) {
  yield b;
}

async function withTemp<T>(f: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "crfs-compat-" });
  try {
    return await f(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const crfsInputs: [string, () => Promise<Uint8Array>, number][] = [
  ["synthetic-small.tar", () => Deno.readFile(`${FIXTURES}/synthetic-small.tar`), 64 << 10],
  ["synthetic-gnu.tar", () => Deno.readFile(`${FIXTURES}/synthetic-gnu.tar`), 4 << 20],
  [
    "random tree (pax)",
    () => Promise.resolve(randomTar({ seed: 21, chunkSize: 3000, entries: 200 })),
    3000,
  ],
  [
    "random tree (gnu)",
    () => Promise.resolve(randomTar({ seed: 22, chunkSize: 999, entries: 200, format: "gnu" })),
    999,
  ],
];

for (const [what, input, chunkSize] of crfsInputs) {
  Deno.test(`the reference reader opens and verifies a crfs blob of ${what}`, async () => {
    await withTemp(async (dir) => {
      const tar = await input();
      const { blob, result } = await convert(tar, { chunkSize });
      await Deno.writeFile(`${dir}/b.estargz`, blob);
      const report = await verifyWithReference(`${dir}/b.estargz`, result.tocDigest);
      assert.equal(report.footer, "estargz");
      assert.equal(report.tocDigest, result.tocDigest);
      assert.equal(report.verified, true);
      // Go sees U+FFFD where a name is not UTF-8, as it always did.
      const expected = await expectedTree(once(tar), { lossyNames: true });
      const byName = new Map(
        report.entries.filter((e) => e.type !== "chunk").map((e) => [e.name, e]),
      );
      const tree = new Map(report.tree.map((n) => [n.name, n]));
      for (const [path, want] of expected) {
        if (path === "") continue;
        const node = tree.get(path);
        assert.ok(node, `the reference tree has ${JSON.stringify(path)}`);
        if (want.type === "dir") assert.equal(node.numLink, want.nlink, `${path} nlink`);
        const e = byName.get(path);
        if (!e) {
          assert.equal(want.type, "dir", `${path}: only implicit directories lack an entry`);
          continue;
        }
        if (e.type === "hardlink") continue; // checked through its target
        assert.equal(e.type, want.type, path);
        assert.equal(e.mode & 0o7777, want.mode, `${path} mode`);
        assert.equal(e.uid, want.uid, `${path} uid`);
        assert.equal(e.gid, want.gid, `${path} gid`);
        if (want.type === "symlink") assert.equal(e.linkName, want.linkName, `${path} target`);
        if (want.type === "reg") {
          assert.equal(
            e.sha256,
            sha(want.content!),
            `${path} content through the reference reader`,
          );
          assert.equal(e.numLink, want.nlink, `${path} nlink`);
        }
        for (const [k, v] of want.xattrs) {
          assert.equal(e.xattrs[k], btoa(String.fromCharCode(...v)), `${path} xattr ${k}`);
        }
      }
    });
  });
}

Deno.test("the reference reader verifies a crfs blob of a real directory", async () => {
  await withTemp(async (dir) => {
    const tarPath = `${dir}/real.tar`;
    const st = await new Deno.Command("tar", {
      args: ["-cf", tarPath, "-C", "/usr/share", "perl5", "zoneinfo"],
    })
      .output();
    assert.ok(st.success);
    const { blob, result } = await convert(await Deno.readFile(tarPath), { chunkSize: 32 << 10 });
    await Deno.writeFile(`${dir}/b.estargz`, blob);
    const report = await verifyWithReference(`${dir}/b.estargz`, result.tocDigest);
    assert.equal(report.verified, true);
    assert.ok(report.entries.length > 1000);
  });
});

const referenceInputs: [string, string, number | undefined][] = [
  ["synthetic-small.tar", `${FIXTURES}/synthetic-small.tar`, 64 << 10],
  ["synthetic-tree.tar", `${FIXTURES}/synthetic-tree.tar`, undefined],
  ["synthetic-gnu.tar", `${FIXTURES}/synthetic-gnu.tar`, undefined],
];

for (const [what, tarPath, chunkSize] of referenceInputs) {
  for (const gomaxprocs of [1, 4]) {
    Deno.test(`crfs reads a reference-built blob of ${what} (GOMAXPROCS=${gomaxprocs})`, async () => {
      await withTemp(async (dir) => {
        const out = `${dir}/ref.estargz`;
        const built = await buildWithReference(tarPath, out, { chunkSize, gomaxprocs });
        const src = await FileSource.open(out);
        try {
          const r = await StargzReader.open(src, { tocDigest: built.tocDigest });
          assert.equal(r.footer.kind, "estargz");
          assert.equal(r.openRequests, 1);
          // The reference rewrites headers through Go's tar: names lose non-UTF-8 bytes and only
          // SCHILY xattrs survive; contents and everything else must be exact.
          const expected = await expectedTree(fileStream(tarPath), { lossyNames: true });
          assert.deepEqual([...r.index.byPath.keys()].sort(), [...expected.keys()].sort());
          for (const [path, want] of expected) {
            const node = r.lookup(path)!;
            assert.equal(node.type, want.type, path);
            assert.equal(node.nlink, want.nlink, `${path} nlink`);
            assert.equal(node.uid, want.uid, `${path} uid`);
            if (want.type === "reg") {
              assert.deepEqual(await r.readFile(node), want.content, `${path} content`);
            }
          }
        } finally {
          src.close();
        }
      });
    });
  }
}

Deno.test("the reference reader verifies a crfs blob with prioritized files and a .prefetch.landmark", async () => {
  await withTemp(async (dir) => {
    const tar = randomTar({ seed: 23, chunkSize: 1500, entries: 150 });
    const expected = await expectedTree(once(tar));
    const regs = [...expected].filter(([, n]) => n.type === "reg").map(([p]) => p);
    const { writeEStargz } = await import("../../format/writer.ts");
    const parts: Uint8Array<ArrayBuffer>[] = [];
    const result = await writeEStargz(once(tar), (b) => {
      parts.push(b.slice());
    }, { chunkSize: 1500, prioritized: regs.slice(0, 5) });
    await Deno.writeFile(`${dir}/p.estargz`, new Uint8Array(await new Blob(parts).arrayBuffer()));
    const report = await verifyWithReference(`${dir}/p.estargz`, result.tocDigest);
    assert.equal(report.verified, true);
    assert.ok(report.entries.some((e) => e.name === ".prefetch.landmark"));
  });
});
