/**
 * Test images built from scratch, independently of crfs's own code: a tiny ustar writer, gzip
 * through `CompressionStream`, OCI image JSON, OCI image layout directories, and pushes to a
 * registry with the real `skopeo` (so crfs reads what a standard tool wrote).
 *
 * ```ts
 * const img = await pushImage(reg, "team/app", "v1", { files: { "etc/hello": "hi\n" } });
 * // img.ref = "127.0.0.1:PORT/team/app:v1", img.digest = manifest digest as stored,
 * // img.layers[0].bytes = the exact layer blob.
 * ```
 *
 * @module
 */
import type { TestRegistry } from "./registry.ts";
import { concat } from "../../format/bytes.ts";

const enc = new TextEncoder();

/** `sha256:<hex>` of `bytes`. */
export async function sha256(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  return "sha256:" + Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** One tar entry: a file (string or bytes), a directory (`null`), or a symlink (`{ symlink }`). */
export type TarContent = string | Uint8Array | null | { symlink: string };

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, "0") + "\0";
}

/** A ustar archive of `files` (path → content), in the order given, with fixed metadata. */
export function tar(files: Record<string, TarContent>): Uint8Array {
  const blocks: Uint8Array[] = [];
  for (const [path, content] of Object.entries(files)) {
    const header = new Uint8Array(512);
    const isDir = content === null;
    const isLink = content !== null && typeof content === "object" && "symlink" in content;
    const data = isDir || isLink
      ? new Uint8Array(0)
      : typeof content === "string"
      ? enc.encode(content)
      : content as Uint8Array;
    const name = isDir && !path.endsWith("/") ? `${path}/` : path;
    if (enc.encode(name).length > 100) throw new Error(`tar helper: name too long: ${name}`);
    const put = (offset: number, text: string) => header.set(enc.encode(text), offset);
    put(0, name);
    put(100, octal(isDir ? 0o755 : 0o644, 8));
    put(108, octal(0, 8));
    put(116, octal(0, 8));
    put(124, octal(data.length, 12));
    put(136, octal(1700000000, 12));
    put(148, "        ");
    put(156, isDir ? "5" : isLink ? "2" : "0");
    if (isLink) put(157, (content as { symlink: string }).symlink);
    put(257, "ustar\0");
    put(263, "00");
    let sum = 0;
    for (const b of header) sum += b;
    put(148, sum.toString(8).padStart(6, "0") + "\0 ");
    blocks.push(header, data);
    if (data.length % 512) blocks.push(new Uint8Array(512 - (data.length % 512)));
  }
  blocks.push(new Uint8Array(1024));
  return concat(blocks);
}

/** gzip of `bytes`. */
export async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new CompressionStream("gzip"),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Deterministic pseudo-random bytes (for blobs big enough to range-read). */
export function randomBytes(n: number, seed = 1): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** A blob with its digest and media type. */
export interface Blob_ {
  bytes: Uint8Array;
  digest: string;
  mediaType: string;
}

/** An image built by {@link buildImage}. */
export interface BuiltImage {
  layers: (Blob_ & { diffId: string })[];
  config: Blob_;
  manifest: Blob_;
  platform: { os: string; architecture: string; variant?: string };
}

/** Options of {@link buildImage}. */
export interface BuildImageOptions {
  /** Layers' files, one record per layer; default one small layer. */
  layers?: Record<string, TarContent>[];
  /** Shorthand for a single layer. */
  files?: Record<string, TarContent>;
  /** Raw layer blobs used as they are (e.g. stargz files), gzip media type. */
  rawLayers?: Uint8Array[];
  os?: string;
  architecture?: string;
  variant?: string;
  /** Extra image config `config` fields (Env, Cmd, Labels, …). */
  config?: Record<string, unknown>;
}

/** Builds an OCI image (layers, config, manifest) in memory. */
export async function buildImage(options: BuildImageOptions = {}): Promise<BuiltImage> {
  const layerFiles = options.layers ??
    [options.files ?? { "hello.txt": "hello from crfs tests\n" }];
  const layers: BuiltImage["layers"] = [];
  for (const files of layerFiles) {
    const raw = tar(files);
    const bytes = await gzip(raw);
    layers.push({
      bytes,
      digest: await sha256(bytes),
      diffId: await sha256(raw),
      mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
    });
  }
  for (const bytes of options.rawLayers ?? []) {
    const d = await sha256(bytes);
    layers.push({
      bytes,
      digest: d,
      diffId: d,
      mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
    });
  }
  const platform = {
    os: options.os ?? "linux",
    architecture: options.architecture ?? "amd64",
    ...(options.variant ? { variant: options.variant } : {}),
  };
  const configJson = {
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    created: "2024-01-01T00:00:00Z",
    config: { Env: ["PATH=/usr/bin:/bin"], ...(options.config ?? {}) },
    rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) },
  };
  const configBytes = enc.encode(JSON.stringify(configJson));
  const config = {
    bytes: configBytes,
    digest: await sha256(configBytes),
    mediaType: "application/vnd.oci.image.config.v1+json",
  };
  const manifestJson = {
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: config.mediaType, digest: config.digest, size: config.bytes.length },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.bytes.length })),
  };
  const manifestBytes = enc.encode(JSON.stringify(manifestJson, null, 2));
  return {
    layers,
    config,
    manifest: {
      bytes: manifestBytes,
      digest: await sha256(manifestBytes),
      mediaType: manifestJson.mediaType,
    },
    platform,
  };
}

