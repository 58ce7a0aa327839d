/**
 * Registry authentication: `WWW-Authenticate` parsing, credentials per repository (explicit
 * credentials bound to their registry hosts, then the host's auth files through
 * {@link AuthFiles} — containers-auth.json(5) order, namespace-scoped keys, credential helpers —
 * then extra providers such as IBM Cloud API keys), HTTP basic auth, and bearer tokens from a
 * token server (anonymous or with credentials, OAuth2 refresh tokens for `identitytoken`s),
 * cached per host, credentials key and scope until shortly before they expire
 * (`expires_in` from `issued_at`). {@link Authenticator.requestWith} wraps an HTTP request with
 * all of that: it learns the host's challenge (`GET /v2/` once), sends the right
 * `Authorization`, and answers a 401 — or a 403 to a cached token, which some registries send
 * for an expired one — with one fresh authentication before giving up with a clear error.
 *
 * Credentials go only where they belong: explicit ones to their hosts, auth-file ones to the
 * repositories their key covers; never over plain http to a token server that is neither
 * loopback nor listed insecure. Credentials and tokens never appear in error messages or debug
 * logs.
 *
 * @module
 */
import { isDockerHub } from "./reference.ts";
import {
  AuthFiles,
  CredentialsFileError,
  type FoundCredentials,
  type RepositoryRef,
} from "./auth_files.ts";
import {
  type HttpClient,
  type HttpRequest,
  readJson,
  RegistryError,
  responseError,
} from "./http.ts";

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
  /**
   * The auth-file key that matched (`quay.io/team`, `quay.io`): tokens are cached per key, so a
   * namespace's credentials never serve another namespace. Undefined for other sources.
   */
  key?: string;
}

/** A source of credentials consulted after explicit credentials and the auth files. */
export type CredentialProvider = (
  host: string,
  repository: string,
) => Credentials | undefined | Promise<Credentials | undefined>;

/** Credentials looked up per repository: {@link AuthFiles} (auth_files.ts) or a test double. */
export interface CredentialLookup {
  /** Credentials for the repository `path` on `host`, or undefined. */
  credentialsFor(ref: RepositoryRef): Promise<FoundCredentials | undefined>;
}

/** Credentials given for particular registries (command-line flags such as `--creds`). */
export interface ExplicitCredentials {
  /** The registry hosts they belong to; no other host ever sees them. */
  hosts: readonly string[];
  username: string;
  password: string;
  /** Where they came from, for messages (`--creds`); never the secret. */
  source: string;
}

/** Options for {@link Authenticator}. */
export interface AuthOptions {
  /** Explicit user name (library use; crfs's commands give {@link explicitCredentials}). */
  username?: string;
  /** Explicit password. */
  password?: string;
  /**
   * Hosts `username`/`password` are for; default all hosts (a client of one registry). crfs's
   * commands always bind credentials to hosts with {@link explicitCredentials} instead.
   */
  credentialHosts?: readonly string[];
  /** Credentials bound to hosts; consulted first. */
  explicitCredentials?: readonly ExplicitCredentials[];
  /**
   * Where per-repository credentials come from; default the host's auth files
   * (`new AuthFiles()`: containers-auth.json(5) order, namespace-scoped keys). `false`: none.
   */
  authFiles?: CredentialLookup | false;
  /**
   * One docker config file or directory to read instead of the host's auth files; `false`
   * ignores every auth file (as `authFiles: false`).
   */
  dockerConfig?: string | false;
  /** Timeout for credential helpers. */
  helperTimeoutMs?: number;
  /** Extra credential sources, after the above. */
  providers?: CredentialProvider[];
}

/** How long a credentials lookup is reused (files are re-read after it: `podman login` shows). */
const CREDENTIALS_TTL_MS = 30_000;
/** Most lookups and tokens kept (oldest go first). */
const MAX_CACHED = 4096;

/** The repository a set of scopes is about (the first `repository:NAME:…` scope), or "". */
export function scopeRepository(scopes: readonly string[]): string {
  for (const s of scopes) {
    if (!s.startsWith("repository:")) continue;
    const last = s.lastIndexOf(":");
    if (last > "repository:".length) return s.slice("repository:".length, last);
  }
  return "";
}

function sameHost(a: string, b: string): boolean {
  return a.toLowerCase() === b.toLowerCase() || (isDockerHub(a) && isDockerHub(b));
}

