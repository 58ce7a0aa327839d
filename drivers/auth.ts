/**
 * Registry authentication: `WWW-Authenticate` parsing, credentials (explicit options, the docker
 * config file with its `auths`, `credHelpers` and `credsStore`, and extra providers such as
 * IBM Cloud API keys), HTTP basic auth, and bearer tokens from a token server (anonymous or with
 * credentials, OAuth2 refresh tokens for `identitytoken`s), cached per host and scope until they
 * expire. {@link Authenticator.requestWith} wraps an HTTP request with all of that: it learns the
 * host's challenge (`GET /v2/` once), sends the right `Authorization`, and on a 401 refreshes
 * once before giving up with a clear error.
 *
 * Credentials and tokens never appear in error messages or debug logs.
 *
 * @module
 */
import { DOCKER_HUB_CONFIG_KEY, isDockerHub } from "./reference.ts";
import {
  type HttpClient,
  type HttpRequest,
  readJson,
  RegistryError,
  responseError,
} from "./http.ts";
import { env } from "./env.ts";

/** One challenge of a `WWW-Authenticate` header. */
export interface Challenge {
  /** Scheme, lowercase: `bearer`, `basic`, … */
  scheme: string;
  /** Parameters with lowercase names: `realm`, `service`, `scope`, `error`, … */
  params: Record<string, string>;
}

/**
 * Parses a `WWW-Authenticate` header value into its challenges (RFC 7235: several challenges
 * separated by commas; parameters as tokens or quoted strings with `\` escapes).
 */
