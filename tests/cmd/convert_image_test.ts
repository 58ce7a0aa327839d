/**
 * `crfs convert SRC DST` for images, end to end with real parts only: Debian's docker-registry
 * on loopback, images pushed and pulled back with skopeo, layers extracted with GNU tar, every
 * converted layer checked with the reference Go eStargz reader, and `crfs ls` / `crfs cat`
 * reading the result.
 *
 * @module
 */
import { assert, assertEquals, assertMatch } from "./helpers.ts";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { randomBytes, sha256, skopeoCopy, writeOciLayout } from "../helpers/images.ts";
import { verifyWithReference } from "../helpers/reference.ts";
import {
  buildTarImage,
  crfs,
  ESTARGZ_EXTRAS,
  extract,
  gunzip,
  hex,
  Layout,
  mergedTree,
  pullToOci,
  snapshot,
  type TestImage,
  testLayers,
} from "./helpers.ts";

const TOC = "containerd.io/snapshot/stargz/toc.digest";
const USIZE = "io.containers.estargz.uncompressed-size";
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
const OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";

/** A registry, a work directory and the standard image pushed as `src/img:v1`. */
async function setup(): Promise<{
  reg: TestRegistry;
  work: string;
  image: TestImage;
  ref: string;
  [Symbol.asyncDispose](): Promise<void>;
}> {
  const reg = await startRegistry();
  const work = await Deno.makeTempDir({ prefix: "crfs-convert-test-" });
  try {
    const image = await buildTarImage(testLayers(), work);
    await writeOciLayout(`${work}/src-layout`, [...image.layers, image.config, image.manifest], {
      v1: image.manifest,
    });
    const ref = `${reg.host}/src/img:v1`;
    await skopeoCopy(`oci:${work}/src-layout:v1`, `docker://${ref}`);
    return {
      reg,
      work,
      image,
      ref,
      async [Symbol.asyncDispose]() {
        await reg.stop();
        await Deno.remove(work, { recursive: true }).catch(() => {});
      },
    };
  } catch (e) {
    await reg.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
    throw e;
  }
}

/** Runs crfs convert and insists on success; returns stdout's first line. */
async function convert(...args: string[]): Promise<string> {
  const r = await crfs(["convert", ...args]);
  assertEquals(r.code, 0, `crfs convert ${args.join(" ")} failed:\n${r.stderr}`);
  assert(
    !r.stderr.includes("\r") && !r.stderr.includes("\x1b["),
    "no progress line on a non-terminal",
  );
  return r.stdout.split("\n")[0];
}

/**
 * Checks one converted image manifest in a layout against the original image: media types,
 * annotations, reference verification of every layer, extracted trees equal layer by layer,
 * diff IDs, and the config's other fields unchanged.
 */
async function checkConverted(
  layout: Layout,
  // deno-lint-ignore no-explicit-any
  manifest: any,
  original: TestImage,
  work: string,
): Promise<void> {
  assertEquals(manifest.mediaType, OCI_MANIFEST);
  assertEquals(manifest.config.mediaType, OCI_CONFIG);
  assertEquals(manifest.layers.length, original.layers.length);
  const config = await layout.json(manifest.config.digest);
  const diffIds: string[] = [];
  for (let i = 0; i < manifest.layers.length; i++) {
    const l = manifest.layers[i];
    assertEquals(l.mediaType, OCI_GZIP);
    assertMatch(l.annotations[TOC], /^sha256:[0-9a-f]{64}$/);
    const blob = await layout.blob(l.digest);
    assertEquals(l.size, blob.length);
    const tar = gunzip(blob);
    assertEquals(l.annotations[USIZE], String(tar.length));
    diffIds.push(`sha256:${hex(tar)}`);
    // The reference Go reader opens it, checks the TOC digest and every chunk digest.
    const report = await verifyWithReference(layout.blobPath(l.digest), l.annotations[TOC]);
    assert(report.entries.length > 0);
    // Same tree and bytes as the original layer, extracted with GNU tar.
    const a = await extract(original.layers[i].tar, work);
    const b = await extract(blob, work);
    assertEquals(await snapshot(b, ESTARGZ_EXTRAS), await snapshot(a));
    await Deno.remove(a, { recursive: true });
    await Deno.remove(b, { recursive: true });
  }
  assertEquals(config.rootfs, { type: "layers", diff_ids: diffIds });
  const { rootfs: _a, ...rest } = config;
  const { rootfs: _b, ...wanted } = original.configJson;
  assertEquals(rest, wanted, "every config field but rootfs is kept");
}

