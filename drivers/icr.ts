/**
 * IBM Cloud Container Registry (`icr.io` and its regional hosts). Images, tags and blobs are
 * plain Docker v2, logged in as user `iamapikey` with an IBM Cloud API key as the password.
 * Listing uses IBM's REST API at `https://<host>/api/v1`: `GET /namespaces` for the owners and
 * `GET /images?namespace=…` for the repositories (and, cheaply, tags with digests), authorized
 * with an IAM access token (`POST` of the API key to the IAM token endpoint, cached until it
 * expires) and the `Account` header when the account is known.
 *
 * The API key comes from the `icrApiKey` option, else the docker config entry of the host when
 * its user is `iamapikey`, else `$IBMCLOUD_API_KEY`. The account comes from `icrAccount` or
 * `$IBMCLOUD_ACCOUNT`. For tests, the base URL of every ICR host (`icrUrl`) and the IAM endpoint
 * (`iamUrl`) can be replaced by emulators, only through these explicit constructor options (no
 * environment variable redirects a user's traffic, credentials and API key).
 *
 * @module
 */
import type { Credentials } from "./auth.ts";
import type { DriverContext, ListOptions, TagInfo, TagListOptions } from "./driver.ts";
import { DockerV2Driver, type DockerV2Options } from "./docker_v2.ts";
import { RegistryError } from "./errors.ts";
import { readJson, responseError } from "./http.ts";
import type { RepositoryName } from "./reference.ts";
import { env } from "./env.ts";

/** The IBM Cloud Container Registry hosts. */
export const ICR_HOSTS: readonly string[] = [
  "icr.io",
  "us.icr.io",
  "uk.icr.io",
  "de.icr.io",
  "jp.icr.io",
  "au.icr.io",
  "jp2.icr.io",
  "ca.icr.io",
  "ca2.icr.io",
  "br.icr.io",
  "fr2.icr.io",
  "es.icr.io",
  "in.icr.io",
  "in2.icr.io",
];

/** The public IAM token endpoint. */
export const IAM_TOKEN_URL = "https://iam.cloud.ibm.com/identity/token";

/** Options of {@link IcrDriver}. */
export interface IcrOptions extends DockerV2Options {
  /** Base URL for all ICR hosts (an emulator, tests only); default each host itself. */
  icrUrl?: string;
  /** IAM token endpoint (an emulator, tests only); default {@link IAM_TOKEN_URL}. */
  iamUrl?: string;
  /** The API key; see the module documentation. */
  icrApiKey?: string;
  /** The account id for the `Account` header; default `$IBMCLOUD_ACCOUNT`. */
  icrAccount?: string;
}

/** Whether `host` is an ICR host. */
export function isIcrHost(host: string): boolean {
  const h = host.toLowerCase();
  return ICR_HOSTS.includes(h) || /^[a-z0-9-]+\.icr\.io$/.test(h);
}

/** One image of `GET /api/v1/images`. */
interface IcrImage {
  RepoTags?: string[] | null;
  RepoDigests?: string[] | null;
  DigestTags?: Record<string, string[]> | null;
  Created?: number;
  Size?: number;
  ManifestType?: string;
}

/** Splits `host/ns/repo:tag` or `host/ns/repo@digest` into repository (without host) and tag/digest. */
function splitRepoRef(
  ref: string,
): { repository: string; tag?: string; digest?: string } | undefined {
  const at = ref.indexOf("@");
  let rest = at >= 0 ? ref.slice(0, at) : ref;
  const digest = at >= 0 ? ref.slice(at + 1) : undefined;
  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
  }
  const slash = rest.indexOf("/");
  if (slash < 0) return undefined;
  return {
    repository: rest.slice(slash + 1),
    ...(tag ? { tag } : {}),
    ...(digest ? { digest } : {}),
  };
}

