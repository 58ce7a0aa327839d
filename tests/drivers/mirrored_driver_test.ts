/**
 * registries.conf in the drivers: a `[[registry.mirror]]` serves an image (manifest and blobs)
 * while the original registry and a first mirror are down, the image keeping its original name;
 * a `blocked` prefix fails at once; an `insecure = true` registry that speaks plain http is
 * reached by https first, then http. Wired as crfs's commands wire it (`setupRegistry` reading
 * `$CONTAINERS_REGISTRIES_CONF`).
 *
 * @module
 */
import assert from "node:assert/strict";
import { RegistryError } from "../../drivers/errors.ts";
import { setupRegistry } from "../../cmd/registry_options.ts";
import { pushImage, sha256 } from "../helpers/images.ts";
import { freePort, startRegistry } from "../helpers/registry.ts";
import { addHostsLine, removeHostsLine } from "../hostcfg/tls_helpers.ts";

async function withConf<T>(text: string, fn: () => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "crfs-regconf-" });
  const saved = Deno.env.get("CONTAINERS_REGISTRIES_CONF");
  await Deno.writeTextFile(`${dir}/registries.conf`, text);
  Deno.env.set("CONTAINERS_REGISTRIES_CONF", `${dir}/registries.conf`);
  try {
    return await fn();
  } finally {
    if (saved === undefined) Deno.env.delete("CONTAINERS_REGISTRIES_CONF");
    else Deno.env.set("CONTAINERS_REGISTRIES_CONF", saved);
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a registries.conf mirror serves the image while the original is down", async () => {
  const mirror = await startRegistry();
  const dead = `127.0.0.1:${freePort()}`;
  const deadMirror = `127.0.0.1:${freePort()}`;
  try {
    const pushed = await pushImage(mirror, "mirrored/team/app", "v1", {
      files: { "etc/hello": "from the mirror\n" },
    });
    const conf = `
[[registry]]
prefix = "${dead}/team"
location = "${dead}/team"
[[registry.mirror]]
location = "${deadMirror}/x"
[[registry.mirror]]
location = "${mirror.host}/mirrored/team"

[[registry]]
prefix = "${dead}/blocked"
blocked = true
`;
    await withConf(conf, async () => {
      const setup = await setupRegistry({ "no-cache": true }, { prefetch: false });
      try {
        const d = setup.drivers.forHost(dead);
        const r = await d.resolve({ host: dead, repository: "team/app", tag: "v1" });
        assert.equal(r.ref.host, dead, "the image keeps its name");
        assert.equal(r.ref.repository, "team/app");
        assert.equal(r.ref.digest, pushed.digest);
        const layer = pushed.image.layers[0];
        mirror.clearLog();
        const src = await d.blob(
          { host: dead, repository: "team/app" },
          layer.digest,
          layer.bytes.length,
        );
        const bytes = await src.read(0, layer.bytes.length);
        assert.equal(await sha256(bytes), layer.digest);
        const log = await mirror.accessLog();
        assert.ok(
          log.some((e) => e.path.startsWith(`/v2/mirrored/team/app/blobs/${layer.digest}`)),
          "the blob came from the mirror",
        );
        const e = await d.resolve({ host: dead, repository: "blocked/app", tag: "v1" }).then(
          () => undefined,
          (e) => e,
        );
        assert.ok(e instanceof RegistryError && e.code === "DENIED", String(e));
        assert.match(e.message, /blocked by .*registries\.conf/);
      } finally {
        setup.close();
      }
    });
  } finally {
    await mirror.stop();
  }
});

Deno.test("insecure = true: https first, then plain http", async () => {
  const reg = await startRegistry();
  const name = `crfs-insecure-${crypto.randomUUID().slice(0, 8)}.test`;
  const line = `127.0.0.1 ${name} # crfs insecure test`;
  await addHostsLine(line);
  try {
    const pushed = await pushImage(reg, "plain/app", "v1");
    const host = `${name}:${reg.host.split(":")[1]}`;
    const repo = { host, repository: "plain/app" };
    // Without the configuration: https only, and the error says what to configure.
    await withConf("", async () => {
      const setup = await setupRegistry({ "no-cache": true }, { prefetch: false });
      try {
        const e = await setup.drivers.forHost(host).getManifest(repo, "v1").then(
          () => undefined,
          (e) => e,
        );
        assert.ok(e instanceof RegistryError && e.code === "TLS", String(e));
        assert.match(e.message, /does not speak TLS.*insecure/);
      } finally {
        setup.close();
      }
    });
    await withConf(`[[registry]]\nlocation = "${host}"\ninsecure = true\n`, async () => {
      const lines: string[] = [];
      const saved = console.error;
      console.error = (l: string) => lines.push(l);
      let setup;
      try {
        setup = await setupRegistry({ "no-cache": true, debug: true }, { prefetch: false });
        const m = await setup.drivers.forHost(host).getManifest(repo, "v1");
        assert.equal(m.digest, pushed.digest);
      } finally {
        console.error = saved;
        setup?.close();
      }
      assert.ok(
        lines.some((l) => /GET https:\/\/crfs-insecure-.*-> error/.test(l)),
        lines.join("\n"),
      );
      assert.ok(lines.some((l) => /trying plain http \(insecure\)/.test(l)));
    });
  } finally {
    await removeHostsLine(line);
    await reg.stop();
  }
});
