/**
 * Helpers for the command tests: running crfs as a subprocess (bounded in time, with an empty
 * docker config and cache so nothing of the machine leaks in), an ordinary multi-layer test
 * image built with GNU tar from real files (hardlinks, symlinks, whiteouts, an opaque
 * directory, files larger than the 4 MiB chunk size, a non-ASCII name) and its expected merged
 * tree, OCI layouts read back from disk, and comparisons of extracted trees.
 *
 * @module
 */
import nodeAssert from "node:assert/strict";
import { createHash } from "node:crypto";
import { gunzipSync } from "node:zlib";
import { randomBytes, sha256 } from "../helpers/images.ts";
import { denoDir } from "../helpers/deno_dir.ts";

/** Asserts `cond`. */
export function assert(cond: unknown, message?: string): asserts cond {
  nodeAssert.ok(cond, message);
}

/** Deep, strict equality. */
export function assertEquals<T>(actual: T, expected: T, message?: string): void {
  nodeAssert.deepStrictEqual(actual, expected, message);
}

/** `text` matches `re`. */
export function assertMatch(text: string, re: RegExp, message?: string): void {
  nodeAssert.match(text, re, message);
}

const ROOT = new URL("../../", import.meta.url).pathname;
const DENO = Deno.execPath();
const dec = new TextDecoder();
const enc = new TextEncoder();

/** What a crfs run gave. */
export interface CrfsRun {
  code: number;
  stdout: string;
  stdoutBytes: Uint8Array;
  stderr: string;
  ms: number;
}

/** Options of {@link crfs}. */
export interface CrfsOptions {
  /** Bytes for standard input. */
  stdin?: string | Uint8Array;
  /** Extra environment. */
  env?: Record<string, string>;
  /** Kill after this long (default 120 s). */
  timeoutMs?: number;
}

/** Runs `deno run -A main.ts ARGS` in the repository. Never throws on a non-zero exit. */
export async function crfs(args: string[], opts: CrfsOptions = {}): Promise<CrfsRun> {
  // An empty HOME, docker config and cache: nothing of the machine leaks in.
  const home = await Deno.makeTempDir({ prefix: "crfs-cmd-home-" });
  try {
    return await runIn(home, args, opts);
  } finally {
    await Deno.remove(home, { recursive: true }).catch(() => {});
  }
}

async function runIn(home: string, args: string[], opts: CrfsOptions): Promise<CrfsRun> {
  const started = performance.now();
  const child = new Deno.Command(DENO, {
    args: ["run", "-A", `${ROOT}main.ts`, ...args],
    cwd: ROOT,
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: {
      HOME: home,
      DOCKER_CONFIG: `${home}/docker`,
      XDG_CACHE_HOME: `${home}/cache`,
      DENO_DIR: denoDir(),
      NO_COLOR: "1",
      ...(opts.env ?? {}),
    },
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // exited
    }
  }, opts.timeoutMs ?? 120_000);
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(typeof opts.stdin === "string" ? enc.encode(opts.stdin) : opts.stdin);
    await w.close();
  }
  const out = await child.output();
  clearTimeout(timer);
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stdoutBytes: out.stdout,
    stderr: dec.decode(out.stderr),
    ms: performance.now() - started,
  };
}

