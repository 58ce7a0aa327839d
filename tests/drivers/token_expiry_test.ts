/**
 * Expiring credentials: a registry that stops accepting a bearer token before the client
 * expected (its token server said `expires_in: 300`, the registry honours 1 second) answers a
 * 401 — or a 403, as some registries do for an expired token — and the client authenticates
 * once more and carries on instead of failing. A real docker-registry with 2-second tokens
 * keeps serving reads across several expiries, each renewal one token request.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createContext } from "../../drivers/driver.ts";
import { DockerV2Driver } from "../../drivers/docker_v2.ts";
import { RegistryError } from "../../drivers/errors.ts";
import { pushImage, sha256 } from "../helpers/images.ts";
import { startRegistry } from "../helpers/registry.ts";

const MANIFEST = new TextEncoder().encode(JSON.stringify({
  schemaVersion: 2,
  mediaType: "application/vnd.oci.image.manifest.v1+json",
  config: {
    mediaType: "application/vnd.oci.image.config.v1+json",
    digest: `sha256:${"0".repeat(64)}`,
    size: 2,
  },
  layers: [],
}));

/** A registry whose tokens really live `lifeMs`, though its token server says 300 s. */
function shortLivedRegistry(lifeMs: number, rejectWith: 401 | 403) {
  const issued = new Map<string, number>();
  let tokens = 0;
  let rejected = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const url = new URL(req.url);
    const challenge = {
      "www-authenticate": `Bearer realm="http://${url.host}/token",service="svc"`,
    };
    if (url.pathname === "/token") {
      const t = `tok-${++tokens}`;
      issued.set(t, Date.now());
      return Response.json({ token: t, expires_in: 300, issued_at: new Date().toISOString() });
    }
    const auth = req.headers.get("authorization") ?? "";
    const t = auth.replace(/^Bearer /, "");
    const at = issued.get(t);
    if (url.pathname === "/v2/") return new Response("{}", { status: 401, headers: challenge });
    if (at === undefined) return new Response("{}", { status: 401, headers: challenge });
    if (Date.now() - at > lifeMs) {
      rejected++;
      return Response.json({ errors: [{ code: "DENIED", message: "token expired" }] }, {
        status: rejectWith,
        headers: rejectWith === 401 ? challenge : {},
      });
    }
    return new Response(MANIFEST, {
      headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" },
    });
  });
  return {
    host: `127.0.0.1:${(server.addr as Deno.NetAddr).port}`,
    tokens: () => tokens,
    rejected: () => rejected,
    stop: () => server.shutdown(),
  };
}

for (const status of [401, 403] as const) {
  Deno.test(`a token rejected early with ${status} is renewed once, not a failure`, async () => {
    const reg = shortLivedRegistry(1000, status);
    try {
      const d = new DockerV2Driver(createContext({ dockerConfig: false, retries: 0 }));
      const repo = { host: reg.host, repository: "a/b" };
      const digest = await sha256(MANIFEST);
      assert.equal((await d.getManifest(repo, "v1")).digest, digest);
      assert.equal(reg.tokens(), 1);
      await new Promise((r) => setTimeout(r, 1200));
      // The cached token (valid for 300 s as far as the client knows) is refused now.
      assert.equal((await d.getManifest(repo, "v1")).digest, digest);
      assert.equal(reg.rejected(), 1, "the stale token was refused once");
      assert.equal(reg.tokens(), 2, "one fresh authentication");
      assert.equal((await d.getManifest(repo, "v1")).digest, digest);
      assert.equal(reg.tokens(), 2, "the fresh token is cached");
    } finally {
      await reg.stop();
    }
  });
}

Deno.test("a 403 to a fresh token is an error at once (no loop)", async () => {
  const reg = shortLivedRegistry(-1, 403);
  try {
    const d = new DockerV2Driver(createContext({ dockerConfig: false, retries: 0 }));
    const e = await d.getManifest({ host: reg.host, repository: "a/b" }, "v1").then(
      () => undefined,
      (e) => e,
    );
    assert.ok(e instanceof RegistryError && e.code === "DENIED", String(e));
    assert.equal(reg.tokens(), 1, "no renewal for a token fetched for this request");
  } finally {
    await reg.stop();
  }
});

Deno.test("2-second tokens: reads keep working across expiries, renewed each time", async () => {
  const reg = await startRegistry({ auth: "token", tokenExpiresIn: 2 });
  try {
    const [user, password] = Object.entries(reg.users)[0];
    const pushed = await pushImage(reg, "exp2/img", "v1");
    const layer = pushed.image.layers[0];
    const d = new DockerV2Driver(
      createContext({ dockerConfig: false, username: user, password, credentialHosts: [reg.host] }),
    );
    const repo = { host: reg.host, repository: "exp2/img" };
    const src = await d.blob(repo, layer.digest, layer.bytes.length);
    for (let round = 0; round < 3; round++) {
      const n = Math.min(64, layer.bytes.length);
      assert.deepEqual(await src.read(0, n), layer.bytes.subarray(0, n));
      await new Promise((r) => setTimeout(r, 2100));
    }
    assert.equal(d.auth.tokenRequests, 3, "one token per 2-second period");
  } finally {
    await reg.stop();
  }
});