export function parseWwwAuthenticate(header: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const n = header.length;
  const skipWs = () => {
    while (i < n && (header[i] === " " || header[i] === "\t")) i++;
  };
  const token = () => {
    const start = i;
    while (i < n && /[!#$%&'*+\-.^_`|~0-9A-Za-z]/.test(header[i])) i++;
    return header.slice(start, i);
  };
  let current: Challenge | undefined;
  while (i < n) {
    skipWs();
    if (header[i] === ",") {
      i++;
      continue;
    }
    const word = token();
    if (word === "") {
      i++; // skip an unexpected character
      continue;
    }
    skipWs();
    if (header[i] === "=" && current) {
      i++;
      skipWs();
      let value: string;
      if (header[i] === '"') {
        i++;
        value = "";
        while (i < n && header[i] !== '"') {
          if (header[i] === "\\" && i + 1 < n) i++;
          value += header[i++];
        }
        i++;
      } else {
        const vs = i;
        while (i < n && header[i] !== "," && header[i] !== " ") i++;
        value = header.slice(vs, i);
      }
      current.params[word.toLowerCase()] = value;
    } else {
      current = { scheme: word.toLowerCase(), params: {} };
      out.push(current);
    }
  }
  return out;
}

/** Credentials for one registry. */
export interface Credentials {
  /** User name for basic auth or the token server. */
  username?: string;
  /** Password (or API key, access token). */
  password?: string;
  /** An OAuth2 refresh token (docker config `identitytoken`, helper user `<token>`). */
  identityToken?: string;
  /** A ready bearer token for the registry itself (docker config `registrytoken`). */
  registryToken?: string;
  /** Where these came from, for messages: never the secret itself. */
  source: string;
}

/** The parts of a docker `config.json` crfs reads. */
export interface DockerConfigFile {
  auths?: Record<string, {
    auth?: string;
    username?: string;
    password?: string;
    identitytoken?: string;
    registrytoken?: string;
  }>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

/** The docker config path: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. */
export function dockerConfigPath(): string | undefined {
  const dir = env("DOCKER_CONFIG");
  if (dir) return `${dir.replace(/\/+$/, "")}/config.json`;
  const home = env("HOME");
  return home ? `${home}/.docker/config.json` : undefined;
}

/**
 * Reads a docker config file (default {@link dockerConfigPath}); a directory means its
 * `config.json`. Undefined when absent; throws a `CREDENTIALS` error when unreadable or not JSON.
 */
export async function loadDockerConfig(
  path = dockerConfigPath(),
): Promise<{ path: string; config: DockerConfigFile } | undefined> {
  if (!path) return undefined;
  let file = path;
  try {
    if ((await Deno.stat(file)).isDirectory) file = `${file.replace(/\/+$/, "")}/config.json`;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new RegistryError(`cannot read docker config ${file}: ${(e as Error).message}`, {
      code: "CREDENTIALS",
    });
  }
  try {
    return { path: file, config: JSON.parse(text) as DockerConfigFile };
  } catch {
    throw new RegistryError(`docker config ${file} is not valid JSON`, { code: "CREDENTIALS" });
  }
}

/** Normalizes a docker config key (`https://host/v1/`, `host`, `http://host:5000`) to `host[:port]`. */
export function normalizeConfigKey(key: string): string {
  let k = key.trim().toLowerCase();
  k = k.replace(/^[a-z]+:\/\//, "");
  const slash = k.indexOf("/");
  if (slash >= 0) k = k.slice(0, slash);
  return k;
}

function keyMatches(key: string, host: string): boolean {
  const k = normalizeConfigKey(key);
  if (isDockerHub(host)) return isDockerHub(k);
  return k === host.toLowerCase();
}

/**
 * Runs the docker credential helper `docker-credential-<name> get` for `serverUrl`.
 * Undefined when the helper has no credentials for it; throws a `CREDENTIALS` error when the
 * helper is missing, fails or times out.
 */
export async function runCredentialHelper(
  name: string,
  serverUrl: string,
  timeoutMs = 30_000,
): Promise<Credentials | undefined> {
  const program = `docker-credential-${name}`;
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(program, {
      args: ["get"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new RegistryError(
        `credential helper ${program} (named in the docker config) is not on PATH`,
        {
          code: "CREDENTIALS",
        },
      );
    }
    throw new RegistryError(`cannot run credential helper ${program}: ${(e as Error).message}`, {
      code: "CREDENTIALS",
    });
  }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }, timeoutMs);
  let out: Deno.CommandOutput;
  try {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(serverUrl)).catch(() => {});
    await writer.close().catch(() => {});
    out = await child.output();
  } finally {
    clearTimeout(timer);
  }
  const stdout = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) {
    if (
      /credentials not found/i.test(stdout) ||
      /credentials not found/i.test(new TextDecoder().decode(out.stderr))
    ) {
      return undefined;
    }
    const why = out.signal
      ? `killed by ${out.signal} (timeout ${timeoutMs} ms?)`
      : `exit code ${out.code}`;
    throw new RegistryError(`credential helper ${program} failed for ${serverUrl} (${why})`, {
      code: "CREDENTIALS",
    });
  }
  let parsed: { Username?: string; Secret?: string };
  try {
    parsed = JSON.parse(stdout);
  } catch {
    throw new RegistryError(`credential helper ${program} printed something that is not JSON`, {
      code: "CREDENTIALS",
    });
  }
  if (!parsed.Secret) return undefined;
  const source = `credential helper ${program}`;
  if (parsed.Username === "<token>") return { identityToken: parsed.Secret, source };
  return { username: parsed.Username ?? "", password: parsed.Secret, source };
}

/** Options for {@link lookupDockerCredentials}. */
export interface DockerCredentialOptions {
  /** Config file or directory; default `$DOCKER_CONFIG` or `~/.docker`. */
  configPath?: string;
  /** Timeout for credential helpers. */
  helperTimeoutMs?: number;
}

/**
 * Credentials for `host` from the docker config: `credHelpers[host]`, then `auths[host]`
 * (`auth`, `username`/`password`, `identitytoken`, `registrytoken`), then `credsStore`.
 * Docker Hub hosts use the key `https://index.docker.io/v1/`.
 */
export async function lookupDockerCredentials(
  host: string,
  options: DockerCredentialOptions = {},
): Promise<Credentials | undefined> {
  const loaded = await loadDockerConfig(options.configPath ?? dockerConfigPath());
  if (!loaded) return undefined;
  const { path, config } = loaded;
  const serverUrl = isDockerHub(host) ? DOCKER_HUB_CONFIG_KEY : host;
  for (const [key, helper] of Object.entries(config.credHelpers ?? {})) {
    if (keyMatches(key, host) && helper) {
      return await runCredentialHelper(helper, serverUrl, options.helperTimeoutMs);
    }
  }
  for (const [key, entry] of Object.entries(config.auths ?? {})) {
    if (!keyMatches(key, host) || !entry) continue;
    const source = `docker config ${path}`;
    if (entry.registrytoken) return { registryToken: entry.registrytoken, source };
    if (entry.identitytoken) {
      return { identityToken: entry.identitytoken, username: entry.username, source };
    }
    if (entry.auth) {
      let decoded: string;
      try {
        decoded = new TextDecoder().decode(
          Uint8Array.from(atob(entry.auth), (c) => c.charCodeAt(0)),
        );
      } catch {
        throw new RegistryError(`docker config ${path}: the auth entry for ${key} is not base64`, {
          code: "CREDENTIALS",
        });
      }
      const colon = decoded.indexOf(":");
      if (colon < 0) {
        throw new RegistryError(
          `docker config ${path}: the auth entry for ${key} is not user:password`,
          {
            code: "CREDENTIALS",
          },
        );
      }
      return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1), source };
    }
    if (entry.username && entry.password) {
      return { username: entry.username, password: entry.password, source };
    }
  }
  if (config.credsStore) {
    return await runCredentialHelper(config.credsStore, serverUrl, options.helperTimeoutMs);
  }
  return undefined;
}

