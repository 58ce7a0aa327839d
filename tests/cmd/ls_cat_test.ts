/**
 * `crfs ls` and `crfs cat` against the real docker-registry: listing owners, repositories, tags
 * with their digests, merged images with whiteouts applied, single layers, long/recursive/JSON
 * output, reading files (symlinks followed, hardlinks, multi-chunk files), clear errors, and the
 * registry requests a listing costs, counted in the registry's own access log.
 *
 * @module
 */
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { pushImage, randomBytes, skopeoCopy, writeOciLayout } from "../helpers/images.ts";
import {
  assert,
  assertEquals,
  assertMatch,
  buildTarImage,
  crfs,
  type CrfsRun,
  hex,
  mergedTree,
  type Spec,
  testLayers,
} from "./helpers.ts";

interface Env {
  reg: TestRegistry;
  work: string;
  /** `HOST/my/img:v1`, converted to eStargz. */
  ref: string;
  /** Its manifest digest. */
  digest: string;
  /** An ordinary (gzip) image: `HOST/src/img:v1`. */
  plain: string;
  [Symbol.asyncDispose](): Promise<void>;
}

async function setup(layers: Record<string, Spec>[] = testLayers()): Promise<Env> {
  const reg = await startRegistry();
  const work = await Deno.makeTempDir({ prefix: "crfs-ls-test-" });
  const dispose = async () => {
    await reg.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  };
  try {
    const image = await buildTarImage(layers, work);
    await writeOciLayout(`${work}/layout`, [...image.layers, image.config, image.manifest], {
      v1: image.manifest,
    });
    const plain = `${reg.host}/src/img:v1`;
    await skopeoCopy(`oci:${work}/layout:v1`, `docker://${plain}`);
    const ref = `${reg.host}/my/img:v1`;
    const r = await crfs(["convert", "-q", plain, ref]);
    assertEquals(r.code, 0, r.stderr);
    await pushImage(reg, "other/thing", "x");
    await pushImage(reg, "my/deep/er", "x");
    return {
      reg,
      work,
      ref,
      digest: r.stdout.trim().split("@")[1],
      plain,
      [Symbol.asyncDispose]: dispose,
    };
  } catch (e) {
    await dispose();
    throw e;
  }
}

/** Runs crfs with a fresh, private disk cache; insists on exit 0 unless `code` says otherwise. */
async function run(env: Env, args: string[], code = 0): Promise<CrfsRun> {
  const cache = await Deno.makeTempDir({ dir: env.work, prefix: "cache-" });
  const r = await crfs([...args, "--cache-dir", cache]);
  assertEquals(r.code, code, `crfs ${args.join(" ")}:\n${r.stderr}`);
  if (code !== 0) {
    assertMatch(r.stderr, /^crfs: /);
    assert(!/\n\s+at /.test(r.stderr), `no stack trace:\n${r.stderr}`);
  }
  return r;
}

const lines = (r: CrfsRun) => r.stdout.split("\n").filter((l) => l !== "");

Deno.test("ls: owners, repositories, and tags with their digests", async () => {
  await using env = await setup([{ "a.txt": "a\n" }]);
  const host = env.reg.host;
  assertEquals(lines(await run(env, ["ls", `${host}/`])), ["my", "other", "src"]);
  assertEquals(lines(await run(env, ["ls", host])), ["my", "other", "src"], "bare host");
  assertEquals(lines(await run(env, ["ls", `${host}/my`])), ["deep", "img"]);
  assertEquals(lines(await run(env, ["ls", `${host}/my/deep`])), ["er"]);
  assertEquals(lines(await run(env, ["ls", `${host}/my/img`])), ["v1"]);
  const long = lines(await run(env, ["ls", "-l", `${host}/my/img`]));
  assertEquals(long.length, 1);
  assertMatch(long[0], new RegExp(`^l.* v1 -> sha256-${env.digest.slice(7)}$`));
  const json = JSON.parse((await run(env, ["ls", "--json", `${host}/my/img`])).stdout);
  assertEquals(json.map((e: { path: string; linkName: string }) => [e.path, e.linkName]), [
    ["v1", `sha256-${env.digest.slice(7)}`],
  ]);
  // Unknown names are clear errors.
  const missing = await run(env, ["ls", `${host}/nobody/here`], 1);
  assertMatch(missing.stderr, /no such repository/);
});

