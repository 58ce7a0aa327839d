/**
 * Image arguments of `crfs ls` and `crfs cat`, mapped onto the same tree the mount shows:
 *
 * | argument                              | tree path                                        |
 * | ------------------------------------- | ------------------------------------------------ |
 * | `HOST/`                               | `layers/HOST` (owners)                           |
 * | `HOST/a/b`                            | `layers/HOST/a/b` (sub-repositories and tags)    |
 * | `HOST/a/b:tag[/path]`, `…@sha256:…`   | `images/HOST/a/b/<tag or sha256-…>/path`          |
 * | same with `--layer N` or `sha256:…`   | `layers/HOST/a/b/sha256-<manifest>/<N>/path`     |
 *
 * Docker Hub names work as usual (`ubuntu:24.04`). Paths inside an image follow the image's
 * own symlinks (absolute ones from the image root), as a container would see them.
 *
 * @module
 */
import { parseReference } from "../drivers/reference.ts";
import { type FsNode, NodeError } from "../fs/node.ts";
import { rootNode } from "../fs/registry_tree.ts";
import { UserError } from "./cli.ts";
import {
  imageArgCandidates,
  registriesConfig,
  setupRegistry,
  targetHosts,
  userFacing,
} from "./registry_options.ts";

/** Where an argument points in the tree. */
export interface TreeTarget {
  /** Tree path components from the root. */
  components: string[];
  /** How many leading components lead to the image (or layer) root; 0 when not in an image. */
  rootDepth: number;
  /** The argument, for messages. */
  text: string;
  /** The repository the argument names, if any. */
  repo?: { host: string; repository: string };
}

const BARE_HOST = /^(?:localhost|\[[0-9a-fA-F:.]+\]|[a-z0-9-]+(?:\.[a-z0-9-]+)+)(?::\d+)?$/i;
const HOSTLIKE = /^(?:localhost|local|\[[0-9a-fA-F:.]+\])(?::\d+)?$|[.:]/;

/** Maps an image argument to a tree path. `layer` selects one layer (`N` or a digest). */
export function parseImageArg(text: string, layer?: string): TreeTarget {
  // A bare registry host (`127.0.0.1:5000`, `gcr.io`) lists the registry, as `HOST/` does;
  // `name:tag` without a dot in the name stays a Docker Hub image (`busybox:1`).
  if (!text.includes("/") && BARE_HOST.test(text)) return parseImageArg(`${text}/`, layer);
  const slash = text.indexOf("/");
  const first = slash < 0 ? text : text.slice(0, slash);
  const hasHost = slash >= 0 && HOSTLIKE.test(first);
  const hostText = hasHost ? first : "docker.io";
  const rest = hasHost ? text.slice(slash + 1) : text;
  const at = rest.search(/[:@]/);
  if (at < 0) {
    // A host or repository path: list what is there.
    if (layer !== undefined) {
      throw new UserError(`--layer needs an image with a tag or digest: ${text}`, 2);
    }
    const repoPath = rest.replace(/\/+$/, "");
    if (hostText === "local") {
      return { components: ["layers", "local", ...split(repoPath)], rootDepth: 0, text };
    }
    if (repoPath === "") {
      return { components: ["layers", normalizeHost(hostText)], rootDepth: 0, text };
    }
    const ref = parseReference(`${hostText}/${repoPath}`, { defaultTag: null });
    return {
      components: ["layers", ref.host, ...ref.repository.split("/")],
      rootDepth: 0,
      text,
      repo: ref,
    };
  }
  // REPO then :tag and/or @digest, then an optional /path.
  const m = /^([^:@]*)(?::([^/@]+))?(?:@(sha256:[0-9a-f]{64}))?(\/.*)?$/.exec(rest);
  if (!m || !m[1]) throw new UserError(`not an image reference: ${text}`, 2);
  const [, repoText, tag, digest, path] = m;
  if (hostText === "local") {
    throw new UserError(`local files have no tags; use ${text.replace(/:[^/]*/, "")}`, 2);
  }
  const ref = parseReference(
    `${hostText}/${repoText}${tag ? `:${tag}` : ""}${digest ? `@${digest}` : ""}`,
  );
  const target = ref.digest ? `sha256-${ref.digest.slice(7)}` : ref.tag!;
  const inner = split(path ?? "");
  const repo = ref.repository.split("/");
  if (layer === undefined) {
    const components = ["images", ref.host, ...repo, target];
    return { components: [...components, ...inner], rootDepth: components.length, text, repo: ref };
  }
  const which = /^\d+$/.test(layer)
    ? layer
    : /^sha256:[0-9a-f]{64}$/.test(layer)
    ? `sha256-${layer.slice(7)}`
    : "";
  if (!which) {
    throw new UserError(
      `--layer takes a layer number or sha256 digest, not ${JSON.stringify(layer)}`,
      2,
    );
  }
  // The tag resolves to sha256-<manifest> through its symlink, then the layer.
  const components = ["layers", ref.host, ...repo, target, which];
  return { components: [...components, ...inner], rootDepth: components.length, text, repo: ref };
}