/** A source of credentials consulted after explicit options and the docker config. */
export type CredentialProvider = (
  host: string,
) => Credentials | undefined | Promise<Credentials | undefined>;

/** Options for {@link Authenticator}. */
export interface AuthOptions {
  /** Explicit user name (e.g. `--username`). */
  username?: string;
  /** Explicit password. */
  password?: string;
  /** Hosts the explicit credentials are for; default all hosts. */
  credentialHosts?: readonly string[];
  /** Docker config file or directory; `false` ignores docker configs. */
  dockerConfig?: string | false;
  /** Timeout for credential helpers. */
  helperTimeoutMs?: number;
  /** Extra credential sources, after the above. */
  providers?: CredentialProvider[];
}

/** Where to send requests for one registry: its identity and its URL origin. */
export interface Target {
  /** The registry host as users name it (credentials and caches are keyed by it). */
  host: string;
  /** URL origin to send requests to, e.g. `https://host` or an emulator's `http://127.0.0.1:9000`. */
  origin: string;
}

/** Builds a repository scope: `repository:<name>:<actions>`. */
export function repositoryScope(
  repository: string,
  actions: "pull" | "push" | "pull,push" | string,
): string {
  return `repository:${repository}:${actions}`;
}

/** The scope of `GET /v2/_catalog`. */
export const CATALOG_SCOPE = "registry:catalog:*";

interface CachedToken {
  value: string;
  expires: number;
}

type Outcome<T> = { value: T } | { unauthorized: string | null };

/** Authenticates requests to registries; see the module documentation. */
export class Authenticator {
  readonly http: HttpClient;
  readonly #opts: AuthOptions;
  readonly #providers: CredentialProvider[];
  readonly #challenges = new Map<string, Challenge | null>();
  readonly #pings = new Map<string, Promise<void>>();
  readonly #tokens = new Map<string, CachedToken>();
  readonly #inflight = new Map<string, Promise<CachedToken>>();
  readonly #creds = new Map<string, Promise<Credentials | undefined>>();
  /** Token server requests made, for tests and statistics. */
  tokenRequests = 0;

  constructor(http: HttpClient, options: AuthOptions = {}) {
    this.http = http;
    this.#opts = options;
    this.#providers = [...(options.providers ?? [])];
  }

  /** Adds a credential source consulted after the explicit options and the docker config. */
  addProvider(provider: CredentialProvider): void {
    this.#providers.push(provider);
  }

