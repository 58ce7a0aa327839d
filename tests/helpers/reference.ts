/**
 * The reference eStargz implementation as a test peer: containerd/stargz-snapshotter's Go
 * `estargz` package (Debian: golang-github-containerd-stargz-snapshotter-dev), driven by our own
 * small program tests/reference/estargz-tool/main.go, built once in GOPATH mode against
 * /usr/share/gocode and cached in `.cache/estargz-tool/<hash of main.go>/`.
 *
 * ```ts
 * const built = await buildWithReference("in.tar", "out.stargz", { chunkSize: 65536 });
 * const report = await verifyWithReference("out.stargz", built.tocDigest);
 * // report.entries[i].sha256 = content read through the reference reader, every chunk verified.
 * ```
 *
 * Failures of the tool (verification errors included) reject with {@link ReferenceToolError}.
 *
 * @module
 */

/** Debian packages the reference tool needs (CI: `apt-get install -y` these). */
export const REFERENCE_APT_PACKAGES: readonly string[] = [
  "golang-go",
  "golang-github-containerd-stargz-snapshotter-dev",
  "golang-github-klauspost-compress-dev",
  "golang-github-opencontainers-go-digest-dev",
  "golang-github-vbatts-tar-split-dev",
  "golang-golang-x-sync-dev",
];

const GOPATH = Deno.env.get("CRFS_REFERENCE_GOPATH") ?? "/usr/share/gocode";
const LIBRARY_DIR = `${GOPATH}/src/github.com/containerd/stargz-snapshotter/estargz`;
const MAIN_GO = new URL("../reference/estargz-tool/main.go", import.meta.url);
const CACHE_DIR = new URL("../../.cache/estargz-tool/", import.meta.url);

/** The tool exited non-zero (or could not be built). */
export class ReferenceToolError extends Error {
  constructor(
    message: string,
    readonly code: number,
    readonly stderr: string,
    readonly stdout: string,
  ) {
    super(message);
    this.name = "ReferenceToolError";
  }
}

/** One chunk of a regular file, as the reference reader sees it. */
export interface ReferenceChunk {
  /** Blob offset of the chunk's gzip member. */
  offset: number;
  /** Upper end of the compressed range the reader decompresses (next non-zero offset, or blob size). */
  nextOffset: number;
  chunkOffset: number;
  chunkSize: number;
  chunkDigest?: string;
  /** Checked against chunkDigest by the reference verifier. */
  verified: boolean;
}

/** One non-chunk TOC entry, in TOC order, as the reference reader sees it. */
export interface ReferenceEntry {
  /** Name cleaned like the reference reader does (no `./`, no trailing `/`; root is `""`). */
  name: string;
  /** Name as written in the TOC. */
  rawName: string;
  type: string;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  userName: string;
  groupName: string;
  linkName: string;
  /** As in the TOC (RFC 3339), `""` when absent. */
  modtime: string;
  devMajor: number;
  devMinor: number;
  /** xattr name → base64 value. */
  xattrs: Record<string, string>;
  /** The TOC's whole-file digest (`""` when absent). */
  digest: string;
  /** `sha256:…` of the content read through the reference reader (reg and hardlink-to-reg). */
  sha256?: string;
  /** Link count computed by the reader (for a hardlink: its target's). */
  numLink: number;
  offset: number;
  chunks?: ReferenceChunk[];
}

/** A node of the reader's directory tree (implicit directories included). */
export interface ReferenceTreeNode {
  name: string;
  type: string;
  mode: number;
  numLink: number;
}

/** Output of `estargz-tool verify` / `list-legacy`. */
export interface ReferenceReport {
  /** `"estargz"` (51-byte footer) or `"legacy"` (47-byte footer). */
  footer: "estargz" | "legacy";
  tocOffset: number;
  /** Computed by the reference reader. */
  tocDigest: string;
  tocVersion: number;
  /** True when every chunk was checked through VerifyTOC/Verifiers (always, for verify). */
  verified: boolean;
  /**
   * Findings the reference reader itself accepts, e.g. a non-empty regular file without a
   * whole-file `digest` (a digest that does not match the content is an error, not a warning).
   */
  warnings: string[];
  entries: ReferenceEntry[];
  tree: ReferenceTreeNode[];
}

/** Output of `estargz-tool build`. */
export interface ReferenceBuildResult {
  tocDigest: string;
  /** sha256 of the whole decompressed blob (TOC entry and end blocks included). */
  diffID: string;
  /** sha256 of the written blob. */
  blobDigest: string;
  size: number;
  missedPrioritized?: string[];
}

/** Options of {@link buildWithReference}; unset ones keep the library's defaults. */
export interface ReferenceBuildOptions {
  /** `estargz.WithChunkSize` (default 4 MiB). */
  chunkSize?: number;
  /** `estargz.WithPrioritizedFiles`: these go first, then `.prefetch.landmark`. */
  prioritize?: string[];
  /** `estargz.WithAllowPrioritizeNotFound`: missing prioritized files are reported, not fatal. */
  allowMissingPrioritized?: boolean;
  /** `estargz.WithCompressionLevel` (default 9, gzip.BestCompression). */
  compressionLevel?: number;
  /**
   * Build splits its input into at least GOMAXPROCS parts, each ending a gzip member, so blobs
   * differ between machines; set this (e.g. 1) for reproducible bytes.
   */
  gomaxprocs?: number;
}

let toolPromise: Promise<string> | undefined;

/** Path of the built reference tool (built on first use, cached by the hash of main.go). */
export function referenceTool(): Promise<string> {
  toolPromise ??= buildTool().catch((e) => {
    toolPromise = undefined;
    throw e;
  });
  return toolPromise;
}

