/**
 * Benchmark: open a blob whose TOC has 50,000 entries and stat every entry, beside GNU tar
 * listing the same blob (`tar -tvzf`, which must decompress it all) in the same run.
 *
 * @module
 */
import { encodeHeader, END_OF_ARCHIVE, type TarHeader, tarHeader } from "../format/tar_header.ts";
import { FileSource } from "../format/range_source.ts";
import { StargzReader } from "../format/reader.ts";
import { writeEStargz } from "../format/writer.ts";
import { best, OUT, table, timeCommand } from "./common.ts";

const ENTRIES = 50_000;

/** Writes (or reuses) an eStargz blob with `ENTRIES` TOC entries; returns its path. */
export async function bigTocBlob(): Promise<string> {
  await Deno.mkdir(OUT, { recursive: true });
  const path = `${OUT}toc50k.estargz`;
  try {
    await Deno.stat(path);
    return path;
  } catch { /* make it */ }
  const parts: Uint8Array[] = [];
  const h = (name: string, kind: TarHeader["kind"], size = 0): TarHeader =>
    tarHeader({
      name,
      kind,
      size,
      mode: kind === "dir" ? 0o755 : 0o644,
      uid: 1000,
      gid: 1000,
      mtimeSec: 1_700_000_000,
      uname: "user",
      gname: "user",
    });
  let n = 0;
  for (let d = 0; n < ENTRIES; d++) {
    parts.push(encodeHeader(h(`dir${d}/`, "dir")));
    n++;
    for (let f = 0; f < 99 && n < ENTRIES; f++, n++) {
      const body = new TextEncoder().encode(`file ${d}/${f}\n`.repeat(3));
      parts.push(encodeHeader(h(`dir${d}/file-${f}.txt`, "reg", body.length)));
      const padded = new Uint8Array(Math.ceil(body.length / 512) * 512);
      padded.set(body);
      parts.push(padded);
    }
  }
  parts.push(END_OF_ARCHIVE);
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  async function* input() {
    yield* parts;
  }
  await writeEStargz(input(), async (b) => {
    let o = 0;
    while (o < b.length) o += await f.write(b.subarray(o));
  });
  f.close();
  return path;
}

/** Opens the blob and stats every node; returns seconds and the count. */
async function crfsOpenStat(
  path: string,
): Promise<{ secs: number; count: number; requests: number }> {
  const t = performance.now();
  const src = await FileSource.open(path);
  const r = await StargzReader.open(src);
  let count = 0;
  let bytes = 0;
  const walk = (node: typeof r.root) => {
    for (const child of r.children(node).values()) {
      // A node is its own attribute record (FileAttr): "stat" reads its fields.
      bytes += child.size + child.mode + child.mtimeSec;
      count++;
      if (child.type === "dir") walk(child);
    }
  };
  walk(r.root);
  const secs = (performance.now() - t) / 1000;
  if (bytes < 0) throw new Error("impossible"); // keeps the field reads
  src.close();
  return { secs, count, requests: r.openRequests };
}

if (import.meta.main) {
  const path = await bigTocBlob();
  const runs = Number(Deno.env.get("BENCH_RUNS") ?? 3);
  let res = await crfsOpenStat(path);
  for (let i = 1; i < runs; i++) {
    const r = await crfsOpenStat(path);
    if (r.secs < res.secs) res = r;
  }
  const tarSecs = await best(runs, () => timeCommand("tar", ["-tvzf", path]));
  table(`open + stat every entry: ${res.count} entries (${path}), best of ${runs}`, [
    "reader",
    "seconds",
    "range reads",
  ], [
    ["crfs StargzReader (in process)", res.secs.toFixed(3), res.requests],
    ["GNU tar -tvzf (decompresses everything)", tarSecs.toFixed(3), "whole blob"],
  ]);
}
