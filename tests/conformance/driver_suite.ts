/**
 * The drivers conformance suite: one function, {@link driverSuite}, that holds a driver to the
 * contract of drivers/capabilities.ts. It is called once per implementation from
 * drivers_test.ts; a new driver proves itself by adding one call there.
 *
 * A fixture starts whatever the driver needs and stores the suite's images (see
 * {@link suiteImages}): a single-platform image under a tag and, where the medium holds
 * indexes, a two-platform index under another tag. The suite then checks:
 * - resolve by tag and by digest, and that manifests come back with the digest of their bytes;
 * - index/platform choice (`linux/amd64` and `linux/arm64` from the index);
 * - manifest digest checks: a stored manifest with a changed byte is refused (`DIGEST_MISMATCH`);
 * - exact range reads of a layer (interior, first and last bytes, a read running past the end),
 *   against the verified whole-blob stream, and a digest mismatch error for a changed blob;
 * - listing where the driver has the capability, and otherwise the one clear error
 *   `registry driver 'NAME' cannot list tags`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { canList, type Driver, lister, type ResolvedImage } from "../../drivers/capabilities.ts";
import { sha256Digest } from "../../drivers/digest.ts";
import { RegistryError } from "../../drivers/errors.ts";
import type { Reference, RepositoryName } from "../../drivers/reference.ts";
import {
  buildImage,
  buildIndex,
  type BuiltImage,
  imageBlobs,
  randomBytes,
  writeOciLayout,
} from "../helpers/images.ts";

/** The suite's images: one single-platform image and a two-platform index. */
export interface SuiteImages {
  /** The single-platform image (a 300 KB random file in its layer, so ranges are real). */
  image: BuiltImage;
  /** The index's images: linux/amd64 and linux/arm64. */
  amd64: BuiltImage;
  arm64: BuiltImage;
  /** The index over `amd64` and `arm64`. */
  index: { bytes: Uint8Array; digest: string; mediaType: string };
}

/** Tag of the single-platform image in every fixture. */
export const IMAGE_TAG = "img";
/** Tag of the index, where the medium holds indexes. */
export const INDEX_TAG = "multi";

/** Builds the suite's images (deterministic content). */
export async function suiteImages(): Promise<SuiteImages> {
  const image = await buildImage({
    files: { "big.bin": randomBytes(300_000, 7), "etc/hello": "hello\n" },
  });
  const amd64 = await buildImage({ architecture: "amd64", files: { "p": "amd64\n" } });
  const arm64 = await buildImage({ architecture: "arm64", files: { "p": "arm64\n" } });
  const index = await buildIndex([amd64, arm64]);
  return { image, amd64, arm64, index };
}

/** Writes the suite's images as an OCI layout at `dir` (tags {@link IMAGE_TAG}, {@link INDEX_TAG}). */
export async function writeSuiteLayout(dir: string, images: SuiteImages): Promise<void> {
  await writeOciLayout(
    dir,
    [
      ...imageBlobs(images.image),
      ...imageBlobs(images.amd64),
      ...imageBlobs(images.arm64),
      images.index,
    ],
    { [IMAGE_TAG]: images.image.manifest, [INDEX_TAG]: images.index },
  );
}

/** A driver set up with the suite's images, as a fixture returns it. */
export interface DriverUnderTest {
  /** The driver. */
  driver: Driver;
  /** The repository holding the images. */
  repo: RepositoryName;
  /** The images as stored. */
  images: SuiteImages;
  /**
   * The manifest digest the medium gives the single-platform image, when it is not the built
   * one (docker archives synthesize their manifests).
   */
  imageDigest?: string;
  /** Whether the medium holds the index under {@link INDEX_TAG}. */
  hasIndex: boolean;
  /** Whether the driver is expected to list (have the listing capability). */
  lists: boolean;
  /**
   * Changes one byte of the stored blob `digest` (a manifest keeps valid JSON); returns a
   * function that puts it back. Absent when the medium cannot be changed underneath.
   */
  corrupt?(digest: string, kind: "manifest" | "blob"): Promise<() => Promise<void>>;
  /** Stops servers and removes files. */
  cleanup(): Promise<void>;
}

/** What {@link driverSuite} is called with. */
export interface DriverFixture {
  /** Name in the test titles (`docker-v2`, `gcr`, `oci-layout`, …). */
  name: string;
  /** Starts the driver with {@link suiteImages} stored. */
  setup(images: SuiteImages): Promise<DriverUnderTest>;
}

/**
 * Flips one byte of the file at `path` in place (for a manifest: the first hex digit after the
 * first `sha256:`, so the JSON stays valid); returns the function that restores it.
 */
export async function corruptFile(
  path: string,
  kind: "manifest" | "blob",
): Promise<() => Promise<void>> {
  const bytes = await Deno.readFile(path);
  const original = bytes.slice();
  let at = Math.floor(bytes.length / 2);
  if (kind === "manifest") {
    at = new TextDecoder().decode(bytes).indexOf("sha256:") + 7;
    assert.ok(at >= 7, `${path}: no digest to change`);
    bytes[at] = bytes[at] === 0x30 ? 0x31 : 0x30;
  } else bytes[at] ^= 0xff;
  await Deno.writeFile(path, bytes);
  return () => Deno.writeFile(path, original);
}

function refOf(repo: RepositoryName, target: { tag?: string; digest?: string }): Reference {
  return { host: repo.host, repository: repo.repository, ...target };
}