  /** Credentials for `host`, looked up once and cached. */
  credentialsFor(host: string): Promise<Credentials | undefined> {
    let p = this.#creds.get(host);
    if (!p) {
      p = this.#lookup(host);
      this.#creds.set(host, p);
      p.catch(() => this.#creds.delete(host));
    }
    return p;
  }

  async #lookup(host: string): Promise<Credentials | undefined> {
    const o = this.#opts;
    if (o.username !== undefined || o.password !== undefined) {
      const hosts = o.credentialHosts;
      if (
        !hosts ||
        hosts.some((h) =>
          h.toLowerCase() === host.toLowerCase() || (isDockerHub(h) && isDockerHub(host))
        )
      ) {
        return {
          username: o.username ?? "",
          password: o.password ?? "",
          source: "the given username/password",
        };
      }
    }
    if (o.dockerConfig !== false) {
      const found = await lookupDockerCredentials(host, {
        configPath: o.dockerConfig || undefined,
        helperTimeoutMs: o.helperTimeoutMs,
      });
      if (found) return found;
    }
    for (const provider of this.#providers) {
      const found = await provider(host);
      if (found) return found;
    }
    return undefined;
  }

  /** The challenge learned for `host` (null: no auth needed; undefined: not yet known). */
  challengeFor(host: string): Challenge | null | undefined {
    return this.#challenges.get(host);
  }

