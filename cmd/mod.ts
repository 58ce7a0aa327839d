/**
 * The list of crfs subcommands, in the order `crfs --help` shows them.
 *
 * @module
 */
import type { Command } from "./cli.ts";

/** Every subcommand. */
export const commands: Command[] = [];
