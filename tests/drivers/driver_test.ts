/**
 * The driver registry: built-in selection by host, process-wide registration, and user drivers
 * loaded from their own TypeScript modules (factory default export or `driver` object export),
 * with the generic `resolve`/`getConfig`/`fetchBlob` filled in and unsupported operations
 * failing clearly.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  canList,
  canPush,
  type Driver,
  lister,
  loadDriverModule,
  pusher,
  registerDriver,
  unregisterDriver,
} from "../../drivers/driver.ts";
import { RegistryError } from "../../drivers/errors.ts";
import { defaultDrivers } from "../../drivers/mod.ts";
import { parseReference } from "../../drivers/reference.ts";
import { buildImage, buildIndex } from "../helpers/images.ts";

const MEM_DRIVER = (driverUrl: string, manifestUrl: string) => `
import type { DriverContext } from ${JSON.stringify(driverUrl)};
import { parseManifest } from ${JSON.stringify(manifestUrl)};

const blobs = new Map<string, Uint8Array>();
const tags = new Map<string, string>();
export function add(digest: string, bytes: Uint8Array, tag?: string) {
  blobs.set(digest, bytes);
  if (tag) tags.set(tag, digest);
}
export let seenContext: DriverContext | undefined;

export default function (ctx: DriverContext) {
  seenContext = ctx;
  return {
    name: "mem",
    matches: (host: string) => host === "mem.example",
    async getManifest(_repo: unknown, ref: string) {
      const digest = tags.get(ref) ?? ref;
      const bytes = blobs.get(digest);
      if (!bytes) throw new Error("no manifest " + ref);
      return parseManifest(bytes, digest, null, "mem.example:" + ref);
    },
    async blob(_repo: unknown, digest: string) {
      const bytes = blobs.get(digest)!;
      return { digest, size: bytes.length, read: async (o: number, n: number) => bytes.slice(o, o + n) };
    },
  };
}
`;

Deno.test("built-in drivers are chosen by host; the Docker v2 driver is the fallback", () => {
  const drivers = defaultDrivers({ dockerConfig: false, localDir: "/nonexistent" });
  assert.equal(drivers.forHost("local").name, "local");
  assert.equal(drivers.forHost("gcr.io").name, "gcr");
  assert.equal(drivers.forHost("us.icr.io").name, "icr");
  assert.equal(drivers.forHost("127.0.0.1:5000").name, "docker-v2");
  assert.equal(drivers.forHost("registry-1.docker.io").name, "docker-v2");
  assert.deepEqual(drivers.list().map((d) => d.name), ["local", "gcr", "icr", "docker-v2"]);
});

Deno.test("registerDriver adds a process-wide driver ahead of the built-ins", async () => {
  const fake = {
    name: "fake",
    matches: (h: string) => h === "gcr.io",
    getManifest: () => Promise.reject(new Error("x")),
    blob: () => Promise.reject(new Error("x")),
  };
  const { completeDriver } = await import("../../drivers/driver.ts");
  const d = completeDriver(fake);
  registerDriver(d);
  try {
    assert.equal(defaultDrivers({ dockerConfig: false }).forHost("gcr.io").name, "fake");
  } finally {
    unregisterDriver(d);
  }
  assert.equal(defaultDrivers({ dockerConfig: false }).forHost("gcr.io").name, "gcr");
});

Deno.test("a user driver module is loaded from a .ts file without changing crfs", async () => {
  const dir = await Deno.makeTempDir({ prefix: "crfs-userdriver-" });
  try {
    const file = `${dir}/mem_driver.ts`;
    await Deno.writeTextFile(
      file,
      MEM_DRIVER(
        import.meta.resolve("../../drivers/driver.ts"),
        import.meta.resolve("../../drivers/manifest.ts"),
      ),
    );
    const drivers = defaultDrivers({ dockerConfig: false });
    const d: Driver = await drivers.load(file);
    assert.equal(d.name, "mem");
    assert.equal(drivers.forHost("mem.example"), d);
    assert.equal(drivers.forHost("quay.io").name, "docker-v2");
    const mod = await import(`file://${file}`);
    assert.equal(mod.seenContext.http, drivers.context.http, "the factory got the shared context");

    // Content for the in-memory driver: an index over two images.
    const amd = await buildImage({ architecture: "amd64" });
    const arm = await buildImage({ architecture: "arm64", files: { "arm": "arm\n" } });
    const index = await buildIndex([amd, arm]);
    for (const img of [amd, arm]) {
      for (const b of [...img.layers, img.config, img.manifest]) mod.add(b.digest, b.bytes);
    }
    mod.add(index.digest, index.bytes, "latest");

    const ref = parseReference("mem.example/some/image:latest");
    const r = await d.resolve(ref, { platform: "linux/arm64" });
    assert.equal(r.manifest.digest, arm.manifest.digest, "generic resolve walks the index");
    assert.equal(r.index?.digest, index.digest);
    const cfg = await d.getConfig(ref, r.manifest);
    assert.deepEqual(cfg.bytes, arm.config.bytes, "generic getConfig");
    const layer = arm.layers[0];
    const streamed = new Uint8Array(
      await new Response(await d.fetchBlob(ref, layer.digest)).arrayBuffer(),
    );
    assert.deepEqual(streamed, layer.bytes, "generic fetchBlob");
    assert.deepEqual(await d.headManifest(ref, "latest"), {
      digest: index.digest,
      mediaType: index.mediaType,
      size: index.bytes.length,
    });
    assert.equal(canList(d), false, "no listing capability, no stub");
    assert.equal(canPush(d), false);
    assert.throws(
      () => lister(d),
      (e: RegistryError) =>
        e.code === "UNSUPPORTED" && e.message === "registry driver 'mem' cannot list tags",
    );
    assert.throws(() => pusher(d), (e: RegistryError) => e.code === "UNSUPPORTED");

    // A `driver` object export works too; broken modules fail clearly.
    await Deno.writeTextFile(
      `${dir}/obj.ts`,
      `export const driver = { name: "obj", matches: (h: string) => h === "obj.example", getManifest() { throw new Error("no"); }, blob() { throw new Error("no"); } };`,
    );
    assert.equal((await loadDriverModule(`${dir}/obj.ts`)).name, "obj");
    await Deno.writeTextFile(`${dir}/none.ts`, `export const x = 1;`);
    await assert.rejects(
      loadDriverModule(`${dir}/none.ts`),
      /neither a default export nor a 'driver' export/,
    );
    await Deno.writeTextFile(
      `${dir}/partial.ts`,
      `export default { name: "p", matches: () => false, getManifest() {} };`,
    );
    await assert.rejects(loadDriverModule(`${dir}/partial.ts`), /lacks blob/);
    await assert.rejects(loadDriverModule(`${dir}/missing.ts`), /cannot load driver module/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Docker Hub has no catalog: listing fails at once with UNSUPPORTED, without a request", async () => {
  const lines: string[] = [];
  const d = defaultDrivers({ dockerConfig: false, debug: (l) => lines.push(l) }).forHost(
    "registry-1.docker.io",
  );
  await assert.rejects(
    lister(d).listRepositories("registry-1.docker.io"),
    (e: RegistryError) =>
      e.code === "UNSUPPORTED" && /Docker Hub does not allow listing/.test(e.message),
  );
  assert.deepEqual(lines, [], "no network");
});
