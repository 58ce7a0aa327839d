/**
 * Test helpers for the layer formats: temp dirs, running tools, an OCI layout around one layer
 * (what `skopeo copy` reads), zstd:chunked layers written by skopeo, and the check that a reader
 * shows exactly what `tar -x` of the same layer extracts.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { StargzReader } from "../../format/reader.ts";

/** Runs a command; rejects with its stderr when it fails. */
export async function run(cmd: string, args: string[], opts: { cwd?: string } = {}) {
  const out = await new Deno.Command(cmd, { args, cwd: opts.cwd, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** How {@link writeOciLayout} describes its layer (default: a plain tar, its own diff ID). */
export interface OciLayerOptions {
  mediaType?: string;
  annotations?: Record<string, string>;
  /** The uncompressed layer's digest, when the layer is compressed. */
  diffId?: string;
}

/**
 * Writes an OCI image layout at `dir` holding one image, tag `t`, of one layer: its bytes, or the
 * path of a file (linked into the layout, or copied, and hashed with `sha256sum`).
 */
export async function writeOciLayout(
  dir: string,
  layerBlob: Uint8Array | string,
  opts: OciLayerOptions = {},
): Promise<void> {
  await Deno.mkdir(`${dir}/blobs/sha256`, { recursive: true });
  const put = async (b: Uint8Array) => {
    const d = sha256(b);
    await Deno.writeFile(`${dir}/blobs/sha256/${d}`, b);
    return { digest: `sha256:${d}`, size: b.length };
  };
  const putFile = async (path: string) => {
    const out = await new Deno.Command("sha256sum", { args: [path], stdout: "piped" }).output();
    const d = new TextDecoder().decode(out.stdout).split(" ")[0];
    await Deno.link(path, `${dir}/blobs/sha256/${d}`).catch(() =>
      Deno.copyFile(path, `${dir}/blobs/sha256/${d}`)
    );
    return { digest: `sha256:${d}`, size: (await Deno.stat(path)).size };
  };
  const json = (o: unknown) => new TextEncoder().encode(JSON.stringify(o));
  const layer = typeof layerBlob === "string" ? await putFile(layerBlob) : await put(layerBlob);
  const config = await put(json({
    architecture: "amd64",
    os: "linux",
    config: {},
    rootfs: { type: "layers", diff_ids: [opts.diffId ?? layer.digest] },
  }));
  const manifest = await put(json({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
    layers: [{
      mediaType: opts.mediaType ?? "application/vnd.oci.image.layer.v1.tar",
      ...layer,
      ...(opts.annotations ? { annotations: opts.annotations } : {}),
    }],
  }));
  await Deno.writeTextFile(`${dir}/oci-layout`, JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  await Deno.writeTextFile(
    `${dir}/index.json`,
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        ...manifest,
        annotations: { "org.opencontainers.image.ref.name": "t" },
      }],
    }),
  );
}

/** A layer blob with its descriptor's media type and annotations. */
export interface LayerBlob {
  path: string;
  mediaType: string;
  annotations: Record<string, string>;
}

/**
 * Converts `layerTar` to zstd:chunked with `skopeo copy --dest-compress-format zstd:chunked`
 * between two OCI layouts under `dir`; returns the layer blob and its descriptor.
 */
export async function skopeoZstdChunked(dir: string, layerTar: Uint8Array): Promise<LayerBlob> {
  await writeOciLayout(`${dir}/src`, layerTar);
  await run("skopeo", [
    "copy",
    "--quiet",
    "--dest-compress-format",
    "zstd:chunked",
    `oci:${dir}/src:t`,
    `oci:${dir}/dst:t`,
  ]);
  const index = JSON.parse(await Deno.readTextFile(`${dir}/dst/index.json`));
  const blob = (d: string) => `${dir}/dst/blobs/sha256/${d.slice(7)}`;
  const manifest = JSON.parse(await Deno.readTextFile(blob(index.manifests[0].digest)));
  const layer = manifest.layers[0];
  return { path: blob(layer.digest), mediaType: layer.mediaType, annotations: layer.annotations };
}