function remember<K, V>(map: Map<K, V>, key: K, value: V): void {
  map.delete(key);
  map.set(key, value);
  while (map.size > MAX_CACHED) map.delete(map.keys().next().value as K);
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

type Outcome<T> = { value: T } | { unauthorized: string | null; status: number };

/** A request as the authentication loop sends it: `renewOn403` treats a 403 as a stale token. */
type AuthorizedRequest = HttpRequest & { renewOn403?: boolean };

/** Authenticates requests to registries; see the module documentation. */
export class Authenticator {
  readonly http: HttpClient;
  readonly #opts: AuthOptions;
  readonly #providers: CredentialProvider[];
  readonly #challenges = new Map<string, Challenge | null>();
  readonly #pings = new Map<string, Promise<void>>();
  readonly #tokens = new Map<string, CachedToken>();
  readonly #inflight = new Map<string, Promise<CachedToken>>();
  readonly #creds = new Map<string, { at: number; p: Promise<Credentials | undefined> }>();
  readonly #files: CredentialLookup | undefined;
  /** Token server requests made, for tests and statistics. */
  tokenRequests = 0;

  constructor(http: HttpClient, options: AuthOptions = {}) {
    this.http = http;
    this.#opts = options;
    this.#providers = [...(options.providers ?? [])];
    if (options.authFiles === false || options.dockerConfig === false) this.#files = undefined;
    else if (options.authFiles) this.#files = options.authFiles;
    else if (typeof options.dockerConfig === "string") {
      // Exactly that file: no environment, no other file.
      this.#files = new AuthFiles({
        authFile: options.dockerConfig,
        env: () => undefined,
        helperTimeoutMs: options.helperTimeoutMs,
      });
    } else this.#files = new AuthFiles({ helperTimeoutMs: options.helperTimeoutMs });
  }

  /** Adds a credential source consulted after the explicit options and the docker config. */
  addProvider(provider: CredentialProvider): void {
    this.#providers.push(provider);
  }

  /**
   * Credentials for `repository` on `host` (explicit credentials bound to the host, then the auth
   * files by repository, then the providers), looked up once per host and repository and reused
   * for a short while. `fresh` looks again.
   */
  credentialsFor(host: string, repository = "", fresh = false): Promise<Credentials | undefined> {
    const key = `${host.toLowerCase()}/${repository}`;
    const hit = this.#creds.get(key);
    if (hit && !fresh && Date.now() - hit.at < CREDENTIALS_TTL_MS) return hit.p;
    const p = this.#lookup(host, repository);
    remember(this.#creds, key, { at: Date.now(), p });
    p.catch(() => this.#creds.delete(key));
    return p;
  }

  async #lookup(host: string, repository: string): Promise<Credentials | undefined> {
    const o = this.#opts;
    for (const c of o.explicitCredentials ?? []) {
      if (c.hosts.some((h) => sameHost(h, host))) {
        return { username: c.username, password: c.password, source: c.source };
      }
    }
    if (o.username !== undefined || o.password !== undefined) {
      const hosts = o.credentialHosts;
      if (!hosts || hosts.some((h) => sameHost(h, host))) {
        return {
          username: o.username ?? "",
          password: o.password ?? "",
          source: "the given username/password",
        };
      }
    }
    if (this.#files) {
      let found: FoundCredentials | undefined;
      try {
        found = await this.#files.credentialsFor({ host, path: repository });
      } catch (e) {
        if (e instanceof CredentialsFileError) {
          throw new RegistryError(e.message, { code: "CREDENTIALS", reference: host });
        }
        throw e;
      }
      if (found) return found;
    }
    for (const provider of this.#providers) {
      const found = await provider(host, repository);
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
    return (await this.#authorization(target, scopes, what, force, signal)).header;
  }

  /** {@link authorization}, also saying whether the header is a bearer token from the cache. */
  async #authorization(
    target: Target,
    scopes: string[],
    what: string,
    force: boolean,
    signal?: AbortSignal,
  ): Promise<{ header?: string; cachedToken: boolean }> {
    const header = (h?: string) => ({ header: h, cachedToken: false });
    const challenge = this.#challenges.get(target.host);
    if (!challenge) return header();
    const repository = scopeRepository(scopes);
    const creds = await this.credentialsFor(target.host, repository, force);
    if (challenge.scheme === "basic") {
      if (!creds || creds.password === undefined) return header();
      return header("Basic " + base64(`${creds.username ?? ""}:${creds.password}`));
    }
    if (challenge.scheme !== "bearer") {
      throw new RegistryError(`${what}: unsupported authentication scheme ${challenge.scheme}`, {
        code: "UNAUTHORIZED",
        reference: what,
      });
    }
    if (creds?.registryToken) return header(`Bearer ${creds.registryToken}`);
    // Tokens are per host, the credentials' identity (the auth-file key that matched, so a
    // namespace's login never serves another namespace) and the scopes.
    const who = creds ? `${creds.key ?? ""}@${creds.source}` : "anonymous";
    const key = `${target.host}|${who}|${[...new Set(scopes)].sort().join(" ")}`;
    if (force) this.#tokens.delete(key);
    const cached = this.#tokens.get(key);
    if (cached && cached.expires > Date.now()) {
      return { header: `Bearer ${cached.value}`, cachedToken: true };
    }
    let p = this.#inflight.get(key);
    if (!p) {
      p = this.#fetchToken(target, challenge, scopes, creds, what, signal);
      this.#inflight.set(key, p);
      p.finally(() => this.#inflight.delete(key)).catch(() => {});
    }
    const token = await p;
    remember(this.#tokens, key, token);
    return header(`Bearer ${token.value}`);
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
              loginHint(target.host),
          { code: "UNAUTHORIZED", status: res.status, reference: what },
        );
      }
      if (!res.ok) throw await responseError(res, tokenWhat);
      const body = await readJson<
        { token?: string; access_token?: string; expires_in?: number; issued_at?: string }
      >(
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
      // expires_in counts from issued_at; a token issued well before we asked (a server handing
      // out a cached token) expires that much sooner. Differences under 2 s are clock skew and
      // whole-second timestamps, not age. Renewed a little before it expires.
      const issued = Date.parse(body.issued_at ?? "");
      const base = Number.isFinite(issued) && issued < start - 2000
        ? Math.max(issued, start - ttl * 1000)
        : start;
      const margin = Math.min(10, ttl / 10);
      return { value, expires: base + (ttl - margin) * 1000 };
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
          if (res.status === 401 || (res.status === 403 && r.renewOn403)) {
            await res.body?.cancel();
            return { unauthorized: res.headers.get("www-authenticate"), status: res.status };
          }
          return { value: await consume(res) };
        }),
    );
  }

  /** Like {@link requestWith} but returns the response with its body unread (for streaming). */
  async request(target: Target, scopes: string[], req: HttpRequest): Promise<Response> {
    return await this.#authorized(target, scopes, req, async (r): Promise<Outcome<Response>> => {
      const res = await this.http.request(r);
      if (res.status !== 401 && !(res.status === 403 && r.renewOn403)) return { value: res };
      await res.body?.cancel();
      return { unauthorized: res.headers.get("www-authenticate"), status: res.status };
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
    send: (req: AuthorizedRequest) => Promise<Outcome<T>>,
  ): Promise<T> {
    const what = req.what ?? target.host;
    const replayable = !(req.body instanceof ReadableStream);
    // Without credentials for the host, a replayable request goes first without a `GET /v2/`:
    // a registry that wants some answers it 401 with the challenge, and it is sent again (one
    // round trip fewer when none are needed). With credentials, or a body that cannot be sent
    // twice, the ping comes first so that the first request carries them.
    const anonymous = replayable &&
      !(await this.credentialsFor(target.host, scopeRepository(scopes)).catch(() => undefined));
    const ping = anonymous ? this.#pings.get(target.host) : this.ping(target, req.signal);
    await ping?.catch((e) => {
      throw renamed(e, target.host, what);
    });
    let want = scopes;
    for (let round = 0;; round++) {
      const { header, cachedToken } = await this.#authorization(
        target,
        want,
        what,
        round > 0,
        req.signal,
      );
      const headers = new Headers(req.headers);
      const sent = header !== undefined && sameOrigin(req.url, target.origin);
      if (sent) headers.set("authorization", header);
      // A 403 to a bearer token from the cache may mean the token expired early (registries
      // differ): answered once by a fresh authentication, like a 401.
      const renewOn403 = round === 0 && sent && cachedToken && replayable;
      const outcome = await send({ ...req, headers, renewOn403 });
      if ("value" in outcome) return outcome.value;
      if (outcome.status === 403) {
        this.http.log(`${what}: HTTP 403 to a cached token; authenticating again`);
        continue;
      }
      const challenge = pickChallenge(outcome.unauthorized);
      const known = this.#challenges.get(target.host);
      const changed = challenge !== null && (!known || known.scheme !== challenge.scheme);
      if (challenge) this.#challenges.set(target.host, challenge);
      if (challenge?.params.scope) {
        want = [...new Set([...want, ...challenge.params.scope.split(" ")])];
      }
      if (round >= 1 || !replayable || (header && !changed && challenge?.scheme === "basic")) {
        throw await this.#unauthorized(target, want, what, header !== undefined);
      }
    }
  }

  async #unauthorized(
    target: Target,
    scopes: string[],
    what: string,
    sentCredentials: boolean,
  ): Promise<RegistryError> {
    const creds = await this.credentialsFor(target.host, scopeRepository(scopes)).catch(() =>
      undefined
    );
    if (sentCredentials && creds) {
      return new RegistryError(
        `${what}: authentication failed: the registry rejected the credentials from ${creds.source}`,
        { code: "UNAUTHORIZED", status: 401, reference: what },
      );
    }
    return new RegistryError(
      `${what}: authentication required; ${loginHint(target.host)}`,
      { code: "UNAUTHORIZED", status: 401, reference: what },
    );
  }
}

/** How to give crfs credentials for `host`: the tools whose auth files it reads, or flags. */
function loginHint(host: string): string {
  return `log in with 'podman login ${host}' or 'docker login ${host}' (crfs reads their ` +
    `auth files) or give a username and password`;
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
