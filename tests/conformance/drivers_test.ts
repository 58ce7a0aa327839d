/**
 * The drivers conformance suite (driver_suite.ts) run once per implementation: Docker v2 against
 * a real docker-registry, GCR and ICR through their emulators (backed by docker-registry), the
 * `local` host, an OCI layout, a docker archive and a user driver module.
 *
 * @module
 */
import { DockerArchiveDriver } from "../../drivers/docker_archive.ts";
import { createContext, loadDriverModule } from "../../drivers/driver.ts";
import { GcrDriver } from "../../drivers/gcr.ts";
import { IcrDriver } from "../../drivers/icr.ts";
import { LocalDriver } from "../../drivers/local.ts";
import { defaultDrivers } from "../../drivers/mod.ts";
import { LAYOUT_REPOSITORY, OciLayoutDriver } from "../../drivers/oci_layout_driver.ts";
import { startGcrEmulator } from "../emulators/gcr.ts";
import { startIcrEmulator } from "../emulators/icr.ts";
import { skopeoCopy } from "../helpers/images.ts";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";
import {
  corruptFile,
  driverSuite,
  IMAGE_TAG,
  INDEX_TAG,
  type SuiteImages,
  writeSuiteLayout,
} from "./driver_suite.ts";

/** A layout with the suite's images in a new temporary directory `DIR/layout`. */
async function tempLayout(images: SuiteImages): Promise<{ dir: string; layout: string }> {
  const dir = await Deno.makeTempDir({ prefix: "crfs-conformance-" });
  const layout = `${dir}/layout`;
  await writeSuiteLayout(layout, images);
  return { dir, layout };
}

function layoutBlob(layout: string, digest: string): string {
  return `${layout}/blobs/sha256/${digest.slice(7)}`;
}

