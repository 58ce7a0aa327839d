/**
 * Image reference parsing and formatting: hosts with ports, IPv6, any repository depth, tags and
 * digests, Docker Hub normalization, the `local` pseudo-host, and clear errors for bad input.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  formatReference,
  InvalidReferenceError,
  parseReference,
  parseRepositoryName,
  referenceTarget,
  repositoryName,
} from "../../drivers/reference.ts";

const D = "sha256:" + "ab".repeat(32);

Deno.test("references parse into host, repository, tag and digest", () => {
  const cases: [string, object][] = [
    ["ubuntu", { host: "registry-1.docker.io", repository: "library/ubuntu", tag: "latest" }],
    ["ubuntu:24.04", { host: "registry-1.docker.io", repository: "library/ubuntu", tag: "24.04" }],
    ["docker.io/ubuntu", {
      host: "registry-1.docker.io",
      repository: "library/ubuntu",
      tag: "latest",
    }],
    ["index.docker.io/library/ubuntu:22.04", {
      host: "registry-1.docker.io",
      repository: "library/ubuntu",
      tag: "22.04",
    }],
    ["user/app", { host: "registry-1.docker.io", repository: "user/app", tag: "latest" }],
    ["docker.io/user/app:v1", { host: "registry-1.docker.io", repository: "user/app", tag: "v1" }],
    ["quay.io/a/b/c/d:tag_1.0-x", { host: "quay.io", repository: "a/b/c/d", tag: "tag_1.0-x" }],
    ["localhost/app", { host: "localhost", repository: "app", tag: "latest" }],
    ["localhost:5000/app", { host: "localhost:5000", repository: "app", tag: "latest" }],
    ["127.0.0.1:5000/a/b:t", { host: "127.0.0.1:5000", repository: "a/b", tag: "t" }],
    [`127.0.0.1:5000/a/b@${D}`, { host: "127.0.0.1:5000", repository: "a/b", digest: D }],
    [`127.0.0.1:5000/a/b:t@${D}`, {
      host: "127.0.0.1:5000",
      repository: "a/b",
      tag: "t",
      digest: D,
    }],
    ["[::1]:5000/x", { host: "[::1]:5000", repository: "x", tag: "latest" }],
    ["Registry.Example.COM/x", { host: "registry.example.com", repository: "x", tag: "latest" }],
    ["local/foo", { host: "local", repository: "foo", tag: "latest" }],
    ["local/team/foo:v2", { host: "local", repository: "team/foo", tag: "v2" }],
    ["gcr.io/my-proj/app__x/y.z", {
      host: "gcr.io",
      repository: "my-proj/app__x/y.z",
      tag: "latest",
    }],
    ["a-b---c.io/x--y", { host: "a-b---c.io", repository: "x--y", tag: "latest" }],
  ];
  for (const [text, want] of cases) assert.deepEqual(parseReference(text), want, text);
  assert.deepEqual(parseReference("quay.io/x", { defaultTag: null }), {
    host: "quay.io",
    repository: "x",
  });
});

Deno.test("references format back", () => {
  for (
    const text of ["quay.io/a/b:1", `127.0.0.1:5000/a@${D}`, "local/x:latest", `h.io/r:t@${D}`]
  ) {
    assert.equal(formatReference(parseReference(text)), text);
  }
  assert.equal(
    formatReference(parseReference("ubuntu")),
    "registry-1.docker.io/library/ubuntu:latest",
  );
  assert.equal(formatReference(parseReference("ubuntu"), { familiar: true }), "ubuntu:latest");
  assert.equal(formatReference(parseReference("user/app:v1"), { familiar: true }), "user/app:v1");
  assert.equal(referenceTarget(parseReference(`q.io/a:t@${D}`)), D);
  assert.equal(referenceTarget(parseReference("q.io/a", { defaultTag: null })), "latest");
  assert.deepEqual(parseRepositoryName("docker.io/ubuntu"), {
    host: "registry-1.docker.io",
    repository: "library/ubuntu",
  });
  assert.deepEqual(repositoryName("index.docker.io", "busybox"), {
    host: "registry-1.docker.io",
    repository: "library/busybox",
  });
});

Deno.test("bad references are user errors that say what is wrong", () => {
  const bad: [string, RegExp][] = [
    ["", /empty reference/],
    ["Ubuntu", /must be lowercase/],
    ["quay.io/Org/app", /must be lowercase \("Org"\)/],
    ["quay.io/a//b", /empty path component/],
    ["quay.io/a/", /empty path component/],
    ["quay.io/a:", /empty tag/],
    ["quay.io/a:-x", /bad tag/],
    ["quay.io/a:" + "t".repeat(129), /bad tag/],
    ["quay.io/a@sha256:abc", /64 hex digits/],
    ["quay.io/a@md5:" + "0".repeat(32), /unsupported digest algorithm/],
    [`quay.io/a@sha256:${"AB".repeat(32)}`, /lowercase/],
    ["quay.io:99999/a", /bad port/],
    ["quay.io:x/a", /bad port/],
    ["https://quay.io/a", /no scheme/],
    ["quay.io/a b", /whitespace/],
    ["-bad.io/a", /bad host name/],
    ["quay.io/a$b", /bad path component/],
    ["quay.io/" + "a".repeat(256), /longer than 255/],
    ["[::1/x", /unterminated IPv6/],
  ];
  for (const [text, re] of bad) {
    assert.throws(() => parseReference(text), (e: unknown) => {
      assert.ok(e instanceof InvalidReferenceError, `${text}: ${e}`);
      assert.match(e.message, re, text);
      assert.ok(e.message.includes(JSON.stringify(text)), "names the input");
      assert.equal(e.exitCode, 2);
      return true;
    });
  }
});