  /** Forgets cached tokens (all, or those of one host). */
  clearTokens(host?: string): void {
    for (const k of [...this.#tokens.keys()]) {
      if (host === undefined || k.startsWith(`${host}|`)) this.#tokens.delete(k);
    }
  }

  /**
   * `GET /v2/` on the registry to learn whether and how it wants authentication. Done once per
   * host; fails with a clear error when the host is unreachable or not a registry.
   */
  ping(target: Target, signal?: AbortSignal): Promise<void> {
    let p = this.#pings.get(target.host);
    if (!p) {
      p = this.#ping(target, signal);
      this.#pings.set(target.host, p);
      p.catch(() => this.#pings.delete(target.host));
    }
    return p;
  }

  async #ping(target: Target, signal?: AbortSignal): Promise<void> {
    const what = target.host;
    await this.http.requestWith({ url: `${target.origin}/v2/`, signal, what }, async (res) => {
      if (res.ok) {
        await res.body?.cancel();
        this.#challenges.set(target.host, null);
        return;
      }
      if (res.status === 401) {
        await res.body?.cancel();
        this.#challenges.set(target.host, pickChallenge(res.headers.get("www-authenticate")));
        return;
      }
      if (res.status === 404) {
        await res.body?.cancel();
        throw new RegistryError(
          `${what}: does not look like a container registry (GET /v2/ gave HTTP 404)`,
          {
            code: "NOT_FOUND",
            status: 404,
            reference: what,
          },
        );
      }
      throw await responseError(res, what);
    });
  }

  /**
   * The `Authorization` header value for `scopes` on the target, or undefined when none is
   * needed or possible. `force` discards a cached token.
   */
  async authorization(
    target: Target,
    scopes: string[],
    what: string,
    force = false,
    signal?: AbortSignal,
  ): Promise<string | undefined> {
    const challenge = this.#challenges.get(target.host);
    if (!challenge) return undefined;
    const creds = await this.credentialsFor(target.host);
    if (challenge.scheme === "basic") {
      if (!creds || creds.password === undefined) return undefined;
      return "Basic " + base64(`${creds.username ?? ""}:${creds.password}`);
    }
    if (challenge.scheme !== "bearer") {
      throw new RegistryError(`${what}: unsupported authentication scheme ${challenge.scheme}`, {
        code: "UNAUTHORIZED",
        reference: what,
      });
    }
    if (creds?.registryToken) return `Bearer ${creds.registryToken}`;
    const key = `${target.host}|${[...new Set(scopes)].sort().join(" ")}`;
    if (force) this.#tokens.delete(key);
    const cached = this.#tokens.get(key);
    if (cached && cached.expires > Date.now()) return `Bearer ${cached.value}`;
    let p = this.#inflight.get(key);
    if (!p) {
      p = this.#fetchToken(target, challenge, scopes, creds, what, signal);
      this.#inflight.set(key, p);
      p.finally(() => this.#inflight.delete(key)).catch(() => {});
    }
    const token = await p;
    this.#tokens.set(key, token);
    return `Bearer ${token.value}`;
  }

  async #fetchToken(
    target: Target,
    challenge: Challenge,
    scopes: string[],
    creds: Credentials | undefined,
    what: string,
    signal?: AbortSignal,
  ): Promise<CachedToken> {
    const realm = challenge.params.realm;
    if (!realm) {
      throw new RegistryError(`${what}: the registry asks for a bearer token but names no realm`, {
        code: "UNAUTHORIZED",
        reference: what,
      });
    }
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new RegistryError(`${what}: bad token realm in the registry's challenge`, {
        code: "UNAUTHORIZED",
        reference: what,
      });
    }
    const hasSecret = creds && (creds.password !== undefined || creds.identityToken !== undefined);
    // The token server's own host decides, never the registry's: a loopback or insecure
    // registry may not send credentials in the clear to a host nobody listed.
    if (hasSecret && url.protocol === "http:" && !this.http.isInsecure(url.host)) {
      throw new RegistryError(
        `${what}: refusing to send credentials to a plain-http token server (${url.host}); ` +
          `list it as an insecure registry if this is intended`,
        { code: "UNAUTHORIZED", reference: what },
      );
    }
    const service = challenge.params.service;
    const allScopes = [...new Set(scopes)];
    const tokenWhat = `${what} (token server ${url.host})`;
    this.tokenRequests++;
    const start = Date.now();
    let req: HttpRequest;
    if (creds?.identityToken) {
      const form = new URLSearchParams({
        grant_type: "refresh_token",
        refresh_token: creds.identityToken,
        client_id: "crfs",
      });
      if (service) form.set("service", service);
      if (allScopes.length) form.set("scope", allScopes.join(" "));
      req = {
        url,
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: form.toString(),
        retry: true,
        signal,
        what: tokenWhat,
      };
    } else {
      if (service) url.searchParams.set("service", service);
      for (const s of allScopes) url.searchParams.append("scope", s);
      const headers: Record<string, string> = {};
      if (creds && creds.password !== undefined) {
        headers.authorization = "Basic " + base64(`${creds.username ?? ""}:${creds.password}`);
        if (creds.username) url.searchParams.set("account", creds.username);
      }
      req = { url, headers, signal, what: tokenWhat };
    }
    return await this.http.requestWith(req, async (res) => {
      if (res.status === 401 || res.status === 403) {
        await res.body?.cancel();
        throw new RegistryError(
          creds
            ? `${what}: authentication failed: the token server rejected the credentials from ${creds.source}`
            : `${what}: authentication required (anonymous access refused); ` +
              `log in with 'docker login ${target.host}' or give a username and password`,
          { code: "UNAUTHORIZED", status: res.status, reference: what },
        );
      }
      if (!res.ok) throw await responseError(res, tokenWhat);
      const body = await readJson<{ token?: string; access_token?: string; expires_in?: number }>(
        res,
        tokenWhat,
        1 << 20,
      );
      const value = body.token || body.access_token;
      if (!value) {
        throw new RegistryError(`${tokenWhat}: the token server answered without a token`, {
          code: "BAD_RESPONSE",
          reference: what,
        });
      }
      const ttl = typeof body.expires_in === "number" && body.expires_in > 0 ? body.expires_in : 60;
      const margin = Math.min(10, ttl / 10);
      return { value, expires: start + (ttl - margin) * 1000 };
    });
  }

