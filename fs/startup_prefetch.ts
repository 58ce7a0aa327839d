/**
 * Fetching ahead what a container start reads from a layer, for when a container engine has just
 * taken the layer (podman through the layer store): the files every start reads (`/etc/passwd`
 * and `/etc/group`, which the engine reads to resolve the user, `/etc/nsswitch.conf`,
 * `/etc/ld.so.cache`) and the program the image's config starts (`Entrypoint`, else `Cmd`, found
 * on the config's `PATH`) with what the dynamic loader will load for it: its interpreter and its
 * needed libraries, transitively (format/elf.ts), a script's `#!` interpreter likewise. Paths are
 * resolved inside this one layer (symlinks followed there); what is not in it is left to the
 * layer that has it. The files are read whole through the layer's reader, so they sit decoded in
 * its caches when the container asks; at most {@link STARTUP_MAX_FILES} files and
 * {@link STARTUP_MAX_BYTES} bytes. A layer whose blob names prioritized files (a
 * `.prefetch.landmark`) is left to that prefetch.
 *
 * @module
 */
import type { ImageConfigJson } from "../drivers/manifest.ts";
import { elfDeps } from "../format/elf.ts";
import type { StargzReader } from "../format/reader.ts";
import type { TOCNode } from "../format/toc_index.ts";

/** Files fetched ahead per layer, at most. */
export const STARTUP_MAX_FILES = 64;
/** Bytes (uncompressed) fetched ahead per layer, at most; a bigger file is skipped. */
export const STARTUP_MAX_BYTES = 64 << 20;

/** What every container start reads, whatever the program. */
const ALWAYS = ["/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/ld.so.cache"];
const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/** The loader's default directories, by ELF machine (multiarch directories first). */
const MULTIARCH: Record<number, string> = {
  3: "i386-linux-gnu",
  40: "arm-linux-gnueabihf",
  62: "x86_64-linux-gnu",
  183: "aarch64-linux-gnu",
  243: "riscv64-linux-gnu",
};
/** Symlinks followed for one path, at most (as the kernel's ELOOP limit). */
const MAX_LINKS = 40;

/** What {@link prefetchStartup} fetched. */
export interface StartupPrefetch {
  /** Layer paths read, in the order they were found. */
  files: string[];
  /** Their bytes (uncompressed). */
  bytes: number;
}

/**
 * Reads ahead what starting the image of `config` reads from the layer `reader` serves (see the
 * module documentation). Never throws: a file that fails is skipped (its own read reports it).
 */
export async function prefetchStartup(
  reader: StargzReader,
  config: ImageConfigJson,
): Promise<StartupPrefetch> {
  const done: StartupPrefetch = { files: [], bytes: 0 };
  if (reader.index.prefetchLandmark !== undefined) return done;
  const seen = new Set<TOCNode>();
  const pathOf = new Map<TOCNode, string>();
  const take = (path: string): TOCNode | undefined => {
    const found = resolve(reader, path);
    if (!found) return undefined;
    const node = found.node;
    if (node.type !== "reg" || seen.has(node)) return undefined;
    if (done.files.length >= STARTUP_MAX_FILES || done.bytes + node.size > STARTUP_MAX_BYTES) {
      return undefined;
    }
    seen.add(node);
    pathOf.set(node, found.path);
    done.files.push(found.path);
    done.bytes += node.size;
    return node;
  };
  const read = (node: TOCNode) => reader.readFile(node).catch(() => undefined);

  // The fixed files and the program, all at once; then the loader's libraries, level by level.
  const program = programPath(reader, config);
  const fixed = ALWAYS.map(take).filter((n): n is TOCNode => n !== undefined);
  let level = program ? [take(program)].filter((n): n is TOCNode => n !== undefined) : [];
  await Promise.all([
    ...fixed.map(read),
    (async () => {
      while (level.length > 0) {
        const bytes = await Promise.all(level.map(read));
        const next: TOCNode[] = [];
        for (const [i, b] of bytes.entries()) {
          if (!b) continue;
          for (const dep of dependencies(reader, pathOf.get(level[i])!, b)) {
            const n = take(dep);
            if (n) next.push(n);
          }
        }
        level = next;
      }
    })(),
  ]);
  return done;
}

/** The layer path of the program the config starts, when the layer has it. */
function programPath(reader: StargzReader, config: ImageConfigJson): string | undefined {
  const c = config.config ?? {};
  const argv0 = (c.Entrypoint?.length ? c.Entrypoint : c.Cmd)?.[0];
  if (typeof argv0 !== "string" || argv0 === "") return undefined;
  if (argv0.includes("/")) return argv0.startsWith("/") ? argv0 : `/${argv0}`;
  const pathVar = c.Env?.find((e) => typeof e === "string" && e.startsWith("PATH="));
  for (const dir of (pathVar?.slice(5) ?? DEFAULT_PATH).split(":")) {
    if (!dir.startsWith("/")) continue;
    const p = `${dir.replace(/\/+$/, "")}/${argv0}`;
    if (resolve(reader, p)?.node.type === "reg") return p;
  }
  return undefined;
}

/** What loading the file at `path` (its bytes `b`) reads next: ELF dependencies, `#!` line. */
function dependencies(reader: StargzReader, path: string, b: Uint8Array): string[] {
  if (b[0] === 0x23 && b[1] === 0x21) {
    const line = new TextDecoder().decode(b.subarray(2, Math.min(b.length, 256))).split("\n")[0];
    const interp = line.trim().split(/\s+/)[0];
    return interp?.startsWith("/") ? [interp] : [];
  }
  const elf = elfDeps(b);
  if (!elf) return [];
  const out = elf.interpreter ? [elf.interpreter] : [];
  const origin = path.includes("/") ? `/${path.slice(0, path.lastIndexOf("/"))}` : "/";
  const arch = MULTIARCH[elf.machine];
  const dirs = [
    ...elf.runpath.map((d) => d.replaceAll("$ORIGIN", origin).replaceAll("${ORIGIN}", origin)),
    ...(arch ? [`/lib/${arch}`, `/usr/lib/${arch}`] : []),
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
  ].filter((d) => d.startsWith("/"));
  for (const name of elf.needed) {
    if (name.includes("/")) {
      out.push(name);
      continue;
    }
    const found = dirs.map((d) => `${d}/${name}`).find((p) =>
      resolve(reader, p)?.node.type === "reg"
    );
    if (found) out.push(found);
  }
  return out;
}

/** The node `path` names in the layer, symlinks (in any component) followed; or undefined. */
function resolve(reader: StargzReader, path: string): { node: TOCNode; path: string } | undefined {
  let parts = path.split("/").filter((p) => p !== "" && p !== ".");
  let links = 0;
  const done: string[] = [];
  while (parts.length > 0) {
    const name = parts.shift()!;
    if (name === "..") {
      done.pop();
      continue;
    }
    const node = reader.lookup(`/${[...done, name].join("/")}`);
    if (!node) return undefined;
    if (node.type === "symlink") {
      if (++links > MAX_LINKS) return undefined;
      const target = node.linkName.split("/").filter((p) => p !== "" && p !== ".");
      if (node.linkName.startsWith("/")) done.length = 0;
      parts = [...target, ...parts];
      continue;
    }
    done.push(name);
    if (parts.length > 0 && node.type !== "dir") return undefined;
  }
  const resolved = done.join("/");
  const node = reader.lookup(`/${resolved}`);
  return node && { node, path: resolved };
}
