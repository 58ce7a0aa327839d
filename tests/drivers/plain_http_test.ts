/**
 * Plain http only to loopback and explicitly insecure hosts: a loopback registry that redirects
 * to plain http on a named host (a name this test adds to /etc/hosts, mapped to 127.0.0.1, so
 * nothing leaves the machine) is refused unless that host is listed insecure, and credentials
 * are never sent to a plain-http token server on such a host just because the registry itself
 * is loopback.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createContext, type DriverOptions } from "../../drivers/driver.ts";
import { DockerV2Driver } from "../../drivers/docker_v2.ts";
import { RegistryError } from "../../drivers/errors.ts";
import { startStaticServer } from "../helpers/static_server.ts";
import { startTokenServer } from "../helpers/token_server.ts";
import { addHostsLine, removeHostsLine } from "../hostcfg/tls_helpers.ts";

function driver(options: DriverOptions = {}): DockerV2Driver {
  return new DockerV2Driver(createContext({ dockerConfig: false, retries: 0, ...options }));
}

async function withName<T>(fn: (name: string) => Promise<T>): Promise<T> {
  const name = `crfs-plain-${crypto.randomUUID().slice(0, 8)}.test`;
  const line = `127.0.0.1 ${name} # crfs plain-http test`;
  await addHostsLine(line);
  try {
    return await fn(name);
  } finally {
    await removeHostsLine(line);
  }
}

Deno.test("a loopback registry's redirect to plain http on another host is refused", async () => {
  await withName(async (name) => {
    const storage = startStaticServer();
    const port = storage.host.split(":")[1];
    storage.files.set("/m", new TextEncoder().encode("{}"));
    const reg = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
      const url = new URL(req.url);
      if (url.pathname === "/v2/") return new Response("{}");
      return new Response(null, {
        status: 307,
        headers: { location: `http://${name}:${port}/m?sig=x` },
      });
    });
    const host = `127.0.0.1:${(reg.addr as Deno.NetAddr).port}`;
    try {
      const e = await driver().getManifest({ host, repository: "a/b" }, "v1").then(
        () => undefined,
        (e) => e,
      );
      assert.ok(e instanceof RegistryError, String(e));
      assert.match(e.message, /refusing a redirect to plain http on crfs-plain-/);
      assert.equal(storage.requests.length, 0, "nothing was sent to the other host");
      // Listed as insecure, the same redirect is followed.
      const e2 = await driver({ insecureRegistries: [`${name}:${port}`] })
        .getManifest({ host, repository: "a/b" }, "v1").then(() => undefined, (e) => e);
      assert.ok(!String(e2?.message).includes("refusing"), String(e2));
      assert.equal(storage.requests.length, 1, "followed once listed insecure");
    } finally {
      await reg.shutdown();
      await storage.stop();
    }
  });
});

Deno.test("credentials never go to a plain-http token server on a non-loopback host", async () => {
  await withName(async (name) => {
    const ts = await startTokenServer({
      users: { alice: "alice-pw" },
      service: "svc",
      issuer: "iss",
    });
    const realm = ts.realm.replace("127.0.0.1", name);
    const reg = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      () =>
        new Response("{}", {
          status: 401,
          headers: { "www-authenticate": `Bearer realm="${realm}",service="svc"` },
        }),
    );
    const host = `127.0.0.1:${(reg.addr as Deno.NetAddr).port}`;
    try {
      const d = driver({ username: "alice", password: "alice-pw", credentialHosts: [host] });
      const e = await d.getManifest({ host, repository: "a/b" }, "v1").then(
        () => undefined,
        (e) => e,
      );
      assert.ok(e instanceof RegistryError, String(e));
      assert.match(e.message, /refusing to send credentials to a plain-http token server/);
      assert.equal(ts.requests.length, 0, "the token server saw nothing");
    } finally {
      await reg.shutdown();
      await ts.stop();
    }
  });
});
