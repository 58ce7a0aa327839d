/**
 * The daemons' configuration file, `/etc/crfs/config.toml` (TOML), whose settings are the flags
 * of `crfs mount` and `crfs store` without their `--`; flags given on the command line override
 * it. The schema ({@link CONFIG_KEYS}):
 *
 * ```toml
 * # Shared by every command (the registry options of 'crfs mount --help'):
 * insecure-registry = ["registry.lan:5000"]   # plain http for these hosts
 * platform = "linux/arm64"
 * driver = ["/etc/crfs/drivers/acme.ts"]
 * local-dir = "/srv/crfs/local"
 * tag-ttl = 60                                # seconds
 * cache-dir = "/var/cache/crfs"
 * cache-size = "20G"                          # or a number of bytes
 * no-cache = false
 * memory-budget = "128M"                      # resident memory aimed at
 * prefetch = "landmark"                       # landmark, all, off
 * no-background-fetch = false
 * verify = "strict"                           # strict, require, none
 * debug = false
 * authfile = "/etc/crfs/auth.json"            # credentials (containers-auth.json(5))
 * tls-verify = true                           # false: https without certificate checks
 * certs-dir = ["/etc/crfs/certs.d"]           # before /etc/containers/certs.d
 * metrics-address = "127.0.0.1:9184"
 *
 * [mount]                                     # crfs mount only
 * mountpoint = "/crfs"
 * host = ["registry.lan:5000"]
 * allow-other = true
 * read-ahead = 1024                           # KiB
 * entry-ttl = 86400                           # seconds
 * layer-store = "/var/lib/crfs/store"
 * record = "/var/log/crfs/reads.txt"
 *
 * [store]                                     # crfs store only
 * dir = "/var/lib/crfs/store"
 * allow-other = true
 * read-ahead = 1024
 * ```
 *
 * A `[mount]` or `[store]` table may also set any shared key, for that command only. Passwords
 * have no key (the file is often world-readable): credentials belong in an auth file. Unknown
 * keys and wrong types are errors that name the file and the key.
 *
 * {@link loadConfigFile} returns the settings for one command in the form `parseFlags` returns
 * flags (strings, booleans, string arrays), so {@link mergeConfig} can lay the command line over
 * them and the existing flag validation applies to both.
 *
 * @module
 */
import { parseToml, type TomlTable } from "../drivers/toml.ts";

/** The commands the file configures. */
export type ConfiguredCommand = "mount" | "store";

/** One key of the file. */
export interface ConfigKey {
  /** The TOML value kinds accepted: text, a boolean, a whole number, or a list of text. */
  kind: "string" | "boolean" | "integer" | "number" | "size" | "strings";
  /** Where it may appear: the top level (every command), `[mount]`, `[store]`. */
  commands: readonly ConfiguredCommand[];
  /** Which flag it sets; default the key itself. `positional` keys set the command's argument. */
  flag?: string | "positional";
  /** One line for the documentation. */
  help: string;
}

const BOTH = ["mount", "store"] as const;

/** One entry of {@link CONFIG_KEYS}: shared by `mount` and `store` unless `commands` says. */
function key(
  kind: ConfigKey["kind"],
  help: string,
  commands: readonly ConfiguredCommand[] = BOTH,
  flag?: "positional",
): ConfigKey {
  return flag ? { kind, commands, flag, help } : { kind, commands, help };
}

/** Every key, with the flag it sets. */
export const CONFIG_KEYS: Readonly<Record<string, ConfigKey>> = {
  "insecure-registry": key("strings", "hosts spoken to over plain http"),
  platform: key("string", "OS/ARCH[/VARIANT] to pick"),
  driver: key("strings", "registry driver modules to load"),
  "local-dir": key("string", "directory of the 'local' host"),
  "tag-ttl": key("number", "seconds a tag's digest is trusted"),
  "cache-dir": key("string", "disk cache directory"),
  "cache-size": key("size", "disk cache budget (10G, or bytes)"),
  "no-cache": key("boolean", "no disk cache"),
  "memory-budget": key("size", "resident memory aimed at (128M, or bytes)"),
  prefetch: key("string", "landmark, all or off"),
  "no-background-fetch": key("boolean", "fetch only what is read"),
  verify: key("string", "strict, require or none"),
  debug: key("boolean", "log every registry request"),
  authfile: key("string", "credentials file (containers-auth.json)"),
  "tls-verify": key("boolean", "false: https without certificate checks"),
  "certs-dir": key("strings", "extra certs.d directories, first"),
  "metrics-address": key("string", "HOST:PORT of the Prometheus endpoint"),
  "allow-other": key("boolean", "let other users use the mount"),
  "read-ahead": key("integer", "kernel readahead in KiB"),
  mountpoint: key("string", "where to mount (default /crfs)", ["mount"], "positional"),
  host: key("strings", "hosts listed in layers/ and images/", ["mount"]),
  "entry-ttl": key("number", "kernel entry TTL in seconds", ["mount"]),
  "layer-store": key("string", "also serve a layer store here", ["mount"]),
  record: key("string", "write the paths read to this file", ["mount"]),
  dir: key("string", "where to serve the layer store", ["store"], "positional"),
};

/** Keys that only the top level may hold (everything else is per command or shared). */
const TABLES: readonly ConfiguredCommand[] = ["mount", "store"];

/** A flag value as `parseFlags` gives it. */
export type FlagValue = string | boolean | string[] | undefined;

/** The settings for one command. */
export interface CommandConfig {
  /** Flag values by flag name (as `parseFlags` returns them). */
  values: Record<string, FlagValue>;
  /** The mount point (`mount`) or directory (`store`), if set. */
  positional?: string;
  /** The file they came from. */
  file: string;
}

