/**
 * The HTTP client's pieces that do not need a registry: scheme choice, redaction, `Link`
 * pagination headers, registry error bodies, manifests parsing and platform choice — plus TLS:
 * a self-signed https server on loopback is refused (certificates are checked) with a hint.
 *
 * @module
 */
import assert from "node:assert/strict";
import { nextLink } from "../../drivers/docker_v2.ts";
import { RegistryError } from "../../drivers/errors.ts";
import {
  HttpClient,
  isLoopbackHost,
  redactText,
  redactUrl,
  responseError,
} from "../../drivers/http.ts";
import { MediaType, parseManifest, parsePlatform, selectPlatform } from "../../drivers/manifest.ts";
import { makeSigningKey } from "../helpers/token_server.ts";

Deno.test("plain http only for loopback and listed insecure registries", () => {
  const http = new HttpClient({ insecureRegistries: ["registry.lan:5000", "build.local"] });
  for (const h of ["localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000"]) {
    assert.ok(isLoopbackHost(h), h);
    assert.equal(http.baseUrl(h), `http://${h}`);
  }
  assert.equal(http.baseUrl("registry.lan:5000"), "http://registry.lan:5000");
  assert.equal(http.baseUrl("build.local:443"), "http://build.local:443");
  assert.equal(http.baseUrl("registry.lan"), "https://registry.lan");
  assert.equal(http.baseUrl("quay.io"), "https://quay.io");
  assert.equal(http.baseUrl("128.0.0.1"), "https://128.0.0.1");
  assert.ok(!isLoopbackHost("127.0.0.1.example.com"));
});

Deno.test("redaction of URLs and text", () => {
  assert.equal(
    redactUrl("https://u:p@h.io/x?a=1&X-Amz-Signature=zz&token=t"),
    "https://h.io/x?a=REDACTED&X-Amz-Signature=REDACTED&token=REDACTED",
  );
  // Every value of a signed URL goes, whatever its name; the registry API's own stay.
  const signed = redactUrl(
    "https://blobs.example/sha256:ab?verify=1700000000-Zm9vYmFy&Expires=99&hmac=deadbeef&X-Goog-Date=20260101",
  );
  for (const secret of ["Zm9vYmFy", "99", "deadbeef", "20260101"]) {
    assert.ok(!signed.includes(secret), signed);
  }
  assert.match(signed, /verify=REDACTED&Expires=REDACTED&hmac=REDACTED&X-Goog-Date=REDACTED$/);
  assert.equal(
    redactUrl("http://127.0.0.1:5000/v2/_catalog?n=100&last=team%2Fapp"),
    "http://127.0.0.1:5000/v2/_catalog?n=100&last=team%2Fapp",
  );
  assert.ok(
    !redactText("redirect 307 -> https://s3.example/b?verify=sekrit-value&n=1").includes("sekrit"),
  );
  const t = redactText(
    "GET https://h.io/t?access_token=abc failed; Authorization: Bearer eyJhbGciOi.x.y and Basic dXNlcjpwdw==",
  );
  assert.ok(!t.includes("abc") && !t.includes("eyJhbGciOi") && !t.includes("dXNlcjpwdw=="), t);
});

Deno.test("Link headers: relative, absolute, other rels, other origins", () => {
  const base = "http://127.0.0.1:5000/v2/_catalog?n=2";
  assert.equal(
    nextLink('</v2/_catalog?last=b&n=2>; rel="next"', base),
    "http://127.0.0.1:5000/v2/_catalog?last=b&n=2",
  );
  assert.equal(
    nextLink("<http://127.0.0.1:5000/v2/x/tags/list?last=t>; rel=next", base),
    "http://127.0.0.1:5000/v2/x/tags/list?last=t",
  );
  assert.equal(nextLink('</a>; rel="prev", </b>; rel="next"', base), "http://127.0.0.1:5000/b");
  assert.equal(nextLink('<https://evil.example/v2/_catalog>; rel="next"', base), undefined);
  assert.equal(nextLink(null, base), undefined);
});