/** The IBM Cloud Container Registry driver; see the module documentation. */
export class IcrDriver extends DockerV2Driver {
  override readonly name: string = "icr";
  readonly icr: IcrOptions;
  #iam?: { token: string; expires: number };
  #iamInflight?: Promise<string>;
  /** IAM token requests made (tests, statistics). */
  iamRequests = 0;

  constructor(ctx: Pick<DriverContext, "http" | "auth">, options: IcrOptions = {}) {
    super(ctx, options);
    this.icr = {
      ...options,
      iamUrl: options.iamUrl ?? IAM_TOKEN_URL,
      icrAccount: options.icrAccount ?? env("IBMCLOUD_ACCOUNT"),
    };
    // Registry (v2) logins fall back to the API key as user `iamapikey`.
    ctx.auth.addProvider((host): Credentials | undefined => {
      if (!isIcrHost(host)) return undefined;
      const explicit = this.icr.icrApiKey;
      if (explicit) {
        return {
          username: "iamapikey",
          password: explicit,
          source: "the IBM Cloud API key option",
        };
      }
      const fromEnv = env("IBMCLOUD_API_KEY");
      if (fromEnv) return { username: "iamapikey", password: fromEnv, source: "$IBMCLOUD_API_KEY" };
      return undefined;
    });
  }

  override matches(host: string): boolean {
    return isIcrHost(host);
  }

  override origin(host: string): string {
    return this.icr.icrUrl ? this.icr.icrUrl.replace(/\/+$/, "") : super.origin(host);
  }

  /** The API key for `host` and where it came from; undefined when there is none. */
  async apiKey(host: string): Promise<{ key: string; source: string } | undefined> {
    if (this.icr.icrApiKey) {
      return { key: this.icr.icrApiKey, source: "the IBM Cloud API key option" };
    }
    const creds = await this.auth.credentialsFor(host);
    if (creds?.username === "iamapikey" && creds.password) {
      return { key: creds.password, source: creds.source };
    }
    const fromEnv = env("IBMCLOUD_API_KEY");
    if (fromEnv) return { key: fromEnv, source: "$IBMCLOUD_API_KEY" };
    return undefined;
  }

