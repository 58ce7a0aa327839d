/**
 * `crfs cat`: writes one file's bytes from a local stargz blob (`FILE.stargz:/path`) or an
 * image in a registry (`REFERENCE/path`), fetching only that file's chunks.
 *
 * @module
 */
import { DecodePool } from "../format/decode_pool.ts";
import { MemoryChunkCache } from "../format/reader.ts";
import { openLayerFile } from "../fs/layer_open.ts";
import { layerRoot } from "../fs/layer_tree.ts";
import { rootNode } from "../fs/registry_tree.ts";
import type { FsNode } from "../fs/node.ts";
import { type Command, parseFlags, UsageError, UserError, writeStdout } from "./cli.ts";
import { parseImageArg, treeError, walkTree } from "./image_path.ts";
import { splitLocalArg } from "./local_blob.ts";
import {
  imageArgCandidates,
  layerFlags,
  registriesConfig,
  REGISTRY_HELP,
  registryFlags,
  setupRegistry,
  targetHosts,
  userFacing,
} from "./registry_options.ts";

const HELP = `Usage: crfs cat [options] FILE.stargz:/path
       crfs cat [options] REFERENCE/path

Writes the content of one regular file to standard output. In an image, symlinks are followed
as inside the container (absolute targets from the image root); in a local blob they are not.

Options:
      --layer N|sha256:DIGEST   read from one layer instead of the merged image
  -h, --help                    show this help

${REGISTRY_HELP}`;

/** Bytes per read when streaming a file out. */
const STEP = 4 << 20;

async function stream(
  what: string,
  size: number,
  read: (off: number, len: number) => Promise<Uint8Array>,
) {
  for (let off = 0; off < size; off += STEP) {
    let bytes;
    try {
      bytes = await read(off, Math.min(STEP, size - off));
    } catch (e) {
      throw new UserError(`${what}: ${(e as Error).message}`);
    }
    if (bytes.length === 0) {
      throw new UserError(`${what}: file ended early at ${off} of ${size} bytes`);
    }
    await writeStdout(bytes);
  }
}

export const catCommand: Command = {
  name: "cat",
  summary: "write one file of a stargz blob or an image to stdout",
  help: HELP,
  async run(args) {
    const { values, positionals } = parseFlags(args, {
      layer: { type: "string" },
      ...registryFlags,
    });
    if (positionals.length !== 1) {
      throw new UsageError("cat takes one argument; see 'crfs cat --help'");
    }
    const local = await splitLocalArg(positionals[0]);
    if (local) {
      // The file opens like every layer (verify policy, chunk cache, decode pool) and is walked
      // as the same tree as a layer in the mount.
      const decodePool = new DecodePool();
      let layer;
      try {
        layer = await openLayerFile(local.file, {
          ...layerFlags(values),
          prefetch: "off",
          chunkCache: new MemoryChunkCache(64 << 20),
          decodePool,
          log: () => {},
        });
      } catch (e) {
        decodePool.close();
        throw treeError(e);
      }
      try {
        const what = `${local.file}:${local.path}`;
        const { node } = await walkTree(layerRoot(layer.reader, layer.digest), {
          components: local.path.split("/").filter((c) => c !== "" && c !== "."),
          rootDepth: 0,
          text: what,
        }, false);
        const a = node.attr();
        if (a.type !== "reg" || !node.read) {
          throw new UserError(`${what}: not a regular file (${a.type})`);
        }
        const file: FsNode = node;
        await stream(what, a.size, (o, l) => file.read!(o, l));
      } catch (e) {
        throw treeError(e);
      } finally {
        layer.close();
        decodePool.close();
      }
      return 0;
    }
    // A short name may stand for several images (registries.conf's search registries): the
    // first that has the file wins; the first failure is reported.
    const candidates = imageArgCandidates(positionals[0], await registriesConfig());
    let firstError: unknown;
    for (const arg of candidates) {
      let streaming = false;
      try {
        const target = parseImageArg(arg, values.layer as string | undefined);
        if (target.rootDepth === 0) {
          throw new UserError(`${arg}: name a file inside an image`, 2);
        }
        const setup = await setupRegistry(values, {
          prefetch: false,
          log: () => {},
          credentials: { hosts: targetHosts(target.components) },
        });
        if (target.repo) setup.store.hintRepository(target.repo);
        const root = rootNode(setup.store);
        const { node } = await walkTree(root, target, true);
        const a = node.attr();
        if (a.type !== "reg" || !node.read) {
          throw new UserError(`${arg}: not a regular file (${a.type})`);
        }
        const file: FsNode = node;
        streaming = true;
        await stream(arg, a.size, (o, l) => file.read!(o, l));
        await setup.disk?.flush();
        return 0;
      } catch (e) {
        if (streaming || candidates.length === 1) throw userFacing(treeError(e));
        firstError ??= e;
      }
    }
    throw userFacing(treeError(firstError));
  },
};
