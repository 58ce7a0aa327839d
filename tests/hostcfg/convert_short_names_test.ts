/**
 * Short names as `crfs convert`'s SRC: with registries.conf's `unqualified-search-registries`
 * (or an `[aliases]` entry) `team/app:v1` is tried on each search registry in order — one down,
 * one without the image, then the one that has it — instead of Docker Hub; names with a
 * registry, `docker://` names and `local/` stay as typed; nowhere is a one-line error naming
 * what was tried; `--src-creds` for a short name with several registries is refused.
 *
 * @module
 */
import assert from "node:assert/strict";
import { parseEndpoint, sourceCandidates } from "../../convert/endpoint.ts";
import type { RegistriesConfig } from "../../drivers/registries_conf.ts";
import { crfs } from "../cmd/helpers.ts";
import { pushImage } from "../helpers/images.ts";
import { freePort, startRegistry } from "../helpers/registry.ts";
import { shortNameConfig } from "../helpers/registries_config.ts";

const conf = shortNameConfig;

async function candidates(text: string, c: RegistriesConfig): Promise<string[]> {
  return sourceCandidates(await parseEndpoint(text, "src"), c).map((e) => e.text);
}

Deno.test("convert SRC: short names expand to the search registries or an alias, others stay", async () => {
  const c = conf(["a.example:5000", "docker.io"], { box: "b.example/tools/box" });
  assert.deepEqual(await candidates("team/app:v1", c), [
    "a.example:5000/team/app:v1",
    "docker.io/team/app:v1",
  ]);
  assert.deepEqual(await candidates("busybox", c), [
    "a.example:5000/busybox",
    "docker.io/library/busybox",
  ]);
  assert.deepEqual(await candidates("box:2", c), ["b.example/tools/box:2"]);
  for (
    const t of [
      "127.0.0.1:5000/x:1",
      "quay.io/x/y:1",
      "localhost/x:1",
      "local/x:1",
      "docker://team/app:v1",
    ]
  ) {
    assert.deepEqual(await candidates(t, c), [t], t);
  }
  // Without search registries a short name stays Docker Hub's.
  const hub = sourceCandidates(await parseEndpoint("team/app:v1", "src"), conf([]));
  assert.equal(hub.length, 1);
  assert.equal(hub[0].kind === "registry" && hub[0].ref.host, "registry-1.docker.io");
  // Non-registry endpoints are never expanded.
  assert.deepEqual(await candidates("oci:/tmp/x:v1", c), ["oci:/tmp/x:v1"]);
});

Deno.test("crfs convert of a short name takes the image from the first search registry that has it", async () => {
  await using empty = await startRegistry();
  await using reg = await startRegistry();
  const dir = await Deno.makeTempDir({ prefix: "crfs-convert-short-" });
  try {
    const pushed = await pushImage(reg, "team/app", "v1", {
      files: { "etc/motd": "found by search\n" },
    });
    await pushImage(empty, "other/app", "v1");
    const down = `127.0.0.1:${freePort()}`;
    await Deno.writeTextFile(
      `${dir}/registries.conf`,
      `unqualified-search-registries = ["${down}", "${empty.host}", "${reg.host}"]\n`,
    );
    const env = { CONTAINERS_REGISTRIES_CONF: `${dir}/registries.conf` };

    const out = await crfs(["convert", "team/app:v1", `${reg.host}/team/app:esgz`], { env });
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stderr, new RegExp(`crfs: team/app:v1 is ${reg.host}/team/app:v1\n`));
    assert.match(out.stdout, new RegExp(`^${reg.host}/team/app:esgz@sha256:[0-9a-f]{64}\n$`));
    // The converted image is the pushed one's file, in eStargz.
    const cat = await crfs(["cat", "--no-cache", `${reg.host}/team/app:esgz/etc/motd`], { env });
    assert.equal(cat.stdout, "found by search\n", cat.stderr);
    const manifest = await (await fetch(`${reg.url}/v2/team/app/manifests/esgz`, {
      headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
    })).json();
    assert.ok(
      manifest.layers[0].annotations["containerd.io/snapshot/stargz/toc.digest"],
      JSON.stringify(manifest),
    );
    assert.notEqual(manifest.layers[0].digest, pushed.image.layers[0].digest);

    // Nowhere: one line naming the short name and every registry tried.
    const none = await crfs(["convert", "-q", "team/none:v1", `oci:${dir}/out`], { env });
    assert.equal(none.code, 1);
    assert.equal(none.stderr.trim().split("\n").length, 1, none.stderr);
    assert.match(none.stderr, /^crfs: team\/none:v1: a short name; no search registry has it/);
    for (const h of [down, empty.host, reg.host]) {
      assert.ok(none.stderr.includes(`${h}/team/none:v1`), none.stderr);
    }
    assert.ok(!(await Deno.stat(`${dir}/out`).then(() => true, () => false)), "nothing written");

    // Credentials belong to one registry: --src-creds needs the name in full here.
    const creds = await crfs(
      ["convert", "--src-creds", "u:p", "team/app:v1", `oci:${dir}/out`],
      { env },
    );
    assert.equal(creds.code, 2, creds.stderr);
    assert.match(creds.stderr, /--src-creds: team\/app:v1 is a short name for several registries/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
