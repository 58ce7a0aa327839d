/**
 * The snapshotter's semantics without containerd: the Snapshotter over a temporary root
 * (kinds, parents, mounts as containerd's overlayfs snapshotter gives them, errors, labels,
 * usage, filters, cleanup, the remote path with a stand-in RemoteLayers), the metadata file
 * across a reopen, and the same calls through the gRPC service with a grpc-js client, checking
 * the status codes containerd maps back to its errors.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { assert, assertEquals } from "../cmd/helpers.ts";
import { MetadataStore, type RemoteLayer } from "../../fs/snapshotter/metadata.ts";
import {
  REMOTE_LABEL,
  type RemoteLayers,
  SNAPSHOT_REF_LABEL,
  SnapshotError,
  Snapshotter,
} from "../../fs/snapshotter/snapshots.ts";
import { parseFilter } from "../../fs/snapshotter/filters.ts";
import { loadProto, serveSnapshots } from "../../fs/snapshotter/grpc_service.ts";
import { labelledLayer } from "../../fs/snapshotter/remote_layers.ts";

async function rejects(p: Promise<unknown>, code: SnapshotError["code"]): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert(e instanceof SnapshotError, `a SnapshotError: ${e}`);
    assertEquals(e.code, code, e.message);
    return;
  }
  throw new Error(`expected ${code}`);
}

async function tempRoot(): Promise<string & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "crfs-snap-unit-" });
  return Object.assign(dir, {
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  }) as string & AsyncDisposable;
}

Deno.test("snapshots: prepare, commit, view and mounts as containerd's overlayfs snapshotter", async () => {
  await using root = await tempRoot();
  const sn = await Snapshotter.open(await MetadataStore.open(root), root);

  const base = await sn.prepare("k-base", "", { a: "1" });
  assertEquals(base.length, 1);
  assertEquals(base[0].type, "bind");
  assertEquals(base[0].options, ["rw", "rbind"]);
  const baseDir = base[0].source;
  assert(baseDir.startsWith(`${root}/snapshots/`) && baseDir.endsWith("/fs"), baseDir);
  await Deno.writeTextFile(`${baseDir}/hello`, "hello\n");
  assertEquals((await sn.stat("k-base")).kind, "active");
  assertEquals((await sn.usage("k-base")).inodes, 2);

  await sn.commit("layer1", "k-base", { "containerd.io/gc.root": "x" });
  await rejects(sn.stat("k-base"), "NOT_FOUND");
  const info = await sn.stat("layer1");
  assertEquals(info.kind, "committed");
  assertEquals(info.parent, "");
  assertEquals(info.labels, { "containerd.io/gc.root": "x" });
  assertEquals((await sn.usage("layer1")).inodes, 2);
  assert((await sn.usage("layer1")).size > 0, "usage recorded at commit");
  await rejects(sn.mounts("layer1"), "FAILED_PRECONDITION");

  // An active snapshot on a parent: overlayfs with the parent as lower.
  const top = await sn.prepare("k-top", "layer1");
  assertEquals(top[0].type, "overlay");
  const opts = top[0].options;
  const upper = opts.find((o) => o.startsWith("upperdir="))!.slice(9);
  const work = opts.find((o) => o.startsWith("workdir="))!.slice(8);
  assertEquals(opts.find((o) => o.startsWith("lowerdir=")), `lowerdir=${baseDir}`);
  assert(opts.includes("index=off"));
  assertEquals((await Deno.stat(work)).isDirectory, true);
  assertEquals(await sn.mounts("k-top"), top);
  await Deno.writeTextFile(`${upper}/second`, "2\n");
  await sn.commit("layer2", "k-top");

  // Views: one parent is a read-only bind mount, several an overlay without upper.
  const v1 = await sn.view("v1", "layer1");
  assertEquals(v1, [{ type: "bind", source: baseDir, options: ["ro", "rbind"] }]);
  const v2 = await sn.view("v2", "layer2");
  assertEquals(v2[0].type, "overlay");
  assertEquals(v2[0].options, ["index=off", `lowerdir=${upper}:${baseDir}`]);
  const v0 = await sn.view("v0", "");
  assertEquals(v0[0].options, ["ro", "rbind"]);
  assertEquals((await sn.stat("v2")).kind, "view");
  await rejects(sn.commit("nope", "v2"), "FAILED_PRECONDITION");

  // Errors: existing keys and names, missing and uncommitted parents, children.
  await rejects(sn.prepare("v1", "layer1"), "ALREADY_EXISTS");
  await rejects(sn.prepare("k3", "missing"), "NOT_FOUND");
  await sn.prepare("k3", "layer2");
  await rejects(sn.prepare("k4", "k3"), "INVALID_ARGUMENT");
  await rejects(sn.commit("layer1", "k3"), "ALREADY_EXISTS");
  await rejects(sn.commit("x", "missing"), "NOT_FOUND");
  await rejects(sn.remove("layer1"), "FAILED_PRECONDITION");
  await rejects(sn.remove("missing"), "NOT_FOUND");
  await rejects(sn.prepare("", ""), "INVALID_ARGUMENT");

  // Removal goes leaf first and takes the directories along.
  for (const k of ["k3", "v2", "v1", "v0", "layer2", "layer1"]) await sn.remove(k);
  assertEquals((await sn.list()).length, 0);
  const left = [];
  for await (const e of Deno.readDir(`${root}/snapshots`)) left.push(e.name);
  assertEquals(left, []);
});

Deno.test("snapshots: labels update, list filters, state kept across a reopen, cleanup of orphans", async () => {
  await using root = await tempRoot();
  let sn = await Snapshotter.open(await MetadataStore.open(root), root);
  await sn.prepare("default/1/a", "", { keep: "1", drop: "2" });
  await sn.commit("default/2/sha256:aa", "default/1/a", { [SNAPSHOT_REF_LABEL]: "sha256:aa" });
  await sn.prepare("default/3/b", "default/2/sha256:aa", { app: "web" });
  await sn.view("other/4/c", "default/2/sha256:aa");

  // Update: all labels, one label, a removed label; other fields refused.
  const u1 = await sn.update({ name: "default/3/b", labels: { x: "1", app: "db" } }, ["labels.x"]);
  assertEquals(u1.labels, { app: "web", x: "1" });
  const u2 = await sn.update({ name: "default/3/b", labels: {} }, ["labels.app"]);
  assertEquals(u2.labels, { x: "1" });
  const u3 = await sn.update({ name: "default/3/b", labels: { only: "this" } });
  assertEquals(u3.labels, { only: "this" });
  await rejects(sn.update({ name: "default/3/b" }, ["parent"]), "INVALID_ARGUMENT");
  await rejects(sn.update({ name: "nope" }), "NOT_FOUND");

  const names = async (filters: string[]) => (await sn.list(filters)).map((i) => i.name).sort();
  // The active snapshot "default/1/a" became the committed one.
  assertEquals(await names([]), ["default/2/sha256:aa", "default/3/b", "other/4/c"]);
  assertEquals(await names(["kind==committed"]), ["default/2/sha256:aa"]);
  assertEquals(await names(["kind==view", "kind==active"]), ["default/3/b", "other/4/c"]);
  // The filter containerd's metadata sends after a remote snapshot's ALREADY_EXISTS.
  assertEquals(
    await names([`labels."containerd.io/snapshot.ref"==sha256:aa,parent==""`]),
    ["default/2/sha256:aa"],
  );
  assertEquals(await names(['parent=="default/2/sha256:aa",name~=^other/']), ["other/4/c"]);
  assertEquals(await names(["labels.only"]), ["default/3/b"]);
  assertEquals(await names(["name!=other/4/c,kind!=committed"]), ["default/3/b"]);
  await rejects(sn.list(["kind=="]), "INVALID_ARGUMENT");

  // Reopen: same table, same directories; an orphan directory is cleaned up.
  const before = await sn.list();
  await Deno.mkdir(`${root}/snapshots/999/fs`, { recursive: true });
  sn = await Snapshotter.open(await MetadataStore.open(root), root);
  assertEquals(
    (await sn.list()).map((i) => JSON.stringify(i)).sort(),
    before.map((i) => JSON.stringify(i)).sort(),
  );
  assertEquals(await sn.cleanup(), ["999"]);
  assert((await sn.mounts("default/3/b"))[0].options.some((o) => o.startsWith("upperdir=")));

  // A damaged metadata file is an error, not an empty table.
  await Deno.writeTextFile(`${root}/metadata.json`, "{ not json");
  let failed = false;
  try {
    await MetadataStore.open(root);
  } catch (e) {
    failed = true;
    assert(String(e).includes("metadata.json"), String(e));
  }
  assert(failed, "a damaged file is refused");
});

Deno.test("snapshots: a remote layer is committed under the target name, ALREADY_EXISTS, and comes back after a reopen", async () => {
  await using root = await tempRoot();
  const layerDirs = `${root}/layers`;
  await Deno.mkdir(`${layerDirs}/L1`, { recursive: true });
  const asked: Record<string, string>[] = [];
  const restored: string[] = [];
  const remote = (dir: string): RemoteLayers => ({
    resolve(labels) {
      asked.push(labels);
      return Promise.resolve(
        labels["test.remote"] === "yes"
          ? { host: "h:5000", repository: "r", manifest: "sha256:m", layer: labels["test.layer"] }
          : undefined,
      );
    },
    layerDir: (l: RemoteLayer) => `${dir}/${l.layer}`,
    restore: (l: RemoteLayer) => void restored.push(l.layer),
  });
  let sn = await Snapshotter.open(await MetadataStore.open(root), root, {
    remote: remote(layerDirs),
    log: () => {},
  });
  const labels = { [SNAPSHOT_REF_LABEL]: "sha256:c1", "test.remote": "yes", "test.layer": "L1" };
  await rejects(sn.prepare("default/1/extract-1 sha256:c1", "", labels), "ALREADY_EXISTS");
  const info = await sn.stat("sha256:c1");
  assertEquals(info.kind, "committed");
  assertEquals(info.labels[REMOTE_LABEL], "remote snapshot");
  assertEquals(info.labels[SNAPSHOT_REF_LABEL], "sha256:c1");
  await rejects(sn.stat("default/1/extract-1 sha256:c1"), "NOT_FOUND");
  // Asked again (another namespace), the answer is the same without a new check.
  await rejects(sn.prepare("other/2/extract-2 sha256:c1", "", labels), "ALREADY_EXISTS");
  assertEquals(asked.length, 1);

  // A layer the remote declines takes the normal path, on the remote parent.
  const plain = { [SNAPSHOT_REF_LABEL]: "sha256:c2", "test.remote": "no" };
  const m = await sn.prepare("default/3/extract-3 sha256:c2", "sha256:c1", plain);
  const lower = m[0].options.find((o) => o.startsWith("lowerdir="))!.slice(9);
  assertEquals(await Deno.readLink(lower), `${layerDirs}/L1`);
  await sn.commit("sha256:c2", "default/3/extract-3 sha256:c2");

  // Reopened with the layers elsewhere: the symlink follows, the layer is announced.
  const moved = `${root}/moved`;
  sn = await Snapshotter.open(await MetadataStore.open(root), root, {
    remote: remote(moved),
    log: () => {},
  });
  assertEquals(restored, ["L1"]);
  const v = await sn.view("v", "sha256:c1");
  assertEquals(await Deno.readLink(v[0].source), `${moved}/L1`);
  assertEquals((await sn.usage("sha256:c1")).size, 0);
  await rejects(sn.remove("sha256:c1"), "FAILED_PRECONDITION");
  for (const k of ["v", "sha256:c2", "sha256:c1"]) await sn.remove(k);
  // Removing a remote snapshot removes the symlink, never the layer directory.
  assertEquals((await Deno.stat(`${layerDirs}/L1`)).isDirectory, true);
});

Deno.test("remote labels: ctr-remote's and the CRI plugin's", () => {
  assertEquals(
    labelledLayer({
      "containerd.io/snapshot.ref": "sha256:c",
      "containerd.io/snapshot/remote/stargz.reference": "h:5000/r:t",
      "containerd.io/snapshot/remote/stargz.digest": "sha256:l1",
      "containerd.io/snapshot/remote/stargz.layers": "sha256:l1,sha256:l2",
    }),
    { ref: "h:5000/r:t", layer: "sha256:l1", layers: ["sha256:l1", "sha256:l2"] },
  );
  assertEquals(
    labelledLayer({
      "containerd.io/snapshot/cri.image-ref": "h:5000/r:t",
      "containerd.io/snapshot/cri.manifest-digest": "sha256:m",
      "containerd.io/snapshot/cri.layer-digest": "sha256:l2",
      "containerd.io/snapshot/cri.image-layers": "sha256:l2",
    }),
    { ref: "h:5000/r:t", manifest: "sha256:m", layer: "sha256:l2", layers: ["sha256:l2"] },
  );
  assertEquals(labelledLayer({ "containerd.io/snapshot.ref": "sha256:c" }), undefined);
  assertEquals(
    labelledLayer({ "containerd.io/snapshot/remote/stargz.reference": "h/r:t" }),
    undefined,
  );
});

Deno.test("filters: syntax of containerd's filters", () => {
  assertEquals(parseFilter(`labels."a.b/c"==x:y,kind==active`), [
    { path: ["labels", "a.b/c"], op: "==", value: "x:y" },
    { path: ["kind"], op: "==", value: "active" },
  ]);
  assertEquals(parseFilter(`name~=/^a\\/b/`)[0].value, "^a/b");
  assertEquals(parseFilter(`labels.present`), [{ path: ["labels", "present"] }]);
  for (const bad of [`=="x"`, `name=="x`, `name==x,`, `name x`]) {
    let threw = false;
    try {
      parseFilter(bad);
    } catch {
      threw = true;
    }
    assert(threw, `refused: ${bad}`);
  }
});

Deno.test("gRPC: the Snapshots service answers with containerd's status codes", async () => {
  await using root = await tempRoot();
  const sn = await Snapshotter.open(await MetadataStore.open(root), root, { log: () => {} });
  const address = `${root}/s.sock`;
  const server = await serveSnapshots(sn, address, () => {});
  const pkg = loadProto(
    "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.proto",
  ) as // deno-lint-ignore no-explicit-any
  any;
  const client = new pkg.containerd.services.snapshots.v1.Snapshots(
    `unix:${address}`,
    grpc.credentials.createInsecure(),
  );
  // deno-lint-ignore no-explicit-any
  const call = (method: string, req: unknown): Promise<any> =>
    new Promise((resolve, reject) =>
      client[method](
        req,
        (err: grpc.ServiceError | null, res: unknown) => err ? reject(err) : resolve(res),
      )
    );
  const code = async (p: Promise<unknown>) => {
    try {
      await p;
    } catch (e) {
      return (e as grpc.ServiceError).code;
    }
    return grpc.status.OK;
  };
  try {
    const prep = await call("Prepare", {
      snapshotter: "crfs",
      key: "default/1/k",
      labels: { l: "v" },
    });
    assertEquals(prep.mounts[0].type, "bind");
    assertEquals(prep.mounts[0].options, ["rw", "rbind"]);
    const st = await call("Stat", { snapshotter: "crfs", key: "default/1/k" });
    assertEquals(st.info.kind, "ACTIVE");
    assertEquals(st.info.labels, { l: "v" });
    assert(
      Math.abs(Number(st.info.created_at.seconds) * 1000 - Date.now()) < 60_000,
      "created now",
    );
    await call("Commit", { snapshotter: "crfs", name: "default/2/c", key: "default/1/k" });
    assertEquals(
      await code(call("Prepare", { snapshotter: "crfs", key: "default/3/k", parent: "nope" })),
      grpc.status.NOT_FOUND,
    );
    await call("Prepare", { snapshotter: "crfs", key: "default/3/k", parent: "default/2/c" });
    assertEquals(
      await code(call("Prepare", { snapshotter: "crfs", key: "default/3/k" })),
      grpc.status.ALREADY_EXISTS,
    );
    assertEquals(
      await code(call("Remove", { snapshotter: "crfs", key: "default/2/c" })),
      grpc.status.FAILED_PRECONDITION,
    );
    assertEquals(
      await code(call("Stat", { snapshotter: "crfs", key: "gone" })),
      grpc.status.NOT_FOUND,
    );
    const up = await call("Update", {
      snapshotter: "crfs",
      info: { name: "default/2/c", labels: { n: "1" } },
      update_mask: { paths: ["labels.n"] },
    });
    assertEquals(up.info.labels, { n: "1" });
    const usage = await call("Usage", { snapshotter: "crfs", key: "default/2/c" });
    assertEquals(usage.inodes, 1);
    const listed: string[] = [];
    await new Promise<void>((resolve, reject) => {
      const s = client.List({ snapshotter: "crfs", filters: ["kind==committed"] });
      s.on("data", (r: { info: { name: string }[] }) => listed.push(...r.info.map((i) => i.name)));
      s.on("end", resolve);
      s.on("error", reject);
    });
    assertEquals(listed, ["default/2/c"]);
    const badList = await new Promise<number>((resolve) => {
      const s = client.List({ snapshotter: "crfs", filters: ["kind=="] });
      s.on("data", () => {});
      s.on("end", () => resolve(grpc.status.OK));
      s.on("error", (e: grpc.ServiceError) => resolve(e.code));
    });
    assertEquals(badList, grpc.status.INVALID_ARGUMENT);
    await call("Cleanup", { snapshotter: "crfs" });
  } finally {
    client.close();
    await server.close();
  }
  let gone = false;
  try {
    await Deno.lstat(address);
  } catch {
    gone = true;
  }
  assert(gone, "the socket is removed on close");
});
