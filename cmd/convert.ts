/**
 * `crfs convert`: turns a tar or tar.gz layer into an eStargz blob (local files or stdin/stdout).
 * The output file appears only when complete: it is written beside the target and renamed.
 *
 * @module
 */
import { DEFAULT_CHUNK_SIZE, writeEStargz } from "../format/writer.ts";
import {
  type Command,
  formatBytes,
  parseFlags,
  parseSize,
  Progress,
  UsageError,
  UserError,
  writeStdout,
} from "./cli.ts";

const HELP = `Usage: crfs convert [options] IN OUT

Converts a tar or tar.gz layer into an eStargz blob: every file's content in its own gzip
members, large files split into chunks, a table of contents (TOC) at the end. The result is
still a valid tar.gz. Prints the TOC digest.

IN and OUT are local files; '-' means standard input / standard output.

Options:
      --chunk-size SIZE   largest chunk of a file per gzip member (default 4M)
      --level N           gzip compression level 1-9 (default 6)
      --workers N         compression threads (default: one per core)
  -q, --quiet             no progress line, no summary
  -h, --help              show this help
`;

export const convertCommand: Command = {
  name: "convert",
  summary: "convert a tar/tar.gz layer into an eStargz blob",
  help: HELP,
  async run(args) {
    const { values, positionals } = parseFlags(args, {
      "chunk-size": { type: "string" },
      level: { type: "string" },
      workers: { type: "string" },
      quiet: { type: "boolean", short: "q" },
    });
    if (positionals.length !== 2) {
      throw new UsageError("convert takes IN and OUT; see 'crfs convert --help'");
    }
    const [inPath, outPath] = positionals;
    const chunkSize = values["chunk-size"]
      ? parseSize(values["chunk-size"] as string, "--chunk-size")
      : DEFAULT_CHUNK_SIZE;
    const level = values.level === undefined ? 6 : Number(values.level);
    if (!Number.isInteger(level) || level < 1 || level > 9) {
      throw new UsageError("--level must be 1-9");
    }
    const workers = values.workers === undefined ? undefined : Number(values.workers);
    if (workers !== undefined && (!Number.isInteger(workers) || workers < 0 || workers > 256)) {
      throw new UsageError("--workers must be a number 0-256");
    }
    const quiet = values.quiet === true;

    let input: ReadableStream<Uint8Array>;
    let inputSize = 0;
    if (inPath === "-") input = Deno.stdin.readable;
    else {
      let f: Deno.FsFile;
      try {
        f = await Deno.open(inPath);
      } catch (e) {
        throw new UserError(`${inPath}: ${(e as Error).message}`);
      }
      inputSize = (await f.stat()).size;
      input = f.readable;
    }

    const toStdout = outPath === "-";
    const tmpPath = toStdout ? "" : `${outPath}.${Deno.pid}.tmp`;
    let out: Deno.FsFile | undefined;
    if (!toStdout) {
      try {
        out = await Deno.open(tmpPath, { write: true, create: true, truncate: true });
      } catch (e) {
        throw new UserError(`${outPath}: ${(e as Error).message}`);
      }
    }
    const progress = new Progress(!quiet && Deno.stderr.isTerminal());
    const started = performance.now();
    try {
      const result = await writeEStargz(input, async (b) => {
        if (out) {
          let o = 0;
          while (o < b.length) o += await out.write(b.subarray(o));
        } else await writeStdout(b);
      }, {
        chunkSize,
        level,
        workers,
        onProgress: (n) =>
          progress.update(
            inputSize
              ? `converting ${formatBytes(n)} / ${formatBytes(inputSize)}`
              : `converting ${formatBytes(n)}`,
          ),
      });
      progress.done();
      if (out) {
        await out.sync();
        out.close();
        out = undefined;
        await Deno.rename(tmpPath, outPath);
      }
      const secs = (performance.now() - started) / 1000;
      if (toStdout) console.error(result.tocDigest);
      else console.log(result.tocDigest);
      if (!quiet) {
        console.error(
          `crfs: ${result.toc.entries.length} TOC entries, ${
            formatBytes(result.uncompressedSize)
          } tar → ${formatBytes(result.blobSize)} eStargz in ${
            secs.toFixed(2)
          } s; diff ID ${result.diffId}`,
        );
      }
      return 0;
    } catch (e) {
      progress.done();
      if (out) {
        out.close();
        await Deno.remove(tmpPath).catch(() => {});
      }
      if (e instanceof UserError) throw e;
      const name = (e as Error).name;
      if (["TarError", "GzipError", "RangeError"].includes(name)) {
        throw new UserError(`${inPath}: ${(e as Error).message}`);
      }
      throw e;
    }
  },
};
