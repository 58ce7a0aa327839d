/**
 * The systemd units in units/: `systemd-analyze verify` accepts them without a warning, and the
 * commands their ExecStart= lines run work for real: started as the unit would start them
 * (paths of the unit swapped for temp dirs, `/usr/local/bin/crfs` for this checkout), they
 * mount and serve; SIGTERM (the unit's KillSignal) unmounts and exits 0; after a SIGKILL
 * leaves a stale mount, starting again (what Restart=on-failure does) clears it and serves.
 */
import assert from "node:assert/strict";
import { denoDir } from "../helpers/deno_dir.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const UNITS = `${ROOT}units`;
const DENO = Deno.execPath();

interface Unit {
  execStart: string[];
  env: Record<string, string>;
  killSignal: string;
  text: string;
}

async function readUnit(name: string): Promise<Unit> {
  const text = await Deno.readTextFile(`${UNITS}/${name}`);
  const lines = text.split("\n").filter((l) => !l.startsWith("#"));
  const exec = lines.filter((l) => l.startsWith("ExecStart="));
  assert.equal(exec.length, 1, `${name} has one ExecStart=`);
  const env: Record<string, string> = {};
  for (const l of lines.filter((l) => l.startsWith("Environment="))) {
    for (const kv of l.slice("Environment=".length).split(/\s+/)) {
      const i = kv.indexOf("=");
      env[kv.slice(0, i)] = kv.slice(i + 1);
    }
  }
  const kill = lines.find((l) => l.startsWith("KillSignal="))?.slice("KillSignal=".length) ??
    "SIGTERM";
  return {
    execStart: exec[0].slice("ExecStart=".length).split(/\s+/),
    env,
    killSignal: kill,
    text,
  };
}

/** A `crfs` program that runs this checkout. */
async function crfsWrapper(dir: string): Promise<string> {
  const path = `${dir}/crfs`;
  await Deno.writeTextFile(path, `#!/bin/sh\nexec ${DENO} run -A ${ROOT}main.ts "$@"\n`, {
    mode: 0o755,
  });
  return path;
}

Deno.test("units: systemd-analyze verify accepts them without warnings", async () => {
  const dir = await Deno.makeTempDir({ prefix: "crfs-units-" });
  try {
    const wrapper = await crfsWrapper(dir);
    const names: string[] = [];
    for await (const e of Deno.readDir(UNITS)) if (e.name.endsWith(".service")) names.push(e.name);
    assert.ok(names.includes("crfs-store.service") && names.includes("crfs-mount@.service"));
    const args: string[] = [];
    for (const n of names.sort()) {
      const text = await Deno.readTextFile(`${UNITS}/${n}`);
      await Deno.writeTextFile(`${dir}/${n}`, text.replaceAll("/usr/local/bin/crfs", wrapper));
      args.push(`${dir}/${n.replace("@.service", "@crfs.service")}`);
    }
    const out = await new Deno.Command("systemd-analyze", {
      args: ["verify", ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, err);
    assert.equal(err.trim(), "", "no warnings");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

function mounted(path: string): boolean {
  const info = Deno.readTextFileSync("/proc/self/mountinfo");
  return info.split("\n").some((l) => l.split(" ")[4] === path);
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 60_000) {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function runUnit(
  unit: Unit,
  swap: Record<string, string>,
  wrapper: string,
): { child: Deno.ChildProcess; stderr: () => string } {
  const argv = unit.execStart.map((a) => a === "/usr/local/bin/crfs" ? wrapper : swap[a] ?? a);
  assert.ok(!argv.some((a) => a.startsWith("/var/") || a.includes("%")), argv.join(" "));
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    env: { ...unit.env, HOME: swap.HOME, DENO_DIR: denoDir() },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let text = "";
  (async () => {
    for await (const c of child.stderr.pipeThrough(new TextDecoderStream())) text += c;
  })();
  return { child, stderr: () => text };
}

for (
  const [name, target, check] of [
    ["crfs-store.service", "/var/lib/crfs/store", async (dir: string) => {
      // An empty layer store: listing works and finds nothing.
      const names = [];
      for await (const e of Deno.readDir(dir)) names.push(e.name);
      return names.length === 0;
    }],
    ["crfs-mount@.service", "%f", async (dir: string) => {
      const status = JSON.parse(await Deno.readTextFile(`${dir}/crfs-status.json`));
      return typeof status === "object" && status !== null;
    }],
  ] as const
) {
  Deno.test(`units: ${name} ExecStart serves, stops on its KillSignal, restarts after SIGKILL`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "crfs-unitrun-" });
    const children: Deno.ChildProcess[] = [];
    const mnt = `${dir}/mnt`;
    try {
      await Deno.mkdir(mnt);
      await Deno.mkdir(`${dir}/home`);
      const unit = await readUnit(name);
      assert.equal(unit.killSignal, "SIGTERM");
      assert.match(unit.text, /^Restart=on-failure$/m);
      const wrapper = await crfsWrapper(dir);
      const swap = { [target]: mnt, "/var/cache/crfs": `${dir}/cache`, HOME: `${dir}/home` };

      const first = runUnit(unit, swap, wrapper);
      children.push(first.child);
      await until(`${name} to mount`, () => mounted(mnt));
      assert.ok(await check(mnt), "it serves");
      first.child.kill(unit.killSignal as Deno.Signal);
      const st = await first.child.status;
      assert.equal(st.code, 0, first.stderr());
      assert.ok(!mounted(mnt), "unmounted on SIGTERM");
      assert.match(first.stderr(), /unmounted/);

      // Killed hard: the mount is left stale; the next start clears it.
      const second = runUnit(unit, swap, wrapper);
      children.push(second.child);
      await until(`${name} to mount again`, () => mounted(mnt));
      second.child.kill("SIGKILL");
      await second.child.status;
      assert.ok(mounted(mnt), "a SIGKILL leaves the mount behind");
      const third = runUnit(unit, swap, wrapper);
      children.push(third.child);
      await until(`${name} to serve after the stale mount`, async () => {
        try {
          return await check(mnt);
        } catch {
          return false;
        }
      });
      third.child.kill("SIGTERM");
      assert.equal((await third.child.status).code, 0, third.stderr());
      assert.ok(!mounted(mnt), "unmounted");
    } finally {
      for (const c of children) {
        try {
          c.kill("SIGKILL");
        } catch { /* exited */ }
        await c.status.catch(() => {});
      }
      if (mounted(mnt)) {
        await new Deno.Command("fusermount3", { args: ["-uz", mnt] }).output().catch(() => {});
        await new Deno.Command("umount", { args: ["-l", mnt] }).output().catch(() => {});
      }
      await Deno.remove(dir, { recursive: true });
    }
  });
}
