/**
 * Image manifests: the media types, the `Accept` header that asks for all of them, parsing of
 * the exact manifest bytes (never re-serialized: the digest is over those bytes), and the
 * platform choice in an image index / manifest list.
 *
 * @module
 */
import { RegistryError } from "./errors.ts";

/** Media types crfs knows. */
export const MediaType = {
  OCI_INDEX: "application/vnd.oci.image.index.v1+json",
  OCI_MANIFEST: "application/vnd.oci.image.manifest.v1+json",
  OCI_CONFIG: "application/vnd.oci.image.config.v1+json",
  OCI_LAYER: "application/vnd.oci.image.layer.v1.tar",
  OCI_LAYER_GZIP: "application/vnd.oci.image.layer.v1.tar+gzip",
  OCI_LAYER_ZSTD: "application/vnd.oci.image.layer.v1.tar+zstd",
  DOCKER_LIST: "application/vnd.docker.distribution.manifest.list.v2+json",
  DOCKER_MANIFEST: "application/vnd.docker.distribution.manifest.v2+json",
  DOCKER_CONFIG: "application/vnd.docker.container.image.v1+json",
  DOCKER_LAYER_GZIP: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  DOCKER_SCHEMA1: "application/vnd.docker.distribution.manifest.v1+json",
  DOCKER_SCHEMA1_SIGNED: "application/vnd.docker.distribution.manifest.v1+prettyjws",
} as const;

/** Index (multi-platform) media types. */
export const INDEX_MEDIA_TYPES: readonly string[] = [MediaType.OCI_INDEX, MediaType.DOCKER_LIST];
/** Single-image manifest media types. */
export const IMAGE_MEDIA_TYPES: readonly string[] = [
  MediaType.OCI_MANIFEST,
  MediaType.DOCKER_MANIFEST,
];

/** The `Accept` header for manifest requests: every type crfs understands, always all of them. */
export const MANIFEST_ACCEPT: string = [
  MediaType.OCI_INDEX,
  MediaType.OCI_MANIFEST,
  MediaType.DOCKER_LIST,
  MediaType.DOCKER_MANIFEST,
].join(", ");

/** A platform: `os`/`architecture`[/`variant`]. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  "os.version"?: string;
  "os.features"?: string[];
}

/** A content descriptor. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
}

/** The JSON of a single-image manifest (OCI or Docker v2 schema 2). */
export interface ImageManifestJson {
  schemaVersion: number;
  mediaType?: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

/** The JSON of an image index / manifest list. */
export interface IndexJson {
  schemaVersion: number;
  mediaType?: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

interface ManifestBase {
  /** `sha256:` digest of {@link bytes}. */
  digest: string;
  /** Media type (from the response `Content-Type`, else the JSON `mediaType`). */
  mediaType: string;
  /** The exact bytes as served. */
  bytes: Uint8Array;
}

/** A single-image manifest. */
export interface ImageManifest extends ManifestBase {
  kind: "image";
  json: ImageManifestJson;
}

/** An image index / manifest list. */
export interface IndexManifest extends ManifestBase {
  kind: "index";
  json: IndexJson;
}

/** Any manifest crfs handles. */
export type Manifest = ImageManifest | IndexManifest;

/** The parsed image configuration (only the fields crfs uses are typed). */
export interface ImageConfigJson {
  architecture?: string;
  os?: string;
  variant?: string;
  created?: string;
  config?: {
    Env?: string[];
    Cmd?: string[];
    Entrypoint?: string[];
    WorkingDir?: string;
    User?: string;
    Labels?: Record<string, string>;
    [k: string]: unknown;
  };
  rootfs?: { type: string; diff_ids: string[] };
  history?: unknown[];
  [k: string]: unknown;
}

/** An image configuration blob. */
export interface ImageConfig {
  digest: string;
  bytes: Uint8Array;
  json: ImageConfigJson;
}

/**
 * Parses manifest bytes. `contentType` is the response's `Content-Type` (parameters ignored);
 * when missing or generic the JSON's `mediaType` decides, else its shape. Schema 1 and unknown
 * types fail with `UNSUPPORTED`.
 */
export function parseManifest(
  bytes: Uint8Array,
  digest: string,
  contentType: string | null | undefined,
  what: string,
): Manifest {
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new RegistryError(`${what}: the manifest is not valid JSON`, {
      code: "BAD_RESPONSE",
      reference: what,
    });
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new RegistryError(`${what}: the manifest is not a JSON object`, {
      code: "BAD_RESPONSE",
      reference: what,
    });
  }
  let mediaType = (contentType ?? "").split(";")[0].trim().toLowerCase();
  const generic = mediaType === "" || mediaType === "application/json" ||
    mediaType === "text/plain" ||
    mediaType === "application/octet-stream";
  if (generic) {
    if (typeof json.mediaType === "string") mediaType = json.mediaType;
    else if (Array.isArray(json.manifests)) mediaType = MediaType.OCI_INDEX;
    else if (json.config && Array.isArray(json.layers)) mediaType = MediaType.OCI_MANIFEST;
    else if (json.schemaVersion === 1) mediaType = MediaType.DOCKER_SCHEMA1;
  }
  if (
    mediaType === MediaType.DOCKER_SCHEMA1 || mediaType === MediaType.DOCKER_SCHEMA1_SIGNED ||
    json.schemaVersion === 1
  ) {
    throw new RegistryError(
      `${what}: Docker schema 1 manifests are not supported (push the image again with a current tool)`,
      {
        code: "UNSUPPORTED",
        reference: what,
      },
    );
  }
  if (INDEX_MEDIA_TYPES.includes(mediaType)) {
    if (!Array.isArray(json.manifests)) {
      throw new RegistryError(`${what}: index without a manifests list`, {
        code: "BAD_RESPONSE",
        reference: what,
      });
    }
    return { kind: "index", digest, mediaType, bytes, json: json as unknown as IndexJson };
  }
  if (IMAGE_MEDIA_TYPES.includes(mediaType)) {
    const m = json as unknown as ImageManifestJson;
    if (!m.config || typeof m.config.digest !== "string" || !Array.isArray(m.layers)) {
      throw new RegistryError(`${what}: manifest without config or layers`, {
        code: "BAD_RESPONSE",
        reference: what,
      });
    }
    return { kind: "image", digest, mediaType, bytes, json: m };
  }
  throw new RegistryError(`${what}: unsupported manifest media type ${JSON.stringify(mediaType)}`, {
    code: "UNSUPPORTED",
    reference: what,
  });
}

/** This machine's platform: `linux` and `Deno.build.arch` as Go names it (amd64, arm64). */
export function defaultPlatform(): Platform {
  const arch = Deno.build.arch as string;
  const architecture = arch === "x86_64" ? "amd64" : arch === "aarch64" ? "arm64" : arch;
  return { os: "linux", architecture };
}

/** Parses `os/arch[/variant]` (e.g. `linux/arm64/v8`); a bare `arch` means linux. */
export function parsePlatform(text: string): Platform {
  const parts = text.trim().toLowerCase().split("/");
  if (parts.length === 1 && parts[0]) return { os: "linux", architecture: normalizeArch(parts[0]) };
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p === "")) {
    throw new RegistryError(
      `bad platform ${JSON.stringify(text)} (want os/arch[/variant], e.g. linux/amd64)`,
      {
        code: "PLATFORM_NOT_FOUND",
      },
    );
  }
  const [os, arch, variant] = parts;
  return { os, architecture: normalizeArch(arch), ...(variant ? { variant } : {}) };
}