Deno.test("convert: registry image → registry eStargz image, checked by skopeo, GNU tar, the reference reader, ls and cat", async () => {
  await using env = await setup();
  const { reg, work, image, ref } = env;
  const dst = `${reg.host}/dst/img:v1`;
  const started = performance.now();
  const out = await convert(ref, dst);
  const seconds = (performance.now() - started) / 1000;
  console.log(
    `    convert of the 3-layer, ${
      (image.layers.reduce((n, l) => n + l.bytes.length, 0) / 2 ** 20).toFixed(1)
    } MiB test image: ${seconds.toFixed(2)} s (including deno start-up)`,
  );
  assertMatch(out, new RegExp(`^${dst.replaceAll(".", "\\.")}@sha256:[0-9a-f]{64}$`));

  const layout = await pullToOci(dst, `${work}/pulled`);
  const top = await layout.top("pulled");
  assertEquals(top.digest, out.split("@")[1], "printed digest is the pushed manifest's");
  await checkConverted(layout, top.json, image, work);
  assertEquals(top.json.annotations, { "org.opencontainers.image.title": "crfs test image" });

  // crfs ls -R of the merged image: exactly the expected paths, whiteouts applied.
  const merged = mergedTree(testLayers());
  const ls = await crfs(["ls", "--no-cache", "-R", "--json", dst]);
  assertEquals(ls.code, 0, ls.stderr);
  const listed = JSON.parse(ls.stdout) as { path: string; type: string; size: number }[];
  const kinds: Record<string, string> = { reg: "reg", dir: "dir", symlink: "symlink" };
  assertEquals(
    listed.map((e) => `${e.path} ${e.type}`).sort(),
    [...merged].map(([p, n]) => `${p} ${kinds[n.type]}`).sort(),
  );
  for (const e of listed) {
    const want = merged.get(e.path)!;
    if (want.type === "reg") assertEquals(e.size, want.bytes!.length, e.path);
  }
  // crfs cat of every regular file gives the bytes.
  for (const [path, n] of merged) {
    if (n.type !== "reg") continue;
    const cat = await crfs(["cat", "--no-cache", `${dst}/${path}`]);
    assertEquals(cat.code, 0, `${path}: ${cat.stderr}`);
    assertEquals(hex(cat.stdoutBytes), hex(n.bytes!), path);
  }
});

Deno.test("convert: a converted image converts again into a valid image; a second run uploads nothing", async () => {
  await using env = await setup();
  const { reg, work, image, ref } = env;
  const once = `${reg.host}/dst/img:once`;
  const twice = `${reg.host}/other/img:twice`;
  await convert(ref, once);
  reg.clearLog();
  await convert(ref, once);
  const uploads = (await reg.accessLog()).filter((e) =>
    (e.method === "PUT" || e.method === "PATCH" || e.method === "POST") &&
    /\/(blobs\/uploads|manifests)\//.test(e.path)
  );
  assertEquals(uploads, [], "nothing uploaded again");

  reg.clearLog();
  const out = await convert(once, twice);
  // Converting again gives the same layer blobs: on the same registry they are mounted from
  // the source repository instead of uploaded.
  const log = await reg.accessLog();
  const mounts = log.filter((e) => e.method === "POST" && /[?&]mount=/.test(e.path));
  assertEquals(mounts.map((e) => e.status), [201, 201, 201]);
  const patches = log.filter((e) => e.method === "PATCH");
  assert(patches.length <= 1, `only the small config is uploaded: ${JSON.stringify(patches)}`);
  const layout = await pullToOci(twice, `${work}/twice`);
  const top = await layout.top("pulled");
  await checkConverted(layout, top.json, image, work);
  // Deterministic: the second conversion gives the same blobs.
  const first = await pullToOci(once, `${work}/once`);
  assertEquals(
    (await first.top("pulled")).json.layers.map((l: { digest: string }) => l.digest),
    top.json.layers.map((l: { digest: string }) => l.digest),
  );
  assertMatch(out, /@sha256:/);
});