Deno.test("ls: the merged image with whiteouts applied, a directory, one layer, -l, -R, --json", async () => {
  await using env = await setup();
  const merged = mergedTree(testLayers());
  const top = [...merged.keys()].filter((p) => !p.includes("/")).sort();
  assertEquals(lines(await run(env, ["ls", env.ref])).sort(), top);
  // Names come sorted like `ls` (bytewise), not in layer order (upper layer first).
  assertEquals(lines(await run(env, ["ls", env.ref])), top);
  assertEquals(lines(await run(env, ["ls", `${env.ref}/etc`])), [
    "abs-link",
    "hello.txt",
    "link",
    "motd",
  ]);

  // A directory: the whited-out file is gone, the replaced file has its new size.
  assertEquals(lines(await run(env, ["ls", `${env.ref}/etc`])).sort(), [
    "abs-link",
    "hello.txt",
    "link",
    "motd",
  ]);
  const long = lines(await run(env, ["ls", "-l", `${env.ref}/etc`]));
  const byName = new Map(long.map((l) => [l.split(" ").filter(Boolean)[7], l]));
  assertMatch(byName.get("hello.txt")!, /^-rw-r--r-- .* 12 2023-11-14 22:13 hello\.txt$/);
  assertMatch(byName.get("motd")!, /^-rw------- /);
  assertMatch(byName.get("link")!, /^lrwxrwxrwx .* link -> hello\.txt$/);
  assertMatch(byName.get("abs-link")!, / abs-link -> \/etc\/hello\.txt$/);
  // The opaque directory hides the lower layer's content.
  assertEquals(lines(await run(env, ["ls", "-R", `${env.ref}/opaque`])), ["new.txt"]);
  // Hardlinks: two names, one file with two links.
  const tools = lines(await run(env, ["ls", "-l", `${env.ref}/usr/bin`]));
  assertEquals(tools.length, 2);
  for (const l of tools) assertMatch(l, /^-rwxr-xr-x +2 /);

  // One layer: the lower layer still has the file, the upper one shows the whiteout in
  // overlayfs form (a 0/0 character device).
  assertEquals(lines(await run(env, ["ls", "--layer", "0", `${env.ref}/etc`])).sort(), [
    "abs-link",
    "gone.txt",
    "hello.txt",
    "link",
  ]);
  const upper = lines(await run(env, ["ls", "-l", "--layer", "1", `${env.ref}/etc`]));
  assert(upper.some((l) => /^c--------- .* 0, 0 .* gone\.txt$/.test(l)), upper.join("\n"));

  // -R --json of the whole image: every path, types and sizes as expected.
  const all = JSON.parse((await run(env, ["ls", "-R", "--json", env.ref])).stdout) as {
    path: string;
    type: string;
    size: number;
    mode: number;
  }[];
  assertEquals(all.map((e) => e.path).sort(), [...merged.keys()].sort());
  for (const e of all) {
    const want = merged.get(e.path)!;
    assertEquals(e.type, want.type, e.path);
    if (want.type === "reg") assertEquals(e.size, want.bytes!.length, e.path);
  }
  // A single file lists as itself.
  const one = JSON.parse((await run(env, ["ls", "--json", `${env.ref}/data/big.bin`])).stdout);
  assertEquals(one.length, 1);
  assertEquals([one[0].path, one[0].size], ["big.bin", (9 << 20) + 123]);
});

