/**
 * Test helper: random but reproducible tar archives that exercise what real layers contain and
 * what google/crfs got wrong — names that are not UTF-8, long names and link targets (PAX and GNU
 * forms), hardlinks, symlinks, devices, fifos, xattrs, sub-second and pre-1970 mtimes, large ids,
 * files around the chunk size, duplicated names, whiteouts and a `git archive`-style global
 * header.
 *
 * @module
 */
import { concat } from "../../format/bytes.ts";
import {
  encodeHeader,
  END_OF_ARCHIVE,
  type TarHeader,
  tarHeader,
} from "../../format/tar_header.ts";

/** A small seeded PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Options for {@link randomTar}. */
export interface RandomTarOptions {
  seed: number;
  entries?: number;
  /** Sizes around this value are favoured. */
  chunkSize: number;
  format?: "pax" | "gnu";
}

function header(h: Partial<TarHeader> & { name: string; kind: TarHeader["kind"] }): TarHeader {
  return tarHeader({ mtimeSec: 1_700_000_000, ...h });
}

/** Builds a random tar archive in memory. */
export function randomTar(opts: RandomTarOptions): Uint8Array {
  const r = rng(opts.seed);
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)];
  const gnu = opts.format === "gnu";
  const parts: Uint8Array[] = [];
  const dirs: string[] = [""];
  const files: string[] = [];
  const used = new Set<string>();
  const count = opts.entries ?? 120;
  const cs = opts.chunkSize;

  if (!gnu && r() < 0.5) {
    // A global header as `git archive` writes it.
    const body = new TextEncoder().encode("52 comment=0123456789abcdef0123456789abcdef01234567\n");
    const g = new Uint8Array(
      encodeHeader(header({ name: "pax_global_header", kind: "reg", size: body.length })),
    );
    g[156] = 0x67; // 'g'
    fixChecksum(g);
    parts.push(g, pad(body));
  }

  const pieces = [
    "a",
    "etc",
    "usr",
    "lib",
    "name with space",
    "名前",
    "é",
    "x".repeat(60),
    "\udcff\udcfe", // bytes 0xff 0xfe: not UTF-8
    "caf\udce9", // latin-1 é
    ".hidden",
    "-dash",
  ];
  const newName = (dir: string): string => {
    for (;;) {
      let base = `${pick(pieces)}${Math.floor(r() * 1000)}`;
      if (r() < 0.05) base = "y".repeat(120 + Math.floor(r() * 40)); // needs PAX path / GNU longname
      const name = dir ? `${dir}/${base}` : base;
      if (!used.has(name)) {
        used.add(name);
        return name;
      }
    }
  };
  const mtime = () => {
    const x = r();
    if (x < 0.1) return { mtimeSec: 0, mtimeNsec: 0 };
    if (!gnu && x < 0.15) return { mtimeSec: -86400 * 400, mtimeNsec: 250_000_000 };
    if (!gnu && x < 0.4) {
      return { mtimeSec: 1_600_000_000 + Math.floor(r() * 1e8), mtimeNsec: Math.floor(r() * 1e9) };
    }
    return { mtimeSec: 1_600_000_000 + Math.floor(r() * 1e8), mtimeNsec: 0 };
  };
  const owner = () =>
    r() < 0.2
      ? { uid: 3_000_000 + Math.floor(r() * 1000), gid: 5000, uname: "", gname: "" }
      : r() < 0.5
      ? { uid: 1000, gid: 1000, uname: "alice", gname: "staff" }
      : { uid: 0, gid: 0, uname: "root", gname: "root" };
  const size = () => {
    const x = r();
    if (x < 0.15) return 0;
    if (x < 0.3) return cs;
    if (x < 0.4) return cs - 1;
    if (x < 0.5) return cs + 1;
    if (x < 0.6) return 3 * cs + Math.floor(r() * cs);
    return Math.floor(r() * 2 * cs);
  };
  const content = (n: number) => {
    const b = new Uint8Array(n);
    const mode = r();
    for (let i = 0; i < n; i++) b[i] = mode < 0.5 ? (r() * 256) | 0 : (i * 7 + (i >> 10)) & 0x7f;
    return b;
  };
  const push = (h: TarHeader, body?: Uint8Array) => {
    parts.push(encodeHeader(h, { format: gnu ? "gnu" : "pax" }));
    if (body) parts.push(pad(body));
  };

  for (let i = 0; i < count; i++) {
    const x = r();
    const dir = pick(dirs);
    if (x < 0.15) {
      const name = newName(dir);
      dirs.push(name);
      // Sometimes the tar has no entry for a directory (an implicit parent).
      if (r() < 0.8) {
        push(
          header({
            name: name + "/",
            kind: "dir",
            mode: r() < 0.1 ? 0o1777 : 0o755,
            ...owner(),
            ...mtime(),
          }),
        );
      }
    } else if (x < 0.6) {
      const name = newName(dir);
      const n = size();
      const xattrs = new Map<string, Uint8Array>();
      if (!gnu && r() < 0.15) {
        xattrs.set("user.comment", new TextEncoder().encode("hello xattr"));
        xattrs.set("security.capability", new Uint8Array([1, 0, 0, 2, 0xff, 0xfe, 0, 0]));
      }
      push(
        header({
          name,
          kind: "reg",
          size: n,
          mode: r() < 0.1 ? 0o4755 : 0o644,
          ...owner(),
          ...mtime(),
          xattrs,
        }),
        content(n),
      );
      files.push(name);
    } else if (x < 0.7) {
      const target = r() < 0.1
        ? "t".repeat(150)
        : r() < 0.2
        ? "tgt-\udcff"
        : pick(["../x", "/etc/passwd", "a b"]);
      push(
        header({ name: newName(dir), kind: "symlink", mode: 0o777, linkName: target, ...mtime() }),
      );
    } else if (x < 0.8 && files.length > 0) {
      push(header({ name: newName(dir), kind: "hardlink", linkName: pick(files), ...mtime() }));
    } else if (x < 0.85) {
      const kind = pick(["char", "block", "fifo"] as const);
      push(
        header({
          name: newName(dir),
          kind,
          mode: 0o660,
          devMajor: kind === "fifo" ? 0 : 8,
          devMinor: kind === "fifo" ? 0 : 1 + i,
        }),
      );
    } else if (x < 0.9) {
      // OCI whiteouts are plain entries: kept as data.
      const name = `${dir ? dir + "/" : ""}${r() < 0.5 ? ".wh..wh..opq" : `.wh.gone${i}`}`;
      if (!used.has(name)) {
        used.add(name);
        push(header({ name, kind: "reg", mode: 0 }));
      }
    } else if (files.length > 0) {
      // The same name again: the later entry wins.
      const name = pick(files);
      const n = size();
      push(header({ name, kind: "reg", size: n, ...mtime() }), content(n));
    }
  }
  parts.push(END_OF_ARCHIVE);
  return concat(parts);
}

function pad(b: Uint8Array): Uint8Array {
  const n = Math.ceil(b.length / 512) * 512;
  if (n === b.length) return b;
  const out = new Uint8Array(n);
  out.set(b);
  return out;
}

function fixChecksum(block: Uint8Array): void {
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += block[i];
  block.set(new TextEncoder().encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
}

/** Yields bytes in uneven pieces, as a network or pipe would. */
export async function* pieces(bytes: Uint8Array, seed = 1): AsyncGenerator<Uint8Array> {
  const r = rng(seed);
  let o = 0;
  while (o < bytes.length) {
    const n = 1 + Math.floor(r() * 70000);
    yield bytes.slice(o, o + n);
    o += n;
  }
}
