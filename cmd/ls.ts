/**
 * `crfs ls`: lists files inside a local stargz/eStargz blob (`FILE.stargz[:/path]`), fetching
 * nothing but its index.
 *
 * @module
 */
import { type Command, parseFlags, UsageError, UserError, writeStdout } from "./cli.ts";
import { printListing } from "./listing.ts";
import { openLocalBlob, splitLocalArg, tocListItem } from "./local_blob.ts";

const HELP = `Usage: crfs ls [options] FILE.stargz[:/path]

Lists the files in a stargz or eStargz blob without decompressing its contents.

Options:
  -l, --long        long format: mode, links, owner, group, size, mtime, name, link target
  -R, --recursive   list subdirectories too (paths relative to the listed directory)
      --json        print a JSON array of entries
  -h, --help        show this help
`;

export const lsCommand: Command = {
  name: "ls",
  summary: "list the files of a stargz blob or an image",
  help: HELP,
  async run(args) {
    const { values, positionals } = parseFlags(args, {
      long: { type: "boolean", short: "l" },
      recursive: { type: "boolean", short: "R" },
      json: { type: "boolean" },
    });
    if (positionals.length !== 1) {
      throw new UsageError("ls takes one argument; see 'crfs ls --help'");
    }
    const local = await splitLocalArg(positionals[0]);
    if (!local) throw new UserError(`${positionals[0]}: no such file`);
    const { reader, close } = await openLocalBlob(local.file);
    try {
      const node = reader.lookup(local.path);
      if (!node) throw new UserError(`${local.file}: ${local.path}: no such file or directory`);
      const name = local.path.replace(/^\/+|\/+$/g, "") || "/";
      await printListing(tocListItem(name, node), {
        long: values.long === true,
        recursive: values.recursive === true,
        json: values.json === true,
      }, writeStdout);
    } finally {
      close();
    }
    return 0;
  },
};
