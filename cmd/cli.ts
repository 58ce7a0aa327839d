/**
 * Small shared pieces for crfs's commands: a user-facing error type, flag parsing (the rules and
 * messages of `node:util`'s strict `parseArgs`, without loading Node's compatibility layer at
 * start: a mount is up sooner), help text, and a progress line for terminals.
 *
 * @module
 */
import { UsageError } from "../convert/errors.ts";

export { UsageError, UserError } from "../convert/errors.ts";

/** One crfs subcommand. */
export interface Command {
  /** The word that selects it: `crfs <name>`. */
  name: string;
  /** One line for `crfs --help`. */
  summary: string;
  /** The full `--help` text. */
  help: string;
  /** Runs the command with the arguments after its name; resolves to the exit code. */
  run(args: string[]): Promise<number>;
}

/** One flag: a boolean switch or a string value, repeatable (`multiple`), with a one-letter alias. */
export interface OptionSpec {
  type: "string" | "boolean";
  multiple?: boolean;
  short?: string;
}

/** Option specs in the form `node:util` parseArgs takes (`type`, `multiple`, `short`). */
export type Options = Record<string, OptionSpec>;

/** One flag as given: its name, how it was written, and its value (inline: after `=`). */
interface FlagToken {
  name: string;
  rawName: string;
  value?: string;
  inlineValue?: boolean;
}

/**
 * Parses `args` strictly against `options` (`--help`/`-h` always allowed), as `node:util`'s
 * `parseArgs` with `strict` and `allowPositionals` does: `--name value`, `--name=value`,
 * `-n value`, `-nvalue`, grouped switches (`-lR`), `--` ending the flags.
 * Throws {@link UsageError} on unknown flags or missing values (with `parseArgs`'s messages).
 */
export function parseFlags<O extends Options>(
  args: string[],
  options: O,
): { values: Record<string, string | boolean | string[] | undefined>; positionals: string[] } {
  const specs: Options = { help: { type: "boolean", short: "h" }, ...options };
  const spec = (name: string) => Object.hasOwn(specs, name) ? specs[name] : undefined;
  const longFor = (short: string) => {
    for (const [name, s] of Object.entries(specs)) if (s.short === short) return name;
    return short;
  };
  const isString = (name: string) => spec(name)?.type === "string";
  const tokens: FlagToken[] = [];
  const positionals: string[] = [];
  const rest = [...args];
  // `-n VALUE`, `--name VALUE`: a string flag takes the next argument, if there is one.
  const spaced = (name: string, rawName: string) => {
    const value = isString(name) && rest.length > 0 ? rest.shift() : undefined;
    tokens.push({ name, rawName, value, inlineValue: value === undefined ? undefined : false });
  };
  while (rest.length > 0) {
    const arg = rest.shift()!;
    if (arg === "--") {
      positionals.push(...rest);
      break;
    }
    const short = arg.length >= 2 && arg[0] === "-" && arg[1] !== "-";
    if (short && arg.length === 2) {
      spaced(longFor(arg[1]), arg); // `-n`, `-n VALUE`
    } else if (short && !isString(longFor(arg[1]))) {
      // `-lR`: switches; a string flag takes the rest of the word as its value.
      const expanded: string[] = [];
      for (let i = 1; i < arg.length; i++) {
        if (!isString(longFor(arg[i])) || i === arg.length - 1) expanded.push(`-${arg[i]}`);
        else {
          expanded.push(`-${arg.slice(i)}`);
          break;
        }
      }
      rest.unshift(...expanded);
    } else if (short) {
      // `-nVALUE`
      tokens.push({
        name: longFor(arg[1]),
        rawName: `-${arg[1]}`,
        value: arg.slice(2),
        inlineValue: true,
      });
    } else if (arg.length > 2 && arg.startsWith("--")) {
      const eq = arg.indexOf("=", 3);
      if (eq < 0) spaced(arg.slice(2), arg); // `--name`, `--name VALUE`
      else {
        // `--name=VALUE`
        const name = arg.slice(2, eq);
        tokens.push({ name, rawName: `--${name}`, value: arg.slice(eq + 1), inlineValue: true });
      }
    } else positionals.push(arg);
  }
  const values: Record<string, string | boolean | string[] | undefined> = {};
  for (const t of tokens) {
    const s = spec(t.name);
    if (!s) throw new UsageError(`Unknown option '${t.rawName}'`);
    const both = `${s.short ? `-${s.short}, ` : ""}--${t.name}`;
    if (s.type === "string" && t.value === undefined) {
      throw new UsageError(`Option '${both} <value>' argument missing`);
    }
    if (s.type === "boolean" && t.value !== undefined) {
      throw new UsageError(`Option '${both}' does not take an argument`);
    }
    if (!t.inlineValue && t.value !== undefined && t.value.length > 1 && t.value[0] === "-") {
      const example = t.rawName.startsWith("--")
        ? `'${t.rawName}=-XYZ'`
        : `'--${t.name}=-XYZ' or '${t.rawName}-XYZ'`;
      throw new UsageError(
        `Option '${t.rawName}' argument is ambiguous.\n` +
          `Did you forget to specify the option argument for '${t.rawName}'?\n` +
          `To specify an option argument starting with a dash use ${example}.`,
      );
    }
    if (t.name === "__proto__") continue;
    const value = t.value ?? true;
    if (s.multiple) {
      const list = values[t.name];
      // (A repeatable switch collects `true`s, as `parseArgs` does.)
      if (Array.isArray(list)) list.push(value as string);
      else values[t.name] = [value as string];
    } else values[t.name] = value;
  }
  return { values, positionals };
}

