/**
 * The registry layer under faults, injected by a proxy in front of the real docker-registry:
 * servers that ignore `Range`, connection resets and truncated bodies in the middle of a read,
 * wrong `Content-Range`s, 5xx and 429 (`Retry-After`), corrupted manifests, drip-fed bodies,
 * 416, a stopped registry, and redirects to another host (which must not receive
 * `Authorization`). Reads either return exactly the right bytes or fail with a clear error.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createContext, type DriverOptions } from "../../drivers/driver.ts";
import { DockerV2Driver } from "../../drivers/docker_v2.ts";
import { RegistryError } from "../../drivers/errors.ts";
import { startFaultProxy } from "../helpers/fault_proxy.ts";
import { pushImage, randomBytes } from "../helpers/images.ts";
import { startRegistry } from "../helpers/registry.ts";
import { startStaticServer } from "../helpers/static_server.ts";

function driver(options: DriverOptions = {}, wholeBlobLimit?: number): DockerV2Driver {
  return new DockerV2Driver(createContext({ dockerConfig: false, backoffMs: 10, ...options }), {
    wholeBlobLimit,
  });
}

async function rejectsWith(
  p: Promise<unknown>,
  code: string,
  pattern?: RegExp,
): Promise<RegistryError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof RegistryError, `expected RegistryError, got ${e}`);
    assert.equal(e.code, code, e.message);
    if (pattern) assert.match(e.message, pattern);
    return e;
  }
  assert.fail(`expected a ${code} error`);
}

/** A registry with one image holding a ~1 MiB layer, and a fault proxy in front of it. */
async function setup(opts: Parameters<typeof startRegistry>[0] = {}) {
  const reg = await startRegistry(opts);
  const proxy = startFaultProxy(reg.url);
  try {
    const pushed = await pushImage(reg, "faults/img", "v1", {
      files: { "data.bin": randomBytes(1 << 20, 11) },
    });
    const layer = pushed.image.layers[0];
    return {
      reg,
      proxy,
      pushed,
      layer,
      repo: { host: proxy.host, repository: "faults/img" },
      async stop() {
        await proxy.stop();
        await reg.stop();
      },
    };
  } catch (e) {
    await proxy.stop();
    await reg.stop();
    throw e;
  }
}

Deno.test("a server that ignores Range: small blobs are read once, verified and served from memory", async () => {
  const s = await setup();
  try {
    s.proxy.inject({ kind: "ignore-range" }, { times: Infinity });
    const src = await driver().blob(s.repo, s.layer.digest, s.layer.bytes.length);
    for (const [off, len] of [[5, 100], [300_000, 4096], [s.layer.bytes.length - 3, 3]]) {
      assert.deepEqual(await src.read(off, len), s.layer.bytes.subarray(off, off + len));
    }
    const gets = s.proxy.log.filter((e) => e.method === "GET" && e.path.includes(s.layer.digest));
    assert.equal(gets.length, 1, "one whole-blob GET, then reads from memory");
    assert.equal(gets[0].status, 200);
    const stats = src as unknown as { rangeIgnored: boolean };
    assert.equal(stats.rangeIgnored, true);
  } finally {
    await s.stop();
  }
});

Deno.test("a server that ignores Range: large blobs are streamed and sliced per read", async () => {
  const s = await setup();
  try {
    s.proxy.inject({ kind: "ignore-range" }, { times: Infinity });
    const src = await driver({}, 1024).blob(s.repo, s.layer.digest, s.layer.bytes.length);
    for (
      const [off, len] of [[0, 10], [700_000, 70_000], [s.layer.bytes.length - 1, 1], [12345, 1]]
    ) {
      assert.deepEqual(
        await src.read(off, len),
        s.layer.bytes.subarray(off, off + len),
        `read(${off}, ${len})`,
      );
    }
  } finally {
    await s.stop();
  }
});

