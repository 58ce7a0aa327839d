/**
 * The Docker v2 driver against Debian's real docker-registry: ping, catalog and tag pagination,
 * manifests by tag and digest (OCI, Docker schema 2, an index with two platforms plus an
 * `unknown/unknown` entry), digest verification, exact range reads checked against the blob
 * bytes and the registry's own access log, streams, and the push API (chunked uploads,
 * existence checks, cross-repository mounts, manifests) cross-checked with skopeo.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createContext, type DriverOptions } from "../../drivers/driver.ts";
import { DockerV2Driver } from "../../drivers/docker_v2.ts";
import { RegistryError } from "../../drivers/errors.ts";
import { MediaType } from "../../drivers/manifest.ts";
import { parseReference } from "../../drivers/reference.ts";
import {
  buildImage,
  imageBlobs,
  pushImage,
  pushIndex,
  randomBytes,
  sha256,
} from "../helpers/images.ts";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";

function driver(options: DriverOptions = {}): DockerV2Driver {
  return new DockerV2Driver(createContext({ dockerConfig: false, ...options }), {
    catalogPageSize: (options as { catalogPageSize?: number }).catalogPageSize,
  });
}

/** Pushes a built image through the driver under test. */
async function pushWithDriver(
  d: DockerV2Driver,
  host: string,
  repo: string,
  tag: string,
  seed: number,
) {
  const img = await buildImage({ files: { [`f${seed}.txt`]: `file ${seed}\n` } });
  const r = { host, repository: repo };
  for (const b of [...img.layers, img.config]) {
    if (!(await d.blobExists(r, b.digest))) {
      await d.uploadBlob(r, b.digest, b.bytes.length, b.bytes);
    }
  }
  await d.putManifest(r, tag, img.manifest.mediaType, img.manifest.bytes);
  return img;
}

