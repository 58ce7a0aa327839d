/**
 * Telling a local stargz file named on the command line (`FILE.stargz[:/path]`) of `crfs ls` and
 * `crfs cat` from an image reference. The file itself is opened like every layer, by
 * `fs/layer_open.ts`, and walked as the same tree the mount shows ({@link withLocalNode}).
 *
 * @module
 */
import { type LayerOpenOptions, openLayerFile } from "../fs/layer_open.ts";
import { layerRoot } from "../fs/layer_tree.ts";
import type { FsNode } from "../fs/node.ts";
import { treeError, walkTree } from "./image_path.ts";

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

/**
 * Opens the local blob `local.file` like every layer (with `options`), walks its tree to
 * `local.path` (not following a last symlink) and hands that node to `use`, with the argument's
 * text for messages; the layer is closed afterwards. Tree errors come back as user errors.
 *
 * @example
 * ```ts
 * const local = await splitLocalArg("app.stargz:/etc/hostname");
 * if (local) await withLocalNode(local, { prefetch: "off" }, async (node) => node.attr());
 * ```
 */
export async function withLocalNode<T>(
  local: { file: string; path: string },
  options: LayerOpenOptions,
  use: (node: FsNode, what: string) => Promise<T>,
): Promise<T> {
  let layer;
  try {
    layer = await openLayerFile(local.file, options);
  } catch (e) {
    throw treeError(e);
  }
  try {
    const what = `${local.file}:${local.path}`;
    const { node } = await walkTree(layerRoot(layer.reader, layer.digest), {
      components: local.path.split("/").filter((c) => c !== "" && c !== "."),
      rootDepth: 0,
      text: what,
    }, false);
    return await use(node, what);
  } catch (e) {
    throw treeError(e);
  } finally {
    layer.close();
  }
}
