/**
 * The list of crfs subcommands, in the order `crfs --help` shows them.
 *
 * @module
 */
import type { Command } from "./cli.ts";
import { catCommand } from "./cat.ts";
import { convertCommand } from "./convert.ts";
import { lsCommand } from "./ls.ts";

/** Every subcommand. */
export const commands: Command[] = [lsCommand, catCommand, convertCommand];
