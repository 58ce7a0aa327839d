/**
 * `crfs ls`: lists files inside a local stargz blob or an image in a registry, fetching nothing
 * but indexes: one manifest request, then at most two range requests per layer, all layers in
 * parallel. It walks the same tree `crfs mount` shows.
 *
 * @module
 */
import { openLayerFile } from "../fs/layer_open.ts";
import { layerRoot } from "../fs/layer_tree.ts";
import { rootNode } from "../fs/registry_tree.ts";
import { type Command, parseFlags, UsageError, UserError, writeStdout } from "./cli.ts";
import { parseImageArg, treeError, walkTree } from "./image_path.ts";
import { printListing } from "./listing.ts";
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

export const lsCommand: Command = {
  name: "ls",
  summary: "list the files of a stargz blob or an image",
  help: HELP,
  async run(args) {
    const { values, positionals } = parseFlags(args, {
      long: { type: "boolean", short: "l" },
      recursive: { type: "boolean", short: "R" },
      json: { type: "boolean" },
      layer: { type: "string" },
      ...registryFlags,
    });
    if (positionals.length !== 1) {
      throw new UsageError("ls takes one argument; see 'crfs ls --help'");
    }
    const opts = {
      long: values.long === true,
      recursive: values.recursive === true,
      json: values.json === true,
    };
    const local = await splitLocalArg(positionals[0]);
    if (local) {
      // The file opens like every layer (verify policy, chunk cache) and is walked as the
      // same tree as a layer in the mount.
      let layer;
      try {
        layer = await openLayerFile(local.file, {
          ...layerFlags(values),
          prefetch: "off",
          log: () => {},
        });
      } catch (e) {
        throw treeError(e);
      }
      try {
        const { node } = await walkTree(layerRoot(layer.reader, layer.digest), {
          components: local.path.split("/").filter((c) => c !== "" && c !== "."),
          rootDepth: 0,
          text: `${local.file}:${local.path}`,
        }, false);
        const name = local.path.replace(/^\/+|\/+$/g, "") || "/";
        await printListing(await fsListItem(name, node), opts, writeStdout);
      } catch (e) {
        throw treeError(e);
      } finally {
        layer.close();
      }
      return 0;
    }
    // A short name may stand for several images (registries.conf's search registries): the
    // first that lists wins; the first failure is reported.
    const candidates = imageArgCandidates(positionals[0], await registriesConfig());
    let firstError: unknown;
    for (const arg of candidates) {
      let printing = false;
      try {
        const target = parseImageArg(arg, values.layer as string | undefined);
        const setup = await setupRegistry(values, {
          prefetch: false,
          log: () => {},
          credentials: { hosts: targetHosts(target.components) },
        });
        if (target.repo) setup.store.hintRepository(target.repo);
        const root = rootNode(setup.store);
        const found = await walkTree(root, target, true);
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
        printing = true;
        await printListing(item, opts, writeStdout);
        await setup.disk?.flush();
        return 0;
      } catch (e) {
        if (printing || candidates.length === 1) throw userFacing(treeError(e));
        firstError ??= e;
      }
    }
    throw userFacing(treeError(firstError));
  },
};
