/**
 * Google Container Registry (`gcr.io`, `*.gcr.io`) and Artifact Registry (`*-docker.pkg.dev`).
 * Images, manifests and blobs are plain Docker v2; listing uses Google's extension of
 * `GET /v2/<path>/tags/list`, whose answer also carries `child` (the names one level below
 * `<path>`) and `manifest` (digest → `{tag: [...], imageSizeBytes, mediaType, timeCreatedMs,
 * timeUploadedMs}`, numbers sent as strings) — so tags come with their digests for free.
 *
 * The owner (project) to list by default is the `gcrProject` option, else
 * `$GOOGLE_CLOUD_PROJECT` / `$CLOUDSDK_CORE_PROJECT`, else — only when running on Google Compute
 * Engine — the project of the VM from the metadata server. Whether this is GCE is decided
 * without waiting on the network: `$GCE_METADATA_HOST` (the variable Google's client libraries
 * use) or `/sys/class/dmi/id/product_name` naming Google; the metadata request itself has a
 * one-second timeout.
 *
 * The base URL of every GCR-like host can be replaced to talk to an emulator, only through the
 * explicit constructor option `gcrUrl` that tests set (tests/emulators/); no environment variable
 * redirects a user's traffic.
 *
 * @module
 */
import type { CallOptions, DriverContext, ListOptions, TagInfo, TagListOptions } from "./driver.ts";
import { DockerV2Driver, type DockerV2Options, forEachLimit } from "./docker_v2.ts";
import { RegistryError } from "./errors.ts";
import { readJson, responseError } from "./http.ts";
import { repositoryScope } from "./auth.ts";
import { formatReference, type RepositoryName } from "./reference.ts";
import { env } from "./env.ts";

/** Options of {@link GcrDriver}. */
export interface GcrOptions extends DockerV2Options {
  /** Base URL for all GCR-like hosts (an emulator, tests only); default each host itself. */
  gcrUrl?: string;
  /** The default project; see the module documentation. */
  gcrProject?: string;
  /** Metadata server `host[:port]` to use instead of detecting GCE; default `$GCE_METADATA_HOST`. */
  gceMetadataHost?: string;
  /** Where to read the machine's product name; default `/sys/class/dmi/id/product_name`. */
  dmiProductFile?: string;
}

/** Whether `host` is served by the GCR driver. */
export function isGcrHost(host: string): boolean {
  const h = host.toLowerCase().replace(/:\d+$/, "");
  return h === "gcr.io" || h.endsWith(".gcr.io") || /^[a-z0-9-]+-docker\.pkg\.dev$/.test(h);
}

/** One entry of Google's `manifest` map. */
interface GoogleManifestInfo {
  tag?: string[];
  imageSizeBytes?: string | number;
  mediaType?: string;
  timeCreatedMs?: string | number;
  timeUploadedMs?: string | number;
}

/** Google's `tags/list` answer. */
interface GoogleTagList {
  name?: string;
  child?: string[];
  tags?: string[];
  manifest?: Record<string, GoogleManifestInfo>;
}

/**
 * The base URL of the GCE metadata server when this machine is on GCE, decided without network
 * waits (see the module documentation); undefined elsewhere.
 */
export async function gceMetadataBase(
  options: { metadataHost?: string; dmiProductFile?: string } = {},
): Promise<string | undefined> {
  const host = options.metadataHost ?? env("GCE_METADATA_HOST");
  if (host) return /^https?:\/\//.test(host) ? host.replace(/\/+$/, "") : `http://${host}`;
  try {
    const product = await Deno.readTextFile(
      options.dmiProductFile ?? "/sys/class/dmi/id/product_name",
    );
    if (/google/i.test(product)) return "http://metadata.google.internal";
  } catch {
    // No DMI information: not GCE as far as we can tell cheaply.
  }
  return undefined;
}

/** The GCR / Artifact Registry driver; see the module documentation. */
export class GcrDriver extends DockerV2Driver {
  override readonly name: string = "gcr";
  readonly gcr: GcrOptions;
  #project?: Promise<string | undefined>;

  constructor(ctx: Pick<DriverContext, "http" | "auth">, options: GcrOptions = {}) {
    super(ctx, options);
    this.gcr = { ...options };
  }

  override matches(host: string): boolean {
    return isGcrHost(host);
  }

  override origin(host: string): string {
    return this.gcr.gcrUrl ? this.gcr.gcrUrl.replace(/\/+$/, "") : super.origin(host);
  }

