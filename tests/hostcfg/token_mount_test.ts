/**
 * Expiring credentials under a mount: a token-auth docker-registry whose token server issues
 * 2-second tokens, and `crfs mount --creds USER:PASS --host HOST` (the credentials bound to that
 * one host) reading files of a private eStargz image before and after several expiries. Every
 * read succeeds; the token server saw the user again for each renewal.
 *
 * @module
 */
import assert from "node:assert/strict";
import { defaultDrivers } from "../../drivers/mod.ts";
import { pushEStargzLayers } from "../../convert/push.ts";
import { startRegistry } from "../helpers/registry.ts";
import { randomBytes } from "../helpers/images.ts";
import { type MountProcess, startMount, tarTree, toEStargz } from "../mount/helpers.ts";

Deno.test("a mount keeps reading across 2-second token expiries", async () => {
  const reg = await startRegistry({ auth: "token", tokenExpiresIn: 2 });
  const dir = await Deno.makeTempDir({ prefix: "crfs-tokmount-" });
  let mount: MountProcess | undefined;
  try {
    const [user, password] = Object.entries(reg.users)[0];
    // Incompressible files of their own chunks: each read after an expiry fetches new ranges.
    const files: Uint8Array[] = [];
    await Deno.mkdir(`${dir}/tree`);
    for (let i = 0; i < 3; i++) {
      files.push(randomBytes(1_500_000, 7 + i));
      await Deno.writeFile(`${dir}/tree/f${i}.bin`, files[i]);
    }
    await tarTree(`${dir}/tree`, `${dir}/layer.tar`);
    const layer = await toEStargz(`${dir}/layer.tar`);
    const pusher = defaultDrivers({
      authFiles: false,
      explicitCredentials: [{ hosts: [reg.host], username: user, password, source: "test" }],
    });
    await pushEStargzLayers(
      pusher.forHost(reg.host),
      { host: reg.host, repository: "priv/app" },
      "v1",
      [{ blobPath: layer.blob, result: layer }],
      { config: { Cmd: ["/bin/sh"] } },
    );
    const ts = reg.tokenServer!;
    ts.requests.length = 0;
    mount = await startMount(`${dir}/mnt`, [
      "--creds",
      `${user}:${password}`,
      "--host",
      reg.host,
      "--no-background-fetch",
    ]);
    const image = `${mount.mnt}/images/${reg.host}/priv/app/v1`;
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(await Deno.readFile(`${image}/f${i}.bin`), files[i]);
      await new Promise((r) => setTimeout(r, 2300));
    }
    const asUser = ts.requests.filter((r) => r.user === user && r.status === 200);
    assert.ok(asUser.length >= 3, JSON.stringify(ts.requests));
    assert.ok(ts.requests.every((r) => r.via !== "anonymous"), "never anonymous");
    assert.ok(!mount.stderr().includes(password), "no password in the log");
  } finally {
    await mount?.stop();
    await reg.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