/** Runs a program; throws with its stderr when it fails. */
export async function run(cmd: string, args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed (${out.code}):\n${dec.decode(out.stderr)}`);
  }
  return dec.decode(out.stdout);
}

/** One entry of a test layer. */
export type Spec =
  | string
  | Uint8Array
  | { file: string | Uint8Array; mode?: number }
  | { dir: true; mode?: number }
  | { symlink: string }
  | { hardlink: string }
  | { whiteout: true }
  | { opaque: true };

/** Layers of the standard test image, bottom first. */
export function testLayers(): Record<string, Spec>[] {
  return [
    {
      "etc": { dir: true },
      "etc/hello.txt": "hello\n",
      "etc/gone.txt": "to be deleted\n",
      "etc/link": { symlink: "hello.txt" },
      "etc/abs-link": { symlink: "/etc/hello.txt" },
      "usr/bin/tool": { file: "#!/bin/sh\necho tool\n", mode: 0o755 },
      "usr/bin/tool-hard": { hardlink: "usr/bin/tool" },
      "data/big.bin": randomBytes((9 << 20) + 123, 7),
      "data/four-mib.bin": randomBytes(4 << 20, 8),
      "data/empty": "",
      "opaque/old.txt": "old\n",
      "opaque/sub/deep.txt": "deep\n",
      "dir-gone/x.txt": "x\n",
      "ünïcode näme.txt": "utf-8 name\n",
    },
    {
      "etc/gone.txt": { whiteout: true },
      "dir-gone": { whiteout: true },
      "etc/hello.txt": "hello again\n",
      "opaque": { opaque: true },
      "opaque/new.txt": "new\n",
      "data/big2.bin": randomBytes(5 << 20, 9),
      "pair/a": "same inode\n",
      "pair/b": { hardlink: "pair/a" },
    },
    {
      "etc/motd": { file: "motd\n", mode: 0o600 },
    },
  ];
}

/** Writes a layer's entries as real files under `dir`. */
export async function materialize(dir: string, layer: Record<string, Spec>): Promise<void> {
  const parent = (p: string) => p.includes("/") ? p.slice(0, p.lastIndexOf("/")) : "";
  for (const [path, spec] of Object.entries(layer)) {
    const abs = `${dir}/${path}`;
    if (parent(path)) await Deno.mkdir(`${dir}/${parent(path)}`, { recursive: true });
    if (typeof spec === "string" || spec instanceof Uint8Array) {
      await Deno.writeFile(abs, typeof spec === "string" ? enc.encode(spec) : spec);
      await Deno.chmod(abs, 0o644);
    } else if ("file" in spec) {
      await Deno.writeFile(abs, typeof spec.file === "string" ? enc.encode(spec.file) : spec.file);
      await Deno.chmod(abs, spec.mode ?? 0o644);
    } else if ("dir" in spec) {
      await Deno.mkdir(abs, { recursive: true });
      await Deno.chmod(abs, spec.mode ?? 0o755);
    } else if ("symlink" in spec) await Deno.symlink(spec.symlink, abs);
    else if ("hardlink" in spec) await Deno.link(`${dir}/${spec.hardlink}`, abs);
    else if ("whiteout" in spec) {
      const base = path.slice(path.lastIndexOf("/") + 1);
      const wh = parent(path) ? `${dir}/${parent(path)}/.wh.${base}` : `${dir}/.wh.${base}`;
      await Deno.writeFile(wh, new Uint8Array());
    } else if ("opaque" in spec) {
      await Deno.mkdir(abs, { recursive: true });
      await Deno.writeFile(`${abs}/.wh..wh..opq`, new Uint8Array());
    }
  }
}

/** A plain tar (GNU tar, sorted, fixed owner and mtime) of a layer. */
export async function layerTar(layer: Record<string, Spec>, work: string): Promise<Uint8Array> {
  const dir = await Deno.makeTempDir({ dir: work, prefix: "layer-" });
  await materialize(dir, layer);
  await run("tar", [
    "--sort=name",
    "--owner=0",
    "--group=0",
    "--numeric-owner",
    "--mtime=@1700000000",
    "--format=gnu",
    "-cf",
    `${dir}.tar`,
    "-C",
    dir,
    ".",
  ]);
  const bytes = await Deno.readFile(`${dir}.tar`);
  await Deno.remove(dir, { recursive: true });
  await Deno.remove(`${dir}.tar`);
  return bytes;
}

/** What the merged image holds: path → kind and content (whiteouts applied, dirs implied). */
export type Merged = Map<
  string,
  { type: "reg" | "dir" | "symlink"; bytes?: Uint8Array; target?: string }
>;

/** The merged tree of `layers` as a container sees it. */
export function mergedTree(layers: Record<string, Spec>[]): Merged {
  const m: Merged = new Map();
  const drop = (p: string) => {
    for (const k of [...m.keys()]) if (k === p || k.startsWith(`${p}/`)) m.delete(k);
  };
  const addDirs = (p: string) => {
    const parts = p.split("/");
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join("/");
      if (!m.has(d)) m.set(d, { type: "dir" });
    }
  };
  for (const layer of layers) {
    for (const [path, spec] of Object.entries(layer)) {
      if (typeof spec === "object" && "whiteout" in spec) drop(path);
      if (typeof spec === "object" && "opaque" in spec) {
        for (const k of [...m.keys()]) if (k.startsWith(`${path}/`)) m.delete(k);
      }
    }
    for (const [path, spec] of Object.entries(layer)) {
      if (typeof spec === "object" && ("whiteout" in spec)) continue;
      addDirs(path);
      if (typeof spec === "string") m.set(path, { type: "reg", bytes: enc.encode(spec) });
      else if (spec instanceof Uint8Array) m.set(path, { type: "reg", bytes: spec });
      else if ("file" in spec) {
        m.set(path, {
          type: "reg",
          bytes: typeof spec.file === "string" ? enc.encode(spec.file) : spec.file,
        });
      } else if ("dir" in spec || "opaque" in spec) m.set(path, { type: "dir" });
      else if ("symlink" in spec) m.set(path, { type: "symlink", target: spec.symlink });
      else if ("hardlink" in spec) m.set(path, { ...m.get(spec.hardlink)! });
    }
  }
  return m;
}

/** A blob with digest and media type, as images.ts's writeOciLayout takes it. */
export interface TestBlob {
  bytes: Uint8Array;
  digest: string;
  mediaType: string;
}

/** An ordinary (plain gzip) test image in memory. */
export interface TestImage {
  layers: (TestBlob & { tar: Uint8Array; diffId: string })[];
  config: TestBlob;
  configJson: Record<string, unknown>;
  manifest: TestBlob;
}

/** Builds an ordinary OCI image (gzip layers made with `gzip -n`) from layer specs. */
export async function buildTarImage(
  layers: Record<string, Spec>[],
  work: string,
  platform = { os: "linux", architecture: "amd64" } as { os: string; architecture: string },
): Promise<TestImage> {
  const built = [];
  for (const spec of layers) {
    const tar = await layerTar(spec, work);
    const gz = await gzipCli(tar, work);
    built.push({
      tar,
      bytes: gz,
      digest: await sha256(gz),
      diffId: await sha256(tar),
      mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
    });
  }
  const configJson = {
    architecture: platform.architecture,
    os: platform.os,
    created: "2024-01-01T00:00:00Z",
    author: "crfs tests",
    config: {
      Env: ["PATH=/usr/bin:/bin", "GREETING=hello"],
      Entrypoint: ["/usr/bin/tool"],
      Cmd: ["--help"],
      WorkingDir: "/data",
      Labels: { "org.example.test": "yes" },
    },
    rootfs: { type: "layers", diff_ids: built.map((l) => l.diffId) },
    history: [
      { created: "2024-01-01T00:00:00Z", created_by: "ADD base" },
      { created: "2024-01-01T00:00:01Z", created_by: "ENV GREETING=hello", empty_layer: true },
      ...built.slice(1).map((_, i) => ({
        created: "2024-01-01T00:00:02Z",
        created_by: `RUN step ${i + 1}`,
      })),
    ],
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
    config: { mediaType: config.mediaType, digest: config.digest, size: configBytes.length },
    layers: built.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.bytes.length })),
    annotations: { "org.opencontainers.image.title": "crfs test image" },
  };
  const mbytes = enc.encode(JSON.stringify(manifestJson));
  return {
    layers: built,
    config,
    configJson,
    manifest: { bytes: mbytes, digest: await sha256(mbytes), mediaType: manifestJson.mediaType },
  };
}

async function gzipCli(bytes: Uint8Array, work: string): Promise<Uint8Array> {
  const path = `${work}/gz-${crypto.randomUUID()}`;
  await Deno.writeFile(path, bytes);
  await run("gzip", ["-n", "-6", path]);
  const out = await Deno.readFile(`${path}.gz`);
  await Deno.remove(`${path}.gz`);
  return out;
}

/** An OCI layout read back: tag → manifest JSON, and blob access. */
export class Layout {
  constructor(readonly dir: string) {}
  async index(): Promise<{ manifests: Record<string, unknown>[] } & Record<string, unknown>> {
    return JSON.parse(await Deno.readTextFile(`${this.dir}/index.json`));
  }
  blobPath(digest: string): string {
    return `${this.dir}/blobs/${digest.replace(":", "/")}`;
  }
  async blob(digest: string): Promise<Uint8Array> {
    const b = await Deno.readFile(this.blobPath(digest));
    const actual = await sha256(b);
    if (actual !== digest) throw new Error(`blob ${digest} has digest ${actual}`);
    return b;
  }
  // deno-lint-ignore no-explicit-any
  async json(digest: string): Promise<any> {
    return JSON.parse(dec.decode(await this.blob(digest)));
  }
  /** The manifest the (only, or tagged) index entry names. */
  // deno-lint-ignore no-explicit-any
  async top(tag?: string): Promise<{ digest: string; mediaType: string; json: any }> {
    const index = await this.index();
    const entry = tag === undefined
      ? index.manifests[0]
      : index.manifests.find((m) =>
        (m.annotations as Record<string, string> | undefined)?.[
          "org.opencontainers.image.ref.name"
        ] === tag
      );
    if (!entry) throw new Error(`no ${tag} in ${this.dir}`);
    const digest = entry.digest as string;
    return { digest, mediaType: entry.mediaType as string, json: await this.json(digest) };
  }
}

/** `skopeo copy docker://REF oci:DIR:tag` from a plain-http registry. */
export async function pullToOci(ref: string, dir: string, creds?: string): Promise<Layout> {
  const args = [
    "--insecure-policy",
    "copy",
    "--quiet",
    "--src-tls-verify=false",
    "--all",
    ...(creds ? ["--src-creds", creds] : []),
    `docker://${ref}`,
    `oci:${dir}:pulled`,
  ];
  const tmp = await Deno.makeTempDir({ prefix: "crfs-skopeo-" });
  try {
    const out = await new Deno.Command("skopeo", {
      args,
      stdout: "piped",
      stderr: "piped",
      env: { TMPDIR: tmp, REGISTRY_AUTH_FILE: `${tmp}/auth.json` },
    }).output();
    if (!out.success) throw new Error(`skopeo ${args.join(" ")}:\n${dec.decode(out.stderr)}`);
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  return new Layout(dir);
}

/** gunzip of (possibly multi-member) bytes. */
export function gunzip(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(gunzipSync(bytes));
}

/** sha256 hex of bytes. */
export function hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** One node of an extracted tree. */
export interface TreeNode {
  type: "file" | "dir" | "symlink" | "other";
  mode: number;
  size: number;
  mtime: number;
  uid: number;
  gid: number;
  sha256?: string;
  target?: string;
  /** The first path (sorted) sharing this node's inode, for files with several links. */
  linkGroup?: string;
}

/** Extracts a tar or tar.gz with GNU tar into a new directory under `work`; returns it. */
export async function extract(archive: Uint8Array, work: string): Promise<string> {
  const dir = await Deno.makeTempDir({ dir: work, prefix: "x-" });
  const file = `${dir}.archive`;
  await Deno.writeFile(file, archive);
  await run("tar", ["--numeric-owner", "-xpf", file, "-C", dir]);
  await Deno.remove(file);
  return dir;
}

/** Every path under `dir` with its type, mode, size, owner, mtime, content digest, link target. */
export async function snapshot(dir: string, ignore: string[] = []): Promise<Map<string, TreeNode>> {
  const out = new Map<string, TreeNode>();
  const inodes = new Map<number, string[]>();
  const walk = async (rel: string) => {
    const abs = rel ? `${dir}/${rel}` : dir;
    const names = [];
    for await (const e of Deno.readDir(abs)) names.push(e.name);
    names.sort();
    for (const name of names) {
      const path = rel ? `${rel}/${name}` : name;
      if (ignore.includes(path)) continue;
      const st = await Deno.lstat(`${dir}/${path}`);
      const node: TreeNode = {
        type: st.isFile ? "file" : st.isDirectory ? "dir" : st.isSymlink ? "symlink" : "other",
        mode: (st.mode ?? 0) & 0o7777,
        size: st.isFile ? st.size : 0,
        mtime: st.isDirectory ? 0 : st.mtime?.getTime() ?? 0,
        uid: st.uid ?? -1,
        gid: st.gid ?? -1,
      };
      if (st.isFile) {
        node.sha256 = hex(await Deno.readFile(`${dir}/${path}`));
        if ((st.nlink ?? 1) > 1) {
          const list = inodes.get(st.ino!) ?? [];
          list.push(path);
          inodes.set(st.ino!, list);
        }
      }
      if (st.isSymlink) node.target = await Deno.readLink(`${dir}/${path}`);
      out.set(path, node);
      if (st.isDirectory) await walk(path);
    }
  };
  await walk("");
  for (const paths of inodes.values()) {
    const first = [...paths].sort()[0];
    for (const p of paths) out.get(p)!.linkGroup = first;
  }
  return out;
}

/** The eStargz files every converted layer adds at its root. */
export const ESTARGZ_EXTRAS = ["stargz.index.json", ".no.prefetch.landmark"];
