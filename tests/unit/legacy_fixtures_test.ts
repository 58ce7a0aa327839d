/**
 * The reader against blobs written by google/crfs's own writer (legacy 47-byte footer, NumLink,
 * no chunk digests): every entry of the source tar is listed with its attributes, and every
 * file's bytes come back exactly.
 *
 * @module
 */
import assert from "node:assert/strict";
import { FileSource } from "../../format/range_source.ts";
import { StargzReader } from "../../format/reader.ts";
import { expectedTree, fileStream, FIXTURES } from "./tree_helpers.ts";

const cases = [
  ["synthetic-small.crfs.stargz", "synthetic-small.tar"],
  ["synthetic-small.crfs-64k.stargz", "synthetic-small.tar"],
  ["synthetic-tree.crfs-64k.stargz", "synthetic-tree.tar"],
  ["synthetic-gnu.crfs.stargz", "synthetic-gnu.tar"],
];

for (const [blob, tar] of cases) {
  Deno.test(`legacy google/crfs blob ${blob} matches ${tar}`, async () => {
    // google/crfs wrote U+FFFD into its TOC for bytes that are not UTF-8: compare through that.
    const expected = await expectedTree(fileStream(`${FIXTURES}/${tar}`), { lossyNames: true });
    const src = await FileSource.open(`${FIXTURES}/${blob}`);
    try {
      const r = await StargzReader.open(src);
      assert.equal(r.footer.kind, "legacy");
      assert.equal(r.openRequests, 1, "footer and TOC in one range read");
      const got = [...r.index.byPath.keys()].sort();
      assert.deepEqual(got, [...expected.keys()].sort());
      for (const [path, want] of expected) {
        const node = r.lookup(path)!;
        assert.equal(node.type, want.type, path);
        assert.equal(node.mode, want.mode, `${path} mode`);
        assert.equal(node.uid, want.uid, `${path} uid`);
        assert.equal(node.gid, want.gid, `${path} gid`);
        // google/crfs rounded times to whole seconds in its TOC.
        const rounded = want.mtimeSec + (want.mtimeNsec >= 5e8 ? 1 : 0);
        assert.equal(node.mtimeSec, rounded, `${path} mtime`);
        assert.equal(node.nlink, want.nlink, `${path} nlink`);
        assert.equal(node.devMajor, want.devMajor, `${path} devMajor`);
        assert.equal(node.devMinor, want.devMinor, `${path} devMinor`);
        if (want.type === "symlink") assert.equal(node.linkName, want.linkName, `${path} target`);
        // The fixture's `LIBARCHIVE.xattr.user.la` record is no xattr (not for google/crfs's Go
        // tar reader, not for crfs: only SCHILY.xattr records are).
        const wantX = new Map([...want.xattrs].filter(([k]) => k !== "user.la"));
        assert.deepEqual(node.xattrs, wantX, `${path} xattrs`);
        if (want.type === "reg") {
          assert.equal(node.size, want.content!.length, `${path} size`);
          assert.deepEqual(await r.readFile(node), want.content, `${path} content`);
        }
      }
    } finally {
      src.close();
    }
  });
}
