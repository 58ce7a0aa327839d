/**
 * The TLS flags as the commands wire them (`setupRegistry`): a registry with a certificate from
 * a CA the test makes is refused with a message naming the host and what to configure; trusted
 * with `--certs-dir DIR` (DIR/HOST:PORT/ca.crt); reached without checks with
 * `--tls-verify=false` — still https, never plain http.
 *
 * @module
 */
import assert from "node:assert/strict";
import { setupRegistry } from "../../cmd/registry_options.ts";
import { RegistryError } from "../../drivers/errors.ts";
import { buildImage, imageBlobs, skopeoCopy, writeOciLayout } from "../helpers/images.ts";
import { addHostsLine, makePki, removeHostsLine, startTlsRegistry } from "./tls_helpers.ts";

Deno.test("--certs-dir and --tls-verify=false reach a registry with a private CA", async () => {
  const dir = await Deno.makeTempDir({ prefix: "crfs-tlsflags-" });
  const name = `crfs-tls-${crypto.randomUUID().slice(0, 8)}.test`;
  const line = `127.0.0.1 ${name} # crfs tls flags test`;
  await makePki(dir, name);
  await addHostsLine(line);
  const reg = await startTlsRegistry(dir, "reg");
  const saved = Deno.env.get("CONTAINERS_REGISTRIES_CONF");
  // An empty file, not a missing one: podman and skopeo in test files running in this process
  // meanwhile see it too, and they refuse a missing one.
  await Deno.writeTextFile(`${dir}/none.conf`, "# nothing configured\n");
  Deno.env.set("CONTAINERS_REGISTRIES_CONF", `${dir}/none.conf`);
  try {
    const host = `${name}:${reg.port}`;
    const image = await buildImage({ files: { "a": "a\n" } });
    await writeOciLayout(`${dir}/oci`, imageBlobs(image), { v1: image.manifest });
    const digest = await skopeoCopy(`oci:${dir}/oci:v1`, `docker://${host}/t/app:v1`);
    const repo = { host, repository: "t/app" };
    const get = async (values: Record<string, unknown>) => {
      const setup = await setupRegistry({ "no-cache": true, ...values }, { prefetch: false });
      try {
        return await setup.drivers.forHost(host).getManifest(repo, "v1");
      } finally {
        setup.close();
      }
    };
    const e = await get({}).then(() => undefined, (e) => e);
    assert.ok(e instanceof RegistryError && e.code === "TLS", String(e));
    assert.ok(e.message.includes(host), e.message);
    assert.match(e.message, /unknown authority.*certs\.d.*--tls-verify=false/);

    await Deno.mkdir(`${dir}/certs.d/${host}`, { recursive: true });
    await Deno.copyFile(`${dir}/ca.crt`, `${dir}/certs.d/${host}/ca.crt`);
    assert.equal((await get({ "certs-dir": [`${dir}/certs.d`] })).digest, digest);

    const lines: string[] = [];
    const log = console.error;
    console.error = (l: string) => lines.push(l);
    try {
      assert.equal((await get({ "tls-verify": "false", debug: true })).digest, digest);
    } finally {
      console.error = log;
    }
    assert.ok(lines.some((l) => l.includes(`GET https://${host}/v2/t/app/manifests/v1`)));
    assert.ok(!lines.some((l) => l.includes(`http://${host}`)), "never plain http");
    await assert.rejects(get({ "tls-verify": "maybe" }), /--tls-verify is true or false/);
  } finally {
    if (saved === undefined) Deno.env.delete("CONTAINERS_REGISTRIES_CONF");
    else Deno.env.set("CONTAINERS_REGISTRIES_CONF", saved);
    await reg.stop();
    await removeHostsLine(line);
    await Deno.remove(dir, { recursive: true });
  }
});
