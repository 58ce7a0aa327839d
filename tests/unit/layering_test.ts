/**
 * The import layering of crfs, checked on every source file: data flows one way, driver → range
 * source → reader → node tree → FUSE, so `format/` imports only itself, `drivers/` only
 * `format/` and itself, `convert/` only `drivers/`, `format/` and itself, `fs/` (with `fs/fuse/`
 * and `fs/snapshotter/`) only `drivers/`, `format/` and itself, and `cmd/` anything but
 * `main.ts`. `fs/fuse/` is the bottom of the tree side: it imports nothing of crfs outside
 * `fs/fuse/` but `format/file_attr.ts` and `format/timers.ts`.
 *
 * @module
 */
import assert from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url).pathname;

/** Which top-level areas each area may import from. */
const ALLOWED: Record<string, string[]> = {
  "format": ["format"],
  "drivers": ["drivers", "format"],
  "convert": ["convert", "drivers", "format"],
  "fs": ["fs", "drivers", "format"],
  "fs/fuse": ["fs/fuse", "format/file_attr.ts", "format/timers.ts"],
  "cmd": ["cmd", "convert", "fs", "drivers", "format"],
};

function areaOf(rel: string): string | undefined {
  if (rel.startsWith("fs/fuse/")) return "fs/fuse";
  const top = rel.split("/")[0];
  return top in ALLOWED && rel.includes("/") ? top : undefined;
}

async function* sources(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(ROOT + dir)) {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory) yield* sources(rel);
    else if (e.name.endsWith(".ts")) yield rel;
  }
}

function normalize(path: string): string {
  const out: string[] = [];
  for (const part of path.split("/")) {
    if (part === "..") out.pop();
    else if (part !== ".") out.push(part);
  }
  return out.join("/");
}

Deno.test("imports follow the layering: no import runs back up", async () => {
  const violations: string[] = [];
  let files = 0;
  for (const top of ["format", "drivers", "convert", "fs", "cmd"]) {
    for await (const rel of sources(top)) {
      files++;
      const area = areaOf(rel)!;
      const text = await Deno.readTextFile(ROOT + rel);
      const dir = rel.slice(0, rel.lastIndexOf("/"));
      for (const m of text.matchAll(/^\s*(?:import|export)\b[^;]*?from\s+"(\.[^"]+)"/gms)) {
        const target = normalize(`${dir}/${m[1]}`);
        const ok = ALLOWED[area].some((a) => target === a || target.startsWith(`${a}/`));
        if (!ok) violations.push(`${rel} imports ${target}`);
      }
      for (const m of text.matchAll(/import\(\s*"(\.[^"]+)"\s*\)/g)) {
        const target = normalize(`${dir}/${m[1]}`);
        const ok = ALLOWED[area].some((a) => target === a || target.startsWith(`${a}/`));
        if (!ok) violations.push(`${rel} imports ${target} dynamically`);
      }
    }
  }
  assert.deepEqual(violations, []);
  // The walk really saw the tree (a moved folder must not make this pass vacuously).
  if (files < 80) throw new Error(`only ${files} source files found under ${ROOT}`);
});