Deno.test("transient faults are retried and reads stay exact", async () => {
  const s = await setup();
  try {
    const d = driver();
    const src = await d.blob(s.repo, s.layer.digest, s.layer.bytes.length);
    const blobGet = /^GET \/v2\/faults\/img\/blobs\//;
    const faults = [
      { kind: "reset", afterBytes: 1000 },
      { kind: "truncate", afterBytes: 1000 },
      { kind: "wrong-content-range", shift: 1 },
      { kind: "status", status: 503 },
      { kind: "status", status: 500 },
      { kind: "status", status: 429, headers: { "retry-after": "1" } },
    ] as const;
    for (const fault of faults) {
      s.proxy.log.length = 0;
      s.proxy.inject(fault, { match: blobGet, times: 1 });
      const t0 = Date.now();
      const got = await src.read(4096, 200_000);
      assert.deepEqual(got, s.layer.bytes.subarray(4096, 204_096), `bytes after ${fault.kind}`);
      const gets = s.proxy.log.filter((e) => e.method === "GET" && e.path.includes("/blobs/"));
      assert.equal(
        gets.length,
        2,
        `${fault.kind}: one failed attempt, one retry: ${JSON.stringify(s.proxy.log)}`,
      );
      assert.equal(gets[0].fault, fault.kind);
      if (fault.kind === "status" && fault.status === 429) {
        assert.ok(Date.now() - t0 >= 950, "Retry-After honoured");
      }
    }
  } finally {
    await s.stop();
  }
});

Deno.test("persistent faults fail clearly, never with wrong bytes", async () => {
  const s = await setup();
  try {
    const d = driver({ retries: 2 });
    const src = await d.blob(s.repo, s.layer.digest, s.layer.bytes.length);
    s.proxy.inject({ kind: "wrong-content-range", shift: 7 }, { times: Infinity });
    await rejectsWith(src.read(0, 100), "BAD_RESPONSE", /asked for bytes 0-99.*sent 7-106/);
    s.proxy.clear();
    s.proxy.inject({ kind: "truncate", afterBytes: 50 }, { times: Infinity });
    await rejectsWith(src.read(0, 100), "BAD_RESPONSE", /ended after 50 of 100/);
    s.proxy.clear();
    s.proxy.inject({ kind: "status", status: 503 }, { times: Infinity });
    const err = await rejectsWith(
      src.read(0, 100),
      "UNAVAILABLE",
      /faults\/img@sha256:[0-9a-f]{64}.*HTTP 503/,
    );
    assert.equal(err.status, 503);
    s.proxy.clear();
    s.proxy.inject({ kind: "status", status: 429, headers: { "retry-after": "3600" } }, {
      times: Infinity,
    });
    const t0 = Date.now();
    await rejectsWith(src.read(0, 100), "UNAVAILABLE", /too many requests.*retry after 3600/);
    assert.ok(Date.now() - t0 < 2000, "a Retry-After beyond the limit fails at once");
    s.proxy.clear();
    // The registry's 416 when a read goes past the real end of the blob.
    const lying = await d.blob(s.repo, s.layer.digest, s.layer.bytes.length + 1000);
    await rejectsWith(
      lying.read(s.layer.bytes.length + 10, 10),
      "RANGE_NOT_SATISFIABLE",
      /HTTP 416/,
    );
  } finally {
    await s.stop();
  }
});

