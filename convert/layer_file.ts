/**
 * Converting one layer file (tar or tar.gz) to an eStargz blob file, for `crfs convert IN OUT`:
 * `-` is standard input or output; the output file appears only when complete (written beside
 * the target as `OUT.PID.tmp`, synced, renamed) and is removed again on failure. Bad input is a
 * {@link UserError} naming the input.
 *
 * @module
 */
import { writeEStargz, type WriteResult, type WriterOptions } from "../format/writer.ts";
import { UserError } from "./errors.ts";

/** Options of {@link convertLayerFile}. */
export interface LayerFileOptions extends Omit<WriterOptions, "onProgress"> {
  /** Called with the input bytes read so far and the input's size (0 when unknown: stdin). */
  onProgress?: (read: number, inputSize: number) => void;
}

async function writeAll(sink: { write(b: Uint8Array): Promise<number> }, b: Uint8Array) {
  for (let o = 0; o < b.length;) o += await sink.write(b.subarray(o));
}

/**
 * Converts the layer at `inPath` into the eStargz file `outPath` (either may be `-`).
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
): Promise<WriteResult> {
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
  const { onProgress, ...writer } = options;
  try {
    const result = await writeEStargz(input, async (b) => {
      await writeAll(out ?? Deno.stdout, b);
    }, { ...writer, onProgress: onProgress && ((n) => onProgress(n, inputSize)) });
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
    if (["TarError", "GzipError", "RangeError"].includes(name)) {
      throw new UserError(`${inPath}: ${(e as Error).message}`);
    }
    throw e;
  }
}
