/**
 * Opening a local stargz file named on the command line (`FILE.stargz[:/path]`) for `crfs ls`
 * and `crfs cat`, and listing its nodes (each is its own `FileAttr`).
 *
 * @module
 */
import { FileSource } from "../format/range_source.ts";
import { StargzReader } from "../format/reader.ts";
import type { TOCNode } from "../format/toc_index.ts";
import { UserError } from "./cli.ts";
import type { ListItem } from "./listing.ts";

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

/** Opens a local blob, turning format errors into user errors naming the file. */
export async function openLocalBlob(
  file: string,
): Promise<{ reader: StargzReader; close(): void }> {
  const src = await FileSource.open(file);
  try {
    const reader = await StargzReader.open(src);
    return { reader, close: () => src.close() };
  } catch (e) {
    src.close();
    throw new UserError(`${file}: ${(e as Error).message}`);
  }
}

/** A TOC node as a listing item (with lazy children for directories). */
export function tocListItem(name: string, n: TOCNode): ListItem {
  return {
    name,
    attr: n,
    digest: n.digest,
    children: n.children
      ? () => Promise.resolve([...n.children!].map(([k, c]) => tocListItem(k, c)))
      : undefined,
  };
}
