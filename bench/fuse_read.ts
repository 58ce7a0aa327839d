/**
 * Sequential read throughput through the FUSE layer: a synthetic file (default 1 GiB, content
 * generated per READ like a decompressor would) served by the in-memory test filesystem, read
 * with `dd bs=1M` in a child process; compared with a same-size file on tmpfs and on disk.
 * Rows: cold FUSE reads with the kernel's default readahead and with it raised to 1 MiB, a
 * direct-I/O open (every 1 MiB read is one READ request), a warm reread (page cache, keep_cache),
 * and the tmpfs/disk baselines. Prints a table.
 *
 * Usage: deno run -A bench/fuse_read.ts [--size-mib N] [--runs N]
 *
 * @module
 */
import { mount } from "../fs/fuse/mount.ts";
import { ROOT_ID } from "../fs/fuse/ops.ts";
import { MemFs, Pattern } from "../tests/fuse/memfs.ts";

function arg(name: string, def: number): number {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Number(Deno.args[i + 1]) : def;
}

const SIZE = arg("--size-mib", 1024) * 1024 * 1024;
const RUNS = arg("--runs", 2);

async function dd(path: string, extra: string[] = []): Promise<number> {
  const t0 = performance.now();
  const r = await new Deno.Command("dd", {
    args: [`if=${path}`, "of=/dev/null", "bs=1M", "status=none", ...extra],
    stdout: "null",
    stderr: "piped",
  }).output();
  const dt = (performance.now() - t0) / 1000;
  if (!r.success) throw new Error(`dd ${path}: ${new TextDecoder().decode(r.stderr)}`);
  return dt;
}

async function writeFile(path: string, p: Pattern): Promise<void> {
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    const chunk = 8 << 20;
    for (let off = 0; off < p.size; off += chunk) {
      const b = p.slice(off, chunk);
      let done = 0;
      while (done < b.length) done += await f.write(b.subarray(done));
    }
  } finally {
    f.close();
  }
}

async function dropCaches(): Promise<void> {
  await new Deno.Command("sh", { args: ["-c", "sync; echo 3 > /proc/sys/vm/drop_caches"] })
    .output();
}

const rows: [string, number][] = [];
function record(name: string, secs: number): void {
  rows.push([name, secs]);
  console.error(`${name}: ${(SIZE / secs / 1e6).toFixed(0)} MB/s`);
}

const pattern = new Pattern(SIZE, 5);
const tmp = await Deno.makeTempDir({ prefix: "crfs-bench-" });
const shmFile = `/dev/shm/crfs-bench-${Deno.pid}`;
const diskFile = `${tmp}/disk-file`;
try {
  for (
    const [label, readAheadKb] of [["kernel default readahead", 0], [
      "readahead 1 MiB",
      1024,
    ]] as const
  ) {
    const fs = new MemFs();
    fs.addFile(ROOT_ID, "big", pattern);
    fs.addFile(ROOT_ID, "direct", pattern, { directIo: true });
    const m = await mount(`${tmp}/mnt`, fs, { readAheadKb });
    try {
      const ra = (await Deno.readTextFile(`/sys/class/bdi/${m.device}/read_ahead_kb`)).trim();
      for (let i = 0; i < RUNS; i++) {
        await dropCaches();
        record(`fuse cold, ${label} (${ra} KiB)`, await dd(`${m.mountpoint}/big`));
      }
      if (readAheadKb) {
        for (let i = 0; i < RUNS; i++) {
          record("fuse direct_io, 1 MiB READs", await dd(`${m.mountpoint}/direct`));
        }
        for (let i = 0; i < RUNS; i++) {
          record("fuse warm (page cache)", await dd(`${m.mountpoint}/big`));
        }
      }
    } finally {
      await m.unmount();
    }
  }
  await writeFile(shmFile, pattern);
  for (let i = 0; i < RUNS; i++) record("tmpfs", await dd(shmFile));
  await Deno.remove(shmFile);
  await writeFile(diskFile, pattern);
  for (let i = 0; i < RUNS; i++) {
    await dropCaches();
    record("disk cold", await dd(diskFile));
  }
  for (let i = 0; i < RUNS; i++) record("disk warm (page cache)", await dd(diskFile));
} finally {
  await Deno.remove(shmFile).catch(() => {});
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
}

const w = Math.max(...rows.map(([n]) => n.length));
console.log(`\nsequential read of ${SIZE / (1 << 20)} MiB with dd bs=1M\n`);
console.log(`${"source".padEnd(w)} | ${"MB/s".padStart(7)} | ${"seconds".padStart(7)}`);
console.log(`${"-".repeat(w)}-|-${"-".repeat(7)}-|-${"-".repeat(7)}`);
for (const [name, secs] of rows) {
  console.log(
    `${name.padEnd(w)} | ${(SIZE / secs / 1e6).toFixed(0).padStart(7)} | ${
      secs.toFixed(3).padStart(7)
    }`,
  );
}
