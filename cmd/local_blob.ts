/**
 * Telling a local stargz file named on the command line (`FILE.stargz[:/path]`) of `crfs ls` and
 * `crfs cat` from an image reference. The file itself is opened like every layer, by
 * `fs/layer_open.ts`, and walked as the same tree the mount shows.
 *
 * @module
 */

/**
 * Splits `FILE[:/path]` when FILE is an existing regular file; undefined otherwise (so the
 * argument can be tried as an image reference).
 */
export async function splitLocalArg(
  arg: string,
): Promise<{ file: string; path: string } | undefined> {
  const candidates: [string, string][] = [[arg, "/"]];
  for (let i = arg.indexOf(":"); i >= 0; i = arg.indexOf(":", i + 1)) {
    candidates.push([arg.slice(0, i), arg.slice(i + 1) || "/"]);
  }
  for (const [file, path] of candidates) {
    try {
      if ((await Deno.stat(file)).isFile) return { file, path };
    } catch {
      // not this split
    }
  }
  return undefined;
}
