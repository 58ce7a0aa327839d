/**
 * The command table `crfs --help` lists (cmd/mod.ts) against the commands its loaders import:
 * the same names and summaries, in the same order, and `crfs --help` lists every one without
 * loading any command module.
 *
 * @module
 */
import assert from "node:assert/strict";
import { commands } from "../../cmd/mod.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

Deno.test("every table entry loads the command of its name and summary", async () => {
  assert.ok(commands.length >= 8);
  assert.equal(new Set(commands.map((c) => c.name)).size, commands.length);
  for (const entry of commands) {
    const command = await entry.load();
    assert.equal(command.name, entry.name);
    assert.equal(command.summary, entry.summary);
    assert.ok(command.help.includes(`crfs ${entry.name}`), `${entry.name}: help names it`);
  }
});

Deno.test("crfs --help lists every command with its summary; a command's --help is its own", async () => {
  const run = async (args: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MAIN, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: out.code, text: new TextDecoder().decode(out.stdout) };
  };
  const help = await run(["--help"]);
  assert.equal(help.code, 0);
  for (const c of commands) assert.ok(help.text.includes(`  ${c.name.padEnd(9)} ${c.summary}\n`));
  const mount = await run(["mount", "--help"]);
  assert.equal(mount.code, 0);
  assert.equal(mount.text, (await commands.find((c) => c.name === "mount")!.load()).help);
  const unknown = await run(["no-such-command"]);
  assert.equal(unknown.code, 2);
});
