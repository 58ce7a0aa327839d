/**
 * The reference test peer works: GNU tar makes a layer from a real directory, the reference
 * (containerd/stargz-snapshotter's Go `estargz`, via tests/helpers/reference.ts) builds an
 * eStargz blob from it and verifies it, and every entry and every byte read back through the
 * reference reader matches the source files. A corrupted chunk, a wrong TOC digest and a
 * legacy stargz without chunk digests fail verification; the legacy one can still be listed.
 *
 * @module
 */
import assert from "node:assert/strict";
import { gunzipSync, gzipSync } from "node:zlib";
import {
  buildWithReference,
  listLegacyWithReference,
  type ReferenceEntry,
  type ReferenceReport,
  ReferenceToolError,
  runReference,
  verifyWithReference,
} from "../helpers/reference.ts";
import { concat } from "../../format/bytes.ts";

const CHUNK = 64 * 1024;
const BIG_SIZE = 3 * CHUNK + 1234;
const LANDMARK = new Uint8Array([0x0f]);

async function sha256(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  return "sha256:" + Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Deterministic, compressible but not trivially so: words drawn by a xorshift generator. */
function bigContent(size: number): Uint8Array {
  const words = ["alpha ", "beta ", "gamma\n", "delta ", "eps ", "zeta\t", "eta ", "theta "];
  const out = new Uint8Array(size);
  let x = 0x9e3779b9;
  let i = 0;
  const enc = new TextEncoder();
  while (i < size) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    const w = (x & 0xff) < 16 ? new Uint8Array([x >>> 8 & 0xff]) : enc.encode(words[x & 7]);
    out.set(w.subarray(0, size - i), i);
    i += w.length;
  }
  return out;
}

async function run(cmd: string, args: string[], cwd?: string): Promise<void> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** RFC 3339 seconds in UTC, as the reference writes `modtime` for a whole-second mtime. */
function rfc3339Seconds(d: Date): string {
  return new Date(Math.floor(d.getTime() / 1000) * 1000).toISOString().replace(".000Z", "Z");
}

function entry(report: ReferenceReport, name: string): ReferenceEntry {
  const e = report.entries.find((x) => x.name === name);
  assert.ok(e, `no entry ${JSON.stringify(name)} in ${report.entries.map((x) => x.name)}`);
  return e;
}

/** The 47-byte legacy google/crfs footer pointing at `tocOffset`. */
function legacyFooter(tocOffset: number): Uint8Array {
  const extra = new TextEncoder().encode(tocOffset.toString(16).padStart(16, "0") + "STARGZ");
  const f = new Uint8Array(47);
  f.set([0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, extra.length, 0]);
  f.set(extra, 12);
  f.set([0x01, 0x00, 0x00, 0xff, 0xff], 34); // empty final stored block; CRC32 and ISIZE stay 0
  return f;
}