Deno.test("registry error bodies become RegistryErrors naming the reference", async () => {
  const body = JSON.stringify({
    errors: [{ code: "MANIFEST_UNKNOWN", message: "manifest unknown", detail: { Tag: "x" } }],
  });
  const e = await responseError(new Response(body, { status: 404 }), "quay.io/a:x");
  assert.equal(e.code, "MANIFEST_UNKNOWN");
  assert.equal(e.status, 404);
  assert.equal(e.message, "quay.io/a:x: manifest unknown (HTTP 404 MANIFEST_UNKNOWN)");
  const denied = await responseError(new Response("", { status: 403 }), "quay.io/a:x");
  assert.equal(denied.code, "DENIED");
  assert.match(denied.message, /access denied/);
  const html = await responseError(
    new Response("<html>bad gateway</html>", { status: 502 }),
    "q.io/a:b",
  );
  assert.equal(html.code, "SERVER_ERROR");
  assert.ok(html.transient);
});

Deno.test("manifest parsing and platform choice", () => {
  const enc = new TextEncoder();
  const m = parseManifest(
    enc.encode(
      JSON.stringify({
        schemaVersion: 2,
        config: { digest: "sha256:x", size: 1, mediaType: "c" },
        layers: [],
      }),
    ),
    "sha256:d",
    null,
    "w",
  );
  assert.equal(m.kind, "image");
  assert.equal(m.mediaType, MediaType.OCI_MANIFEST);
  assert.throws(
    () =>
      parseManifest(
        enc.encode('{"schemaVersion":1,"fsLayers":[]}'),
        "d",
        "application/json",
        "q.io/a:b",
      ),
    (e: RegistryError) => e.code === "UNSUPPORTED" && /schema 1/.test(e.message),
  );
  assert.throws(() => parseManifest(enc.encode("{nope"), "d", null, "w"), /not valid JSON/);
  assert.throws(
    () => parseManifest(enc.encode("{}"), "d", "application/vnd.example+json", "w"),
    /unsupported manifest media type/,
  );
  const index = {
    schemaVersion: 2,
    manifests: [
      {
        mediaType: "m",
        digest: "sha256:att",
        size: 1,
        platform: { os: "unknown", architecture: "unknown" },
      },
      {
        mediaType: "m",
        digest: "sha256:v7",
        size: 1,
        platform: { os: "linux", architecture: "arm", variant: "v7" },
      },
      {
        mediaType: "m",
        digest: "sha256:v6",
        size: 1,
        platform: { os: "linux", architecture: "arm", variant: "v6" },
      },
      {
        mediaType: "m",
        digest: "sha256:a64",
        size: 1,
        platform: { os: "linux", architecture: "arm64", variant: "v8" },
      },
      {
        mediaType: "m",
        digest: "sha256:amd",
        size: 1,
        platform: { os: "linux", architecture: "amd64" },
      },
      {
        mediaType: "m",
        digest: "sha256:win",
        size: 1,
        platform: { os: "windows", architecture: "amd64" },
      },
    ],
  };
  assert.equal(selectPlatform(index, parsePlatform("linux/amd64"), "w").digest, "sha256:amd");
  assert.equal(selectPlatform(index, parsePlatform("windows/amd64"), "w").digest, "sha256:win");
  assert.equal(selectPlatform(index, parsePlatform("linux/arm64"), "w").digest, "sha256:a64");
  assert.equal(selectPlatform(index, parsePlatform("aarch64"), "w").digest, "sha256:a64");
  assert.equal(selectPlatform(index, parsePlatform("linux/arm/v6"), "w").digest, "sha256:v6");
  assert.throws(
    () => selectPlatform(index, parsePlatform("linux/riscv64"), "q.io/a:b"),
    (e: RegistryError) => e.code === "PLATFORM_NOT_FOUND" && /q\.io\/a:b/.test(e.message),
  );
  assert.throws(() => parsePlatform("linux/"), /bad platform/);
});

Deno.test("https: certificates are checked (a self-signed server is refused with a hint)", async () => {
  const key = await makeSigningKey("localhost");
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert: key.certPem,
    key: key.keyPem,
    onListen() {},
  }, () => new Response("ok"));
  try {
    const port = (server.addr as Deno.NetAddr).port;
    const http = new HttpClient({ retries: 0 });
    await assert.rejects(
      http.requestWith({ url: `https://127.0.0.1:${port}/v2/`, what: "tls.test" }, (r) => r.text()),
      (e: RegistryError) =>
        // Worded by tlsErrorMessage: the host, and what to configure (certs.d, --tls-verify).
        e.code === "TLS" && /^tls\.test: TLS: .*127\.0\.0\.1:\d+/.test(e.message) &&
        /certs\.d/.test(e.message) && /--tls-verify=false/.test(e.message),
    );
  } finally {
    await server.shutdown();
  }
});
