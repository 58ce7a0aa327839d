/**
 * podman through crfs's Additional Layer Store, with real parts only: Debian's docker-registry
 * on loopback, an image built from this machine's programs with GNU tar, pushed with skopeo and
 * converted with `crfs convert`, `crfs store` as a subprocess serving a real FUSE mount, and
 * podman 4.3 (runc) with its state in temporary directories.
 *
 * - The store's tree itself: lookups by reference and by layer or TOC digest, `info`, `blob`,
 *   `diff/` in overlayfs form, the `use`/rmdir notifications, and declining other layers.
 * - `podman pull` + `podman run` of the eStargz image through the store: no layer blob is
 *   downloaded whole (registry access log), the output is right, and the container sees the
 *   same tree as after a normal pull (whiteouts, opaque directory, hardlinks, setuid);
 *   `podman save` reads the layers back through `blob`.
 * - A plain gzip image through the same store is pulled normally and runs.
 *
 * @module
 */
import { assert, assertEquals, buildTarImage, crfs, type TestImage } from "../cmd/helpers.ts";
import { skopeoCopy, writeOciLayout } from "../helpers/images.ts";
import { blobGets, freePort, startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { encodeRefName } from "../../fs/layer_store.ts";
import {
  Podman,
  startCrfs,
  startStore,
  type StoreProcess,
  testImageLayers,
  TREE_SCRIPT,
} from "./helpers.ts";
import { run, sh } from "../fuse/helpers.ts";

const TOC = "containerd.io/snapshot/stargz/toc.digest";

interface Fixture {
  reg: TestRegistry;
  work: string;
  image: TestImage;
  /** The plain gzip image. */
  src: string;
  /** The eStargz image `crfs convert` made of it. */
  dst: string;
  dstManifest: { config: { digest: string }; layers: Layer[] };
  dstConfig: { rootfs: { diff_ids: string[] } };
  [Symbol.asyncDispose](): Promise<void>;
}

/** A registry with the test image as plain gzip (`src/img:v1`) and as eStargz (`dst/img:v1`). */
async function fixture(): Promise<Fixture> {
  const reg = await startRegistry();
  const work = await Deno.makeTempDir({ prefix: "crfs-podman-test-" });
  const dispose = async () => {
    await reg.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  };
  try {
    const image = await buildTarImage(await testImageLayers(), work);
    await writeOciLayout(`${work}/src-layout`, [...image.layers, image.config, image.manifest], {
      v1: image.manifest,
    });
    const src = `${reg.host}/src/img:v1`;
    await skopeoCopy(`oci:${work}/src-layout:v1`, `docker://${src}`);
    const dst = `${reg.host}/dst/img:v1`;
    const c = await crfs(["convert", "-q", src, dst]);
    assertEquals(c.code, 0, `crfs convert failed:\n${c.stderr}`);
    const accept = "application/vnd.oci.image.manifest.v1+json";
    const dstManifest = await (await fetch(`${reg.url}/v2/dst/img/manifests/v1`, {
      headers: { accept },
    })).json();
    const dstConfig = await (await fetch(
      `${reg.url}/v2/dst/img/blobs/${dstManifest.config.digest}`,
    )).json();
    return {
      reg,
      work,
      image,
      src,
      dst,
      dstManifest,
      dstConfig,
      [Symbol.asyncDispose]: dispose,
    };
  } catch (e) {
    await dispose();
    throw e;
  }
}

/** A store for the fixture, stopped (and checked unmounted) on dispose. */
async function store(f: Fixture): Promise<StoreProcess & AsyncDisposable> {
  const s = await startStore(`${f.work}/store`);
  return Object.assign(s, { [Symbol.asyncDispose]: () => s.stop() });
}

/** A layer descriptor of the converted image. */
interface Layer {
  digest: string;
  size: number;
  annotations: Record<string, string>;
}

Deno.test("layer store tree: refs, layer and TOC digests, info, blob, diff/ in overlayfs form, use/rmdir answered ENOENT, plain layers declined", async () => {
  await using f = await fixture();
  await using s = await store(f);
  const refDir = `${s.dir}/${encodeRefName(f.dst)}`;
  const layers = f.dstManifest.layers as Layer[];
  const [, data, top] = layers;

  // Looking up a layer by blob digest or by TOC digest gives the same layer.
  const info = JSON.parse(await Deno.readTextFile(`${refDir}/${data.digest}/info`));
  assertEquals(info, {
    "compressed-diff-digest": data.digest,
    "compressed-size": data.size,
    "diff-digest": f.dstConfig.rootfs.diff_ids[1],
    "diff-size": Number(data.annotations["io.containers.estargz.uncompressed-size"]),
    compression: 2,
    "toc-digest": data.annotations[TOC],
  });
  assertEquals(
    JSON.parse(await Deno.readTextFile(`${refDir}/${data.annotations[TOC]}/info`)),
    info,
  );
  // The same reference spelled by digest works too; docker.io-style names decode.
  const byDigest =
    `${f.reg.host}/dst/img@${(await (await fetch(`${f.reg.url}/v2/dst/img/manifests/v1`, {
      method: "HEAD",
      headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
    })).headers.get("docker-content-digest"))}`;
  assertEquals(
    JSON.parse(await Deno.readTextFile(`${s.dir}/${encodeRefName(byDigest)}/${data.digest}/info`)),
    info,
  );

  // blob: the exact layer blob.
  const blob = await Deno.readFile(`${refDir}/${top.digest}/blob`);
  const want = new Uint8Array(
    await (await fetch(`${f.reg.url}/v2/dst/img/blobs/${top.digest}`)).arrayBuffer(),
  );
  assertEquals(blob.length, top.size);
  assert(blob.every((b, i) => b === want[i]), "blob bytes are the registry's");

  // diff/: whiteouts are 0/0 character devices, the opaque directory is marked, hardlinks
  // share an inode; the eStargz TOC and landmark files do not show.
  const diff = `${refDir}/${top.digest}/diff`;
  assertEquals(
    (await run("stat", ["-c", "%F %t:%T", `${diff}/etc/gone.txt`, `${diff}/dir-gone`])).out,
    "character special file 0:0\ncharacter special file 0:0\n",
  );
  assertEquals(
    (await run("getfattr", ["--only-values", "-n", "trusted.overlay.opaque", `${diff}/opaque`]))
      .out,
    "y",
  );
  const pair = (await run("stat", ["-c", "%i %h", `${diff}/pair/a`, `${diff}/pair/b`])).out
    .trim().split("\n");
  assertEquals(pair[0], pair[1]);
  assert(pair[0].endsWith(" 2"), `two links: ${pair[0]}`);
  const names = [];
  for await (const e of Deno.readDir(diff)) names.push(e.name);
  assertEquals(names.sort(), ["dir-gone", "etc", "opaque", "pair"]);
  assertEquals(
    (await run("stat", ["-c", "%a", `${refDir}/${data.digest}/diff/usr/bin/id-suid`])).out,
    "4755\n",
  );

  // The notifications containers/storage sends: creating `use` and removing the layer
  // directory are answered ENOENT ("the store keeps count"); nothing else changes.
  const touch = await sh(`: > "$1"`, `${refDir}/${data.digest}/use`);
  // (dash says "Directory nonexistent" for ENOENT from a create)
  assert(/No such file|nonexistent/.test(touch.err), `create use: ${touch.err}`);
  const rmdir = await run("rmdir", [`${refDir}/${data.digest}`]);
  assert(/No such file/.test(rmdir.err), `rmdir: ${rmdir.err}`);
  assert(await Deno.stat(`${refDir}/${data.digest}/diff`).then((st) => st.isDirectory));
  const write = await sh(`: > "$1"`, `${refDir}/${data.digest}/other`);
  assert(/Read-only/.test(write.err), `create other: ${write.err}`);
  const mkdir = await run("mkdir", [`${s.dir}/x`]);
  assert(/Read-only/.test(mkdir.err), `mkdir: ${mkdir.err}`);
  const chmod = await run("chmod", ["600", `${diff}/pair/a`]);
  assert(/Read-only/.test(chmod.err), `chmod: ${chmod.err}`);

  // Declined: layers that are not eStargz, unknown digests, names that are not references.
  f.reg.clearLog();
  const srcDir = `${s.dir}/${encodeRefName(f.src)}`;
  for (const l of f.image.layers) {
    assert(!(await exists(`${srcDir}/${l.digest}/diff`)), `plain layer ${l.digest} declined`);
  }
  assert(!(await exists(`${refDir}/sha256:${"0".repeat(64)}`)));
  assert(!(await exists(`${s.dir}/not-base64!`)));
  assert(!(await exists(`${s.dir}/${btoa("no-tag-or-digest")}`)));
  assertEquals(
    blobGets(await f.reg.accessLog(), f.image.layers.map((l) => l.digest)),
    [],
    "declining plain layers costs no blob request",
  );
  // A registry failure is an I/O error, not an absence the kernel would remember.
  const dead = `127.0.0.1:${freePort()}/x/y@sha256:${"1".repeat(64)}`;
  const failed = await run("stat", [`${s.dir}/${encodeRefName(dead)}/${data.digest}`]);
  assert(/Input\/output error/.test(failed.err), failed.err);
  // A listing shows each eStargz layer under both names.
  const listed = [];
  for await (const e of Deno.readDir(refDir)) listed.push(e.name);
  assertEquals(
    listed.sort(),
    layers.flatMap((l) => [l.digest, l.annotations[TOC]]).sort(),
  );
});

async function exists(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => true, () => false);
}