  /** The default project: option, environment, or the GCE metadata server (only on GCE). */
  defaultProject(): Promise<string | undefined> {
    this.#project ??= this.#findProject();
    return this.#project;
  }

  async #findProject(): Promise<string | undefined> {
    const explicit = this.gcr.gcrProject ?? env("GOOGLE_CLOUD_PROJECT") ??
      env("CLOUDSDK_CORE_PROJECT");
    if (explicit) return explicit;
    const base = await gceMetadataBase({
      metadataHost: this.gcr.gceMetadataHost,
      dmiProductFile: this.gcr.dmiProductFile,
    });
    if (!base) return undefined;
    try {
      return await this.http.requestWith({
        url: `${base}/computeMetadata/v1/project/project-id`,
        headers: { "metadata-flavor": "Google" },
        timeoutMs: 1000,
        deadlineMs: 2000,
        retry: false,
        what: "GCE metadata server",
      }, async (res) => {
        if (!res.ok || res.headers.get("metadata-flavor") !== "Google") {
          await res.body?.cancel();
          return undefined;
        }
        const text = (await res.text()).trim();
        return text || undefined;
      });
    } catch (e) {
      this.http.log(`GCE metadata server: ${(e as Error).message}`);
      return undefined;
    }
  }

  /** Google's listing of one path. */
  async googleList(host: string, path: string, options: CallOptions = {}): Promise<GoogleTagList> {
    const what = `${host}/${path}`;
    return await this.call(host, [repositoryScope(path, "pull")], {
      url: `${this.origin(host)}/v2/${path}/tags/list`,
      what,
      signal: options.signal,
    }, async (res) => {
      if (!res.ok) throw await responseError(res, what);
      return await readJson<GoogleTagList>(res, what);
    });
  }

  override async listOwners(_host: string, _options: ListOptions = {}): Promise<string[]> {
    const project = await this.defaultProject();
    return project ? [project] : [];
  }

  override async listRepositories(
    host: string,
    prefix = "",
    options: ListOptions = {},
  ): Promise<string[]> {
    let start = prefix.replace(/^\/+|\/+$/g, "");
    if (start === "") {
      const project = await this.defaultProject();
      if (!project) {
        throw new RegistryError(`${host}: cannot list all projects; name one (${host}/PROJECT)`, {
          code: "UNSUPPORTED",
          reference: host,
        });
      }
      start = project;
    }
    const limit = options.limit ?? 10_000;
    const out: string[] = [];
    let level = [start];
    for (let depth = 0; level.length && depth < 16 && out.length < limit; depth++) {
      const next: string[] = [];
      await forEachLimit(level, 4, async (path) => {
        let list: GoogleTagList;
        try {
          list = await this.googleList(host, path, options);
        } catch (e) {
          if (path === start || !(e instanceof RegistryError && e.status === 404)) throw e;
          return;
        }
        if ((list.tags?.length ?? 0) > 0 || Object.keys(list.manifest ?? {}).length > 0) {
          out.push(path);
        }
        for (const c of list.child ?? []) next.push(`${path}/${c}`);
      });
      level = next;
    }
    return [...new Set(out)].sort();
  }

  override async listTags(repo: RepositoryName, options: TagListOptions = {}): Promise<TagInfo[]> {
    const list = await this.googleList(repo.host, repo.repository, options);
    const byTag = new Map<string, TagInfo>();
    for (const [digest, info] of Object.entries(list.manifest ?? {})) {
      for (const tag of info.tag ?? []) {
        const created = Number(info.timeCreatedMs ?? info.timeUploadedMs ?? NaN);
        const size = Number(info.imageSizeBytes ?? NaN);
        byTag.set(tag, {
          name: tag,
          digest,
          ...(info.mediaType ? { mediaType: info.mediaType } : {}),
          ...(Number.isFinite(size) ? { size } : {}),
          ...(Number.isFinite(created) && created > 0 ? { created: new Date(created) } : {}),
        });
      }
    }
    for (const tag of list.tags ?? []) if (!byTag.has(tag)) byTag.set(tag, { name: tag });
    const tags = [...byTag.values()].sort((
      a,
      b,
    ) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    if (options.digests) {
      await forEachLimit(tags.filter((t) => !t.digest), 8, async (t) => {
        const head = await this.headManifest(repo, t.name, options);
        if (head) t.digest = head.digest;
      });
    }
    if (tags.length === 0 && !list.manifest && !list.tags) {
      throw new RegistryError(`${formatReference(repo)}: no such repository`, {
        code: "NAME_UNKNOWN",
      });
    }
    return tags;
  }
}
