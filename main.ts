/**
 * crfs — the Container Registry Filesystem. Command-line entry point: picks the subcommand and
 * runs it; every command lives in `cmd/`.
 *
 * @module
 */
import { UserError } from "./cmd/cli.ts";
import { type CommandEntry, commands } from "./cmd/mod.ts";
import { RegistryError } from "./drivers/errors.ts";
import { InvalidReferenceError } from "./drivers/reference.ts";

const HELP = `crfs — mount container images lazily from OCI/Docker registries (stargz/eStargz)

Usage: crfs <command> [options] [arguments]

Commands:
${commands.map((c: CommandEntry) => `  ${c.name.padEnd(9)} ${c.summary}`).join("\n")}

Run 'crfs <command> --help' for the options of one command.
`;

async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    await Deno.stdout.write(new TextEncoder().encode(HELP));
    return name === undefined ? 2 : 0;
  }
  if (name === "--version") {
    console.log("crfs 0.1.0");
    return 0;
  }
  const entry = commands.find((c: CommandEntry) => c.name === name);
  if (!entry) {
    console.error(`crfs: unknown command ${JSON.stringify(name)}; see 'crfs --help'`);
    return 2;
  }
  const command = await entry.load();
  if (rest.includes("--help") || rest.includes("-h")) {
    await Deno.stdout.write(new TextEncoder().encode(command.help));
    return 0;
  }
  return await command.run(rest);
}

if (import.meta.main) {
  let code: number;
  try {
    code = await main(Deno.args);
  } catch (e) {
    if (
      e instanceof UserError || e instanceof RegistryError || e instanceof InvalidReferenceError
    ) {
      // Errors in what the user asked for or in the environment: one line, no stack.
      console.error(`crfs: ${e.message}`);
      code = e.exitCode;
    } else if (e instanceof Deno.errors.BrokenPipe) {
      code = 0;
    } else {
      console.error(`crfs: internal error: ${e instanceof Error ? e.stack ?? e.message : e}`);
      code = 70;
    }
  }
  Deno.exit(code);
}
