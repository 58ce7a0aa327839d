/**
 * `crfs ls FILE.stargz` and `crfs cat FILE.stargz:/path`: a local blob opens like every other
 * layer (the `--verify` policy applies: `require` refuses a blob without chunk digests, as for a
 * registry layer) and is walked as the same tree as a layer in the mount (whiteouts in overlayfs
 * form).
 *
 * @module
 */
import { assert, assertEquals, assertMatch, crfs, type CrfsRun } from "./helpers.ts";

const FIXTURES = new URL("../../../shared/fixtures/crfs-legacy", import.meta.url).pathname;
/** A google/crfs blob: a legacy footer and no chunk digests. */
const LEGACY = `${FIXTURES}/synthetic-small.crfs.stargz`;
/** A legacy blob with files of several chunks (no chunk digests; single-chunk files' digests do). */
const LEGACY_CHUNKED = `${FIXTURES}/synthetic-tree.crfs-64k.stargz`;
const TAR = `${FIXTURES}/synthetic-small.tar`;

async function ok(args: string[]): Promise<CrfsRun> {
  const r = await crfs(args);
  assertEquals(r.code, 0, `crfs ${args.join(" ")}:\n${r.stderr}`);
  return r;
}

async function refused(args: string[], re: RegExp, code = 1): Promise<void> {
  const r = await crfs(args);
  assertEquals(r.code, code, `crfs ${args.join(" ")} should fail:\n${r.stdout}`);
  assertMatch(r.stderr, re);
  assert(!/\n\s+at /.test(r.stderr), `no stack trace:\n${r.stderr}`);
}

const lines = (r: CrfsRun) => r.stdout.split("\n").filter((l) => l !== "");

Deno.test("ls/cat of a local blob: --verify require refuses one without chunk digests, like a registry layer", async () => {
  const work = await Deno.makeTempDir({ prefix: "crfs-local-blob-" });
  try {
    const esgz = `${work}/small.stargz`;
    await ok(["convert", "-q", TAR, esgz]);
    const hello = new TextEncoder().encode("hello\n");

    // The default policy (strict) reads both.
    for (const blob of [LEGACY, esgz]) {
      assertEquals(lines(await ok(["ls", `${blob}:/data`])).includes("hello.txt"), true, blob);
      assertEquals((await ok(["cat", `${blob}:/data/hello.txt`])).stdoutBytes, hello, blob);
    }
    // require: the eStargz blob has chunk digests (a file has no manifest to carry a TOC digest
    // annotation); a legacy blob with files of several chunks has none for them and is refused
    // by ls and cat alike (a one-chunk file's own digest verifies its chunk since zstd:chunked).
    assertEquals(lines(await ok(["ls", "--verify", "require", esgz])).sort(), [
      "data",
      "dev",
      "etc",
      "tmp",
    ]);
    assertEquals(
      (await ok(["cat", "--verify", "require", `${esgz}:/data/hello.txt`])).stdoutBytes,
      hello,
    );
    const noDigests = /the TOC has no chunk digests \(--verify require\)/;
    await refused(["ls", "--verify", "require", LEGACY_CHUNKED], noDigests);
    await refused(["cat", "--verify", "require", `${LEGACY_CHUNKED}:/tree/large.bin`], noDigests);
    await refused(["ls", "--verify", "sometimes", esgz], /--verify is one of/, 2);
  } finally {
    await Deno.remove(work, { recursive: true });
  }
});

Deno.test("ls of a local blob walks the layer tree of the mount: whiteouts as 0/0 devices, opaque marker hidden", async () => {
  const work = await Deno.makeTempDir({ prefix: "crfs-local-blob-" });
  try {
    await Deno.mkdir(`${work}/src/etc/opaque`, { recursive: true });
    await Deno.writeTextFile(`${work}/src/etc/kept.txt`, "kept\n");
    await Deno.writeTextFile(`${work}/src/etc/.wh.gone.txt`, "");
    await Deno.writeTextFile(`${work}/src/etc/opaque/.wh..wh..opq`, "");
    await Deno.writeTextFile(`${work}/src/etc/opaque/new.txt`, "new\n");
    const tar = new Deno.Command("tar", {
      args: ["-C", `${work}/src`, "-cf", `${work}/layer.tar`, "etc"],
    });
    assertEquals((await tar.output()).code, 0);
    await ok(["convert", "-q", `${work}/layer.tar`, `${work}/layer.stargz`]);

    assertEquals(lines(await ok(["ls", `${work}/layer.stargz:/etc`])).sort(), [
      "gone.txt",
      "kept.txt",
      "opaque",
    ]);
    const long = lines(await ok(["ls", "-l", `${work}/layer.stargz:/etc`]));
    const gone = long.find((l) => l.endsWith(" gone.txt"));
    assert(gone?.startsWith("c"), `the whiteout is a character device: ${long.join("\n")}`);
    assertEquals(lines(await ok(["ls", `${work}/layer.stargz:/etc/opaque`])), ["new.txt"]);
    const json = JSON.parse((await ok(["ls", "--json", `${work}/layer.stargz:/etc`])).stdout);
    const entries = json as { path: string; type: string; xattrs?: Record<string, string> }[];
    assertEquals(entries.find((e) => e.path === "gone.txt")?.type, "char");
    const opaque = entries.find((e) => e.path === "opaque");
    assertEquals(opaque?.xattrs?.["trusted.overlay.opaque"], btoa("y"), JSON.stringify(json));
    await refused(["cat", `${work}/layer.stargz:/etc/opaque`], /not a regular file \(dir\)/);
    await refused(["ls", `${work}/layer.stargz:/etc/nothing`], /no such file or directory/);
  } finally {
    await Deno.remove(work, { recursive: true });
  }
});