/**
 * Asserts that `r` shows exactly the tree GNU `tar -x` extracts from `tarPath` (into a fresh
 * directory under `dir`): the same names, types, modes, symlink targets, hardlinks (one node)
 * and regular file bytes (whole and in the middle). Paths in `ignore` (e.g. eStargz landmarks,
 * which readers hide) are left out.
 */
export async function assertSameAsTarX(
  r: StargzReader,
  tarPath: string,
  dir: string,
  ignore: string[] = [],
): Promise<void> {
  const root = await Deno.makeTempDir({ dir, prefix: "x-" });
  await run("tar", ["-x", "--no-same-owner", "-f", tarPath, "-C", root]);
  const seen = new Set<string>();
  const inodes = new Map<number, unknown>();
  const walk = async (rel: string) => {
    for await (const e of Deno.readDir(rel ? `${root}/${rel}` : root)) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (ignore.includes(p)) continue;
      seen.add(p);
      const st = await Deno.lstat(`${root}/${p}`);
      const node = r.lookup(p);
      assert.ok(node, `${p}: extracted by tar but not in the reader`);
      assert.equal(node.mode & 0o777, st.mode! & 0o777, `${p}: mode`);
      if (st.isSymlink) {
        assert.equal(node.type, "symlink", `${p}: type`);
        assert.equal(node.linkName, await Deno.readLink(`${root}/${p}`), `${p}: target`);
      } else if (st.isDirectory) {
        assert.equal(node.type, "dir", `${p}: type`);
        await walk(p);
      } else if (st.isFile) {
        assert.equal(node.type, "reg", `${p}: type`);
        if (inodes.has(st.ino!)) assert.equal(inodes.get(st.ino!), node, `${p}: hardlink`);
        inodes.set(st.ino!, node);
        const want = await Deno.readFile(`${root}/${p}`);
        assert.equal(node.size, want.length, `${p}: size`);
        assert.deepEqual(await r.readFile(node), want, `${p}: content`);
        if (want.length > 2) {
          const off = want.length >> 1;
          assert.deepEqual(await r.read(node, off, 7), want.subarray(off, off + 7), `${p}: middle`);
        }
      }
    }
  };
  await walk("");
  const inReader = [...r.index.byPath.keys()].filter((p) => p !== "");
  assert.deepEqual(inReader.filter((p) => !seen.has(p)), [], "in the reader but not extracted");
}

/** A tree with what real layers hold: small and big files, zeros, links, an xattr. */
export async function sampleTree(dir: string): Promise<string> {
  const root = `${dir}/tree`;
  await Deno.mkdir(`${root}/etc/deep/er`, { recursive: true });
  await Deno.mkdir(`${root}/usr/bin`, { recursive: true });
  await Deno.writeTextFile(`${root}/etc/hello`, "hello\n");
  for (let i = 0; i < 40; i++) {
    await Deno.writeTextFile(`${root}/etc/deep/f${i}`, `file ${i} `.repeat(i * 13 + 1));
  }
  const big = new Uint8Array(3 << 20);
  let x = 7;
  for (let i = 0; i < 1 << 20; i++) big[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
  await Deno.writeFile(`${root}/usr/bin/big`, big); // random MiB, then 2 MiB of zeros
  await Deno.writeFile(`${root}/usr/bin/empty`, new Uint8Array(0));
  await Deno.symlink("hello", `${root}/etc/link`);
  await Deno.link(`${root}/etc/hello`, `${root}/etc/hard`);
  await run("setfattr", ["-n", "user.crfs", "-v", "yes", `${root}/etc/hello`]);
  await Deno.chmod(`${root}/etc/deep/er`, 0o700);
  const tar = `${dir}/layer.tar`;
  await run("tar", ["--xattrs", "--format=pax", "-C", root, "-cf", tar, "."]);
  return tar;
}
