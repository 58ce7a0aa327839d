/**
 * The tree real GNU tar extracts from a layer tar, as root (`tar -x --same-owner -p --xattrs
 * --xattrs-include='*' --numeric-owner`), described by `find`, `stat`, `sha256sum` and
 * `getfattr` — an oracle that shares no code with crfs's own tar reader. Names are the exact
 * bytes on disk, decoded like crfs carries them (surrogate-escaped where not UTF-8).
 *
 * ```ts
 * const tree = await extractWithGnuTar(tarBytes);
 * tree.get("etc/hello"); // { type: "reg", mode: 0o644, sha256: "…", … }
 * ```
 *
 * @module
 */
import type { FileAttr } from "../../format/file_attr.ts";
import { decodeName } from "../../format/names.ts";

/**
 * What `tar -x` left on disk for one path (relative, no leading `./`): the attributes crfs
 * serves for it (owners by number only), its content digest, and whether tar made it itself.
 */
export interface ExtractedNode extends Omit<FileAttr, "userName" | "groupName"> {
  /** Hex sha256 of the content (regular files). */
  sha256?: string;
  /**
   * True when tar made the directory itself because the archive had no entry for it (its
   * mtime is the extraction's, not the archive's).
   */
  implicit: boolean;
}

const TYPES: Record<string, ExtractedNode["type"]> = {
  f: "reg",
  d: "dir",
  l: "symlink",
  c: "char",
  b: "block",
  p: "fifo",
  s: "socket",
};

async function run(cmd: string, args: string[], cwd?: string): Promise<Uint8Array> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return out.stdout;
}

/** Splits NUL-terminated fields. */
function fields(bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let start = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] === 0) {
      out.push(bytes.subarray(start, i));
      start = i + 1;
    }
  }
  return out;
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const rel = (b: Uint8Array) => decodeName(b[0] === 0x2e && b[1] === 0x2f ? b.subarray(2) : b);

/** Undoes getfattr's `\ooo` escapes in a file name line. */
function unescapeOctal(s: string): Uint8Array {
  const bytes: number[] = [];
  const raw = new TextEncoder().encode(s);
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] === 0x5c && i + 3 < raw.length) {
      const oct = String.fromCharCode(raw[i + 1], raw[i + 2], raw[i + 3]);
      if (/^[0-7]{3}$/.test(oct)) {
        bytes.push(parseInt(oct, 8));
        i += 3;
        continue;
      }
    }
    bytes.push(raw[i]);
  }
  return new Uint8Array(bytes);
}

function hexBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * Extracts `tar` (uncompressed) with GNU tar into a fresh temporary directory, describes every
 * path below it, and removes the directory again.
 */
export async function extractWithGnuTar(tar: Uint8Array): Promise<Map<string, ExtractedNode>> {
  const work = await Deno.makeTempDir({ prefix: "crfs-tar-x-" });
  try {
    const dir = `${work}/root`;
    await Deno.mkdir(dir);
    await Deno.writeFile(`${work}/layer.tar`, tar);
    // Directories tar creates on its own get the current time; those made before `started`
    // by the archive's own entries carry the archive's times.
    const started = Math.floor(Date.now() / 1000) - 1;
    await run("tar", [
      "-xf",
      `${work}/layer.tar`,
      "--same-owner",
      "-p",
      "--xattrs",
      "--xattrs-include=*",
      "--numeric-owner",
      "-C",
      dir,
    ]);
    const listing = fields(
      await run("find", [
        ".",
        "-mindepth",
        "1",
        "-printf",
        "%P\\0%y\\0%m\\0%U\\0%G\\0%s\\0%T@\\0%l\\0%n\\0",
      ], dir),
    );
    const tree = new Map<string, ExtractedNode>();
    for (let i = 0; i + 9 <= listing.length; i += 9) {
      const f = listing.slice(i, i + 9);
      const [sec, frac = "0"] = text(f[6]).split(".");
      const type = TYPES[text(f[1])];
      if (!type) throw new Error(`find: unknown type ${text(f[1])}`);
      const node: ExtractedNode = {
        type,
        mode: parseInt(text(f[2]), 8),
        uid: Number(text(f[3])),
        gid: Number(text(f[4])),
        size: Number(text(f[5])),
        mtimeSec: Number(sec),
        mtimeNsec: Number(frac.padEnd(9, "0").slice(0, 9)),
        linkName: type === "symlink" ? decodeName(f[7]) : "",
        nlink: Number(text(f[8])),
        devMajor: 0,
        devMinor: 0,
        xattrs: new Map(),
        implicit: false,
      };
      if (type === "dir" && node.mtimeSec >= started) node.implicit = true;
      tree.set(decodeName(f[0]), node);
    }
    const devices = fields(
      await run("find", [".", "(", "-type", "c", "-o", "-type", "b", ")", "-print0"], dir),
    );
    if (devices.length > 0) {
      const st = fields(
        await run("stat", ["--printf", "%n\\0%t\\0%T\\0", ...devices.map(text)], dir),
      );
      // Device names are plain ASCII in the fixtures; stat takes them as strings.
      for (let i = 0; i + 3 <= st.length; i += 3) {
        const node = tree.get(rel(st[i]))!;
        node.devMajor = parseInt(text(st[i + 1]), 16);
        node.devMinor = parseInt(text(st[i + 2]), 16);
      }
    }
    const sums = fields(
      await run("bash", [
        "-c",
        "find . -type f -print0 | xargs -0 -r sha256sum --zero",
      ], dir),
    );
    for (const line of sums) {
      const hash = text(line.subarray(0, 64));
      const name = rel(line.subarray(66));
      const node = tree.get(name);
      if (!node) throw new Error(`sha256sum: unknown file ${JSON.stringify(name)}`);
      node.sha256 = hash;
    }
    const attrs = text(
      await run("bash", ["-c", "getfattr -R -P -h -d -m - -e hex . 2>/dev/null || true"], dir),
    );
    let current: ExtractedNode | undefined;
    for (const line of attrs.split("\n")) {
      if (line.startsWith("# file: ")) {
        const b = unescapeOctal(line.slice(8));
        current = tree.get(rel(b));
      } else if (current && line.includes("=0x")) {
        const eq = line.indexOf("=0x");
        current.xattrs.set(line.slice(0, eq), hexBytes(line.slice(eq + 3)));
      } else if (current && /^[^=]+=?$/.test(line) && line !== "") {
        current.xattrs.set(line.replace(/=$/, ""), new Uint8Array());
      }
    }
    return tree;
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}