/** A docker-registry holding the suite's images as `repository:img` and `repository:multi`. */
async function registryWith(images: SuiteImages, repository: string) {
  const reg = await startRegistry();
  const { dir, layout } = await tempLayout(images);
  try {
    await skopeoCopy(
      `oci:${layout}:${IMAGE_TAG}`,
      `docker://${reg.host}/${repository}:${IMAGE_TAG}`,
    );
    await skopeoCopy(
      `oci:${layout}:${INDEX_TAG}`,
      `docker://${reg.host}/${repository}:${INDEX_TAG}`,
      {
        all: true,
      },
    );
  } catch (e) {
    await reg.stop();
    throw e;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  return reg;
}

function registryCorrupt(reg: TestRegistry) {
  return (digest: string, kind: "manifest" | "blob") => {
    const hex = digest.slice(7);
    return corruptFile(
      `${reg.dir}/data/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`,
      kind,
    );
  };
}

driverSuite({
  name: "docker-v2 (docker-registry)",
  async setup(images) {
    const reg = await registryWith(images, "suite/app");
    const driver = defaultDrivers({ dockerConfig: false }).forHost(reg.host);
    return {
      driver,
      repo: { host: reg.host, repository: "suite/app" },
      images,
      hasIndex: true,
      lists: true,
      corrupt: registryCorrupt(reg),
      cleanup: () => reg.stop(),
    };
  },
});

driverSuite({
  name: "gcr (emulator)",
  async setup(images) {
    const reg = await registryWith(images, "suite-proj/app");
    const emu = startGcrEmulator({ backend: reg.url, project: "suite-proj" });
    const driver = new GcrDriver(createContext({ dockerConfig: false }), {
      gcrUrl: emu.url,
      gceMetadataHost: emu.host,
    });
    return {
      driver,
      repo: { host: "gcr.io", repository: "suite-proj/app" },
      images,
      hasIndex: true,
      lists: true,
      corrupt: registryCorrupt(reg),
      cleanup: async () => {
        await emu.stop();
        await reg.stop();
      },
    };
  },
});

driverSuite({
  name: "icr (emulator)",
  async setup(images) {
    const reg = await registryWith(images, "suite/app");
    const key = "conformance-api-key-0123456789";
    const emu = startIcrEmulator({ backend: reg.url, apiKey: key, registryHost: "us.icr.io" });
    const driver = new IcrDriver(createContext({ dockerConfig: false }), {
      icrUrl: emu.url,
      iamUrl: emu.iamUrl,
      icrApiKey: key,
    });
    return {
      driver,
      repo: { host: "us.icr.io", repository: "suite/app" },
      images,
      hasIndex: true,
      lists: true,
      corrupt: registryCorrupt(reg),
      cleanup: async () => {
        await emu.stop();
        await reg.stop();
      },
    };
  },
});

driverSuite({
  name: "local host (layouts under the local directory)",
  async setup(images) {
    const dir = await Deno.makeTempDir({ prefix: "crfs-conformance-" });
    const layout = `${dir}/suite/app`;
    await writeSuiteLayout(layout, images);
    return {
      driver: new LocalDriver({ localDir: dir }),
      repo: { host: "local", repository: "suite/app" },
      images,
      hasIndex: true,
      lists: true,
      corrupt: (digest, kind) => corruptFile(layoutBlob(layout, digest), kind),
      cleanup: () => Deno.remove(dir, { recursive: true }),
    };
  },
});

driverSuite({
  name: "oci-layout",
  async setup(images) {
    const { dir, layout } = await tempLayout(images);
    return {
      driver: await OciLayoutDriver.open(layout),
      repo: LAYOUT_REPOSITORY,
      images,
      hasIndex: true,
      lists: false,
      corrupt: (digest, kind) => corruptFile(layoutBlob(layout, digest), kind),
      cleanup: () => Deno.remove(dir, { recursive: true }),
    };
  },
});

driverSuite({
  name: "docker-archive (made by skopeo)",
  async setup(images) {
    const { dir, layout } = await tempLayout(images);
    const file = `${dir}/image.tar`;
    await skopeoCopy(`oci:${layout}:${IMAGE_TAG}`, `docker-archive:${file}:suite/app:${IMAGE_TAG}`);
    const driver = (await DockerArchiveDriver.open(file))!;
    const repo = { host: "docker-archive", repository: "suite/app" };
    // The archive's manifest is synthesized: its digest is whatever the driver makes of it.
    const { digest } = await driver.getManifest(repo, IMAGE_TAG);
    return {
      driver,
      repo,
      images,
      imageDigest: digest,
      hasIndex: false,
      lists: false,
      cleanup: async () => {
        driver.close();
        await Deno.remove(dir, { recursive: true });
      },
    };
  },
});

driverSuite({
  name: "user driver module (only name, matches, getManifest, blob)",
  async setup(images) {
    const { dir, layout } = await tempLayout(images);
    const url = (p: string) => new URL(p, import.meta.url).href;
    await Deno.writeTextFile(
      `${dir}/driver.ts`,
      `import { digestLike, digestMismatch } from ${JSON.stringify(url("../../drivers/digest.ts"))};
import { RegistryError } from ${JSON.stringify(url("../../drivers/errors.ts"))};
import { parseManifest } from ${JSON.stringify(url("../../drivers/manifest.ts"))};
import { BytesSource } from ${JSON.stringify(url("../../format/range_source.ts"))};
const layout = ${JSON.stringify(layout)};
const blobPath = (d: string) => layout + "/blobs/sha256/" + d.slice(7);
export default {
  name: "user-layout",
  matches: (host: string) => host === "user.example",
  async getManifest(_repo: unknown, ref: string) {
    let digest = ref;
    if (!ref.startsWith("sha256:")) {
      const index = JSON.parse(await Deno.readTextFile(layout + "/index.json"));
      const d = index.manifests.find((m: { annotations?: Record<string, string> }) =>
        m.annotations?.["org.opencontainers.image.ref.name"] === ref);
      if (!d) throw new RegistryError("no tag " + ref, { code: "MANIFEST_UNKNOWN" });
      digest = d.digest;
    }
    const bytes = await Deno.readFile(blobPath(digest));
    const actual = await digestLike(digest, bytes);
    if (actual !== digest) throw digestMismatch(ref, digest, actual);
    return parseManifest(bytes, digest, undefined, ref);
  },
  async blob(_repo: unknown, digest: string) {
    const src = new BytesSource(await Deno.readFile(blobPath(digest)));
    return Object.assign(src, { digest });
  },
};
`,
    );
    const driver = await loadDriverModule(`${dir}/driver.ts`);
    return {
      driver,
      repo: { host: "user.example", repository: "suite/app" },
      images,
      hasIndex: true,
      lists: false,
      corrupt: (digest, kind) => corruptFile(layoutBlob(layout, digest), kind),
      cleanup: () => Deno.remove(dir, { recursive: true }),
    };
  },
});