Deno.test("podman pulls and runs an eStargz image through crfs store lazily, and sees what a normal pull gives", async () => {
  await using f = await fixture();
  await using s = await store(f);
  const layerDigests = f.dstManifest.layers.map((l) => l.digest);
  const sizes = new Map(f.dstManifest.layers.map((l) => [l.digest, l.size]));
  await using lazy = await Podman.create({ storeFlag: s.dir });
  await using normal = await Podman.create();

  // Pull and run through the store; only then look at what the registry served.
  f.reg.clearLog();
  await lazy.ok(["pull", "--quiet", "--tls-verify=false", f.dst]);
  const out = await lazy.ok(lazy.runArgs("--entrypoint", "/bin/cat", f.dst, "/etc/hello.txt"));
  assertEquals(out, "hello again\n");
  const log = await f.reg.accessLog();
  const reqs = blobGets(log, layerDigests);
  assertEquals(reqs.filter((e) => e.status !== 206), [], "no layer blob was downloaded whole");
  const fetched = reqs.reduce((n, e) => n + e.bytes, 0);
  const total = [...sizes.values()].reduce((a, b) => a + b, 0);
  assert(fetched < total / 2, `fetched ${fetched} of ${total} layer bytes`);
  const big = layerDigests[1];
  const bigFetched = reqs.filter((e) => e.path.endsWith(big)).reduce((n, e) => n + e.bytes, 0);
  assert(bigFetched < sizes.get(big)! / 10, `data layer: ${bigFetched} of ${sizes.get(big)}`);
  // The image's entry point (a script under a hardlinked name) runs too.
  assertEquals(await lazy.ok(lazy.runArgs(f.dst)), "tool says hi\n");

  // The same tree as a normal pull of the original image: contents, modes, owners, sizes, link
  // counts, mtimes, whiteouts and the opaque directory applied, hardlinks sharing inodes
  // (/etc/mtab is podman's, made at run time).
  const check = (image: string) => ["--entrypoint", "/bin/sh", image, "-c", TREE_SCRIPT];
  const withoutMtab = (t: string) =>
    t.split("\n").filter((l) => !l.startsWith("/etc/mtab ")).join("\n");
  const viaCrfs = withoutMtab(
    await lazy.ok(lazy.runArgs(...check(f.dst))),
  );
  await normal.ok(["pull", "--quiet", "--tls-verify=false", f.src]);
  const viaPull = withoutMtab(
    await normal.ok(normal.runArgs(...check(f.src))),
  );
  assertEquals(viaCrfs, viaPull);
  const [tree, sums, links] = viaCrfs.split("---\n");
  const paths = new Set(tree.split("\n").map((l) => l.split(" ")[0]));
  for (const p of ["/etc/hello.txt", "/opaque/new.txt", "/pair/a", "/data/big.bin"]) {
    assert(paths.has(p), `${p} present`);
  }
  for (const p of ["/etc/gone.txt", "/dir-gone", "/opaque/old.txt", "/opaque/sub"]) {
    assert(!paths.has(p), `${p} hidden`);
  }
  assert(/ \/data\/big\.bin\n/.test(sums), "big file read in full");
  assertEquals(links, "/usr/bin/tool:/usr/bin/tool-hard same inode\n/pair/a:/pair/b same inode\n");
  assert(
    tree.includes("/usr/bin/id-suid f 4755 0:0 "),
    `setuid bit kept: ${tree.split("\n").find((l) => l.includes("id-suid"))}`,
  );

  // A setuid program run by a user takes its owner's identity, as after a normal pull.
  const suid = ["--user", "1000:1000", "--entrypoint", "/usr/bin/id-suid"];
  const suidCrfs = await lazy.ok(lazy.runArgs(...suid, f.dst));
  assert(/^uid=1000\(user\) gid=1000\(user\) euid=0\(root\)/.test(suidCrfs), suidCrfs);
  assertEquals(suidCrfs, await normal.ok(normal.runArgs(...suid, f.src)));

  // Saving the image reads every layer back through the store's blob files: the archive's
  // layers are the uncompressed layers the config names.
  f.reg.clearLog();
  await lazy.ok(["save", "--format", "oci-archive", "-o", `${f.work}/saved.tar`, f.dst]);
  const blobReads = blobGets(await f.reg.accessLog(), layerDigests);
  assertEquals(blobReads.filter((e) => e.status !== 206), [], "blob read in ranges");
  const saved = `${f.work}/saved`;
  await Deno.mkdir(saved);
  await run("tar", ["-xf", `${f.work}/saved.tar`, "-C", saved]);
  const index = JSON.parse(await Deno.readTextFile(`${saved}/index.json`));
  const blobPath = (d: string) => `${saved}/blobs/${d.replace(":", "/")}`;
  const manifest = JSON.parse(await Deno.readTextFile(blobPath(index.manifests[0].digest)));
  const diffIds = [];
  for (const l of manifest.layers as { digest: string; mediaType: string }[]) {
    const bytes = await Deno.readFile(blobPath(l.digest));
    const raw = l.mediaType.endsWith("gzip")
      ? new Uint8Array(
        await new Response(
          new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip")),
        ).arrayBuffer(),
      )
      : bytes;
    diffIds.push(await digestOf(raw));
  }
  assertEquals(diffIds, f.dstConfig.rootfs.diff_ids);
  // No layer was copied into podman's own storage: its layers point into the store.
  const diffLinks = (await run("find", [
    `${lazy.dir}/root/overlay`,
    "-maxdepth",
    "2",
    "-name",
    "diff",
    "-type",
    "l",
  ]))
    .out.trim().split("\n").filter(Boolean);
  assertEquals(diffLinks.length, layerDigests.length, "each image layer links into the store");
});