Deno.test("reference estargz tool: build, verify, corrupt, legacy", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "crfs-reference-" });
  try {
    // A real directory, archived by GNU tar (its default gnu format).
    const src = `${tmp}/src`;
    const files: Record<string, Uint8Array> = {
      "hello.txt": new TextEncoder().encode("hello\n"),
      "big.bin": bigContent(BIG_SIZE),
      "empty": new Uint8Array(0),
      "dir/nested.txt": new TextEncoder().encode("nested file\n"),
    };
    await Deno.mkdir(`${src}/dir/sub`, { recursive: true });
    for (const [p, c] of Object.entries(files)) await Deno.writeFile(`${src}/${p}`, c);
    await Deno.chmod(`${src}/hello.txt`, 0o640);
    await Deno.chmod(`${src}/dir`, 0o750);
    await Deno.symlink("hello.txt", `${src}/link`);
    await Deno.link(`${src}/big.bin`, `${src}/dir/hard`);
    const tarPath = `${tmp}/in.tar`;
    await run("tar", ["--sort=name", "-cf", tarPath, "-C", src, "."]);

    const blobPath = `${tmp}/out.stargz`;
    const built = await buildWithReference(tarPath, blobPath, { chunkSize: CHUNK });
    const blob = await Deno.readFile(blobPath);
    let report!: ReferenceReport;

    await t.step("build: digests describe the written blob", async () => {
      assert.equal(built.size, blob.length);
      assert.equal(built.blobDigest, await sha256(blob));
      // diffID = sha256 of the whole decompressed stream (TOC entry and end blocks included).
      assert.equal(built.diffID, await sha256(gunzipSync(blob)));
      assert.match(built.tocDigest, /^sha256:[0-9a-f]{64}$/);
      // 51-byte eStargz footer: gzip header with FEXTRA, subfield "SG".
      const footer = blob.subarray(blob.length - 51);
      assert.deepEqual([...footer.subarray(0, 4)], [0x1f, 0x8b, 0x08, 0x04]);
      assert.equal(String.fromCharCode(footer[12], footer[13]), "SG");
    });

    await t.step("verify: entries and content match the source files", async () => {
      report = await verifyWithReference(blobPath, built.tocDigest);
      assert.equal(report.footer, "estargz");
      assert.equal(report.tocDigest, built.tocDigest);
      assert.equal(report.verified, true);
      assert.deepEqual(report.warnings, []);

      // Build puts the landmark first when nothing is prioritized.
      const lm = report.entries[0];
      assert.equal(lm.name, ".no.prefetch.landmark");
      assert.equal(lm.type, "reg");
      assert.equal(lm.sha256, await sha256(LANDMARK));

      for (const [p, content] of Object.entries(files)) {
        const e = entry(report, p);
        const st = await Deno.lstat(`${src}/${p}`);
        assert.equal(e.type, "reg", p);
        assert.equal(e.size, content.length, p);
        assert.equal(e.sha256, await sha256(content), p);
        assert.equal(e.digest, e.sha256, p);
        assert.equal(e.mode & 0o7777, st.mode! & 0o7777, p);
        assert.equal(e.uid, st.uid, p);
        assert.equal(e.gid, st.gid, p);
        assert.equal(e.modtime, rfc3339Seconds(st.mtime!), p);
        for (const c of e.chunks ?? []) assert.equal(c.verified, true, p);
      }
      assert.equal(entry(report, "hello.txt").mode & 0o7777, 0o640);

      // Chunking: 4 chunks, the last one short, all checked against their chunkDigest.
      const big = entry(report, "big.bin");
      assert.deepEqual(
        big.chunks!.map((c) => [c.chunkOffset, c.chunkSize]),
        [[0, CHUNK], [CHUNK, CHUNK], [2 * CHUNK, CHUNK], [3 * CHUNK, 1234]],
      );
      for (let i = 0; i + 1 < big.chunks!.length; i++) {
        assert.equal(big.chunks![i].nextOffset, big.chunks![i + 1].offset);
      }
      assert.equal(entry(report, "empty").chunks, undefined);

      // Hardlink: its own entry, content read through it is the target's, link count 2.
      const hard = entry(report, "dir/hard");
      assert.equal(hard.type, "hardlink");
      assert.equal(hard.linkName.replace(/^\.\//, ""), "big.bin");
      assert.equal(hard.sha256, await sha256(files["big.bin"]));
      assert.equal(hard.numLink, 2);
      assert.equal(big.numLink, 2);

      const link = entry(report, "link");
      assert.equal(link.type, "symlink");
      assert.equal(link.linkName, "hello.txt");

      const dir = entry(report, "dir");
      assert.equal(dir.type, "dir");
      assert.equal(dir.mode & 0o7777, 0o750);
      assert.equal(dir.rawName, "./dir/");
      assert.equal(dir.numLink, 3); // ".", its name in the parent, "sub/.."
      assert.equal(entry(report, "dir/sub").type, "dir");
      assert.equal(entry(report, "").type, "dir");

      // The reader's tree holds exactly the source paths (plus root and landmark).
      assert.deepEqual(
        report.tree.map((n) => n.name),
        [
          "",
          ".no.prefetch.landmark",
          "big.bin",
          "dir",
          "dir/hard",
          "dir/nested.txt",
          "dir/sub",
          "empty",
          "hello.txt",
          "link",
        ],
      );
    });

    await t.step("verify: a corrupted byte in a compressed chunk fails", async () => {
      const c = entry(report, "big.bin").chunks![1];
      const bad = blob.slice();
      bad[c.offset + Math.floor((c.nextOffset - c.offset) / 2)] ^= 0xff;
      const badPath = `${tmp}/corrupt.stargz`;
      await Deno.writeFile(badPath, bad);
      const r = await runReference(["verify", badPath, "--toc-digest", built.tocDigest]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /^estargz-tool: .*big\.bin/);
      await assert.rejects(verifyWithReference(badPath), ReferenceToolError);
    });

    await t.step("verify: a wrong TOC digest fails", async () => {
      const wrong = "sha256:" + "0".repeat(64);
      const e = await verifyWithReference(blobPath, wrong).then(
        () => assert.fail("verify accepted a wrong TOC digest"),
        (e) => e,
      );
      assert.ok(e instanceof ReferenceToolError);
      assert.equal(e.code, 1);
      assert.match(e.stderr, /invalid TOC JSON/);
      assert.ok(e.stderr.includes(built.tocDigest), "prints the computed digest");
    });

    await t.step("build: prioritized files go first, then .prefetch.landmark", async () => {
      const prioPath = `${tmp}/prio.stargz`;
      const b = await buildWithReference(tarPath, prioPath, {
        chunkSize: CHUNK,
        prioritize: ["dir/nested.txt", "hello.txt"],
        gomaxprocs: 1,
      });
      const r = await verifyWithReference(prioPath, b.tocDigest);
      assert.deepEqual(
        r.entries.slice(0, 5).map((e) => e.name),
        ["", "dir", "dir/nested.txt", "hello.txt", ".prefetch.landmark"],
      );
      assert.ok(!r.entries.some((e) => e.name === ".no.prefetch.landmark"));
      assert.equal(r.entries.length, report.entries.length);
      // Same bytes again with a fixed GOMAXPROCS.
      const again = await buildWithReference(tarPath, `${tmp}/prio2.stargz`, {
        chunkSize: CHUNK,
        prioritize: ["dir/nested.txt", "hello.txt"],
        gomaxprocs: 1,
      });
      assert.equal(again.blobDigest, b.blobDigest);
    });

    await t.step("list-legacy: 47-byte footer, no chunk digests", async () => {
      // Rewrite the TOC the google/crfs way (no chunkDigest, "NumLink": 0), archived by GNU tar,
      // and end the blob with the legacy footer.
      const tocOffset = report.tocOffset;
      const tocTar = gunzipSync(blob.subarray(tocOffset, blob.length - 51));
      const size = parseInt(new TextDecoder().decode(tocTar.subarray(124, 135)), 8);
      const toc = JSON.parse(new TextDecoder().decode(tocTar.subarray(512, 512 + size)));
      for (const e of toc.entries) {
        delete e.chunkDigest;
        e.NumLink = 0;
      }
      await Deno.mkdir(`${tmp}/legacy`);
      await Deno.writeTextFile(`${tmp}/legacy/stargz.index.json`, JSON.stringify(toc));
      await run("tar", ["-cf", `${tmp}/toc.tar`, "-C", `${tmp}/legacy`, "stargz.index.json"]);
      const legacy = concat([
        blob.subarray(0, tocOffset),
        gzipSync(await Deno.readFile(`${tmp}/toc.tar`)),
        legacyFooter(tocOffset),
      ]);
      const legacyPath = `${tmp}/legacy.stargz`;
      await Deno.writeFile(legacyPath, legacy);

      const strict = await runReference(["verify", legacyPath]);
      assert.equal(strict.code, 1);
      assert.match(strict.stderr, /ChunkDigest not found/);

      const r = await listLegacyWithReference(legacyPath);
      assert.equal(r.footer, "legacy");
      assert.equal(r.verified, false);
      for (const [p, content] of Object.entries(files)) {
        assert.equal(entry(r, p).sha256, await sha256(content), p);
      }
      assert.equal(entry(r, "dir/hard").sha256, await sha256(files["big.bin"]));
    });

    await t.step("usage errors exit 2", async () => {
      const r = await runReference(["frobnicate"]);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /unknown subcommand/);
    });
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
