/**
 * The list of crfs subcommands, in the order `crfs --help` shows them.
 *
 * @module
 */
import type { Command } from "./cli.ts";
import { cacheCommand } from "./cache.ts";
import { catCommand } from "./cat.ts";
import { convertCommand } from "./convert.ts";
import { demoCommand } from "./demo.ts";
import { lsCommand } from "./ls.ts";
import { mountCommand } from "./mount.ts";
import { snapshotterCommand } from "./snapshotter.ts";
import { storeCommand } from "./store.ts";

/** Every subcommand. */
export const commands: Command[] = [
  mountCommand,
  storeCommand,
  snapshotterCommand,
  lsCommand,
  catCommand,
  convertCommand,
  demoCommand,
  cacheCommand,
];