/** An OCI index over `images`, each entry carrying its platform. */
export async function buildIndex(images: BuiltImage[], extra: object[] = []): Promise<Blob_> {
  const json = {
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [
      ...images.map((i) => ({
        mediaType: i.manifest.mediaType,
        digest: i.manifest.digest,
        size: i.manifest.bytes.length,
        platform: i.platform,
      })),
      ...extra,
    ],
  };
  const bytes = enc.encode(JSON.stringify(json, null, 2));
  return { bytes, digest: await sha256(bytes), mediaType: json.mediaType };
}

/**
 * Writes an OCI image layout at `dir` holding `blobs`, with index.json entries `refs`
 * (tag → top-level blob, an image manifest or an index).
 */
export async function writeOciLayout(
  dir: string,
  blobs: Blob_[],
  refs: Record<string, Blob_>,
): Promise<void> {
  await Deno.mkdir(`${dir}/blobs/sha256`, { recursive: true });
  await Deno.writeTextFile(`${dir}/oci-layout`, JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  for (const b of blobs) await Deno.writeFile(`${dir}/blobs/sha256/${b.digest.slice(7)}`, b.bytes);
  const index = {
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: Object.entries(refs).map(([tag, b]) => ({
      mediaType: b.mediaType,
      digest: b.digest,
      size: b.bytes.length,
      annotations: { "org.opencontainers.image.ref.name": tag },
    })),
  };
  await Deno.writeTextFile(`${dir}/index.json`, JSON.stringify(index));
}

/** All blobs of an image (layers, config, manifest). */
export function imageBlobs(img: BuiltImage): Blob_[] {
  return [...img.layers, img.config, img.manifest];
}

/** Options of {@link skopeoCopy}. */
export interface SkopeoOptions {
  /** `user:password` for the destination. */
  destCreds?: string;
  /** `oci` or `v2s2` (Docker schema 2). */
  format?: "oci" | "v2s2";
  /** Copy every image of an index. */
  all?: boolean;
}

/** Runs `skopeo copy` (plain-http destinations allowed); returns the pushed manifest digest. */
export async function skopeoCopy(
  src: string,
  dst: string,
  options: SkopeoOptions = {},
): Promise<string> {
  const tmp = await Deno.makeTempDir({ prefix: "crfs-skopeo-" });
  try {
    const args = [
      "--insecure-policy",
      "copy",
      "--quiet",
      "--dest-tls-verify=false",
      "--digestfile",
      `${tmp}/digest`,
    ];
    if (options.destCreds) args.push("--dest-creds", options.destCreds);
    if (options.format) args.push("--format", options.format);
    if (options.all) args.push("--multi-arch", "all");
    args.push(src, dst);
    const out = await new Deno.Command("skopeo", {
      args,
      stdout: "piped",
      stderr: "piped",
      env: { TMPDIR: tmp, REGISTRY_AUTH_FILE: `${tmp}/auth.json` },
    }).output();
    if (!out.success) {
      throw new Error(`skopeo ${args.join(" ")} failed:\n${new TextDecoder().decode(out.stderr)}`);
    }
    return (await Deno.readTextFile(`${tmp}/digest`)).trim();
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

/** What {@link pushImage} pushed. */
export interface PushedImage {
  /** `host/repo:tag`. */
  ref: string;
  /** Manifest digest as stored in the registry (differs from the built one for `v2s2`). */
  digest: string;
  image: BuiltImage;
}

function credsOf(reg: TestRegistry): string | undefined {
  if (!reg.auth) return undefined;
  const [user, password] = Object.entries(reg.users)[0];
  return `${user}:${password}`;
}

/** Builds an image and pushes it to `reg` as `repo:tag` with skopeo. */
export async function pushImage(
  reg: TestRegistry,
  repo: string,
  tag: string,
  options: BuildImageOptions & { format?: "oci" | "v2s2" } = {},
): Promise<PushedImage> {
  const image = await buildImage(options);
  const dir = await Deno.makeTempDir({ prefix: "crfs-oci-" });
  try {
    await writeOciLayout(dir, imageBlobs(image), { [tag]: image.manifest });
    const ref = `${reg.host}/${repo}:${tag}`;
    const digest = await skopeoCopy(`oci:${dir}:${tag}`, `docker://${ref}`, {
      destCreds: credsOf(reg),
      format: options.format,
    });
    return { ref, digest, image };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** What {@link pushIndex} pushed. */
export interface PushedIndex {
  ref: string;
  /** Digest of the index as stored. */
  digest: string;
  index: Blob_;
  images: BuiltImage[];
}

/** Builds one image per platform and pushes them with an OCI index as `repo:tag` (skopeo `--multi-arch all`). */
export async function pushIndex(
  reg: TestRegistry,
  repo: string,
  tag: string,
  platforms: {
    os?: string;
    architecture: string;
    variant?: string;
    files?: Record<string, TarContent>;
  }[],
  extraEntries: object[] = [],
): Promise<PushedIndex> {
  const images = [];
  for (const p of platforms) {
    images.push(
      await buildImage({
        ...p,
        files: p.files ?? { "platform.txt": `${p.os ?? "linux"}/${p.architecture}\n` },
      }),
    );
  }
  const index = await buildIndex(images, extraEntries);
  const dir = await Deno.makeTempDir({ prefix: "crfs-oci-" });
  try {
    await writeOciLayout(dir, [...images.flatMap(imageBlobs), index], { [tag]: index });
    const ref = `${reg.host}/${repo}:${tag}`;
    const digest = await skopeoCopy(`oci:${dir}:${tag}`, `docker://${ref}`, {
      destCreds: credsOf(reg),
      all: true,
    });
    return { ref, digest, index, images };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
