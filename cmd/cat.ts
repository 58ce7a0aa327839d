/**
 * `crfs cat`: writes one file's bytes from a local stargz/eStargz blob (`FILE.stargz:/path`),
 * decompressing only that file's chunks.
 *
 * @module
 */
import { type Command, parseFlags, UsageError, UserError, writeStdout } from "./cli.ts";
import { openLocalBlob, splitLocalArg } from "./local_blob.ts";

const HELP = `Usage: crfs cat FILE.stargz:/path

Writes the content of one regular file of a stargz or eStargz blob to standard output.
Symlinks inside the blob are not followed.

Options:
  -h, --help   show this help
`;

/** Bytes per read when streaming a file out. */
const STEP = 4 << 20;

export const catCommand: Command = {
  name: "cat",
  summary: "write one file of a stargz blob or an image to stdout",
  help: HELP,
  async run(args) {
    const { positionals } = parseFlags(args, {});
    if (positionals.length !== 1) {
      throw new UsageError("cat takes one argument; see 'crfs cat --help'");
    }
    const local = await splitLocalArg(positionals[0]);
    if (!local) throw new UserError(`${positionals[0]}: no such file`);
    const { reader, close } = await openLocalBlob(local.file);
    try {
      const node = reader.lookup(local.path);
      if (!node) throw new UserError(`${local.file}: ${local.path}: no such file`);
      if (node.type !== "reg") {
        throw new UserError(`${local.file}: ${local.path}: not a regular file (${node.type})`);
      }
      for (let off = 0; off < node.size; off += STEP) {
        let bytes;
        try {
          bytes = await reader.read(node, off, STEP);
        } catch (e) {
          throw new UserError(`${local.file}: ${local.path}: ${(e as Error).message}`);
        }
        await writeStdout(bytes);
      }
    } finally {
      close();
    }
    return 0;
  },
};