/** Parses a size such as `4M`, `64KiB`, `1048576` into bytes. */
export function parseSize(text: string, what: string): number {
  const m = /^(\d+)\s*([kmg]?)(i?b)?$/i.exec(text.trim());
  if (!m) throw new UsageError(`${what}: not a size: ${JSON.stringify(text)}`);
  const unit = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2].toLowerCase() as "" | "k"]!;
  const n = Number(m[1]) * unit;
  if (!Number.isSafeInteger(n) || n <= 0) throw new UsageError(`${what}: out of range: ${text}`);
  return n;
}

/** Formats a byte count for people: `1.5 MiB`. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

/**
 * A progress line on stderr, redrawn in place at most ten times a second, and only when stderr
 * is a terminal (so logs and pipes stay clean).
 */
export class Progress {
  #enabled: boolean;
  #last = 0;
  #shown = false;
  constructor(enabled = Deno.stderr.isTerminal()) {
    this.#enabled = enabled;
  }
  /** Shows `text` (rate limited unless `force`). */
  update(text: string, force = false): void {
    if (!this.#enabled) return;
    const now = Date.now();
    if (!force && now - this.#last < 100) return;
    this.#last = now;
    const cols = safeColumns();
    Deno.stderr.writeSync(new TextEncoder().encode(`\r\x1b[K${text.slice(0, cols - 1)}`));
    this.#shown = true;
  }
  /** Clears the line. */
  done(): void {
    if (this.#enabled && this.#shown) Deno.stderr.writeSync(new TextEncoder().encode("\r\x1b[K"));
    this.#shown = false;
  }
}

function safeColumns(): number {
  try {
    return Deno.consoleSize().columns;
  } catch {
    return 80;
  }
}

/** Writes a whole string to stdout. */
export async function writeStdout(text: string | Uint8Array): Promise<void> {
  const bytes = typeof text === "string" ? new TextEncoder().encode(text) : text;
  let off = 0;
  while (off < bytes.length) off += await Deno.stdout.write(bytes.subarray(off));
}

/**
 * Throws the usage error `COMMAND takes TAKES; see 'crfs COMMAND --help'` unless `ok` (the
 * check of a command's positional arguments).
 */
export function requireArgs(command: string, ok: boolean, takes: string): void {
  if (!ok) throw new UsageError(`${command} takes ${takes}; see 'crfs ${command} --help'`);
}

/** A flag value as {@link parseFlags} returns it. */
export type FlagValues = Record<string, string | boolean | string[] | undefined>;

/** What {@link defineCommand} builds a {@link Command} from. */
export interface CommandSpec {
  /** The word that selects it: `crfs <name>`. */
  name: string;
  /** One line for `crfs --help`. */
  summary: string;
  /** The full `--help` text. */
  help: string;
  /** Its flags, in `parseFlags` form (`--help`/`-h` is always allowed). */
  flags: Options;
  /** What it takes as arguments, for the usage error (`one argument`, `IN and OUT`). */
  takes: string;
  /** Whether the positional arguments are ones it takes. */
  argsOk(positionals: string[]): boolean;
  /** Completes the parsed flags and arguments before they are checked (e.g. from a config file). */
  prepare?(
    values: FlagValues,
    positionals: string[],
  ): Promise<{ values: FlagValues; positionals: string[] }>;
  /** Runs it with its parsed flags and checked arguments; resolves to the exit code. */
  run(values: FlagValues, positionals: string[]): Promise<number>;
}

/**
 * A {@link Command} that parses its flags strictly and checks its arguments (the usage error
 * `NAME takes TAKES; see 'crfs NAME --help'`) before running.
 *
 * @example
 * ```ts
 * export const echoCommand = defineCommand({
 *   name: "echo",
 *   summary: "print the arguments",
 *   help: "Usage: crfs echo WORD...",
 *   flags: {},
 *   takes: "at least one word",
 *   argsOk: (p) => p.length > 0,
 *   run: async (_values, words) => (await writeStdout(words.join(" ") + "\n"), 0),
 * });
 * ```
 */
export function defineCommand(spec: CommandSpec): Command {
  return {
    name: spec.name,
    summary: spec.summary,
    help: spec.help,
    async run(args) {
      const parsed = parseFlags(args, spec.flags);
      const { values, positionals } = spec.prepare
        ? await spec.prepare(parsed.values, parsed.positionals)
        : parsed;
      requireArgs(spec.name, spec.argsOk(positionals), spec.takes);
      return await spec.run(values, positionals);
    },
  };
}