async function digestOf(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  return `sha256:${Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

Deno.test("a plain gzip image through the same store (storage.conf) is pulled normally and runs", async () => {
  await using f = await fixture();
  await using s = await store(f);
  await using pod = await Podman.create({ storeConf: s.dir });
  f.reg.clearLog();
  const out = await pod.ok(pod.runArgs("--entrypoint", "/bin/cat", f.src, "/etc/hello.txt"));
  assertEquals(out, "hello again\n");
  const reqs = blobGets(await f.reg.accessLog(), f.image.layers.map((l) => l.digest));
  // Each layer downloaded whole by podman, none range-read by crfs.
  assertEquals(
    reqs.map((e) => e.status).sort(),
    f.image.layers.map(() => 200),
    JSON.stringify(reqs),
  );
  // And the eStargz image through the storage.conf store is lazy there too.
  f.reg.clearLog();
  assertEquals(
    await pod.ok(pod.runArgs("--entrypoint", "/bin/cat", f.dst, "/etc/hello.txt")),
    "hello again\n",
  );
  const lazy = blobGets(
    await f.reg.accessLog(),
    f.dstManifest.layers.map((l) => l.digest),
  );
  assertEquals(lazy.filter((e) => e.status !== 206), []);
});

Deno.test("crfs mount --layer-store serves the store next to the mount; SIGTERM unmounts both", async () => {
  await using f = await fixture();
  const mnt = `${f.work}/mnt`;
  const dir = `${f.work}/store`;
  const crfsProc = await startCrfs(["mount", mnt, "--layer-store", dir], [dir, mnt]);
  try {
    const layer = f.dstManifest.layers[2];
    const info = JSON.parse(
      await Deno.readTextFile(`${dir}/${encodeRefName(f.dst)}/${layer.digest}/info`),
    );
    assertEquals(info["compressed-diff-digest"], layer.digest);
    // Both views read the same layer, fetched once.
    const viaMount = await Deno.readTextFile(`${mnt}/images/${f.reg.host}/dst/img/v1/pair/a`);
    const viaStore = await Deno.readTextFile(
      `${dir}/${encodeRefName(f.dst)}/${layer.digest}/diff/pair/a`,
    );
    assertEquals([viaMount, viaStore], ["same inode\n", "same inode\n"]);
    const tocReads = blobGets(await f.reg.accessLog(), [layer.digest]);
    assert(
      tocReads.length <= 3,
      `the layer opened once for both views: ${JSON.stringify(tocReads)}`,
    );
    // The main mount stays read-only; only the store takes the use/rmdir notifications.
    const touch = await sh(`: > "$1"`, `${mnt}/x`);
    assert(/Read-only/.test(touch.err), touch.err);
  } finally {
    await crfsProc.stop();
  }
});
