/**
 * fs/metrics_hooks.ts: registry requests counted through `instrumentFetch` while the real
 * DockerV2Driver talks to docker-registry (kinds, statuses, bytes equal to what was read), and
 * FUSE operations counted through `instrumentFuseOps` on a real mount (operations, ENOENT and
 * EIO by name, bytes read).
 */
import assert from "node:assert/strict";
import { crfsMetrics } from "../../fs/metrics.ts";
import { instrumentFetch, instrumentFuseOps, requestKind } from "../../fs/metrics_hooks.ts";
import { createContext } from "../../drivers/driver.ts";
import { DockerV2Driver } from "../../drivers/docker_v2.ts";
import { ROOT_ID } from "../../fs/fuse/ops.ts";
import { pushImage } from "../helpers/images.ts";
import { startRegistry } from "../helpers/registry.ts";
import { MemFs, Pattern } from "../fuse/memfs.ts";
import { sh, shOk, withMount } from "../fuse/helpers.ts";

Deno.test("metrics hooks: request kinds from URLs", () => {
  const k = (u: string, m?: string) => requestKind(new URL(u), m);
  assert.equal(k("http://r/v2/"), "ping");
  assert.equal(k("http://r/v2/a/b/manifests/v1"), "manifest");
  assert.equal(k("http://r/v2/a/blobs/sha256:00"), "blob");
  assert.equal(k("http://r/v2/a/blobs/uploads/"), "upload");
  assert.equal(k("http://r/v2/a/blobs/uploads/123?digest=x"), "upload");
  assert.equal(k("http://r/v2/a/tags/list"), "tags");
  assert.equal(k("http://r/v2/_catalog?n=10"), "catalog");
  assert.equal(k("http://auth/token?service=s&scope=repository:a:pull"), "token");
  assert.equal(k("http://auth/oauth", "POST"), "token");
  assert.equal(k("http://r/other"), "other");
});

Deno.test("metrics hooks: registry requests and bytes through the real driver", async () => {
  const reg = await startRegistry({ auth: "token" });
  try {
    const pushed = await pushImage(reg, "team/app", "v1");
    const [user, password] = Object.entries(reg.users)[0];
    const m = crfsMetrics();
    const d = new DockerV2Driver(createContext({
      dockerConfig: false,
      username: user,
      password,
      fetch: instrumentFetch(fetch, m),
    }));
    const repo = { host: reg.host, repository: "team/app" };
    const man = await d.getManifest(repo, "v1");
    assert.equal(man.digest, pushed.digest);
    const layer = pushed.image.layers[0];
    const src = await d.blob(repo, layer.digest);
    const got = await src.read(0, 100);
    const host = reg.host;
    assert.ok(m.registryRequests.value({ host, kind: "manifest", status: "200" }) >= 1);
    assert.ok(m.registryRequests.value({ host, kind: "ping", status: "401" }) >= 1);
    const tokenHost = new URL(reg.tokenServer!.realm).host;
    assert.ok(m.tokenRequests.value({ host: tokenHost }) >= 1);
    assert.ok(m.registryRequests.value({ host, kind: "blob", status: "206" }) >= 1);
    const fetched = m.bytesFetched.value({ host });
    assert.ok(fetched >= man.bytes.length + got.length, `${fetched} bytes counted`);
    assert.ok(fetched < man.bytes.length + got.length + 4096, `${fetched} bytes counted`);
    const text = m.registry.render();
    assert.match(
      text,
      /crfs_registry_request_duration_seconds_count\{host="[^"]+",kind="manifest"\} [1-9]/,
    );

    await reg.stop();
    await d.getManifest(repo, "sha256:" + "0".repeat(64)).catch(() => {});
    assert.ok(m.registryRequests.value({ host, kind: "manifest", status: "error" }) >= 1);
    assert.ok(m.errors.value({ kind: "connection" }) >= 1);
  } finally {
    await reg.stop();
  }
});

Deno.test("metrics hooks: FUSE operations, errors and bytes on a real mount", async () => {
  const fs = new MemFs();
  const p = new Pattern(300_000, 3);
  fs.addFile(ROOT_ID, "data", p);
  fs.failLookup.add("broken");
  const m = crfsMetrics();
  await withMount(instrumentFuseOps(fs, m), async (mp) => {
    const sum = await shOk(`cat "$1" | wc -c`, `${mp}/data`);
    assert.equal(sum.out.trim(), "300000");
    const missing = await sh(`ls "$1"`, `${mp}/missing`);
    assert.notEqual(missing.code, 0);
    const broken = await sh(`ls "$1"`, `${mp}/broken`);
    assert.notEqual(broken.code, 0);
  });
  assert.ok(m.fuseOperations.value({ op: "lookup" }) >= 3);
  assert.ok(m.fuseOperations.value({ op: "read" }) >= 1);
  assert.ok(m.fuseOperations.value({ op: "open" }) >= 1);
  assert.ok(m.fuseErrors.value({ op: "lookup", errno: "ENOENT" }) >= 1);
  assert.ok(m.fuseErrors.value({ op: "lookup", errno: "EIO" }) >= 1);
  assert.ok(m.errors.value({ kind: "EIO" }) >= 1);
  // The whole file at least once; the kernel may read a range again when its pages were dropped
  // under memory pressure (seen: one 256 KiB read twice), never the file three times over.
  const readBytes = m.fuseReadBytes.value();
  assert.ok(readBytes >= 300_000 && readBytes < 900_000, `${readBytes} bytes read counted`);
  assert.match(
    m.registry.render(),
    /crfs_fuse_operation_duration_seconds_count\{op="read"\} [1-9]/,
  );
});
