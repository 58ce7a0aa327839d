/**
 * The reference zstd:chunked implementation as a test peer: stargz-snapshotter's Go
 * `estargz/zstdchunked` package (Debian 0.12), driven by tests/reference/zstdchunked-tool/main.go,
 * built like the eStargz tool (see reference.ts).
 *
 * ```ts
 * const built = await buildZstdChunkedWithReference("in.tar", "out.zst");
 * const report = await verifyZstdChunkedWithReference("out.zst", built.tocDigest);
 * ```
 *
 * @module
 */
import { buildGoTool, ReferenceToolError } from "./reference.ts";

const MAIN_GO = new URL("../reference/zstdchunked-tool/main.go", import.meta.url);

/** One entry of the reference reader's tree, regular files read through it. */
export interface ZstdReferenceEntry {
  name: string;
  type: string;
  size: number;
  mode: number;
  linkName: string;
  /** xattr name → value (as a string). */
  xattrs: Record<string, string>;
  /** `sha256:…` of the content read through the reference reader. */
  sha256?: string;
  chunks: number;
}

/** Output of `zstdchunked-tool verify`. */
export interface ZstdReferenceReport {
  tocDigest: string;
  /** True when VerifyTOC checked the TOC digest and every chunk digest. */
  verified: boolean;
  entries: ZstdReferenceEntry[];
}

/** Output of `zstdchunked-tool build`. */
export interface ZstdReferenceBuild {
  tocDigest: string;
  diffID: string;
  blobDigest: string;
  size: number;
  /** The layer annotations the writer produced (`io.containers.zstd-chunked.*`). */
  annotations: Record<string, string>;
}

async function run<T>(args: string[]): Promise<T> {
  const tool = await buildGoTool(MAIN_GO, "zstdchunked-tool");
  const out = await new Deno.Command(tool, { args, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  const stderr = dec.decode(out.stderr);
  if (!out.success) {
    throw new ReferenceToolError(
      `zstdchunked-tool ${args[0]} exited ${out.code}: ${stderr.trim()}`,
      out.code,
      stderr,
      dec.decode(out.stdout),
    );
  }
  return JSON.parse(dec.decode(out.stdout)) as T;
}

/**
 * Opens `blobPath` with the reference zstd:chunked reader (through its footer), checks the TOC
 * digest and every chunk digest (unless `lax`), reads every regular file.
 */
export function verifyZstdChunkedWithReference(
  blobPath: string,
  tocDigest?: string,
  lax = false,
): Promise<ZstdReferenceReport> {
  const args = ["verify", blobPath];
  if (tocDigest) args.push("--toc-digest", tocDigest);
  if (lax) args.push("--lax");
  return run<ZstdReferenceReport>(args);
}

/** Writes a zstd:chunked blob from a tar with the reference writer (`estargz.Build`). */
export function buildZstdChunkedWithReference(
  tarPath: string,
  outPath: string,
  chunkSize?: number,
): Promise<ZstdReferenceBuild> {
  const args = ["build", tarPath, outPath];
  if (chunkSize !== undefined) args.push("--chunk-size", String(chunkSize));
  return run<ZstdReferenceBuild>(args);
}
