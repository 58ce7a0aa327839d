/**
 * Short names under registries.conf's `unqualified-search-registries`: `crfs ls` and `crfs cat`
 * of `team/app:v1/…` try each search registry in order (the first, down, is skipped) instead of
 * Docker Hub; arguments naming a registry, and every argument when no search registry is
 * configured, are taken as they are.
 *
 * @module
 */
import assert from "node:assert/strict";
import { imageArgCandidates } from "../../cmd/registry_options.ts";
import { freePort, startRegistry } from "../helpers/registry.ts";
import { shortNameConfig } from "../helpers/registries_config.ts";
import { pushImage, tarTree, toEStargz } from "../mount/helpers.ts";
import { crfs } from "./helpers.ts";

const conf = shortNameConfig;

Deno.test("image arguments: short names expand to the search registries, others stay", () => {
  const c = conf(["a.example:5000", "docker.io"]);
  assert.deepEqual(imageArgCandidates("team/app:v1/etc/x", c), [
    "a.example:5000/team/app:v1/etc/x",
    "docker.io/team/app:v1/etc/x",
  ]);
  assert.deepEqual(imageArgCandidates("busybox:1", c), [
    "a.example:5000/busybox:1",
    "docker.io/library/busybox:1",
  ]);
  assert.deepEqual(imageArgCandidates("team/app", c), [
    "a.example:5000/team/app",
    "docker.io/team/app",
  ]);
  for (const t of ["127.0.0.1:5000/x:1/a", "quay.io/x/y:1", "localhost/x:1", "local/x", "gcr.io"]) {
    assert.deepEqual(imageArgCandidates(t, c), [t], t);
  }
  assert.deepEqual(imageArgCandidates("team/app:v1", conf([])), ["team/app:v1"]);
  assert.deepEqual(
    imageArgCandidates("box:2/bin/sh", conf(["a.example"], { box: "b.example/tools/box" })),
    ["b.example/tools/box:2/bin/sh"],
  );
});

Deno.test("crfs ls and cat of a short name search the configured registries in order", async () => {
  const reg = await startRegistry();
  const dir = await Deno.makeTempDir({ prefix: "crfs-shortnames-" });
  try {
    await Deno.mkdir(`${dir}/tree/etc`, { recursive: true });
    await Deno.writeTextFile(`${dir}/tree/etc/motd`, "found by search\n");
    await tarTree(`${dir}/tree`, `${dir}/layer.tar`);
    await pushImage(reg.host, "team/app", "v1", [await toEStargz(`${dir}/layer.tar`)]);
    const down = `127.0.0.1:${freePort()}`;
    await Deno.writeTextFile(
      `${dir}/registries.conf`,
      `unqualified-search-registries = ["${down}", "${reg.host}"]\n`,
    );
    const env = { CONTAINERS_REGISTRIES_CONF: `${dir}/registries.conf` };
    const cat = await crfs(["cat", "--no-cache", "team/app:v1/etc/motd"], { env });
    assert.equal(cat.code, 0, cat.stderr);
    assert.equal(cat.stdout, "found by search\n");
    const ls = await crfs(["ls", "--no-cache", "team/app:v1/etc"], { env });
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, /motd/);
    // Nowhere: the first candidate's failure, one line.
    const none = await crfs(["cat", "--no-cache", "team/none:v1/etc/motd"], { env });
    assert.equal(none.code, 1);
    assert.equal(none.stderr.trim().split("\n").length, 1, none.stderr);
    assert.match(none.stderr, new RegExp(`^crfs: .*${down.replace(/\./g, "\\.")}`));
  } finally {
    await reg.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
