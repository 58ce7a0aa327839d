/**
 * fs/startup_prefetch.ts over an eStargz layer of this machine's programs and libraries (the
 * podman tests' base layer): the config's program found on its PATH through symlinks, its loader
 * and libraries, the fixed /etc files, all read ahead so that the container's reads make no
 * request; nothing for a layer with prioritized files or without the program.
 *
 * @module
 */
import assert from "node:assert/strict";
import { BytesSource } from "../../format/range_source.ts";
import { StargzReader } from "../../format/reader.ts";
import { writeEStargz } from "../../format/writer.ts";
import { prefetchStartup } from "../../fs/startup_prefetch.ts";
import { layerTar } from "../cmd/helpers.ts";
import { baseLayer } from "../podman/helpers.ts";

async function layerBlob(prioritized?: string[]): Promise<Uint8Array> {
  const work = await Deno.makeTempDir({ prefix: "crfs-startup-" });
  try {
    const tar = await layerTar(await baseLayer(), work);
    const parts: Uint8Array[] = [];
    await writeEStargz(
      (async function* () {
        yield tar;
      })(),
      (b) => {
        parts.push(b.slice());
      },
      { prioritized, tempDir: work },
    );
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) out.set(p, (at += p.length) - p.length);
    return out;
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}

Deno.test("startup prefetch: the program on PATH, its loader and libraries, the /etc files", async () => {
  const reader = await StargzReader.open(new BytesSource(await layerBlob()));
  const got = await prefetchStartup(reader, {
    config: { Cmd: ["sh", "-c", "true"], Env: ["PATH=/nowhere:/bin"] },
  });
  // bin → usr/bin, lib64 → usr/lib64 are symlinks in the layer.
  assert.ok(got.files.includes("usr/bin/sh"), JSON.stringify(got.files));
  assert.ok(got.files.some((f) => f.endsWith("/libc.so.6")), JSON.stringify(got.files));
  assert.ok(got.files.some((f) => /ld-linux-x86-64\.so\.2$/.test(f)), JSON.stringify(got.files));
  assert.ok(got.files.includes("etc/passwd") && got.files.includes("etc/group"));
  assert.ok(!got.files.includes("usr/bin/cat"), "only what starting the program loads");
  assert.deepEqual(new Set(got.files).size, got.files.length, "each file once");
  const sum = got.files.reduce((n, f) => n + reader.lookup(f)!.size, 0);
  assert.deepEqual(got.bytes, sum);
  // What the container then reads comes from the reader's caches.
  const before = reader.contentRequests;
  for (const f of got.files) await reader.readFile(reader.lookup(f)!);
  assert.deepEqual(reader.contentRequests, before, "no request after the prefetch");
  // The Entrypoint wins over Cmd; an absolute path needs no PATH.
  const ep = await prefetchStartup(
    await StargzReader.open(new BytesSource(await layerBlob())),
    { config: { Entrypoint: ["/usr/bin/find"], Cmd: ["sh"] } },
  );
  assert.ok(ep.files.includes("usr/bin/find") && !ep.files.includes("usr/bin/sh"), ep.files.join());
});

Deno.test("startup prefetch: nothing for a layer with prioritized files; only /etc without the program", async () => {
  const landmarked = await StargzReader.open(new BytesSource(await layerBlob(["etc/passwd"])));
  assert.deepEqual(
    (await prefetchStartup(landmarked, { config: { Cmd: ["sh"] } })).files,
    [],
  );
  const reader = await StargzReader.open(new BytesSource(await layerBlob()));
  const got = await prefetchStartup(reader, { config: { Cmd: ["/no/such/program"] } });
  assert.deepEqual(got.files, ["etc/passwd", "etc/group"]);
  assert.deepEqual((await prefetchStartup(reader, {})).files, ["etc/passwd", "etc/group"]);
});