  /** An IAM access token for the API key, cached until shortly before it expires. */
  async iamToken(host: string, signal?: AbortSignal): Promise<string> {
    if (this.#iam && this.#iam.expires > Date.now()) return this.#iam.token;
    this.#iamInflight ??= this.#fetchIamToken(host, signal).finally(
      () => (this.#iamInflight = undefined),
    );
    return await this.#iamInflight;
  }

  async #fetchIamToken(host: string, signal?: AbortSignal): Promise<string> {
    const key = await this.apiKey(host);
    if (!key) {
      throw new RegistryError(
        `${host}: listing needs an IBM Cloud API key: set IBMCLOUD_API_KEY or 'docker login -u iamapikey ${host}'`,
        { code: "UNAUTHORIZED", reference: host },
      );
    }
    const what = `${host} (IBM Cloud IAM)`;
    this.iamRequests++;
    const start = Date.now();
    const body = new URLSearchParams({
      grant_type: "urn:ibm:params:oauth:grant-type:apikey",
      apikey: key.key,
    });
    const token = await this.http.requestWith({
      url: this.icr.iamUrl!,
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" },
      body: body.toString(),
      retry: true,
      what,
      signal,
    }, async (res) => {
      if (res.status === 400 || res.status === 401 || res.status === 403) {
        await res.body?.cancel();
        throw new RegistryError(
          `${host}: IBM Cloud IAM refused the API key from ${key.source} (HTTP ${res.status})`,
          {
            code: "UNAUTHORIZED",
            status: res.status,
            reference: host,
          },
        );
      }
      if (!res.ok) throw await responseError(res, what);
      return await readJson<{ access_token?: string; expires_in?: number }>(res, what);
    });
    if (!token.access_token) {
      throw new RegistryError(`${what}: the answer has no access_token`, {
        code: "BAD_RESPONSE",
        reference: host,
      });
    }
    const ttl = token.expires_in && token.expires_in > 0 ? token.expires_in : 600;
    this.#iam = {
      token: token.access_token,
      expires: start + (ttl - Math.min(60, ttl / 10)) * 1000,
    };
    return token.access_token;
  }

  /** `GET https://<host>/api/v1<path>` with the IAM token and Account header; parsed JSON. */
  async api<T>(host: string, path: string, signal?: AbortSignal): Promise<T> {
    const what = `${host} (registry API ${path.split("?")[0]})`;
    for (let round = 0;; round++) {
      const token = await this.iamToken(host, signal);
      const headers: Record<string, string> = {
        authorization: `Bearer ${token}`,
        accept: "application/json",
      };
      if (this.icr.icrAccount) headers.account = this.icr.icrAccount;
      const out: { value: T } | { retry: true } = await this.http.requestWith({
        url: `${this.origin(host)}/api/v1${path}`,
        headers,
        what,
        signal,
      }, async (res): Promise<{ value: T } | { retry: true }> => {
        if (res.status === 401 && round === 0) {
          await res.body?.cancel();
          return { retry: true as const };
        }
        if (!res.ok) throw await responseError(res, what);
        return { value: await readJson<T>(res, what) };
      });
      if ("value" in out) return out.value;
      this.#iam = undefined; // the token was refused: get a new one once
    }
  }

  override async listOwners(host: string, options: ListOptions = {}): Promise<string[]> {
    const list = await this.api<(string | { name?: string })[]>(
      host,
      "/namespaces",
      options.signal,
    );
    return [...new Set(list.map((n) => (typeof n === "string" ? n : n.name ?? "")).filter(Boolean))]
      .sort();
  }

  /** The images of a namespace as the REST API lists them. */
  async images(
    host: string,
    namespace: string,
    options: ListOptions & { repository?: string } = {},
  ): Promise<IcrImage[]> {
    const q = new URLSearchParams({ namespace, includeManifestLists: "true" });
    if (options.repository) q.set("repository", options.repository);
    return await this.api<IcrImage[]>(host, `/images?${q}`, options.signal) ?? [];
  }

  override async listRepositories(
    host: string,
    prefix = "",
    options: ListOptions = {},
  ): Promise<string[]> {
    const p = prefix.replace(/^\/+|\/+$/g, "");
    const namespaces = p ? [p.split("/")[0]] : await this.listOwners(host, options);
    const out = new Set<string>();
    for (const ns of namespaces) {
      for (const img of await this.images(host, ns, options)) {
        for (const ref of [...(img.RepoTags ?? []), ...(img.RepoDigests ?? [])]) {
          const r = splitRepoRef(ref);
          if (r && (p === "" || r.repository === p || r.repository.startsWith(`${p}/`))) {
            out.add(r.repository);
          }
        }
      }
    }
    return [...out].sort();
  }

  override async listTags(repo: RepositoryName, options: TagListOptions = {}): Promise<TagInfo[]> {
    const tags = await this.tagNames(repo, options);
    const infos: TagInfo[] = tags.map((name) => ({ name }));
    if (options.digests && tags.length) {
      // One REST call gives every tag's digest (DigestTags), instead of a HEAD per tag.
      const ns = repo.repository.split("/")[0];
      const byTag = new Map<string, { digest: string; size?: number; created?: Date }>();
      for (
        const img of await this.images(repo.host, ns, { ...options, repository: repo.repository })
      ) {
        for (const [digest, names] of Object.entries(img.DigestTags ?? {})) {
          for (const t of names) {
            byTag.set(t, {
              digest,
              ...(img.Size !== undefined ? { size: img.Size } : {}),
              ...(img.Created ? { created: new Date(img.Created * 1000) } : {}),
            });
          }
        }
      }
      for (const info of infos) Object.assign(info, byTag.get(info.name) ?? {});
      const missing = infos.filter((i) => !i.digest);
      for (const info of missing) {
        const head = await this.headManifest(repo, info.name, options);
        if (head) info.digest = head.digest;
      }
    }
    return infos;
  }
}