function missing(what: string): Error {
  return new Error(
    `reference eStargz tool unavailable: ${what}. Install the Debian packages: ` +
      `apt-get install -y ${REFERENCE_APT_PACKAGES.join(" ")}`,
  );
}

async function exists(path: string | URL): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

async function findGo(): Promise<string> {
  const candidates = [Deno.env.get("CRFS_REFERENCE_GO")].filter((x): x is string => !!x);
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) if (dir) candidates.push(`${dir}/go`);
  candidates.push("/usr/bin/go", "/usr/lib/go/bin/go");
  for (const c of candidates) if (await exists(c)) return c;
  throw missing("no `go` command found");
}

function buildTool(): Promise<string> {
  return buildGoTool(MAIN_GO, "estargz-tool");
}

/**
 * Builds the Go program `mainGo` (one file under tests/reference/) in GOPATH mode against the
 * Debian Go sources, cached by the hash of its source; resolves with the binary's path.
 */
export async function buildGoTool(mainGo: URL, name: string): Promise<string> {
  const go = await findGo();
  if (!await exists(`${LIBRARY_DIR}/estargz.go`)) {
    throw missing(`the estargz Go package is not in ${LIBRARY_DIR}`);
  }
  const source = await Deno.readFile(mainGo);
  const hash = Array.from(
    new Uint8Array(await crypto.subtle.digest("SHA-256", source)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("").slice(0, 16);
  const dir = new URL(`${hash}/`, CACHE_DIR);
  const bin = new URL(name, dir);
  if (await exists(bin)) return bin.pathname;

  await Deno.mkdir(dir, { recursive: true });
  // Parallel test processes may build at once: build to a private name, then rename.
  const tmp = new URL(`${name}.${Deno.pid}.${crypto.randomUUID()}.tmp`, dir);
  const out = await new Deno.Command(go, {
    args: ["build", "-o", tmp.pathname, mainGo.pathname],
    cwd: dir.pathname,
    env: {
      GO111MODULE: "off",
      GOPATH,
      GOFLAGS: "",
      GOPROXY: "off",
      GOTOOLCHAIN: "local",
      CGO_ENABLED: "0",
      GOCACHE: new URL("gocache", CACHE_DIR).pathname,
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    await Deno.remove(tmp).catch(() => {});
    const stderr = new TextDecoder().decode(out.stderr);
    const hint = /cannot find package/.test(stderr)
      ? ` (a Go dependency is missing; install: ${REFERENCE_APT_PACKAGES.join(" ")})`
      : "";
    throw new ReferenceToolError(
      `building the reference tool ${name} failed${hint}:\n${stderr}`,
      out.code,
      stderr,
      "",
    );
  }
  await Deno.rename(tmp, bin);
  return bin.pathname;
}

/** Raw result of one tool run (never rejects on a non-zero exit). */
export interface ReferenceRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the tool with `args` as given. */
export async function runReference(args: string[]): Promise<ReferenceRun> {
  const tool = await referenceTool();
  const out = await new Deno.Command(tool, { args, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function runJSON<T>(args: string[]): Promise<T> {
  const r = await runReference(args);
  if (r.code !== 0) {
    throw new ReferenceToolError(
      `estargz-tool ${args[0]} exited ${r.code}: ${r.stderr.trim()}`,
      r.code,
      r.stderr,
      r.stdout,
    );
  }
  return JSON.parse(r.stdout) as T;
}

/**
 * Opens `blobPath` with the reference reader, checks the TOC digest (against `tocDigest` when
 * given), reads every regular file through it and verifies every chunk digest (and each file's
 * whole `digest`). Rejects with {@link ReferenceToolError} on any failure.
 */
export function verifyWithReference(
  blobPath: string,
  tocDigest?: string,
): Promise<ReferenceReport> {
  const args = ["verify", blobPath];
  if (tocDigest !== undefined) args.push("--toc-digest", tocDigest);
  return runJSON<ReferenceReport>(args);
}

/**
 * Lists a blob the reference reader can open, legacy google/crfs stargz (47-byte footer, no
 * chunkDigest) included, reading every file and checking whole-file digests only.
 */
export function listLegacyWithReference(blobPath: string): Promise<ReferenceReport> {
  return runJSON<ReferenceReport>(["list-legacy", blobPath]);
}

/** Builds an eStargz blob from a tar (plain, gzip or zstd) with `estargz.Build` (gzip). */
export function buildWithReference(
  tarPath: string,
  outPath: string,
  opts: ReferenceBuildOptions = {},
): Promise<ReferenceBuildResult> {
  const args = ["build", tarPath, outPath];
  if (opts.chunkSize !== undefined) args.push("--chunk-size", String(opts.chunkSize));
  for (const name of opts.prioritize ?? []) args.push("--prioritize-file", name);
  if (opts.allowMissingPrioritized) args.push("--allow-missing-prioritized");
  if (opts.compressionLevel !== undefined) {
    args.push("--compression-level", String(opts.compressionLevel));
  }
  if (opts.gomaxprocs !== undefined) args.push("--gomaxprocs", String(opts.gomaxprocs));
  return runJSON<ReferenceBuildResult>(args);
}

/**
 * Writes a tar as an eStargz blob with the streaming `estargz.Writer.AppendTar`: entries in tar
 * order, a name given again kept as a second entry (what `estargz.Build` dedups away).
 */
export function appendWithReference(
  tarPath: string,
  outPath: string,
): Promise<ReferenceBuildResult> {
  return runJSON<ReferenceBuildResult>(["append", tarPath, outPath]);
}
