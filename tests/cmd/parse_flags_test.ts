/**
 * cmd/cli.ts `parseFlags`: the same values, positionals and error messages as `node:util`'s
 * strict `parseArgs` (which crfs used before, and whose rules users know), on hand-picked
 * command lines and on many generated ones.
 *
 * @module
 */
import assert from "node:assert/strict";
import { parseArgs } from "node:util";
import { type Options, parseFlags, UsageError } from "../../cmd/cli.ts";

const OPTIONS: Options = {
  name: { type: "string" },
  n2: { type: "string", short: "n" },
  multi: { type: "string", multiple: true },
  flag: { type: "boolean" },
  long: { type: "boolean", short: "l" },
  recursive: { type: "boolean", short: "R" },
  many: { type: "boolean", multiple: true },
  "no-cache": { type: "boolean" },
};

/** What node:util's parseArgs gives (with crfs's trimming of the unknown-option hint). */
function reference(args: string[]): unknown {
  try {
    const r = parseArgs({
      args,
      options: { help: { type: "boolean", short: "h" }, ...OPTIONS },
      allowPositionals: true,
      strict: true,
    });
    return { values: { ...r.values }, positionals: r.positionals };
  } catch (e) {
    return { error: (e as Error).message.replace(/\. To specify.*$/s, "") };
  }
}

function ours(args: string[]): unknown {
  try {
    const r = parseFlags(args, OPTIONS);
    return { values: { ...r.values }, positionals: r.positionals };
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    return { error: e.message };
  }
}

const CASES: string[][] = [
  [],
  ["--foo"],
  ["-x"],
  ["--name"],
  ["-n"],
  ["--flag=1"],
  ["--flag="],
  ["--name", "-5"],
  ["-n", "-5"],
  ["--name=-5"],
  ["--name", "-"],
  ["--name="],
  ["-lh"],
  ["-lx"],
  ["-ln5"],
  ["-n5"],
  ["-nl"],
  ["-Rln"],
  ["--multi", "a", "--multi=b", "--multi", "c"],
  ["--many", "--many"],
  ["--name", "a", "--name", "b"],
  ["--", "--x", "-y"],
  ["a", "--flag", "b", "--", "--flag"],
  ["-"],
  ["--=x"],
  ["--name", "--"],
  ["-hn"],
  ["-lnh"],
  ["--no-flag"],
  ["--no-cache"],
  ["-h=3"],
  ["---x"],
  ["--__proto__"],
  ["--constructor"],
  ["--help"],
  ["-h", "pos"],
  ["--name", "x=y", "p"],
  ["--name=a=b"],
];

Deno.test("parseFlags: as node:util parseArgs on hand-picked command lines", () => {
  for (const args of CASES) assert.deepEqual(ours(args), reference(args), JSON.stringify(args));
});

Deno.test("parseFlags: as node:util parseArgs on generated command lines", () => {
  const words = [
    "--name",
    "--name=v",
    "-n",
    "-nv",
    "--multi",
    "--multi=",
    "--flag",
    "--flag=x",
    "-l",
    "-lR",
    "-lRn",
    "-Rx",
    "--many",
    "--",
    "-",
    "pos",
    "-5",
    "--bogus",
    "-h",
    "--no-cache",
    "=",
    "",
  ];
  let seed = 7;
  const next = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
  for (let i = 0; i < 3000; i++) {
    const args = Array.from({ length: next() % 6 }, () => words[next() % words.length]);
    assert.deepEqual(ours(args), reference(args), JSON.stringify(args));
  }
});

Deno.test("parseFlags: a bad flag is a usage error", () => {
  assert.throws(
    () => parseFlags(["--nope"], {}),
    (e) => e instanceof UsageError && e.message === "Unknown option '--nope'",
  );
});
