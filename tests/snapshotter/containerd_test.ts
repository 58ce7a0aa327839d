/**
 * `crfs snapshotter` under Debian's containerd 1.6 (a plain process, crfs as a proxy plugin)
 * against docker-registry: `ctr-remote image rpull` of an eStargz image downloads no layer blob
 * (access log), `ctr run` gives what the same image gives through containerd's own overlayfs
 * snapshotter, an ordinary gzip image works through the same snapshotter (unpacked by
 * containerd), snapshot listing, usage and removal (also by containerd's garbage collector),
 * and a container's snapshot survives restarts of crfs and containerd.
 *
 * @module
 */
import { assert, assertEquals } from "../cmd/helpers.ts";
import type { AccessLogEntry } from "../helpers/registry.ts";
import { imageFixture } from "./fixture.ts";
import { Containerd, mountsUnder, startSnapshotter, waitFor } from "./helpers.ts";

/** What the test command prints: types, modes, sizes, link counts and targets, contents, id. */
const SCRIPT = "cd / && find etc data opaque pair usr/bin -type d -printf '%p %m %n\\n' | sort; " +
  "find etc data opaque pair usr/bin ! -type d -printf '%p %y %m %s %n %l\\n' | sort; " +
  "sha256sum /data/big.bin /usr/bin/tool /etc/hello.txt; id; cat /etc/hello.txt; " +
  "test -e /etc/gone.txt || echo gone; test -e /dir-gone || echo dir-gone";

/** Layer blob GETs that were not ranged reads (whole downloads). */
function wholeBlobGets(log: AccessLogEntry[], layers: string[]): AccessLogEntry[] {
  return log.filter((e) =>
    e.method === "GET" && e.status === 200 && layers.some((d) => e.path.endsWith(`/blobs/${d}`))
  );
}

function layerBytes(log: AccessLogEntry[], layers: string[]): number {
  return log.filter((e) => e.method === "GET" && layers.some((d) => e.path.endsWith(`/blobs/${d}`)))
    .reduce((a, e) => a + e.bytes, 0);
}

/** The crfs snapshotter's own table (its metadata file). */
async function crfsTable(
  root: string,
): Promise<Record<string, { kind: string; labels: Record<string, string> }>> {
  return JSON.parse(await Deno.readTextFile(`${root}/metadata.json`)).snapshots;
}

async function tempDir(): Promise<string & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "crfs-snap-" });
  return Object.assign(dir, {
    [Symbol.asyncDispose]: async () => {
      for (const m of await mountsUnder(dir)) {
        await new Deno.Command("umount", { args: ["-l", m] }).output();
      }
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  }) as string & AsyncDisposable;
}

