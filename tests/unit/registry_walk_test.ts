/**
 * Walking the tree to a file of an image asks the registry only what the file needs: no
 * catalog, no guess at a shorter repository (`a:b` for `a/b/tag`), and a one-component
 * repository's tag is still found where nothing says it is one. A listing still uses the
 * catalog, and once a catalog is known, names it does not hold are not there.
 *
 * @module
 */
import assert from "node:assert/strict";
import { defaultDrivers } from "../../drivers/mod.ts";
import { ImageStore } from "../../fs/image_store.ts";
import { rootNode } from "../../fs/registry_tree.ts";
import type { FsNode } from "../../fs/node.ts";
import { startRegistry } from "../helpers/registry.ts";
import { pushImage, tar } from "../helpers/images.ts";
import { convert } from "./tree_helpers.ts";

async function walk(root: FsNode, path: string): Promise<FsNode | undefined> {
  let n: FsNode | undefined = root;
  for (const c of path.split("/")) n = n ? await n.lookup!(c) : undefined;
  return n;
}

async function text(n: FsNode | undefined): Promise<string> {
  assert.ok(n?.read, "a file");
  return new TextDecoder().decode(await n.read(0, 1 << 20));
}

Deno.test("the walk to a file asks for no catalog and no shorter repository", async () => {
  await using reg = await startRegistry();
  const deep = await convert(tar({ "etc/hello.txt": "deep\n" }));
  const solo = await convert(tar({ "etc/hello.txt": "solo\n" }));
  await pushImage(reg, "team/app", "v1", { layers: [], rawLayers: [deep.blob] });
  await pushImage(reg, "solo", "t1", { layers: [], rawLayers: [solo.blob] });
  const tree = () => rootNode(new ImageStore(defaultDrivers(), { log: () => {}, prefetch: "off" }));

  reg.clearLog();
  const file = await walk(tree(), `images/${reg.host}/team/app/v1/etc/hello.txt`);
  assert.equal(await text(file), "deep\n");
  const log = await reg.accessLog();
  assert.deepEqual(log.filter((e) => e.path.includes("_catalog")), [], "no catalog");
  const manifests = log.filter((e) => e.path.includes("/manifests/"));
  assert.deepEqual(manifests.map((e) => e.path), ["/v2/team/app/manifests/v1"]);

  // `solo/t1/…` where nothing says whether `solo/t1` is a repository: still the tag t1 of solo.
  assert.equal(
    await text(await walk(tree(), `images/${reg.host}/solo/t1/etc/hello.txt`)),
    "solo\n",
  );
  // Listings: the repository's tags (through the catalog).
  const repoDir = await walk(tree(), `images/${reg.host}/team/app`);
  assert.deepEqual((await repoDir!.list!()).map(([n]) => n), ["v1"]);
  const soloDir = await walk(tree(), `images/${reg.host}/solo/t1`);
  assert.deepEqual((await soloDir!.list!()).map(([n]) => n), ["etc"]);
  const hostDir = await walk(tree(), `images/${reg.host}`);
  assert.deepEqual((await hostDir!.list!()).map(([n]) => n).sort(), ["solo", "team"]);
  // With the catalog known, a name it does not hold is not there.
  const root = tree();
  await (await walk(root, `images/${reg.host}/team/app`))!.list!(); // fetches the catalog
  const host = await walk(root, `images/${reg.host}`);
  assert.equal(await host!.lookup!("nope"), undefined);
  assert.equal(await (await walk(root, `images/${reg.host}/team`))!.lookup!("nope"), undefined);
  assert.equal(
    await text(await walk(root, `images/${reg.host}/team/app/v1/etc/hello.txt`)),
    "deep\n",
  );
});

Deno.test("names that are neither a tag nor a repository are not there", async () => {
  await using reg = await startRegistry();
  const { blob } = await convert(tar({ "etc/hello.txt": "deep\n" }));
  await pushImage(reg, "team/app", "v1", { layers: [], rawLayers: [blob] });
  const tree = () => rootNode(new ImageStore(defaultDrivers(), { log: () => {}, prefetch: "off" }));
  assert.equal(await walk(tree(), `images/${reg.host}/team/app/nope`), undefined);
  assert.equal(await walk(tree(), `images/${reg.host}/team/nope/x`), undefined);
  assert.equal(await walk(tree(), `images/${reg.host}/nope/x/y`), undefined);
  assert.equal(await walk(tree(), `images/${reg.host}/team/app/v1/etc/nope`), undefined);
  const file = await walk(tree(), `images/${reg.host}/team/app/v1/etc/hello.txt`);
  assert.equal(await text(file), "deep\n");
});