Deno.test("convert: a Docker v2 schema 2 source image becomes an OCI eStargz image", async () => {
  await using env = await setup();
  const { reg, work, image } = env;
  const src = `${reg.host}/src/docker:v1`;
  await skopeoCopy(`oci:${work}/src-layout:v1`, `docker://${src}`, { format: "v2s2" });
  const manifest = await (await fetch(`${reg.url}/v2/src/docker/manifests/v1`, {
    headers: { accept: "application/vnd.docker.distribution.manifest.v2+json" },
  })).json();
  assertEquals(manifest.mediaType, "application/vnd.docker.distribution.manifest.v2+json");
  const dst = `${reg.host}/dst/docker:v1`;
  await convert(src, dst);
  const layout = await pullToOci(dst, `${work}/docker`);
  await checkConverted(layout, (await layout.top("pulled")).json, image, work);
});

Deno.test("convert: two-platform index with --all-platforms and with --platform", async () => {
  await using env = await setup();
  const { reg, work } = env;
  const amd = await buildTarImage(
    [{ "arch.txt": "amd64\n", "big.bin": "a".repeat(300_000) }],
    work,
  );
  const arm = await buildTarImage(
    [{ "arch.txt": "arm64\n" }],
    work,
    { os: "linux", architecture: "arm64" },
  );
  const entry = (img: TestImage, architecture: string) => ({
    mediaType: img.manifest.mediaType,
    digest: img.manifest.digest,
    size: img.manifest.bytes.length,
    platform: { os: "linux", architecture },
  });
  const attestation = {
    mediaType: OCI_MANIFEST,
    digest: amd.manifest.digest,
    size: amd.manifest.bytes.length,
    platform: { os: "unknown", architecture: "unknown" },
    annotations: { "vnd.docker.reference.type": "attestation-manifest" },
  };
  const indexBytes = new TextEncoder().encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [entry(amd, "amd64"), entry(arm, "arm64"), attestation],
    annotations: { "org.example.index": "kept" },
  }));
  const index = { bytes: indexBytes, digest: await sha256(indexBytes), mediaType: OCI_INDEX };
  const blobs = [amd, arm].flatMap((i) => [...i.layers, i.config, i.manifest]);
  await writeOciLayout(`${work}/multi`, [...blobs, index], { multi: index });
  await skopeoCopy(`oci:${work}/multi:multi`, `docker://${reg.host}/src/multi:v1`, { all: true });

  const all = `${reg.host}/dst/multi:all`;
  await convert("--all-platforms", `${reg.host}/src/multi:v1`, all);
  const layout = await pullToOci(all, `${work}/all`);
  const top = await layout.top("pulled");
  assertEquals(top.json.mediaType, OCI_INDEX);
  assertEquals(top.json.annotations, { "org.example.index": "kept" });
  assertEquals(
    top.json.manifests.map((m: { platform: { architecture: string } }) => m.platform.architecture),
    ["amd64", "arm64"],
    "attestation entries are left out",
  );
  const byArch: Record<string, TestImage> = { amd64: amd, arm64: arm };
  for (const m of top.json.manifests) {
    assertEquals(m.mediaType, OCI_MANIFEST);
    const manifest = await layout.json(m.digest);
    await checkConverted(layout, manifest, byArch[m.platform.architecture], work);
    const config = await layout.json(manifest.config.digest);
    assertEquals(config.architecture, m.platform.architecture);
  }

  const one = `${reg.host}/dst/multi:arm`;
  await convert("--platform", "linux/arm64", `${reg.host}/src/multi:v1`, one);
  const l2 = await pullToOci(one, `${work}/one`);
  const t2 = await l2.top("pulled");
  assertEquals(t2.json.mediaType, OCI_MANIFEST);
  await checkConverted(l2, t2.json, arm, work);

  const none = await crfs([
    "convert",
    "--platform",
    "linux/s390x",
    `${reg.host}/src/multi:v1`,
    one,
  ]);
  assertEquals(none.code, 1);
  assertMatch(none.stderr, /no image for linux\/s390x.*linux\/amd64, linux\/arm64/);
});

