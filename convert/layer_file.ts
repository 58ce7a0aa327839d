/**
 * Converting one layer file (tar, tar.gz or tar.zst, zstd:chunked included) to an eStargz or a
 * zstd:chunked blob file, for `crfs convert IN OUT`:
 * `-` is standard input or output; the output file appears only when complete (written beside
 * the target as `OUT.PID.tmp`, synced, renamed) and is removed again on failure. Bad input is a
 * {@link UserError} naming the input.
 *
 * @module
 */
import { writeEStargz, type WriteResult, type WriterOptions } from "../format/writer.ts";
import { writeZstdChunked } from "../format/zstd_chunked_writer.ts";
import { UserError } from "./errors.ts";
import type { ConvertFormat } from "./layer_descriptor.ts";

/** Options of {@link convertLayerFile}. */
export interface LayerFileOptions extends Omit<WriterOptions, "onProgress"> {
  /**
   * The format written; default `estargz`. zstd:chunked takes `chunkSize`, `level` (zstd 1–19)
   * and `workers`; `minChunkSize` and `prioritized` are eStargz only (refused otherwise).
   */
  format?: ConvertFormat;
  /** Called with the input bytes read so far and the input's size (0 when unknown: stdin). */
  onProgress?: (read: number, inputSize: number) => void;
}

/** What {@link convertLayerFile} wrote. */
export interface LayerFileResult
  extends Omit<WriteResult, "toc" | "missingPrioritized">, Partial<Pick<WriteResult, "toc">> {
  format: ConvertFormat;
  /** Prioritized paths that the input did not have (eStargz). */
  missingPrioritized: string[];
  /** zstd:chunked: the annotations the layer's descriptor must carry. */
  annotations?: Record<string, string>;
}

async function writeAll(sink: { write(b: Uint8Array): Promise<number> }, b: Uint8Array) {
  for (let o = 0; o < b.length;) o += await sink.write(b.subarray(o));
}

/**
 * Converts the layer at `inPath` into the eStargz (or zstd:chunked) file `outPath` (either may
 * be `-`).
 *
 * @example
 * ```ts
 * const r = await convertLayerFile("layer.tar.gz", "layer.stargz", { chunkSize: 4 << 20 });
 * console.log(r.tocDigest);
 * ```
 */
export async function convertLayerFile(
  inPath: string,
  outPath: string,
  options: LayerFileOptions = {},
): Promise<LayerFileResult> {
  const format = options.format ?? "estargz";
  if (format === "zstd:chunked" && (options.minChunkSize || options.prioritized?.length)) {
    throw new UserError("minimum chunk size and prioritized files are for eStargz only", 2);
  }
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
  const { onProgress, format: _format, ...writer } = options;
  const progress = onProgress && ((n: number) => onProgress(n, inputSize));
  const sink = async (b: Uint8Array) => {
    await writeAll(out ?? Deno.stdout, b);
  };
  try {
    const result: LayerFileResult = format === "zstd:chunked"
      ? {
        format,
        missingPrioritized: [],
        ...await writeZstdChunked(input, sink, {
          chunkSize: writer.chunkSize,
          level: writer.level,
          workers: writer.workers,
          pool: writer.pool,
          onProgress: progress,
        }),
      }
      : { format, ...await writeEStargz(input, sink, { ...writer, onProgress: progress }) };
    if (out) {
      await out.sync();
      out.close();
      out = undefined;
      await Deno.rename(tmpPath, outPath);
    }
    return result;
  } catch (e) {
    if (out) {
      out.close();
      await Deno.remove(tmpPath).catch(() => {});
    }
    if (e instanceof UserError) throw e;
    const name = (e as Error).name;
    if (["TarError", "GzipError", "ZstdError", "ZstdLimitError", "RangeError"].includes(name)) {
      throw new UserError(`${inPath}: ${(e as Error).message}`);
    }
    throw e;
  }
}