function split(path: string): string[] {
  return path.split("/").filter((c) => c !== "" && c !== ".");
}

function normalizeHost(host: string): string {
  return parseReference(`${host}/x/y`, { defaultTag: null }).host;
}

/** A node found by {@link walkTree}, with its name. */
export interface Found {
  node: FsNode;
  name: string;
}

/**
 * Walks the tree along `target`, following symlinks between the components (and the last one
 * when `followLast`). Symlinks outside an image are resolved relative to their directory;
 * inside an image, absolute targets start at the image root and `..` never leaves it.
 */
export async function walkTree(
  root: FsNode,
  target: TreeTarget,
  followLast: boolean,
): Promise<Found> {
  const stack: FsNode[] = [root];
  const names: string[] = [];
  const todo = [...target.components];
  let hops = 0;
  while (todo.length > 0) {
    const name = todo.shift()!;
    const dir = stack[stack.length - 1];
    if (name === "..") {
      if (stack.length > Math.max(1, target.rootDepth + 1)) {
        stack.pop();
        names.pop();
      }
      continue;
    }
    if (!dir.lookup) throw new UserError(`${target.text}: ${names.join("/")} is not a directory`);
    const child = await dir.lookup(name);
    if (!child) {
      throw new UserError(`${target.text}: no such file or directory (at ${JSON.stringify(name)})`);
    }
    const last = todo.length === 0;
    const attr = child.attr();
    if (attr.type === "symlink" && (!last || followLast)) {
      if (++hops > 40) throw new UserError(`${target.text}: too many levels of symbolic links`);
      const link = attr.linkName;
      const parts = split(link);
      if (link.startsWith("/")) {
        const depth = Math.max(target.rootDepth, 0);
        if (depth === 0) {
          throw new UserError(`${target.text}: absolute symlink ${link} outside an image`);
        }
        stack.length = depth + 1;
        names.length = depth;
      }
      todo.unshift(...parts.flatMap((p) => (p === ".." ? [".."] : [p])));
      continue;
    }
    stack.push(child);
    names.push(name);
  }
  return { node: stack[stack.length - 1], name: names[names.length - 1] ?? "/" };
}

/**
 * Tree errors (registry failures the tree turned into EIO, layers that are not eStargz) as user
 * errors: one line, no stack trace.
 */
export function treeError(e: unknown): unknown {
  if (!(e instanceof NodeError)) return e;
  const hint = /not stargz/.test(e.message)
    ? "; make an eStargz copy of the image with 'crfs convert SRC DST'"
    : "";
  return new UserError(`${e.message}${hint}`);
}

/**
 * Sets up the registry side from the command's flag `values` (no prefetch, no log), walks the
 * merged tree to `target` (following a last symlink) and hands what it found to `use`; the disk
 * cache is flushed after `use` succeeds. `crfs ls` and `crfs cat` read images through it.
 *
 * @example
 * ```ts
 * const target = parseImageArg("127.0.0.1:5000/my/app:1/etc/hostname");
 * const attr = await withImageNode(target, values, async ({ node }) => node.attr());
 * ```
 */
export async function withImageNode<T>(
  target: TreeTarget,
  values: Record<string, unknown>,
  use: (found: Found) => Promise<T>,
): Promise<T> {
  const setup = await setupRegistry(values, {
    prefetch: false,
    log: () => {},
    credentials: { hosts: targetHosts(target.components) },
  });
  try {
    if (target.repo) setup.store.hintRepository(target.repo);
    const result = await use(await walkTree(rootNode(setup.store), target, true));
    await setup.disk?.flush();
    return result;
  } finally {
    setup.close();
  }
}

/**
 * {@link withImageNode} for an image argument as the user typed it: a short name may stand for
 * several images (registries.conf's search registries), tried in order until one walks; the
 * first failure is reported. `use` calls `commit()` once it starts writing output, after which a
 * failure is final (no other candidate is tried).
 */
export async function withImageArg<T>(
  text: string,
  values: Record<string, unknown>,
  parse: (arg: string) => TreeTarget,
  use: (found: Found, target: TreeTarget, arg: string, commit: () => void) => Promise<T>,
): Promise<T> {
  const candidates = imageArgCandidates(text, await registriesConfig());
  let firstError: unknown;
  for (const arg of candidates) {
    let committed = false;
    try {
      const target = parse(arg);
      return await withImageNode(
        target,
        values,
        (found) => use(found, target, arg, () => committed = true),
      );
    } catch (e) {
      if (committed || candidates.length === 1) throw userFacing(treeError(e));
      firstError ??= e;
    }
  }
  throw userFacing(treeError(firstError));
}
