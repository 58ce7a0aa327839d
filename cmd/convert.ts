/**
 * `crfs convert`: turns a tar, tar.gz or tar.zst layer into an eStargz or zstd:chunked blob
 * (local files or stdin/stdout), or a whole image into an eStargz or zstd:chunked image
 * (registries, OCI layouts, docker archives). Only flags, help and printing: the work is in convert/layer_file.ts (a layer
 * file) and convert/image.ts (an image).
 *
 * @module
 */
import { DEFAULT_CHUNK_SIZE } from "../format/writer.ts";
import { formatReference, isTag } from "../drivers/reference.ts";
import { formatPlatform } from "../drivers/manifest.ts";
import {
  type Command,
  defineCommand,
  formatBytes,
  type Options,
  parseSize,
  Progress,
  UsageError,
  UserError,
} from "./cli.ts";
import { convertImage, type ConvertImageResult, DEFAULT_JOBS } from "../convert/image.ts";
import {
  type Endpoint,
  endpointText,
  parseEndpoint,
  resolveSource,
  sourceCandidates,
} from "../convert/endpoint.ts";
import { convertLayerFile } from "../convert/layer_file.ts";
import {
  registriesConfig,
  REGISTRY_HELP,
  registryFlags,
  setupRegistry,
  userFacing,
} from "./registry_options.ts";

const HELP = `Usage: crfs convert [options] IN OUT
       crfs convert [options] SRC DST

Converts a tar, tar.gz or tar.zst layer into an eStargz blob: every file's content in its own
gzip members, large files split into chunks, a table of contents (TOC) at the end. The result
is still a valid tar.gz. Prints the TOC digest. With --format zstd:chunked, the same with zstd
frames (the format of podman and containers/storage; still a valid tar.zst), and prints the
annotations its layer descriptor must carry, as JSON. IN and OUT are local files; '-' means
standard input / standard output.

With an image on either side, converts every layer of the image SRC (tar, tar+gzip or
tar+zstd) to eStargz (or zstd:chunked) and writes the image to DST (OCI media types, TOC digest
and uncompressed size annotations — zstd:chunked: manifest checksum and position — on each
layer, config diff_ids rewritten, everything else kept). Prints DST with the digest written.
SRC and DST forms:
  HOST/REPO[:TAG][@DIGEST]   a registry (docker:// prefix optional)
  NAME[:TAG]                 as SRC, a short name: registries.conf's [aliases] entry, else
                             the first unqualified-search-registries host that has it (else
                             Docker Hub; docker://NAME is always Docker Hub)
  oci:DIR[:TAG]              an OCI image layout (created when missing; TAG default latest)
  docker-archive:FILE[:NAME:TAG]   a docker save / skopeo archive (SRC only)
  FILE.tar, FILE.tar.gz      as SRC: a docker archive, or else one layer made into an image
Blobs already at DST are not uploaded again; on the same registry they are mounted from SRC's
repository when possible. Nothing is tagged unless every blob is in place.

Options:
      --format F          estargz (default) or zstd:chunked
      --chunk-size SIZE   largest chunk of a file per gzip member / zstd frame (default 4M)
      --min-chunk-size SIZE
                          eStargz: pack small files into shared gzip members of at least SIZE
                          (TOC innerOffset; 1M comes within 2 % of plain gzip; readers older
                          than innerOffset cannot read the result); default 0: one per chunk
      --level N           compression level: gzip 1-9 (default 6), zstd 1-19 (default 10)
      --workers N         compression threads (default: one per core)
      --jobs N            image layers converted at the same time (default ${DEFAULT_JOBS})
      --prioritize PATHS  put these files (comma-separated, repeatable) first in every layer,
                          followed by a .prefetch.landmark: crfs and stargz-snapshotter fetch
                          them in the background as soon as the layer is opened
      --prioritize-file F the same, one path per line (what 'crfs mount --record F' writes)
      --all-platforms     convert every platform of a multi-platform SRC and write an index
                          (attestation entries are left out); default: the --platform one
      --src-creds USER[:PASS]   credentials for SRC's registry only
      --dest-creds USER[:PASS]  credentials for DST's registry only (--creds/--username: for
                          the one registry side; --password-stdin gives one missing password)
      --meta-tag TAG      also write, under TAG in DST's repository, the metadata-only variant:
                          the same config (env, entry point, …) with one empty layer, labelled
                          and annotated io.crfs.stargz.image=REPO@DIGEST of the eStargz image
  -q, --quiet             no progress line, no summary
  -h, --help              show this help

${REGISTRY_HELP}`;