Deno.test("convert: oci: as source and destination, and docker-archive: as source", async () => {
  await using env = await setup();
  const { reg, work, image } = env;
  // OCI layout → OCI layout (a new directory, and a second tag in an existing one).
  const out = await convert(`oci:${work}/src-layout:v1`, `oci:${work}/converted:esgz`);
  assertEquals(out.split("@")[0], `oci:${work}/converted:esgz`);
  const layout = new Layout(`${work}/converted`);
  const top = await layout.top("esgz");
  assertEquals(top.digest, out.split("@")[1]);
  await checkConverted(layout, top.json, image, work);
  await convert(`oci:${work}/converted:esgz`, `oci:${work}/converted:again`);
  assertEquals((await layout.index()).manifests.length, 2);
  // skopeo reads the layout and pushes it unchanged.
  await skopeoCopy(`oci:${work}/converted:again`, `docker://${reg.host}/from/oci:v1`);
  const back = await pullToOci(`${reg.host}/from/oci:v1`, `${work}/back`);
  await checkConverted(back, (await back.top("pulled")).json, image, work);
  // umoci validates the layout and unpacks it.
  const umoci = await new Deno.Command("umoci", {
    args: ["unpack", "--rootless", "--image", `${work}/converted:esgz`, `${work}/bundle`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert(umoci.success, new TextDecoder().decode(umoci.stderr));
  assertEquals(await Deno.readTextFile(`${work}/bundle/rootfs/etc/hello.txt`), "hello again\n");

  // docker-archive: made by skopeo, converted to a registry.
  await skopeoCopy(`oci:${work}/src-layout:v1`, `docker-archive:${work}/img.tar:my/img:v1`);
  const dst = `${reg.host}/from/archive:v1`;
  await convert(`docker-archive:${work}/img.tar`, dst);
  const fromArchive = await pullToOci(dst, `${work}/from-archive`);
  await checkConverted(fromArchive, (await fromArchive.top("pulled")).json, image, work);
  // The archive names its image; a missing name is an error naming what is there.
  const missing = await crfs([
    "convert",
    `docker-archive:${work}/img.tar:other/img:v9`,
    `${reg.host}/x/y:z`,
  ]);
  assertEquals(missing.code, 1);
  assertMatch(missing.stderr, /no image tagged "other\/img:v9".*my\/img:v1/);
  // A plain file that is a docker archive works as SRC as well.
  await convert(`${work}/img.tar`, `oci:${work}/plain-file:v1`);
  const plainFile = new Layout(`${work}/plain-file`);
  await checkConverted(plainFile, (await plainFile.top("v1")).json, image, work);

  // A single layer file (tar.gz or tar) becomes a one-layer image for the chosen platform.
  await Deno.writeFile(`${work}/layer0.tar.gz`, image.layers[0].bytes);
  await Deno.writeFile(`${work}/layer1.tar`, image.layers[1].tar);
  for (const [file, i] of [["layer0.tar.gz", 0], ["layer1.tar", 1]] as const) {
    await convert("--platform", "linux/arm64", `${work}/${file}`, `${reg.host}/single/l${i}:v1`);
    const single = await pullToOci(`${reg.host}/single/l${i}:v1`, `${work}/single${i}`);
    const m = (await single.top("pulled")).json;
    assertEquals(m.layers.length, 1);
    const config = await single.json(m.config.digest);
    assertEquals([config.os, config.architecture], ["linux", "arm64"]);
    const a = await extract(image.layers[i].tar, work);
    const b = await extract(await single.blob(m.layers[0].digest), work);
    assertEquals(await snapshot(b, ESTARGZ_EXTRAS), await snapshot(a));
  }
});

Deno.test("convert: --meta-tag pushes the metadata-only variant", async () => {
  await using env = await setup();
  const { reg, work, image, ref } = env;
  const dst = `${reg.host}/dst/img:v2`;
  const r = await crfs(["convert", "--meta-tag", "v2meta", ref, dst]);
  assertEquals(r.code, 0, r.stderr);
  const [main, meta] = r.stdout.trim().split("\n");
  assertMatch(meta, new RegExp(`/dst/img:v2meta@sha256:`));
  const layout = await pullToOci(`${reg.host}/dst/img:v2meta`, `${work}/meta`);
  const top = await layout.top("pulled");
  assertEquals(top.json.layers.length, 1);
  const where = `${reg.host}/dst/img@${main.split("@")[1]}`;
  assertEquals(top.json.annotations["io.crfs.stargz.image"], where);
  const blob = await layout.blob(top.json.layers[0].digest);
  assert(blob.length < 1024, "a few bytes, no file contents");
  await verifyWithReference(
    layout.blobPath(top.json.layers[0].digest),
    top.json.layers[0].annotations[TOC],
  );
  const config = await layout.json(top.json.config.digest);
  const original = image.configJson.config as Record<string, unknown>;
  assertEquals(config.config.Env, original.Env);
  assertEquals(config.config.Entrypoint, original.Entrypoint);
  assertEquals(config.config.Cmd, original.Cmd);
  assertEquals(config.config.WorkingDir, original.WorkingDir);
  assertEquals(config.config.Labels["io.crfs.stargz.image"], where);
  assertEquals(config.rootfs.diff_ids, [`sha256:${hex(gunzip(blob))}`]);
  const nonEmpty = config.history.filter((h: { empty_layer?: boolean }) => !h.empty_layer);
  assertEquals(nonEmpty.length, 1, "history matches the one layer");
  // The merged view of the meta image is empty; the stargz one it points at has the files.
  const ls = await crfs(["ls", "--no-cache", `${reg.host}/dst/img:v2meta`]);
  assertEquals([ls.code, ls.stdout], [0, ""]);
  const cat = await crfs(["cat", "--no-cache", `${where}/etc/hello.txt`]);
  assertEquals(cat.stdout, "hello again\n");
});

Deno.test("convert: push to a basic-auth registry with --username/--password-stdin and with DOCKER_CONFIG", async () => {
  await using env = await setup();
  const { work, ref } = env;
  const auth = await startRegistry({ auth: "basic" });
  try {
    const [user, password] = Object.entries(auth.users)[0];
    const dst = `${auth.host}/dst/img:v1`;
    const r = await crfs(["convert", "--username", user, "--password-stdin", ref, dst], {
      stdin: `${password}\n`,
    });
    assertEquals(r.code, 0, r.stderr);
    const layout = await pullToOci(dst, `${work}/auth`, `${user}:${password}`);
    assertEquals((await layout.top("pulled")).json.layers.length, 3);

    const dockerDir = `${work}/docker`;
    await Deno.mkdir(dockerDir);
    await Deno.writeTextFile(
      `${dockerDir}/config.json`,
      JSON.stringify({ auths: { [auth.host]: { auth: btoa(`${user}:${password}`) } } }),
    );
    const r2 = await crfs(["convert", ref, `${auth.host}/dst/img:v2`], {
      env: { DOCKER_CONFIG: dockerDir },
    });
    assertEquals(r2.code, 0, r2.stderr);

    // Wrong credentials: one clear line, exit 1, nothing pushed.
    const bad = await crfs([
      "convert",
      "--username",
      user,
      "--password-stdin",
      ref,
      `${auth.host}/dst/img:bad`,
    ], {
      stdin: "wrong\n",
    });
    assertEquals(bad.code, 1);
    assertMatch(bad.stderr, /^crfs: .*(401|unauthori[sz]ed|credentials|authentication)/im);
    assertEquals(bad.stderr.trim().split("\n").length, 1, bad.stderr);
    const noCreds = await crfs(["convert", ref, `${auth.host}/dst/img:anon`]);
    assertEquals(noCreds.code, 1);
    assert(!/\n\s+at /.test(noCreds.stderr), noCreds.stderr);
  } finally {
    await auth.stop();
  }
});

Deno.test("convert: a corrupt source blob is a clear error and nothing is written", async () => {
  await using env = await setup();
  const { reg, work, image, ref } = env;
  // Flip one byte of the biggest layer in the registry's storage.
  const big = image.layers.reduce((a, b) => (a.bytes.length > b.bytes.length ? a : b));
  const hexd = big.digest.slice(7);
  const path = `${reg.dir}/data/docker/registry/v2/blobs/sha256/${hexd.slice(0, 2)}/${hexd}/data`;
  const bytes = await Deno.readFile(path);
  bytes[bytes.length - 100] ^= 0xff;
  await Deno.writeFile(path, bytes);

  const r = await crfs(["convert", ref, `${reg.host}/dst/img:corrupt`]);
  assertEquals(r.code, 1);
  assertMatch(r.stderr, new RegExp(`crfs: .*${big.digest}.*(digest mismatch|CRC|gzip)`, "i"));
  assert(!/\n\s+at /.test(r.stderr), r.stderr);
  const head = await fetch(`${reg.url}/v2/dst/img/manifests/corrupt`, { method: "HEAD" });
  assertEquals(head.status, 404, "no manifest pushed");

  // To a new OCI directory: nothing left behind, not even a staging directory.
  const before = [...Deno.readDirSync(work)].map((e) => e.name).sort();
  const r2 = await crfs(["convert", ref, `oci:${work}/never:v1`]);
  assertEquals(r2.code, 1);
  assertEquals([...Deno.readDirSync(work)].map((e) => e.name).sort(), before);
  // Into an existing layout: it stays as it was.
  await convert(`oci:${work}/src-layout:v1`, `oci:${work}/existing:good`);
  const snap = async () =>
    [...await Array.fromAsync(Deno.readDir(`${work}/existing/blobs/sha256`))].map((e) => e.name)
      .sort().join() + await Deno.readTextFile(`${work}/existing/index.json`);
  const was = await snap();
  const r3 = await crfs(["convert", ref, `oci:${work}/existing:bad`]);
  assertEquals(r3.code, 1);
  assertEquals(await snap(), was);
});

Deno.test("convert: bad references, missing tags and images, a stopped registry: one line, right exit code, bounded time", async () => {
  await using env = await setup();
  const { reg, work, ref } = env;
  const cases: [string[], number, RegExp][] = [
    [["convert", `${reg.host}/Bad/Name:v1`, `${reg.host}/x/y:z`], 2, /invalid image reference/],
    [["convert", ref, `${reg.host}/x/y:bad tag`], 2, /./],
    [["convert", ref, `${reg.host}/x/y@sha256:${"0".repeat(64)}`], 2, /digest/],
    [["convert", `${reg.host}/src/img:nope`, `${reg.host}/x/y:z`], 1, /nope|manifest unknown/i],
    [["convert", `${reg.host}/src/none:v1`, `${reg.host}/x/y:z`], 1, /unknown|not found/i],
    [["convert", `oci:${work}/missing:v1`, `${reg.host}/x/y:z`], 1, /not an OCI image layout/],
    [["convert", `docker-archive:${work}/missing.tar`, `${reg.host}/x/y:z`], 1, /missing\.tar/],
    [["convert", ref, `docker-archive:${work}/out.tar`], 2, /only be read/],
    [["convert", ref, `${reg.host}/x/y:z`, "--meta-tag", "z"], 2, /own tag/],
    [
      ["convert", "--all-platforms", "--platform", "linux/amd64", ref, `${reg.host}/x/y:z`],
      2,
      /exclude/,
    ],
    [["convert", ref], 2, /takes IN and OUT/],
    [
      ["convert", "--platform", "linux/arm64", ref, `${reg.host}/x/y:z`],
      1,
      /single-platform image for linux\/amd64, not linux\/arm64/,
    ],
  ];
  for (const [args, code, message] of cases) {
    const r = await crfs(args);
    assertEquals(r.code, code, `${args.join(" ")}: ${r.stderr}`);
    assertMatch(r.stderr, message);
    assertMatch(r.stderr, /^crfs: /);
    assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert(r.ms < 30_000, `${args.join(" ")} took ${r.ms} ms`);
  }
  // A registry that is down, as source and as destination.
  const host = reg.host;
  await reg.stop();
  for (
    const args of [["convert", ref, `oci:${work}/o:v1`], [
      "convert",
      `oci:${work}/src-layout:v1`,
      `${host}/x/y:z`,
    ]]
  ) {
    const r = await crfs(args);
    assertEquals(r.code, 1, r.stderr);
    assertMatch(r.stderr, new RegExp(`^crfs: .*${host.replace(".", "\\.")}`));
    assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert(r.ms < 60_000, `took ${r.ms} ms`);
  }
});

Deno.test("convert: podman pulls the converted image (diff IDs checked) and its files are the merged tree; the meta image carries the metadata", async () => {
  await using env = await setup();
  const { reg, work, ref } = env;
  const dst = `${reg.host}/dst/img:pod`;
  await convert("--meta-tag", "pod-meta", ref, dst);
  const podman = async (...args: string[]) => {
    const out = await new Deno.Command("podman", {
      args: [
        "--runtime",
        "runc",
        "--storage-driver",
        "vfs",
        "--root",
        `${work}/podman/root`,
        "--runroot",
        `${work}/podman/run`,
        ...args,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert(out.success, `podman ${args.join(" ")}:\n${new TextDecoder().decode(out.stderr)}`);
    return text.trim();
  };
  try {
    await podman("pull", "--quiet", "--tls-verify=false", dst);
    const id = await podman("create", dst);
    await podman("export", "-o", `${work}/rootfs.tar`, id);
    const root = await extract(await Deno.readFile(`${work}/rootfs.tar`), work);
    const snap = await snapshot(root);
    const merged = mergedTree(testLayers());
    const types: Record<string, string> = { reg: "file", dir: "dir", symlink: "symlink" };
    // podman adds its own mount points (dev, proc, etc/hosts, …); everything of the image is there.
    for (const [path, n] of merged) {
      const got = snap.get(path);
      assert(got, `${path} missing from podman's rootfs`);
      assertEquals(got.type, types[n.type], path);
      if (n.type === "reg") assertEquals(got.sha256, hex(n.bytes!), path);
      if (n.type === "symlink") assertEquals(got.target, n.target, path);
    }
    for (const gone of ["etc/gone.txt", "dir-gone", "opaque/old.txt", "opaque/sub"]) {
      assert(!snap.has(gone), `${gone} is whited out`);
    }
    assertEquals(snap.get("usr/bin/tool")!.linkGroup, "usr/bin/tool", "hardlink kept");
    await podman("pull", "--quiet", "--tls-verify=false", `${reg.host}/dst/img:pod-meta`);
    const env = await podman(
      "image",
      "inspect",
      "--format",
      "{{json .Config.Env}}",
      `${reg.host}/dst/img:pod-meta`,
    );
    assertEquals(JSON.parse(env), ["PATH=/usr/bin:/bin", "GREETING=hello"]);
  } finally {
    await podman("system", "reset", "-f").catch(() => {});
  }
});

Deno.test("convert: progress per layer on a terminal; Ctrl-C stops it and leaves nothing behind", async () => {
  await using env = await setup();
  const { reg, work, ref } = env;
  // On a terminal (script(1) gives the command a pty): a redrawn progress line per layer.
  const term = await new Deno.Command("script", {
    args: [
      "-qec",
      `${Deno.execPath()} run -A main.ts convert ${ref} ${reg.host}/dst/img:tty`,
      "/dev/null",
    ],
    cwd: new URL("../../", import.meta.url).pathname,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const screen = new TextDecoder().decode(term.stdout);
  assert(term.success, screen);
  assertMatch(
    screen,
    new RegExp("\r\u001b\\[Klayers \\d/3 done · [0-9a-f]{12} (fetching|converting)"),
  );

  // SIGINT while converting: exit 130, no tag, no OCI directory, no temporary files.
  const big = await buildTarImage([{ "big.bin": randomBytes(48 << 20, 5) }], work);
  await writeOciLayout(`${work}/big-layout`, [...big.layers, big.config, big.manifest], {
    v1: big.manifest,
  });
  await skopeoCopy(`oci:${work}/big-layout:v1`, `docker://${reg.host}/src/big:v1`);
  // The child's own TMPDIR, so that other tests' temporary files cannot change the count.
  const childTmp = `${work}/tmp`;
  await Deno.mkdir(childTmp);
  for (const dst of [`oci:${work}/interrupted:v1`, `${reg.host}/dst/big:v1`]) {
    reg.clearLog();
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "main.ts",
        "convert",
        "--workers",
        "1",
        "--level",
        "9",
        `${reg.host}/src/big:v1`,
        dst,
      ],
      cwd: new URL("../../", import.meta.url).pathname,
      env: { TMPDIR: childTmp },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // Interrupt once the layer is being read.
    const until = Date.now() + 30_000;
    while (
      !(await reg.accessLog()).some((e) =>
        e.method === "GET" && e.path.includes(big.layers[0].digest)
      ) &&
      Date.now() < until
    ) await new Promise((r) => setTimeout(r, 20));
    child.kill("SIGINT");
    const out = await child.output();
    const stderr = new TextDecoder().decode(out.stderr);
    assertEquals(out.code, 130, stderr);
    assertMatch(stderr, /crfs: interrupted; nothing was tagged/);
  }
  assert(!(await Deno.stat(`${work}/interrupted`).catch(() => undefined)));
  assertEquals(
    [...Deno.readDirSync(work)].filter((e) => e.name.startsWith(".interrupted")).length,
    0,
    "no staging directory",
  );
  const head = await fetch(`${reg.url}/v2/dst/big/manifests/v1`, { method: "HEAD" });
  assertEquals(head.status, 404);
  assertEquals([...Deno.readDirSync(childTmp)].map((e) => e.name), [], "temporary files removed");
});