Deno.test("corrupted manifests are caught by digest verification", async () => {
  const s = await setup();
  try {
    const d = driver({ retries: 1 });
    const manifests = /\/manifests\//;
    s.proxy.inject({ kind: "corrupt", offset: 3 }, { match: manifests, times: Infinity });
    await rejectsWith(
      d.getManifest(s.repo, s.pushed.digest),
      "DIGEST_MISMATCH",
      /expected sha256:/,
    );
    await rejectsWith(d.getManifest(s.repo, "v1"), "DIGEST_MISMATCH", /Docker-Content-Digest/);
    s.proxy.clear();
    s.proxy.inject({
      kind: "set-header",
      headers: { "docker-content-digest": `sha256:${"4".repeat(64)}` },
    }, {
      match: manifests,
      times: Infinity,
    });
    await rejectsWith(d.getManifest(s.repo, "v1"), "DIGEST_MISMATCH");
    s.proxy.clear();
    s.proxy.inject({ kind: "corrupt", offset: 3 }, { match: manifests, times: 1 });
    const m = await d.getManifest(s.repo, s.pushed.digest);
    assert.deepEqual(m.bytes, s.pushed.image.manifest.bytes, "a one-off corruption is retried");
    // A corrupted blob stream errors at its end instead of passing the bad bytes as good.
    s.proxy.inject({ kind: "corrupt", offset: 10 }, { match: /\/blobs\//, times: 1 });
    const stream = await d.fetchBlob(s.repo, s.layer.digest);
    await rejectsWith(new Response(stream).arrayBuffer(), "DIGEST_MISMATCH");
  } finally {
    await s.stop();
  }
});

Deno.test("a drip-fed body times out and the request gives up within its deadline", async () => {
  const s = await setup();
  try {
    const d = driver({ timeoutMs: 300, deadlineMs: 1500, retries: 10 });
    const src = await d.blob(s.repo, s.layer.digest, s.layer.bytes.length);
    s.proxy.inject({ kind: "drip", chunkBytes: 10, intervalMs: 100 }, {
      match: /\/blobs\//,
      times: Infinity,
    });
    const t0 = Date.now();
    const err = await rejectsWith(src.read(0, 10_000), "TIMEOUT");
    const took = Date.now() - t0;
    assert.ok(took < 3000, `bounded by the deadline (took ${took} ms)`);
    assert.match(err.message, /faults\/img@sha256/);
  } finally {
    await s.stop();
  }
});

Deno.test("a stopped registry gives a clear connection error in bounded time", async () => {
  const reg = await startRegistry();
  const host = reg.host;
  await reg.stop();
  const d = driver({ backoffMs: 100 });
  const t0 = Date.now();
  const err = await rejectsWith(
    d.getManifest({ host, repository: "gone/img" }, "v1"),
    "CONNECTION",
    new RegExp(
      `^${host.replace(/\./g, "\\.")}/gone/img:v1: cannot connect to .*connection refused`,
    ),
  );
  assert.ok(Date.now() - t0 < 10_000, "bounded");
  assert.ok(err.transient);
});

Deno.test("redirects to another host drop Authorization; same-host redirects keep it", async () => {
  const reg = await startRegistry({ auth: "basic" });
  const proxy = startFaultProxy(reg.url);
  const storage = startStaticServer({ hostname: "127.0.0.2" });
  try {
    const [user, password] = Object.entries(reg.users)[0];
    const pushed = await pushImage(reg, "redir/img", "v1", {
      files: { "r.bin": randomBytes(100_000, 5) },
    });
    const layer = pushed.image.layers[0];
    storage.files.set(`/storage/${layer.digest}`, layer.bytes);
    const lines: string[] = [];
    const d = driver({ username: user, password, debug: (l) => lines.push(l) });
    const repo = { host: proxy.host, repository: "redir/img" };
    proxy.inject({
      kind: "redirect",
      status: 307,
      location: () => `${storage.url}/storage/${layer.digest}?X-Amz-Signature=s3cr3t`,
    }, {
      match: /^GET \/v2\/redir\/img\/blobs\//,
      times: Infinity,
    });
    const src = await d.blob(repo, layer.digest, layer.bytes.length);
    assert.deepEqual(await src.read(1000, 5000), layer.bytes.subarray(1000, 6000));
    const viaProxy = proxy.log.filter((e) => e.fault === "redirect");
    assert.ok(
      viaProxy.length >= 1 && viaProxy.every((e) => e.authorization),
      "the registry got Authorization",
    );
    assert.equal(storage.requests.length, 1);
    assert.equal(storage.requests[0].headers.authorization, undefined, "the other host did not");
    assert.equal(
      storage.requests[0].headers.range,
      "bytes=1000-5999",
      "the Range survives the redirect",
    );
    // A redirect to the same host keeps the credentials.
    proxy.clear();
    proxy.log.length = 0;
    proxy.inject({ kind: "redirect", status: 302, location: (u) => `${u.pathname}?again=1` }, {
      match: /^GET \/v2\/redir\/img\/manifests\/v1$/,
      times: 1,
    });
    const m = await d.getManifest(repo, "v1");
    assert.equal(m.digest, pushed.digest);
    const second = proxy.log.find((e) => e.path.includes("again=1"));
    assert.ok(second?.authorization, "same-host redirect keeps Authorization");
    // Nothing secret reached the debug log.
    const text = lines.join("\n");
    assert.ok(lines.some((l) => l.includes("redirect 307")), text);
    assert.ok(!text.includes(password), "no password in the debug log");
    assert.ok(!text.includes(btoa(`${user}:${password}`)), "no basic credentials in the debug log");
    assert.ok(!text.includes("s3cr3t"), "signed-URL signatures are redacted");
  } finally {
    await storage.stop();
    await proxy.stop();
    await reg.stop();
  }
});