async function bytesOf(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Registers the conformance tests for one driver implementation (see the module documentation). */
export function driverSuite(fixture: DriverFixture): void {
  Deno.test(`drivers conformance: ${fixture.name}`, async (t) => {
    const images = await suiteImages();
    const s = await fixture.setup(images);
    const { driver, repo } = s;
    try {
      let resolved: ResolvedImage | undefined;
      await t.step("resolve by tag and by digest; manifests match their digests", async () => {
        resolved = await driver.resolve(refOf(repo, { tag: IMAGE_TAG }));
        const m = resolved.manifest;
        assert.equal(m.kind, "image");
        assert.equal(m.digest, s.imageDigest ?? images.image.manifest.digest);
        assert.equal(await sha256Digest(m.bytes), m.digest, "the digest is of the bytes");
        assert.equal(resolved.ref.digest, m.digest);
        assert.equal(resolved.index, undefined, "no index on the way");
        assert.equal(m.json.layers.length, images.image.layers.length);
        const byDigest = await driver.resolve(refOf(repo, { digest: m.digest }));
        assert.equal(byDigest.manifest.digest, m.digest);
        assert.deepEqual(byDigest.manifest.bytes, m.bytes);
        const head = await driver.headManifest(repo, m.digest);
        assert.deepEqual(head, { digest: m.digest, mediaType: m.mediaType, size: m.bytes.length });
        const config = await driver.getConfig(repo, m);
        assert.equal(config.digest, m.json.config.digest);
        assert.equal(await sha256Digest(config.bytes), config.digest);
        assert.equal(config.json.architecture, "amd64");
      });

      await t.step("a missing tag is MANIFEST_UNKNOWN or NOT_FOUND", async () => {
        await assert.rejects(
          driver.getManifest(repo, "no-such-tag"),
          (e: RegistryError) =>
            e instanceof RegistryError &&
            ["MANIFEST_UNKNOWN", "NOT_FOUND", "NAME_UNKNOWN"].includes(e.code),
        );
      });

      if (s.hasIndex) {
        await t.step("index: the platform asked for is chosen", async () => {
          for (
            const [platform, want] of [["linux/amd64", images.amd64], [
              "linux/arm64",
              images.arm64,
            ]] as const
          ) {
            const r = await driver.resolve(refOf(repo, { tag: INDEX_TAG }), { platform });
            assert.equal(r.index?.digest, images.index.digest, platform);
            assert.equal(r.manifest.digest, want.manifest.digest, platform);
            assert.equal(r.platform?.architecture, want.platform.architecture);
          }
          await assert.rejects(
            driver.resolve(refOf(repo, { tag: INDEX_TAG }), { platform: "linux/s390x" }),
            /s390x/,
          );
        });
      }

      await t.step("exact range reads of a layer, against the verified whole blob", async () => {
        const layer = resolved!.manifest.json.layers[0];
        const whole = await bytesOf(
          await driver.fetchBlob(repo, layer.digest, { size: layer.size }),
        );
        assert.equal(whole.length, layer.size);
        assert.equal(await sha256Digest(whole), layer.digest);
        const src = await driver.blob(repo, layer.digest, layer.size);
        try {
          assert.equal(src.size, layer.size);
          assert.equal(src.digest, layer.digest);
          const n = layer.size;
          for (
            const [offset, length] of [[0, 1], [0, 4096], [1000, 65_536], [n - 7, 7], [n >> 1, 3]]
          ) {
            const got = await src.read(offset, length);
            assert.equal(got.length, length, `read(${offset}, ${length}) length`);
            assert.deepEqual(
              got,
              whole.subarray(offset, offset + length),
              `read(${offset}, ${length})`,
            );
          }
          const tail = await src.read(n - 3, 100);
          assert.deepEqual(tail, whole.subarray(n - 3), "a read past the end returns the rest");
        } finally {
          src.close?.();
        }
      });

      if (s.corrupt) {
        await t.step("a changed manifest is refused by its digest", async () => {
          const digest = resolved!.manifest.digest;
          const restore = await s.corrupt!(digest, "manifest");
          try {
            await assert.rejects(
              driver.getManifest(repo, digest),
              (e: RegistryError) => e instanceof RegistryError && e.code === "DIGEST_MISMATCH",
            );
          } finally {
            await restore();
          }
          assert.equal((await driver.getManifest(repo, digest)).digest, digest, "restored");
        });

        await t.step("a changed blob is a digest mismatch error, not bytes", async () => {
          const layer = resolved!.manifest.json.layers[0];
          const restore = await s.corrupt!(layer.digest, "blob");
          try {
            await assert.rejects(
              (async () =>
                await bytesOf(await driver.fetchBlob(repo, layer.digest, { size: layer.size })))(),
              (e: RegistryError) => e instanceof RegistryError && e.code === "DIGEST_MISMATCH",
            );
          } finally {
            await restore();
          }
        });
      }

      if (s.lists) {
        await t.step("listing: tags and repositories", async () => {
          assert.ok(canList(driver), "the listing capability is there");
          const tags = (await driver.listTags(repo)).map((t) => t.name);
          assert.ok(tags.includes(IMAGE_TAG), `tags ${tags}`);
          if (s.hasIndex) assert.ok(tags.includes(INDEX_TAG), `tags ${tags}`);
          assert.deepEqual(tags, [...tags].sort(), "sorted");
          const owner = repo.repository.split("/")[0];
          const repos = await driver.listRepositories(repo.host, owner);
          assert.ok(repos.includes(repo.repository), `repositories ${repos}`);
        });
      } else {
        await t.step("no listing capability: one clear error", () => {
          assert.equal(canList(driver), false);
          assert.equal(driver.listTags, undefined, "no stub");
          assert.throws(
            () => lister(driver),
            (e: RegistryError) =>
              e.code === "UNSUPPORTED" &&
              e.message === `registry driver '${driver.name}' cannot list tags`,
          );
        });
      }
    } finally {
      await s.cleanup();
    }
  });
}
