/**
 * TOML parsing for crfs's configuration files (registries.conf, /etc/crfs/config.toml), through
 * the npm package `smol-toml` (TOML 1.0, no dependencies). Parse errors become one-line messages
 * that name the file and the line.
 *
 * @module
 */
import { parse, TomlError } from "smol-toml";

/** A parsed TOML document. */
export type TomlTable = Record<string, unknown>;

/** A TOML file that cannot be parsed; `message` names the file and, when known, the line. */
export class TomlFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TomlFileError";
  }
}

/**
 * Parses TOML `text` read from `file` (the name is only used in messages).
 *
 * @example
 * ```ts
 * const doc = parseToml('unqualified-search-registries = ["docker.io"]', "registries.conf");
 * ```
 */
export function parseToml(text: string, file: string): TomlTable {
  try {
    return parse(text) as TomlTable;
  } catch (e) {
    if (e instanceof TomlError) {
      const first = e.message.split("\n")[0].replace(/^Invalid TOML document: /, "");
      throw new TomlFileError(`${file}:${e.line}:${e.column}: ${first}`);
    }
    throw new TomlFileError(`${file}: ${(e as Error).message}`);
  }
}

/** Reads and parses a TOML file; undefined when it does not exist. */
export async function readTomlFile(file: string): Promise<TomlTable | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new TomlFileError(`cannot read ${file}: ${(e as Error).message}`);
  }
  return parseToml(text, file);
}