  /**
   * Like {@link HttpClient.requestWith}, authenticated for `scopes` on `target`: pings the host
   * once, sends credentials, and on a 401 refreshes the token (or learns the new challenge) once
   * before failing with an `UNAUTHORIZED` error naming `req.what`.
   */
  async requestWith<T>(
    target: Target,
    scopes: string[],
    req: HttpRequest,
    consume: (res: Response) => Promise<T>,
  ): Promise<T> {
    return await this.#authorized(
      target,
      scopes,
      req,
      (r) =>
        this.http.requestWith(r, async (res): Promise<Outcome<T>> => {
          if (res.status === 401) {
            await res.body?.cancel();
            return { unauthorized: res.headers.get("www-authenticate") };
          }
          return { value: await consume(res) };
        }),
    );
  }

  /** Like {@link requestWith} but returns the response with its body unread (for streaming). */
  async request(target: Target, scopes: string[], req: HttpRequest): Promise<Response> {
    return await this.#authorized(target, scopes, req, async (r): Promise<Outcome<Response>> => {
      const res = await this.http.request(r);
      if (res.status !== 401) return { value: res };
      await res.body?.cancel();
      return { unauthorized: res.headers.get("www-authenticate") };
    });
  }

  /**
   * The one authentication loop of {@link requestWith} and {@link request}: `send` makes one
   * request with the authorization header and reports a 401 with its challenge. A 401 learns the
   * challenge and scopes and retries once; it gives up at once when the body cannot be replayed,
   * or when basic credentials were sent and the challenge did not change scheme.
   */
  async #authorized<T>(
    target: Target,
    scopes: string[],
    req: HttpRequest,
    send: (req: HttpRequest) => Promise<Outcome<T>>,
  ): Promise<T> {
    const what = req.what ?? target.host;
    await this.ping(target, req.signal).catch((e) => {
      throw renamed(e, target.host, what);
    });
    const replayable = !(req.body instanceof ReadableStream);
    let want = scopes;
    for (let round = 0;; round++) {
      const header = await this.authorization(target, want, what, round > 0, req.signal);
      const headers = new Headers(req.headers);
      if (header && sameOrigin(req.url, target.origin)) headers.set("authorization", header);
      const outcome = await send({ ...req, headers });
      if ("value" in outcome) return outcome.value;
      const challenge = pickChallenge(outcome.unauthorized);
      const known = this.#challenges.get(target.host);
      const changed = challenge !== null && (!known || known.scheme !== challenge.scheme);
      if (challenge) this.#challenges.set(target.host, challenge);
      if (challenge?.params.scope) {
        want = [...new Set([...want, ...challenge.params.scope.split(" ")])];
      }
      if (round >= 1 || !replayable || (header && !changed && challenge?.scheme === "basic")) {
        throw await this.#unauthorized(target, what, header !== undefined);
      }
    }
  }

  async #unauthorized(
    target: Target,
    what: string,
    sentCredentials: boolean,
  ): Promise<RegistryError> {
    const creds = await this.credentialsFor(target.host).catch(() => undefined);
    if (sentCredentials && creds) {
      return new RegistryError(
        `${what}: authentication failed: the registry rejected the credentials from ${creds.source}`,
        { code: "UNAUTHORIZED", status: 401, reference: what },
      );
    }
    return new RegistryError(
      `${what}: authentication required; log in with 'docker login ${target.host}' or give a username and password`,
      { code: "UNAUTHORIZED", status: 401, reference: what },
    );
  }
}

/** `e` with its message about `host` restated as about `what` (a reference on that host). */
function renamed(e: unknown, host: string, what: string): unknown {
  if (!(e instanceof RegistryError) || what === host || !e.message.startsWith(`${host}: `)) {
    return e;
  }
  return new RegistryError(`${what}: ${e.message.slice(host.length + 2)}`, {
    code: e.code,
    status: e.status,
    reference: what,
    detail: e.detail,
    transient: e.transient,
    cause: e,
  });
}

function pickChallenge(header: string | null): Challenge | null {
  if (!header) return null;
  const all = parseWwwAuthenticate(header);
  return all.find((c) => c.scheme === "bearer") ?? all.find((c) => c.scheme === "basic") ??
    all[0] ?? null;
}

function sameOrigin(url: string | URL, origin: string): boolean {
  try {
    return new URL(url).origin === new URL(origin).origin;
  } catch {
    return false;
  }
}

function base64(text: string): string {
  const bytes = new TextEncoder().encode(text);
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}
