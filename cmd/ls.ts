/**
 * `crfs ls`: lists files inside a local stargz blob or an image in a registry, fetching nothing
 * but indexes: one manifest request, then at most two range requests per layer, all layers in
 * parallel. It walks the same tree `crfs mount` shows.
 *
 * @module
 */
import { type Command, defineCommand, type Options, UserError, writeStdout } from "./cli.ts";
import { parseImageArg, withImageArg } from "./image_path.ts";
import { printListing } from "./listing.ts";
import { splitLocalArg, withLocalNode } from "./local_blob.ts";
import { layerFlags, REGISTRY_HELP, registryFlags } from "./registry_options.ts";
import { fsListItem } from "./tree_list.ts";

const HELP = `Usage: crfs ls [options] FILE.stargz[:/path]
       crfs ls [options] REFERENCE[/path]

Lists files without downloading their contents. REFERENCE forms:
  127.0.0.1:5000/               the owners (top-level names) on a registry
  127.0.0.1:5000/my             repositories under a name
  127.0.0.1:5000/my/ubuntu      the tags of a repository, with the manifest each points to
  127.0.0.1:5000/my/ubuntu:18.04[/etc]   the merged image (whiteouts applied), or a directory in it
  …@sha256:<digest>             an image by digest
  ubuntu:24.04                  Docker Hub
  local/NAME.stargz             a file of the local directory

Options:
  -l, --long         long format: mode, links, owner, group, size, mtime, name, link target
  -R, --recursive    list subdirectories too (paths relative to the listed directory)
      --json         print a JSON array of entries
      --layer N|sha256:DIGEST   look at one layer (N counts from 0 = bottom) instead of the merged image
  -h, --help         show this help

${REGISTRY_HELP}`;

/** The flags of the command, besides `--help`. */
const FLAGS: Options = {
  long: { type: "boolean", short: "l" },
  recursive: { type: "boolean", short: "R" },
  json: { type: "boolean" },
  layer: { type: "string" },
  ...registryFlags,
};

export const lsCommand: Command = defineCommand({
  name: "ls",
  summary: "list the files of a stargz blob or an image",
  help: HELP,
  flags: FLAGS,
  takes: "one argument",
  argsOk: (p) => p.length === 1,
  async run(values, positionals) {
    const opts = {
      long: values.long === true,
      recursive: values.recursive === true,
      json: values.json === true,
    };
    const local = await splitLocalArg(positionals[0]);
    if (local) {
      // The file opens like every layer (verify policy, chunk cache) and is walked as the
      // same tree as a layer in the mount.
      await withLocalNode(
        local,
        { ...layerFlags(values), prefetch: "off", log: () => {} },
        async (node) => {
          const name = local.path.replace(/^\/+|\/+$/g, "") || "/";
          await printListing(await fsListItem(name, node), opts, writeStdout);
        },
      );
      return 0;
    }
    await withImageArg(
      positionals[0],
      values,
      (arg) => parseImageArg(arg, values.layer as string | undefined),
      async (found, target, arg, commit) => {
        const item = await fsListItem(found.name, found.node);
        // A repository the registry does not know walks fine (the name was only a hint) but
        // lists nothing: say so instead of printing nothing.
        if (target.repo && target.rootDepth === 0 && item.children) {
          const children = await item.children();
          if (children.length === 0) {
            throw new UserError(`${arg}: no such repository (or it has no tags)`);
          }
          item.children = () => Promise.resolve(children);
        }
        commit();
        await printListing(item, opts, writeStdout);
      },
    );
    return 0;
  },
});
