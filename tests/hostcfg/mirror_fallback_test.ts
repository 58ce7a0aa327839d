/**
 * registries.conf mirrors with real registries: a mirror serves the image while the original is
 * down, a mirror missing the image falls through to the primary, digest-only mirrors are skipped
 * for tags, blocked references fail, and when everything fails the error names every endpoint.
 */
import assert from "node:assert/strict";
import { withEndpoints } from "../../drivers/mirror_fallback.ts";
import {
  mergeRegistriesDocument,
  type RegistriesConfig,
  resolveRegistry,
} from "../../drivers/registries_conf.ts";
import { parseToml } from "../../drivers/toml.ts";
import { createContext } from "../../drivers/driver.ts";
import { DockerV2Driver } from "../../drivers/docker_v2.ts";
import { RegistryError } from "../../drivers/errors.ts";
import { parseReference } from "../../drivers/reference.ts";
import { pushImage } from "../helpers/images.ts";
import { startRegistry } from "../helpers/registry.ts";

function conf(text: string): RegistriesConfig {
  const c: RegistriesConfig = {
    registries: [],
    unqualifiedSearchRegistries: [],
    credentialHelpers: ["containers-auth.json"],
    aliases: {},
    files: ["test.conf"],
  };
  mergeRegistriesDocument(c, parseToml(text, "test.conf"), "test.conf");
  return c;
}

Deno.test("mirrors: a mirror serves while the original is down; fall-through; blocked", async () => {
  const primary = await startRegistry();
  const mirror = await startRegistry();
  const d = new DockerV2Driver(createContext({ dockerConfig: false, retries: 0, backoffMs: 1 }));
  try {
    const onPrimary = await pushImage(primary, "team/app", "v1", {
      files: { "etc/a": "primary\n" },
    });
    const onMirror = await pushImage(mirror, "mirrored/team/app", "v1", {
      files: { "etc/a": "primary\n" },
    });
    await pushImage(primary, "team/only-primary", "v1");
    const c = conf(`
[[registry]]
prefix = "${primary.host}/team"
location = "${primary.host}/team"
[[registry.mirror]]
location = "${mirror.host}/mirrored/team"

[[registry]]
prefix = "${primary.host}/blocked"
blocked = true
`);
    const get = (ref: string) => {
      const r = parseReference(ref);
      return withEndpoints(
        resolveRegistry(c, r),
        ref,
        (e) => d.getManifest({ host: e.host, repository: e.repository }, r.tag ?? r.digest!),
      );
    };
    const first = await get(`${primary.host}/team/app:v1`);
    assert.equal(first.endpoint.mirror, true);
    assert.equal(first.value.digest, onMirror.digest);
    assert.equal(onMirror.digest, onPrimary.digest, "the same image on both");

    // Not on the mirror: the primary.
    const fell = await get(`${primary.host}/team/only-primary:v1`);
    assert.equal(fell.endpoint.mirror, false);
    assert.equal(fell.failures.length, 1);

    await assert.rejects(
      () => get(`${primary.host}/blocked/x:1`),
      (e: Error) =>
        e instanceof RegistryError && e.code === "DENIED" &&
        /blocked by test\.conf/.test(e.message),
    );

    // The original down: the mirror still serves the image.
    await primary.stop();
    const down = await get(`${primary.host}/team/app:v1`);
    assert.equal(down.endpoint.host, mirror.host);
    assert.equal(down.value.digest, onMirror.digest);
    const layer = await d.blob(
      { host: down.endpoint.host, repository: down.endpoint.repository },
      onMirror.image.layers[0].digest,
    );
    assert.equal((await layer.read(0, 2)).length, 2);

    // Nothing serves it: every endpoint named, the primary's error code kept.
    const e = await get(`${primary.host}/team/only-primary:v1`).then(() => undefined, (x) => x);
    assert.ok(e instanceof RegistryError, String(e));
    assert.match(e.message, new RegExp(`mirror ${mirror.host}/mirrored/team/only-primary: `));
    assert.match(e.message, new RegExp(`primary ${primary.host}/team/only-primary: .*connect`));
    assert.equal(e.code, "CONNECTION");
  } finally {
    await primary.stop();
    await mirror.stop();
  }
});