Deno.test("containerd: rpull through crfs downloads no layer, ctr run matches overlayfs, gzip images unpack, snapshots list, usage and removal", async () => {
  await using f = await imageFixture();
  await using dir = await tempDir();
  const root = `${dir}/root`;
  const sock = `${dir}/crfs.sock`;
  await using sn = await startSnapshotter(root, sock);
  await using c = await Containerd.start({ crfsSocket: sock });

  // Lazy pull: no layer blob is downloaded, only ranged reads of footers and TOCs.
  f.reg.clearLog();
  const pull = await c.ctrRemote([
    "image",
    "rpull",
    "--plain-http",
    "--snapshotter",
    "crfs",
    f.estargz,
  ]);
  assertEquals(pull.code, 0, `rpull failed:\n${pull.out}${pull.err}\n${sn.stderr()}`);
  const log = await f.reg.accessLog();
  assertEquals(wholeBlobGets(log, f.estargzLayers), [], "no layer blob downloaded");
  const total = f.estargzLayers.reduce((a, d) => a + f.sizes.get(d)!, 0);
  const fetched = layerBytes(log, f.estargzLayers);
  assert(fetched < total / 4, `rpull read ${fetched} of ${total} layer bytes`);
  const table = await crfsTable(root);
  const remote = Object.entries(table).filter(([, r]) =>
    r.labels["containerd.io/snapshot/remote"] === "remote snapshot"
  );
  assertEquals(remote.length, f.estargzLayers.length, "one remote snapshot per layer");
  assert(remote.every(([, r]) => r.kind === "committed"));
  const listed = await c.ctrOk(["snapshot", "--snapshotter", "crfs", "ls"]);
  for (const [name] of remote) assert(listed.out.includes(name), `ctr snapshot ls shows ${name}`);

  // ctr run through crfs: the same output as the image pulled with overlayfs.
  const lazy = await c.ctrOk(
    ["run", "--rm", "--snapshotter", "crfs", f.estargz, "lazy1", "/bin/sh", "-c", SCRIPT],
  );
  assert(lazy.out.includes("hello again") && lazy.out.includes("gone\ndir-gone"), lazy.out);
  await c.ctrOk(["image", "pull", "--plain-http", f.gzip]);
  const plain = await c.ctrOk(["run", "--rm", f.gzip, "plain1", "/bin/sh", "-c", SCRIPT]);
  assertEquals(lazy.out, plain.out, "crfs run = overlayfs run");

  // An ordinary gzip image through crfs: containerd downloads and unpacks it into crfs's
  // overlayfs snapshots (the remote check declines it).
  f.reg.clearLog();
  const gz = await c.ctrRemote(["image", "rpull", "--plain-http", "--snapshotter", "crfs", f.gzip]);
  assertEquals(gz.code, 0, `rpull of gzip failed:\n${gz.out}${gz.err}\n${sn.stderr()}`);
  const gzRun = await c.ctrOk(
    ["run", "--rm", "--snapshotter", "crfs", f.gzip, "plain2", "/bin/sh", "-c", SCRIPT],
  );
  assertEquals(gzRun.out, plain.out, "gzip image through crfs = overlayfs");
  const afterGz = await crfsTable(root);
  const unpacked = Object.entries(afterGz).filter(([, r]) =>
    r.kind === "committed" && !r.labels["containerd.io/snapshot/remote"]
  );
  assertEquals(unpacked.length, f.gzipLayers.length, "the gzip layers are ordinary snapshots");

  // A container keeps an active snapshot; usage counts what it wrote.
  await c.ctrOk([
    "run",
    "--snapshotter",
    "crfs",
    f.estargz,
    "keep1",
    "/bin/sh",
    "-c",
    "cat /data/big.bin > /written",
  ]);
  const usage = await c.ctrOk(["snapshot", "--snapshotter", "crfs", "usage", "keep1"]);
  const m = /keep1\s+(\d+(?:\.\d+)?)\s*(\w+)\s+(\d+)/.exec(usage.out);
  assert(m, `usage line: ${usage.out}`);
  const bytes = Number(m[1]) *
    ({ B: 1, KiB: 1024, kB: 1000, KB: 1024, MiB: 1 << 20, MB: 1e6 }[m[2]] ?? NaN);
  assert(bytes >= 6 << 20 && bytes < 8 << 20, `usage of keep1: ${usage.out}`);

  // Removal (containerd's garbage collector passes removals on to crfs soon after): the
  // container's snapshot, a snapshot made by hand, then the images.
  const gone = (suffix: string) =>
    waitFor(
      `crfs removing ${suffix}`,
      async () => !Object.keys(await crfsTable(root)).some((k) => k.endsWith(suffix)),
      20_000,
    );
  await c.ctrOk(["container", "rm", "keep1"]);
  await gone("/keep1");
  await c.ctrOk(["snapshot", "--snapshotter", "crfs", "prepare", "scratch", remote[0][0]]);
  assert(Object.keys(await crfsTable(root)).some((k) => k.endsWith("/scratch")));
  await c.ctrOk(["snapshot", "--snapshotter", "crfs", "rm", "scratch"]);
  await gone("/scratch");
  await c.ctrOk(["image", "rm", "--sync", f.estargz, f.gzip]);
  assertEquals(
    Object.keys(await crfsTable(root)),
    [],
    "the garbage collector removed every snapshot",
  );
  const dirs = [];
  for await (const e of Deno.readDir(`${root}/snapshots`)) dirs.push(e.name);
  assertEquals(dirs, [], "and their directories");
});

Deno.test("containerd: a container's snapshot survives restarts of crfs and containerd; remote layers are served again lazily", async () => {
  await using f = await imageFixture();
  await using dir = await tempDir();
  const root = `${dir}/root`;
  const sock = `${dir}/crfs.sock`;
  let sn = await startSnapshotter(root, sock);
  try {
    await using c = await Containerd.start({ crfsSocket: sock });
    const pull = await c.ctrRemote(
      ["image", "rpull", "--plain-http", "--snapshotter", "crfs", f.estargz],
    );
    assertEquals(pull.code, 0, `rpull failed:\n${pull.out}${pull.err}`);
    const script = "cat /keep 2>/dev/null || echo first; echo kept > /keep; cat /etc/hello.txt";
    const first = await c.ctrOk(
      ["run", "--snapshotter", "crfs", f.estargz, "c1", "/bin/sh", "-c", script],
    );
    assertEquals(first.out, "first\nhello again\n");

    // crfs stops (unmounting its tree) and starts again with an empty cache; containerd
    // restarts too.
    await sn.stop();
    assertEquals(await mountsUnder(`${root}/fuse`), [], "the tree is unmounted while stopped");
    sn = await startSnapshotter(root, sock);
    // Then crfs crashes (SIGKILL: its dead mount and its socket stay) and starts again.
    await sn.crash();
    assertEquals((await mountsUnder(`${root}/fuse`)).length, 1, "a crash leaves the mount");
    sn = await startSnapshotter(root, sock);
    // (containerd's connection to a plugin that went away retries with a growing backoff; a
    // restart reconnects at once.)
    await c.restart();
    f.reg.clearLog();
    const again = await c.ctrOk(["task", "start", "c1"]);
    assertEquals(again.out, "kept\nhello again\n", "the container's files are kept");
    const log = await f.reg.accessLog();
    assertEquals(wholeBlobGets(log, f.estargzLayers), [], "layers are read lazily again");
    assert(log.some((e) => e.status === 206), "…from the registry, by ranges");
    // The remote snapshots are still there for new containers.
    const fresh = await c.ctrOk(
      [
        "run",
        "--rm",
        "--snapshotter",
        "crfs",
        f.estargz,
        "c2",
        "/bin/sh",
        "-c",
        "cat /data/small.txt",
      ],
    );
    assertEquals(fresh.out, "small\n");
    await c.ctrOk(["container", "rm", "c1"]);
  } finally {
    await sn.stop();
  }
});