/** The flags of the command, besides `--help`. */
const FLAGS: Options = {
  format: { type: "string" },
  "chunk-size": { type: "string" },
  "min-chunk-size": { type: "string" },
  level: { type: "string" },
  workers: { type: "string" },
  quiet: { type: "boolean", short: "q" },
  jobs: { type: "string" },
  "all-platforms": { type: "boolean" },
  "meta-tag": { type: "string" },
  prioritize: { type: "string", multiple: true },
  "prioritize-file": { type: "string" },
  "src-creds": { type: "string" },
  "dest-creds": { type: "string" },
  ...registryFlags,
};

export const convertCommand: Command = defineCommand({
  name: "convert",
  summary: "convert an image (or a layer) to eStargz or zstd:chunked, for lazy pulling",
  help: HELP,
  flags: FLAGS,
  takes: "IN and OUT",
  argsOk: (p) => p.length === 2,
  async run(values, positionals) {
    const [inPath, outPath] = positionals;
    const src = await parseEndpoint(inPath, "src").catch((e) => {
      throw userFacing(e);
    });
    const dst = await parseEndpoint(outPath, "dst", src.kind === "file").catch((e) => {
      throw userFacing(e);
    });
    const imageMode = src.kind !== "file" || dst.kind !== "file";
    const chunkSize = values["chunk-size"]
      ? parseSize(values["chunk-size"] as string, "--chunk-size")
      : DEFAULT_CHUNK_SIZE;
    const format = (values.format ?? "estargz") as string;
    if (format !== "estargz" && format !== "zstd:chunked") {
      throw new UsageError("--format must be estargz or zstd:chunked");
    }
    const zstd = format === "zstd:chunked";
    const minChunkSize = values["min-chunk-size"]
      ? parseSize(values["min-chunk-size"] as string, "--min-chunk-size")
      : 0;
    if (zstd && minChunkSize > 0) throw new UsageError("--min-chunk-size is for eStargz");
    const maxLevel = zstd ? 19 : 9;
    const level = values.level === undefined ? (zstd ? 10 : 6) : Number(values.level);
    if (!Number.isInteger(level) || level < 1 || level > maxLevel) {
      throw new UsageError(`--level must be 1-${maxLevel}`);
    }
    const workers = values.workers === undefined ? undefined : Number(values.workers);
    if (workers !== undefined && (!Number.isInteger(workers) || workers < 0 || workers > 256)) {
      throw new UsageError("--workers must be a number 0-256");
    }
    const quiet = values.quiet === true;
    const prioritized = await prioritizedPaths(values);
    if (zstd && prioritized) throw new UsageError("--prioritize is for eStargz");
    if (imageMode) {
      return await runImage(src, dst, values, {
        format,
        chunkSize,
        minChunkSize,
        level,
        workers,
        quiet,
        prioritized,
      });
    }
    for (
      const flag of ["jobs", "all-platforms", "meta-tag", ...Object.keys(registryFlags)]
    ) {
      if (values[flag] !== undefined) {
        throw new UsageError(`--${flag} is for images; IN and OUT are layer files`);
      }
    }

    const progress = new Progress(!quiet && Deno.stderr.isTerminal());
    const started = performance.now();
    let result;
    try {
      result = await convertLayerFile(inPath, outPath, {
        format,
        chunkSize,
        minChunkSize,
        level,
        workers,
        prioritized,
        onProgress: (n, inputSize) =>
          progress.update(
            inputSize
              ? `converting ${formatBytes(n)} / ${formatBytes(inputSize)}`
              : `converting ${formatBytes(n)}`,
          ),
      });
    } finally {
      progress.done();
    }
    const secs = (performance.now() - started) / 1000;
    if (result.missingPrioritized.length > 0 && !quiet) {
      console.error(
        `crfs: not in the input, not prioritized: ${result.missingPrioritized.join(", ")}`,
      );
    }
    const printed = result.annotations ? JSON.stringify(result.annotations) : result.tocDigest;
    if (outPath === "-") console.error(printed);
    else console.log(printed);
    if (!quiet) {
      console.error(
        `crfs: ${result.toc?.entries.length ?? 0} TOC entries, ${
          formatBytes(result.uncompressedSize)
        } tar → ${formatBytes(result.blobSize)} ${zstd ? "zstd:chunked" : "eStargz"} in ${
          secs.toFixed(2)
        } s; diff ID ${result.diffId}`,
      );
    }
    return 0;
  },
});

