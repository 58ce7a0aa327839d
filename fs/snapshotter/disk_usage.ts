/**
 * Disk usage of a directory tree as containerd counts it for `snapshot usage`: allocated bytes
 * (blocks × 512) and the number of distinct inodes, hardlinks counted once, symlinks not
 * followed (a remote snapshot's symlink into the FUSE tree costs one inode, nothing more).
 *
 * @module
 */

/** Bytes and inodes a tree takes on disk. */
export interface Usage {
  size: number;
  inodes: number;
}

/** Walks `dir` (not following symlinks); a missing directory uses nothing. */
export async function diskUsage(dir: string): Promise<Usage> {
  const seen = new Set<string>();
  let size = 0;
  const visit = async (path: string) => {
    let st: Deno.FileInfo;
    try {
      st = await Deno.lstat(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return;
      throw e;
    }
    const id = `${st.dev}:${st.ino}`;
    if (!seen.has(id)) {
      seen.add(id);
      size += (st.blocks ?? Math.ceil(st.size / 512)) * 512;
    }
    if (st.isDirectory) {
      for await (const e of Deno.readDir(path)) await visit(`${path}/${e.name}`);
    }
  };
  await visit(dir);
  return { size, inodes: seen.size };
}