async function withRegistry(
  fn: (reg: TestRegistry) => Promise<void>,
  opts?: Parameters<typeof startRegistry>[0],
) {
  const reg = await startRegistry(opts);
  try {
    await fn(reg);
  } finally {
    await reg.stop();
  }
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

Deno.test("ping, catalog pagination over more repositories than a page, tags", async () => {
  await withRegistry(async (reg) => {
    const d = driver({ catalogPageSize: 2 } as DriverOptions);
    await d.ping(reg.host);
    const repos = ["alpha/one", "alpha/two", "beta/x/y/z", "gamma", "delta/d"];
    for (const [i, r] of repos.entries()) await pushWithDriver(d, reg.host, r, "v1", i);
    for (const [i, t] of ["v2", "latest", "0.9"].entries()) {
      await pushWithDriver(d, reg.host, "alpha/one", t, 10 + i);
    }
    reg.clearLog();
    const all = await d.listRepositories(reg.host);
    assert.deepEqual(all, [...repos].sort());
    const catalogGets = (await reg.accessLog()).filter((e) => e.path.startsWith("/v2/_catalog"));
    assert.ok(catalogGets.length >= 3, `expected >= 3 catalog pages, got ${catalogGets.length}`);
    assert.ok(
      catalogGets.some((e) => e.path.includes("last=")),
      "follows the relative Link header",
    );
    assert.deepEqual(await d.listRepositories(reg.host, "alpha"), ["alpha/one", "alpha/two"]);
    assert.deepEqual(await d.listRepositories(reg.host, "beta/x"), ["beta/x/y/z"]);
    assert.deepEqual(await d.listOwners(reg.host), ["alpha", "beta", "delta", "gamma"]);
    const tags = await d.listTags({ host: reg.host, repository: "alpha/one" });
    assert.deepEqual(tags.map((t) => t.name), ["0.9", "latest", "v1", "v2"]);
    assert.equal(tags[0].digest, undefined);
    const withDigests = await d.listTags({ host: reg.host, repository: "alpha/one" }, {
      digests: true,
    });
    for (const t of withDigests) {
      const m = await d.getManifest({ host: reg.host, repository: "alpha/one" }, t.name);
      assert.equal(t.digest, m.digest);
    }
    await rejectsWith(
      d.listTags({ host: reg.host, repository: "nope/missing" }),
      "NAME_UNKNOWN",
      /nope\/missing/,
    );
  });
});

Deno.test("manifests by tag and digest: OCI, Docker v2, and an index with platforms", async () => {
  await withRegistry(async (reg) => {
    const d = driver();
    const oci = await pushImage(reg, "img/oci", "v1", { files: { "a.txt": "A\n" } });
    const v2 = await pushImage(reg, "img/docker", "v1", {
      files: { "b.txt": "B\n" },
      format: "v2s2",
    });
    const idx = await pushIndex(reg, "img/multi", "latest", [
      { os: "unknown", architecture: "unknown" },
      { architecture: "amd64" },
      { architecture: "arm64", variant: "v8" },
    ]);
    const repoOf = (ref: string) => {
      const r = parseReference(ref);
      return { host: r.host, repository: r.repository };
    };

    const m1 = await d.getManifest(repoOf(oci.ref), "v1");
    assert.equal(m1.kind, "image");
    assert.equal(m1.mediaType, MediaType.OCI_MANIFEST);
    assert.equal(m1.digest, oci.digest);
    assert.equal(await sha256(m1.bytes), oci.digest, "digest is of the exact bytes");
    assert.deepEqual(
      m1.bytes,
      oci.image.manifest.bytes,
      "bytes kept as served, never re-serialized",
    );
    const byDigest = await d.getManifest(repoOf(oci.ref), oci.digest);
    assert.deepEqual(byDigest.bytes, m1.bytes);

    const m2 = await d.getManifest(repoOf(v2.ref), "v1");
    assert.equal(m2.mediaType, MediaType.DOCKER_MANIFEST);
    assert.equal(m2.digest, v2.digest);
    const head = await d.headManifest(repoOf(v2.ref), "v1");
    assert.deepEqual(head, {
      digest: v2.digest,
      mediaType: MediaType.DOCKER_MANIFEST,
      size: m2.bytes.length,
    });
    assert.equal(await d.headManifest(repoOf(v2.ref), "missing"), undefined);

    const amd = await d.resolve(parseReference(idx.ref), { platform: "linux/amd64" });
    assert.equal(amd.index?.digest, idx.digest);
    assert.equal(amd.manifest.digest, idx.images[1].manifest.digest);
    assert.equal(amd.ref.digest, amd.manifest.digest);
    assert.deepEqual(amd.platform, { os: "linux", architecture: "amd64" });
    const arm = await d.resolve(parseReference(idx.ref), {
      platform: { os: "linux", architecture: "arm64" },
    });
    assert.equal(arm.manifest.digest, idx.images[2].manifest.digest);
    const arm2 = await d.resolve(parseReference(idx.ref), { platform: "linux/arm64/v8" });
    assert.equal(arm2.manifest.digest, idx.images[2].manifest.digest);
    if (Deno.build.arch === "x86_64") {
      const def = await d.resolve(parseReference(idx.ref));
      assert.equal(
        def.manifest.digest,
        idx.images[1].manifest.digest,
        "default platform is this machine's",
      );
    }
    const err = await rejectsWith(
      d.resolve(parseReference(idx.ref), { platform: "linux/s390x" }),
      "PLATFORM_NOT_FOUND",
    );
    assert.match(err.message, /linux\/amd64, linux\/arm64\/v8/);
    assert.doesNotMatch(
      err.message,
      /unknown/,
      "attestation-like unknown/unknown entries are skipped",
    );

    const plain = await d.resolve(parseReference(oci.ref));
    assert.equal(plain.index, undefined);
    assert.equal(plain.manifest.digest, oci.digest);
    const cfg = await d.getConfig(repoOf(oci.ref), plain.manifest);
    assert.deepEqual(cfg.json.rootfs?.diff_ids, oci.image.layers.map((l) => l.diffId));
    assert.deepEqual(cfg.bytes, oci.image.config.bytes);

    await rejectsWith(d.getManifest(repoOf(oci.ref), "nope"), "MANIFEST_UNKNOWN", /img\/oci:nope/);
    await rejectsWith(
      d.resolve(parseReference(`${reg.host}/img/oci@sha256:${"0".repeat(64)}`)),
      "MANIFEST_UNKNOWN",
      /img\/oci@sha256:0{64}/,
    );
  });
});

Deno.test("range reads return exactly the blob's bytes, and the registry served exactly those ranges", async () => {
  await withRegistry(async (reg) => {
    const d = driver();
    const pushed = await pushImage(reg, "ranges/img", "v1", {
      files: { "big.bin": randomBytes(3 * 1024 * 1024 + 123, 7) },
    });
    const layer = pushed.image.layers[0];
    const big = layer.bytes;
    assert.ok(big.length > 3 * 1024 * 1024);
    const repo = { host: reg.host, repository: "ranges/img" };
    const src = await d.blob(repo, layer.digest);
    assert.equal(src.size, big.length, "size learned with a HEAD");
    assert.equal(src.digest, layer.digest);
    reg.clearLog();
    const cases: [number, number][] = [[0, 1], [0, 4096], [1, 10], [1_000_000, 65536], [
      big.length - 10,
      10,
    ], [
      big.length - 5,
      100,
    ], [123_457, 1]];
    for (const [off, len] of cases) {
      const got = await src.read(off, len);
      assert.deepEqual(
        got,
        big.subarray(off, Math.min(off + len, big.length)),
        `read(${off}, ${len})`,
      );
    }
    assert.equal((await src.read(big.length, 10)).length, 0, "at the end: empty, no request");
    assert.equal((await src.read(5, 0)).length, 0);
    const log = (await reg.accessLog()).filter((e) => e.path.includes(layer.digest));
    assert.equal(log.length, cases.length, "one request per read");
    for (const [i, [off, len]] of cases.entries()) {
      assert.equal(log[i].status, 206);
      assert.deepEqual(log[i].range, { start: off, end: Math.min(off + len, big.length) - 1 });
    }
    const streamed = new Uint8Array(
      await new Response(await d.fetchBlob(repo, layer.digest)).arrayBuffer(),
    );
    assert.deepEqual(streamed, big);
    const sized = await d.blob(repo, layer.digest, big.length);
    assert.deepEqual(await sized.read(77, 5), big.subarray(77, 82));
    await rejectsWith(
      d.blob(repo, `sha256:${"1".repeat(64)}`),
      "BLOB_UNKNOWN",
      /ranges\/img@sha256:1{64}/,
    );
  });
});

Deno.test("push API: chunked uploads, existence checks, cross-repository mounts, manifests (checked by skopeo)", async () => {
  await withRegistry(async (reg) => {
    const d = driver();
    const repo = { host: reg.host, repository: "push/target" };
    const img = await buildImage({
      layers: [{ "x.bin": randomBytes(200_000, 3) }, { "y.txt": "y\n" }],
    });
    const [l0, l1] = img.layers;
    assert.equal(await d.blobExists(repo, l0.digest), false);
    await d.uploadBlob(repo, l0.digest, l0.bytes.length, l0.bytes, { chunkSize: 65536 });
    assert.equal(await d.blobExists(repo, l0.digest), true);
    const patches = (await reg.accessLog()).filter((e) => e.method === "PATCH");
    assert.equal(patches.length, Math.ceil(l0.bytes.length / 65536), "uploaded in chunks");
    // A stream upload.
    const stream = new Blob([l1.bytes as Uint8Array<ArrayBuffer>]).stream();
    await d.uploadBlob(repo, l1.digest, l1.bytes.length, stream, { chunkSize: 7 });
    await d.uploadBlob(repo, img.config.digest, img.config.bytes.length, img.config.bytes);
    const digest = await d.putManifest(repo, "v1", img.manifest.mediaType, img.manifest.bytes);
    assert.equal(digest, img.manifest.digest);
    // skopeo, an independent client, reads what we pushed.
    const out = await new Deno.Command("skopeo", {
      args: [
        "--insecure-policy",
        "inspect",
        "--raw",
        "--tls-verify=false",
        `docker://${reg.host}/push/target:v1`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    assert.deepEqual(out.stdout, img.manifest.bytes);
    // Cross-repository mount.
    const other = { host: reg.host, repository: "push/other" };
    assert.equal(await d.mountBlob(other, l0.digest, "push/target"), true);
    assert.equal(await d.blobExists(other, l0.digest), true);
    const missing = `sha256:${"2".repeat(64)}`;
    assert.equal(await d.mountBlob(other, missing, "push/target"), false);
    // A wrong digest is refused before anything is stored.
    const wrong = randomBytes(1000, 9);
    await rejectsWith(
      d.uploadBlob(repo, l0.digest.replace(/.$/, "0"), wrong.length, wrong),
      "DIGEST_MISMATCH",
    );
    const wrongStream = new Blob([wrong as Uint8Array<ArrayBuffer>]).stream();
    const wrongDigest = `sha256:${"3".repeat(64)}`;
    await rejectsWith(
      d.uploadBlob(repo, wrongDigest, wrong.length, wrongStream),
      "DIGEST_MISMATCH",
    );
    assert.equal(await d.blobExists(repo, wrongDigest), false);
    // Round trip by digest, and the index push path.
    const back = await d.getManifest(repo, digest);
    assert.deepEqual(back.bytes, img.manifest.bytes);
    for (const b of imageBlobs(img).slice(0, 2)) assert.ok(await d.blobExists(repo, b.digest));
  });
});