/** An invalid config file; the message names the file and the key. */
export class ConfigFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigFileError";
  }
}

/** The default config file: `$CRFS_CONFIG`, else `/etc/crfs/config.toml`. */
export function defaultConfigPath(): string {
  try {
    return Deno.env.get("CRFS_CONFIG") || "/etc/crfs/config.toml";
  } catch {
    return "/etc/crfs/config.toml";
  }
}

function convert(key: string, spec: ConfigKey, v: unknown, where: string): FlagValue {
  const bad = (want: string) => new ConfigFileError(`${where}: ${key} must be ${want}`);
  switch (spec.kind) {
    case "string":
      if (typeof v !== "string" || v === "") throw bad("a non-empty string");
      return v;
    case "boolean":
      if (typeof v !== "boolean") throw bad("true or false");
      // Flags that take a value (tls-verify) get it as text; switches stay booleans.
      return key === "tls-verify" ? String(v) : v;
    case "integer":
      if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
        throw bad("a whole number ≥ 0");
      }
      return String(v);
    case "number":
      if (typeof v !== "number" || !Number.isFinite(v) || v < 0) throw bad("a number ≥ 0");
      return String(v);
    case "size":
      if (typeof v === "number" && Number.isSafeInteger(v) && v > 0) return String(v);
      if (typeof v === "string" && /^\d+\s*[kmg]?(i?b)?$/i.test(v.trim())) return v.trim();
      throw bad('a size such as "10G", "512M" or a number of bytes');
    case "strings":
      if (!Array.isArray(v) || v.some((x) => typeof x !== "string" || x === "")) {
        throw bad("a list of non-empty strings");
      }
      return [...v] as string[];
  }
}

function applyTable(
  table: TomlTable,
  command: ConfiguredCommand,
  where: string,
  out: CommandConfig,
  topLevel: boolean,
): void {
  for (const [key, value] of Object.entries(table)) {
    if (topLevel && TABLES.includes(key as ConfiguredCommand)) continue;
    const spec = CONFIG_KEYS[key];
    if (!spec) {
      const hint = /pass|secret|token|username/i.test(key)
        ? ' (credentials go in an auth file: authfile = "…")'
        : "";
      throw new ConfigFileError(`${where}: unknown key ${JSON.stringify(key)}${hint}`);
    }
    const allowed = topLevel ? spec.commands.length === BOTH.length : true;
    if (!allowed) {
      throw new ConfigFileError(
        `${where}: ${key} belongs in the [${spec.commands.join("] or [")}] table`,
      );
    }
    if (!topLevel && !spec.commands.includes(command)) continue; // checked by validate
    const v = convert(key, spec, value, where);
    if (spec.flag === "positional") out.positional = v as string;
    else out.values[spec.flag ?? key] = v;
  }
}

function validateTables(doc: TomlTable, file: string): void {
  for (const t of TABLES) {
    const table = doc[t];
    if (table === undefined) continue;
    if (typeof table !== "object" || table === null || Array.isArray(table)) {
      throw new ConfigFileError(`${file}: ${t} must be a table ([${t}])`);
    }
    for (const [key, value] of Object.entries(table as TomlTable)) {
      const spec = CONFIG_KEYS[key];
      if (!spec) {
        throw new ConfigFileError(`${file}: [${t}]: unknown key ${JSON.stringify(key)}`);
      }
      if (!spec.commands.includes(t)) {
        throw new ConfigFileError(`${file}: [${t}]: ${key} is not a setting of crfs ${t}`);
      }
      convert(key, spec, value, `${file}: [${t}]`);
    }
  }
}

/**
 * Parses config text (from `file`, for messages) into the settings of `command`. Every part of
 * the file is validated, also the other command's table.
 */
export function parseConfig(text: string, file: string, command: ConfiguredCommand): CommandConfig {
  let doc: TomlTable;
  try {
    doc = parseToml(text, file);
  } catch (e) {
    throw new ConfigFileError((e as Error).message);
  }
  validateTables(doc, file);
  const out: CommandConfig = { values: {}, file };
  applyTable(doc, command, file, out, true);
  const own = doc[command];
  if (own !== undefined) applyTable(own as TomlTable, command, `${file}: [${command}]`, out, false);
  return out;
}

/**
 * Reads the config file for `command`. A missing file is no configuration (undefined) unless
 * `required` (a path the user named with `--config`).
 *
 * @example
 * ```ts
 * const conf = await loadConfigFile("mount", { path: flags.config, required: !!flags.config });
 * const { values, positionals } = mergeConfig(conf, flags, positionalsFromCli);
 * ```
 */
export async function loadConfigFile(
  command: ConfiguredCommand,
  options: { path?: string; required?: boolean } = {},
): Promise<CommandConfig | undefined> {
  const file = options.path ?? defaultConfigPath();
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound && !options.required) return undefined;
    throw new ConfigFileError(`cannot read config file ${file}: ${(e as Error).message}`);
  }
  return parseConfig(text, file, command);
}

/**
 * The command line laid over the file: a flag given on the command line replaces the file's
 * value (lists too: `--host` flags replace `host = […]`), and a positional argument replaces
 * `mountpoint`/`dir`.
 */
export function mergeConfig(
  config: CommandConfig | undefined,
  flags: Record<string, FlagValue>,
  positionals: readonly string[] = [],
): { values: Record<string, FlagValue>; positionals: string[] } {
  const values: Record<string, FlagValue> = { ...(config?.values ?? {}) };
  for (const [k, v] of Object.entries(flags)) if (v !== undefined) values[k] = v;
  const pos = positionals.length > 0
    ? [...positionals]
    : config?.positional !== undefined
    ? [config.positional]
    : [];
  return { values, positionals: pos };
}
