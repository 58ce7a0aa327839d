/**
 * The read path of a gzip layer loads nothing of Node's compatibility layer until it needs it:
 * no `node:` module is in the static import graph of the reader, the decode worker or the
 * decoded-chunk cache (`node:zlib` and `node:crypto` come by dynamic import, when libdeflate
 * cannot inflate a member or a hash is incremental or large). And the TOC decodes to the same
 * bytes and errors whichever way it goes: through libdeflate, or through `node:zlib` for a TOC of
 * two members, and again later, synchronously.
 *
 * @module
 */
import assert from "node:assert/strict";
import { gzipMember } from "../../format/gzip.ts";
import type { TOCLocation } from "../../format/layer_format.ts";
import { GZIP_STARGZ } from "../../format/stargz_layer.ts";
import { encodeHeader, tarHeader } from "../../format/tar_header.ts";
import { TOC_TAR_NAME } from "../../format/toc.ts";

interface InfoDependency {
  specifier: string;
  code?: { specifier: string };
  isDynamic?: boolean;
}
interface InfoModule {
  specifier: string;
  dependencies?: InfoDependency[];
}

/** Every `node:` module `root` loads by static imports (type-only imports not counted). */
async function staticNodeImports(root: string): Promise<string[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", new URL(root, import.meta.url).pathname],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const info = JSON.parse(new TextDecoder().decode(out.stdout));
  const modules = new Map<string, InfoModule>(
    (info.modules as InfoModule[]).map((m) => [m.specifier, m]),
  );
  const found = new Set<string>();
  const seen = new Set<string>();
  const walk = (specifier: string, chain: string) => {
    if (seen.has(specifier)) return;
    seen.add(specifier);
    for (const d of modules.get(specifier)?.dependencies ?? []) {
      if (d.isDynamic || !d.code) continue;
      const target = info.redirects?.[d.code.specifier] ?? d.code.specifier;
      if (target.startsWith("node:")) found.add(`${target} (${chain} → ${d.specifier})`);
      else walk(target, `${chain} → ${d.specifier}`);
    }
  };
  walk(info.roots[0], root);
  return [...found];
}

Deno.test("the reader, the decode worker and the decoded cache import no node: module statically", async () => {
  for (
    const root of [
      "../../format/reader.ts",
      "../../format/decode_worker.ts",
      "../../fs/decoded_cache.ts",
    ]
  ) {
    assert.deepEqual(await staticNodeImports(root), [], root);
  }
  // The check sees node: imports where there are some.
  assert.ok(
    (await staticNodeImports("../../format/gzip.ts")).some((s) => s.startsWith("node:zlib")),
  );
});

/** A compressed stargz TOC: the tar entry `stargz.index.json` holding `json`, in `members`. */
function tocBlob(json: Uint8Array, members: 1 | 2): Uint8Array {
  const header = encodeHeader(tarHeader({ name: TOC_TAR_NAME, size: json.length }));
  const padded = new Uint8Array(header.length + json.length + 1024);
  padded.set(header);
  padded.set(json, header.length);
  if (members === 1) return gzipMember([padded]);
  const a = gzipMember([padded.subarray(0, 700)]);
  const b = gzipMember([padded.subarray(700)]);
  const both = new Uint8Array(a.length + b.length);
  both.set(a);
  both.set(b, a.length);
  return both;
}

Deno.test("a stargz TOC decodes the same through libdeflate and through node:zlib, and again", async () => {
  const json = new TextEncoder().encode(
    JSON.stringify({ version: 1, entries: [{ name: "é/ä", type: "dir" }], pad: "x".repeat(5000) }),
  );
  const loc = { format: "estargz", start: 0, end: 0 } as unknown as TOCLocation;
  for (const members of [1, 2] as const) {
    const blob = tocBlob(json, members);
    assert.deepEqual(await GZIP_STARGZ.decodeTOC(blob, loc, 1 << 20), json, `${members} members`);
    assert.deepEqual(GZIP_STARGZ.decodeTOCAgain(blob, loc, 1 << 20), json, `${members} again`);
    // Too big for the limit: refused either way, with node:zlib's message.
    await assert.rejects(
      GZIP_STARGZ.decodeTOC(blob, loc, 100),
      /cannot decompress the TOC: gzip: member decompresses to more than/,
    );
    const crc = blob.slice();
    crc[crc.length - 8] ^= 1;
    await assert.rejects(
      GZIP_STARGZ.decodeTOC(crc, loc, 1 << 20),
      /cannot decompress the TOC: gzip: CRC mismatch/,
    );
    const bad = blob.slice();
    bad.fill(0xff, 12, 60);
    await assert.rejects(
      GZIP_STARGZ.decodeTOC(bad, loc, 1 << 20),
      /cannot decompress the TOC: gzip: corrupt deflate data/,
    );
  }
});
