/**
 * `crfs cat`: writes one file's bytes from a local stargz blob (`FILE.stargz:/path`) or an
 * image in a registry (`REFERENCE/path`), fetching only that file's chunks.
 *
 * @module
 */
import { DecodePool } from "../format/decode_pool.ts";
import { MemoryChunkCache } from "../format/reader.ts";
import type { FsNode } from "../fs/node.ts";
import { type Command, defineCommand, type Options, UserError, writeStdout } from "./cli.ts";
import { parseImageArg, withImageArg } from "./image_path.ts";
import { splitLocalArg, withLocalNode } from "./local_blob.ts";
import { layerFlags, REGISTRY_HELP, registryFlags } from "./registry_options.ts";

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

/** Streams the regular file `node` (named `what` in messages) to standard output. */
async function writeFile(node: FsNode, what: string, starting?: () => void): Promise<void> {
  const a = node.attr();
  if (a.type !== "reg" || !node.read) {
    throw new UserError(`${what}: not a regular file (${a.type})`);
  }
  const file: FsNode = node;
  starting?.();
  await stream(what, a.size, (o, l) => file.read!(o, l));
}

/** The flags of the command, besides `--help`. */
const FLAGS: Options = {
  layer: { type: "string" },
  ...registryFlags,
};

export const catCommand: Command = defineCommand({
  name: "cat",
  summary: "write one file of a stargz blob or an image to stdout",
  help: HELP,
  flags: FLAGS,
  takes: "one argument",
  argsOk: (p) => p.length === 1,
  async run(values, positionals) {
    const local = await splitLocalArg(positionals[0]);
    if (local) {
      // The file opens like every layer (verify policy, chunk cache, decode pool) and is walked
      // as the same tree as a layer in the mount.
      const decodePool = new DecodePool();
      try {
        await withLocalNode(local, {
          ...layerFlags(values),
          prefetch: "off",
          chunkCache: new MemoryChunkCache(64 << 20),
          decodePool,
          log: () => {},
        }, writeFile);
      } finally {
        decodePool.close();
      }
      return 0;
    }
    await withImageArg(positionals[0], values, (arg) => {
      const target = parseImageArg(arg, values.layer as string | undefined);
      if (target.rootDepth === 0) throw new UserError(`${arg}: name a file inside an image`, 2);
      return target;
    }, ({ node }, _target, arg, commit) => writeFile(node, arg, commit));
    return 0;
  },
});