/** The paths of `--prioritize` and `--prioritize-file`, in order (undefined when none). */
async function prioritizedPaths(values: Record<string, unknown>): Promise<string[] | undefined> {
  const out: string[] = [];
  for (const v of (values.prioritize as string[] | undefined) ?? []) {
    out.push(...v.split(",").map((p) => p.trim()).filter(Boolean));
  }
  const file = values["prioritize-file"] as string | undefined;
  if (file) {
    let text: string;
    try {
      text = await Deno.readTextFile(file);
    } catch (e) {
      throw new UserError(`--prioritize-file ${file}: ${(e as Error).message}`);
    }
    out.push(...text.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#")));
  }
  return out.length > 0 ? out : undefined;
}

/** The image half of `crfs convert`. */
async function runImage(
  src: Endpoint,
  dst: Endpoint,
  values: Record<string, unknown>,
  o: {
    format: "estargz" | "zstd:chunked";
    chunkSize: number;
    minChunkSize: number;
    level: number;
    workers?: number;
    quiet: boolean;
    prioritized?: string[];
  },
): Promise<number> {
  const jobs = values.jobs === undefined ? undefined : Number(values.jobs);
  if (jobs !== undefined && (!Number.isInteger(jobs) || jobs < 1 || jobs > 64)) {
    throw new UsageError("--jobs must be a number 1-64");
  }
  const metaTag = values["meta-tag"] as string | undefined;
  if (metaTag !== undefined && !isTag(metaTag)) {
    throw new UsageError(`--meta-tag: bad tag ${JSON.stringify(metaTag)}`);
  }
  if (values["all-platforms"] && values.platform !== undefined) {
    throw new UsageError("--platform and --all-platforms exclude each other");
  }
  if (values["password-stdin"] && (src.kind === "file" && src.path === "-")) {
    throw new UsageError("--password-stdin and reading from standard input exclude each other");
  }
  const progress = new Progress(!o.quiet && Deno.stderr.isTerminal());
  const controller = new AbortController();
  const onSignal = () => controller.abort(new Error("interrupted"));
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const s of signals) Deno.addSignalListener(s, onSignal);
  const started = performance.now();
  try {
    // A short SRC: the registries registries.conf names for it, the first that has it.
    const candidates = sourceCandidates(src, await registriesConfig());
    if (candidates.length > 1 && values["src-creds"] !== undefined) {
      throw new UsageError(
        `--src-creds: ${src.text} is a short name for several registries (${
          candidates.map(endpointText).join(", ")
        }); name the image in full`,
      );
    }
    const only = candidates.length === 1 ? candidates[0] : undefined;
    // Conversion reads whole blobs once: no disk cache, no prefetching.
    const setup = await setupRegistry({ ...values, "no-cache": true }, {
      prefetch: false,
      credentials: {
        src: only?.kind === "registry" ? only.ref.host : undefined,
        dest: dst.kind === "registry" ? dst.ref.host : undefined,
      },
    });
    const typed = src.text;
    src = await resolveSource(typed, candidates, setup.drivers, controller.signal);
    if (src.text !== typed && !o.quiet) console.error(`crfs: ${typed} is ${endpointText(src)}`);
    const result = await convertImage(src, dst, setup.drivers, {
      platform: values.platform as string | undefined,
      allPlatforms: values["all-platforms"] === true,
      metaTag,
      format: o.format,
      chunkSize: o.chunkSize,
      minChunkSize: o.minChunkSize,
      level: o.level,
      workers: o.workers,
      jobs,
      prioritized: o.prioritized,
      signal: controller.signal,
      onProgress: (line) => progress.update(line),
    });
    progress.done();
    const where = (tag: string) =>
      dst.kind === "registry"
        ? formatReference({ ...dst.ref, tag, digest: undefined })
        : dst.kind === "oci"
        ? `oci:${dst.dir}:${tag}`
        : dst.text;
    console.log(`${where(result.tag)}@${result.digest}`);
    if (result.meta) console.log(`${where(result.meta.tag)}@${result.meta.digest}`);
    if (!o.quiet) {
      for (const line of summarize(result)) console.error(`crfs: ${line}`);
      console.error(`crfs: done in ${((performance.now() - started) / 1000).toFixed(2)} s`);
    }
    return 0;
  } catch (e) {
    progress.done();
    throw userFacing(e);
  } finally {
    for (const s of signals) Deno.removeSignalListener(s, onSignal);
  }
}

/** Human-readable summary lines of a conversion. */
function summarize(r: ConvertImageResult): string[] {
  const lines: string[] = [];
  for (const img of r.images) {
    const p = img.platform ? `${formatPlatform(img.platform)}: ` : "";
    lines.push(`${p}${img.layers.length} layers → manifest ${img.digest}`);
    for (const l of img.layers) {
      lines.push(
        `  ${l.source.digest.slice(0, 19)} ${formatBytes(l.source.size)} → ${
          l.digest.slice(0, 19)
        } ${formatBytes(l.size)} ${l.format === "zstd:chunked" ? "zstd:chunked" : "eStargz"} (toc ${
          l.tocDigest.slice(0, 19)
        }) in ${l.seconds.toFixed(2)} s, ${l.transfer}`,
      );
    }
  }
  lines.push(
    r.unchanged
      ? `${r.destination}: tag ${r.tag} already pointed at ${r.digest}`
      : `${r.destination}: tag ${r.tag} → ${r.digest}`,
  );
  if (r.meta) lines.push(`metadata-only variant: tag ${r.meta.tag} → ${r.meta.digest}`);
  return lines;
}
