/**
 * The images the snapshotter tests pull: the podman tests' runnable image (this machine's
 * programs plus layers with whiteouts, an opaque directory, hardlinks and a setuid file) pushed
 * with skopeo as plain gzip (`src/img:v1`), and converted to eStargz by `crfs convert`
 * (`dst/img:v1`), on a fresh docker-registry.
 *
 * @module
 */
import { crfs } from "../cmd/helpers.ts";
import { buildTarImage } from "../cmd/helpers.ts";
import { skopeoCopy, writeOciLayout } from "../helpers/images.ts";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { testImageLayers } from "../podman/helpers.ts";

/** The registry and the two references. */
export interface ImageFixture {
  reg: TestRegistry;
  /** Plain gzip image. */
  gzip: string;
  /** The eStargz image converted from it. */
  estargz: string;
  /** Digests of the eStargz image's layer blobs. */
  estargzLayers: string[];
  /** Digests of the gzip image's layer blobs. */
  gzipLayers: string[];
  /** Sizes of the layer blobs by digest. */
  sizes: Map<string, number>;
  [Symbol.asyncDispose](): Promise<void>;
}

const ACCEPT = "application/vnd.oci.image.manifest.v1+json";

async function layersOf(reg: TestRegistry, repo: string, sizes: Map<string, number>) {
  const m = await (await fetch(`${reg.url}/v2/${repo}/manifests/v1`, {
    headers: { accept: ACCEPT },
  })).json();
  for (const l of m.layers) sizes.set(l.digest, l.size);
  return (m.layers as { digest: string }[]).map((l) => l.digest);
}

/** Starts a registry with both images. */
export async function imageFixture(): Promise<ImageFixture> {
  const reg = await startRegistry();
  const work = await Deno.makeTempDir({ prefix: "crfs-snap-img-" });
  const dispose = async () => {
    await reg.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  };
  try {
    const image = await buildTarImage(await testImageLayers(), work);
    await writeOciLayout(`${work}/layout`, [...image.layers, image.config, image.manifest], {
      v1: image.manifest,
    });
    const gzip = `${reg.host}/src/img:v1`;
    await skopeoCopy(`oci:${work}/layout:v1`, `docker://${gzip}`);
    const estargz = `${reg.host}/dst/img:v1`;
    const c = await crfs(["convert", "-q", gzip, estargz]);
    if (c.code !== 0) throw new Error(`crfs convert failed:\n${c.stderr}`);
    const sizes = new Map<string, number>();
    return {
      reg,
      gzip,
      estargz,
      estargzLayers: await layersOf(reg, "dst/img", sizes),
      gzipLayers: await layersOf(reg, "src/img", sizes),
      sizes,
      [Symbol.asyncDispose]: async () => {
        await dispose();
      },
    };
  } catch (e) {
    await dispose();
    throw e;
  }
}