function normalizeArch(arch: string): string {
  return ({ x86_64: "amd64", "x86-64": "amd64", aarch64: "arm64" } as Record<string, string>)[
    arch
  ] ?? arch;
}

/** `os/arch[/variant]`. */
export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ""}`;
}

/** Whether an index entry is a real image rather than an attestation or other artifact. */
function isImageEntry(d: Descriptor): boolean {
  const p = d.platform;
  if (p && p.os === "unknown" && p.architecture === "unknown") return false;
  if (d.annotations?.["vnd.docker.reference.type"] === "attestation-manifest") return false;
  return true;
}

/**
 * Chooses the entry of `index` for `want`: same os and architecture; when `want` has a variant
 * it must match (`arm64` treats none and `v8` alike), otherwise the entry without a variant (or
 * `v8` for arm64) is preferred. `unknown/unknown` entries are skipped. Throws
 * `PLATFORM_NOT_FOUND` listing what the index has.
 */
export function selectPlatform(index: IndexJson, want: Platform, what: string): Descriptor {
  const candidates = index.manifests.filter(isImageEntry);
  const norm = (
    v: string | undefined,
    arch: string,
  ) => (arch === "arm64" && (v === undefined || v === "v8") ? "" : v ?? "");
  const same = candidates.filter((d) =>
    d.platform && d.platform.os === want.os &&
    normalizeArch(d.platform.architecture) === want.architecture
  );
  let chosen: Descriptor | undefined;
  if (want.variant !== undefined) {
    chosen = same.find((d) =>
      norm(d.platform!.variant, want.architecture) === norm(want.variant, want.architecture)
    );
  } else {
    chosen = same.find((d) => norm(d.platform!.variant, want.architecture) === "") ?? same[0];
  }
  if (!chosen && candidates.length === 1 && !candidates[0].platform) chosen = candidates[0];
  if (!chosen) {
    const have = candidates.map((d) => (d.platform ? formatPlatform(d.platform) : "(no platform)"));
    throw new RegistryError(
      `${what}: no image for ${formatPlatform(want)} in the index` +
        (have.length ? `; it has ${[...new Set(have)].join(", ")}` : "; it lists no images"),
      { code: "PLATFORM_NOT_FOUND", reference: what },
    );
  }
  return chosen;
}
