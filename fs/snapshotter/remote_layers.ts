/**
 * Which layers the snapshotter serves lazily. containerd's Prepare labels name the image and
 * layer being unpacked: `ctr-remote image rpull` (and nerdctl) set
 * `containerd.io/snapshot/remote/stargz.reference` / `.digest` / `.layers`, the CRI plugin
 * (with `disable_snapshot_annotations = false`) sets `containerd.io/snapshot/cri.image-ref` /
 * `.manifest-digest` / `.layer-digest` / `.image-layers`. A layer qualifies when its manifest
 * (fetched through crfs's drivers and image store) lists it as a gzip layer carrying the eStargz
 * TOC digest annotation, or as a zstd layer carrying the zstd:chunked manifest annotations, and
 * its TOC opens and verifies against that digest (manifest checksum); then its directory
 * in crfs's FUSE tree must answer. Anything else is left to containerd, which downloads and
 * unpacks the layer into an ordinary snapshot.
 *
 * @module
 */
import { type Descriptor, MediaType } from "../../drivers/manifest.ts";
import { parseReference } from "../../drivers/reference.ts";
import { announcedLayer } from "../../format/layer_kind.ts";
import { ZSTD_LAYER_MEDIA_TYPE } from "../../format/zstd_chunked.ts";
import type { ImageStore } from "../image_store.ts";
import { layerDirectory } from "./crfs_tree.ts";
import type { RemoteLayer } from "./metadata.ts";
import type { RemoteLayers } from "./snapshots.ts";

/** ctr-remote's labels. */
export const STARGZ_REFERENCE_LABEL = "containerd.io/snapshot/remote/stargz.reference";
/** The layer digest, as ctr-remote labels it. */
export const STARGZ_DIGEST_LABEL = "containerd.io/snapshot/remote/stargz.digest";
/** The image's layers (comma-separated), as ctr-remote labels them. */
export const STARGZ_LAYERS_LABEL = "containerd.io/snapshot/remote/stargz.layers";
/** The CRI plugin's labels. */
export const CRI_IMAGE_REF_LABEL = "containerd.io/snapshot/cri.image-ref";
/** The manifest digest, as the CRI plugin labels it. */
export const CRI_MANIFEST_DIGEST_LABEL = "containerd.io/snapshot/cri.manifest-digest";
/** The layer digest, as the CRI plugin labels it. */
export const CRI_LAYER_DIGEST_LABEL = "containerd.io/snapshot/cri.layer-digest";
/** The image's layers, as the CRI plugin labels them. */
export const CRI_IMAGE_LAYERS_LABEL = "containerd.io/snapshot/cri.image-layers";

const GZIP_LAYERS: string[] = [MediaType.OCI_LAYER_GZIP, MediaType.DOCKER_LAYER_GZIP];

/**
 * Why containerd must unpack the layer `d` itself (its media type or annotations say it is not
 * eStargz nor zstd:chunked), or undefined when it qualifies for lazy serving.
 */
export function unqualified(d: Descriptor): string | undefined {
  const kind = announcedLayer(d.annotations);
  if (GZIP_LAYERS.includes(d.mediaType)) {
    return kind?.format === "estargz" && kind.tocKey
      ? undefined
      : "no containerd.io/snapshot/stargz/toc.digest annotation (not eStargz)";
  }
  if (d.mediaType === ZSTD_LAYER_MEDIA_TYPE) {
    return kind?.format === "zstd:chunked"
      ? undefined
      : "no zstd-chunked.manifest-position annotation (not zstd:chunked)";
  }
  return `media type ${d.mediaType}`;
}

/**
 * The image reference, manifest digest (when labelled), layer digest and the image's layers
 * (those after this one, as far as the label's size allowed) the labels name. The CRI plugin's
 * labels win when both sets are there.
 */
export function labelledLayer(
  labels: Record<string, string>,
): { ref: string; manifest?: string; layer: string; layers: string[] } | undefined {
  const cri = labels[CRI_IMAGE_REF_LABEL] !== undefined;
  const ref = cri ? labels[CRI_IMAGE_REF_LABEL] : labels[STARGZ_REFERENCE_LABEL];
  const layer = cri ? labels[CRI_LAYER_DIGEST_LABEL] : labels[STARGZ_DIGEST_LABEL];
  if (!ref || !layer) return undefined;
  const manifest = cri ? labels[CRI_MANIFEST_DIGEST_LABEL] : undefined;
  const list = (cri ? labels[CRI_IMAGE_LAYERS_LABEL] : labels[STARGZ_LAYERS_LABEL]) ?? "";
  return {
    ref,
    layer,
    ...(manifest ? { manifest } : {}),
    layers: list.split(",").map((d) => d.trim()).filter(Boolean),
  };
}

/** {@link RemoteLayers} over crfs's image store and the tree mounted at `mountpoint`. */
export class CrfsRemoteLayers implements RemoteLayers {
  readonly #store: ImageStore;
  readonly #mountpoint: string;
  readonly #log: (line: string) => void;

  constructor(store: ImageStore, mountpoint: string, log?: (line: string) => void) {
    this.#store = store;
    this.#mountpoint = mountpoint;
    this.#log = log ?? ((l) => console.error(l));
  }

  #qualifies(d: Descriptor): boolean {
    return unqualified(d) === undefined;
  }

  layerDir(layer: RemoteLayer): string {
    return layerDirectory(this.#mountpoint, layer);
  }

  restore(layer: RemoteLayer): void {
    this.#store.hintRepository({ host: layer.host, repository: layer.repository });
  }

  async resolve(labels: Record<string, string>): Promise<RemoteLayer | undefined> {
    const named = labelledLayer(labels);
    if (!named) return undefined;
    const why = (reason: string) => {
      this.#log(
        `crfs snapshotter: ${named.ref} layer ${named.layer}: ${reason}; containerd unpacks it`,
      );
      return undefined;
    };
    const ref = parseReference(named.ref);
    const repo = { host: ref.host, repository: ref.repository };
    this.#store.hintRepository(repo);
    const digest = named.manifest ?? ref.digest ?? await this.#store.resolveTag(repo, ref.tag!);
    if (!digest) return why("the image does not exist");
    const manifest = await this.#store.imageManifest(repo, digest);
    if (!manifest) return why("the manifest does not exist");
    const desc = manifest.json.layers.find((d) => d.digest === named.layer);
    if (!desc) return why(`manifest ${manifest.digest} does not list the layer`);
    // containerd prepares the layers one after the other: open the image's other lazy layers
    // (those the labels list) now, so their TOCs arrive in parallel with this one.
    const listed = new Set(named.layers);
    for (const d of manifest.json.layers) {
      if (d === desc || !listed.has(d.digest) || !this.#qualifies(d)) continue;
      this.#store.layer(repo, d).catch(() => {}); // the layer's own Prepare reports failures
    }
    const reason = unqualified(desc);
    if (reason) return why(reason);
    // Opens the layer (footer and TOC, checked against the annotation) in the shared store:
    // the FUSE tree serves it from the same reader.
    await this.#store.layer(repo, desc);
    const layer: RemoteLayer = {
      host: ref.host,
      repository: ref.repository,
      manifest: manifest.digest,
      layer: desc.digest,
    };
    const st = await Deno.stat(this.layerDir(layer));
    if (!st.isDirectory) return why("its directory in the crfs tree is not a directory");
    return layer;
  }
}