Deno.test("cat: files, symlinks followed inside the image, hardlinks, multi-chunk files, one layer, errors", async () => {
  await using env = await setup();
  const merged = mergedTree(testLayers());
  const cat = async (path: string, ...flags: string[]) =>
    (await run(env, ["cat", ...flags, `${env.ref}/${path}`])).stdoutBytes;
  assertEquals(new TextDecoder().decode(await cat("etc/hello.txt")), "hello again\n");
  assertEquals(new TextDecoder().decode(await cat("etc/link")), "hello again\n");
  assertEquals(new TextDecoder().decode(await cat("etc/abs-link")), "hello again\n");
  assertEquals(new TextDecoder().decode(await cat("usr/bin/tool-hard")), "#!/bin/sh\necho tool\n");
  for (const p of ["data/big.bin", "data/four-mib.bin", "data/big2.bin", "ünïcode näme.txt"]) {
    assertEquals(hex(await cat(p)), hex(merged.get(p)!.bytes!), p);
  }
  assertEquals((await cat("data/empty")).length, 0);
  assertEquals(new TextDecoder().decode(await cat("etc/hello.txt", "--layer", "0")), "hello\n");
  assertEquals(
    new TextDecoder().decode(await cat("etc/gone.txt", "--layer", "0")),
    "to be deleted\n",
  );

  const gone = await run(env, ["cat", `${env.ref}/etc/gone.txt`], 1);
  assertMatch(gone.stderr, /no such file or directory/);
  const dir = await run(env, ["cat", `${env.ref}/etc`], 1);
  assertMatch(dir.stderr, /not a regular file \(dir\)/);
  const root = await run(env, ["cat", env.ref], 1);
  assertMatch(root.stderr, /not a regular file \(dir\)/);
  await run(env, ["cat", `${env.reg.host}/my/img`], 2);
  // An ordinary gzip image cannot be read lazily: a clear error saying what to do.
  const plain = await run(env, ["cat", `${env.plain}/etc/hello.txt`], 1);
  assertMatch(plain.stderr, /not stargz.*crfs convert/);
  const plainLs = await run(env, ["ls", env.plain], 1);
  assertMatch(plainLs.stderr, /not stargz.*crfs convert/);
  await run(env, ["ls", `${env.reg.host}/my/img:nope`], 1);
  await run(env, ["ls", `${env.reg.host}/my/Bad:v1`], 2);
});

Deno.test("ls: listing an image costs at most one manifest GET and two range requests per layer, never a whole blob", async () => {
  // Layers big enough that a whole-blob GET would show, and one whose TOC is larger than the
  // first tail read (so it needs its second request).
  const many: Record<string, Spec> = { "many/aaa.bin": randomBytes(1 << 20, 3) };
  for (let i = 0; i < 12000; i++) many[`many/dir-${i % 40}/file-${i}.txt`] = `${i}\n`;
  await using env = await setup([
    { "a/big.bin": randomBytes(2 << 20, 1), "a/small.txt": "small\n" },
    { "b/big.bin": randomBytes(1 << 20, 2), "a/small.txt": { whiteout: true } },
    many,
  ]);
  const manifest = await (await fetch(`${env.reg.url}/v2/my/img/manifests/v1`, {
    headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
  })).json();
  const layers = manifest.layers as { digest: string; size: number }[];
  assert(layers.every((l) => l.size > 256 << 10), "every layer is larger than 256 KiB");

  env.reg.clearLog();
  const ls = await run(env, ["ls", "-R", env.ref]);
  assert(lines(ls).includes("a/big.bin") && !lines(ls).includes("a/small.txt"));
  const log = await env.reg.accessLog();
  const manifestGets = log.filter((e) => e.method === "GET" && e.path.includes("/manifests/"));
  assert(manifestGets.length <= 1, JSON.stringify(manifestGets));
  for (const l of layers) {
    const reqs = log.filter((e) => e.path.includes(`/blobs/${l.digest}`));
    assert(reqs.length >= 1 && reqs.length <= 2, `${l.digest}: ${JSON.stringify(reqs)}`);
    for (const r of reqs) {
      assertEquals(r.status, 206, `a range request: ${JSON.stringify(r)}`);
      assert(r.range && r.range.end - r.range.start + 1 < l.size, JSON.stringify(r));
    }
  }
  const wholeBlobs = log.filter((e) =>
    e.method === "GET" && e.path.includes("/blobs/") && e.status === 200 && e.bytes > 256 << 10
  );
  assertEquals(wholeBlobs, []);
  // The many-file layer's TOC did not fit the first read: exactly two requests there.
  const big = layers[2];
  assertEquals(log.filter((e) => e.path.includes(`/blobs/${big.digest}`)).length, 2);
});
