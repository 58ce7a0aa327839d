/**
 * The list of crfs subcommands, in the order `crfs --help` shows them: each one's name and
 * summary, and a loader that imports its module only when the command runs (or shows its own
 * help), so that `crfs mount` does not load the snapshotter's gRPC stack, nor `crfs --help`
 * anything at all. The imports are plain string literals: `deno check` and `deno compile` still
 * follow every one of them.
 *
 * @module
 */
import type { Command } from "./cli.ts";

/** One subcommand as `crfs --help` lists it, with the loader of its module. */
export interface CommandEntry {
  /** The word that selects it: `crfs <name>` (the same as the loaded command's). */
  name: string;
  /** One line for `crfs --help` (the same as the loaded command's). */
  summary: string;
  /** Imports the command's module and returns the command. */
  load(): Promise<Command>;
}

/** Every subcommand. */
export const commands: readonly CommandEntry[] = [
  {
    name: "mount",
    summary: "mount images from registries as a read-only filesystem",
    load: async () => (await import("./mount.ts")).mountCommand,
  },
  {
    name: "store",
    summary: "serve an additional layer store: podman/CRI-O run eStargz images lazily",
    load: async () => (await import("./store.ts")).storeCommand,
  },
  {
    name: "snapshotter",
    summary: "serve a containerd remote snapshotter (lazy eStargz pulls) on a unix socket",
    load: async () => (await import("./snapshotter.ts")).snapshotterCommand,
  },
  {
    name: "ls",
    summary: "list the files of a stargz blob or an image",
    load: async () => (await import("./ls.ts")).lsCommand,
  },
  {
    name: "cat",
    summary: "write one file of a stargz blob or an image to stdout",
    load: async () => (await import("./cat.ts")).catCommand,
  },
  {
    name: "convert",
    summary: "convert an image (or a layer) to eStargz or zstd:chunked, for lazy pulling",
    load: async () => (await import("./convert.ts")).convertCommand,
  },
  {
    name: "demo",
    summary: "run the main job on this machine alone (local registry, real image, mount, read)",
    load: async () => (await import("./demo.ts")).demoCommand,
  },
  {
    name: "cache",
    summary: "show or prune the disk cache",
    load: async () => (await import("./cache.ts")).cacheCommand,
  },
];
