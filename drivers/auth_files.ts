/**
 * Registry credentials from the files the containers tools and Docker write, as
 * containers-auth.json(5) describes them, looked up per repository:
 *
 * 1. the explicit file (`--authfile FILE`, else `$REGISTRY_AUTH_FILE`), which takes the place of
 *    2. the primary file `$XDG_RUNTIME_DIR/containers/auth.json` (what `podman login` writes;
 *       without `$XDG_RUNTIME_DIR`, as for root under sudo or systemd, `/run/containers/UID/auth.json`);
 * 3. `$XDG_CONFIG_HOME/containers/auth.json` (default `~/.config/containers/auth.json`);
 * 4. Docker's `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`);
 * 5. the legacy `~/.dockercfg` (a bare `auths` map).
 *
 * The first file that has credentials for the repository wins. Within a file, `credHelpers`
 * for the registry host comes first (the helper `docker-credential-NAME get`), then `auths`
 * keys from the most specific to the least: `host/ns/user/image`, `host/ns/user`, `host/ns`,
 * `host` — a key naming a namespace applies to that namespace and below only. Keys are
 * normalized: an `http://` or `https://` prefix (and with it any path, as in Docker's
 * `https://index.docker.io/v1/`) is dropped, host names are lowercased, and Docker Hub's
 * aliases (`index.docker.io`, `registry-1.docker.io`) mean `docker.io`. Empty entries (`{}`, as
 * written next to a `credHelpers` entry) are skipped. Docker's `credsStore` is consulted after the
 * docker config's `auths`.
 *
 * registries.conf's `credential-helpers` (see registries_conf.ts) orders the sources: the
 * reserved name `containers-auth.json` stands for the files above, any other name is a
 * credential helper asked for every registry. The default is `["containers-auth.json"]`.
 *
 * No secret ever appears in an error message or in {@link FoundCredentials.source}.
 *
 * @module
 */
import { isDockerHub } from "./reference.ts";

/** Credentials found for a repository; the shape of `Credentials` in auth.ts. */
export interface FoundCredentials {
  /** User name (basic auth, token server). */
  username?: string;
  /** Password or access token. */
  password?: string;
  /** An OAuth2 refresh token (`identitytoken`, or a helper's user `<token>`). */
  identityToken?: string;
  /** A ready bearer token for the registry (`registrytoken`). */
  registryToken?: string;
  /** Where they came from, for messages: file and key, or helper name. Never the secret. */
  source: string;
  /**
   * The normalized key that matched (`quay.io/team`, `quay.io`), or the host for a helper.
   * Callers caching credentials or tokens key them by this: two repositories with the same
   * key share credentials, others must not.
   */
  key: string;
}

/** What a lookup needs to know of the image: its registry host and repository path. */
export interface RepositoryRef {
  /** Registry host with optional port; Docker Hub in any spelling. */
  host: string;
  /** Repository path, e.g. `team/app` or `library/ubuntu`. */
  path: string;
}

/** One credentials file to read. */
export interface AuthFilePath {
  /** The file. */
  path: string;
  /** Legacy `.dockercfg`: a bare map of keys, whose keys are host-only. */
  legacy: boolean;
  /** A Docker config (its `credsStore` counts). */
  docker: boolean;
}

/** An unreadable or invalid credentials file, or a failing credential helper. */
export class CredentialsFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CredentialsFileError";
  }
}

/** Options of {@link AuthFiles}. */
export interface AuthFilesOptions {
  /** `--authfile FILE`: replaces `$REGISTRY_AUTH_FILE` and the primary file. */
  authFile?: string;
  /** registries.conf's `credential-helpers`; default `["containers-auth.json"]`. */
  credentialHelpers?: readonly string[];
  /** Environment lookups (tests); default `Deno.env.get`. */
  env?: (name: string) => string | undefined;
  /** Timeout of one credential helper run; default 30 s. */
  helperTimeoutMs?: number;
  /** The user whose primary file is `/run/containers/UID/auth.json` (tests); default this one. */
  uid?: number;
}

/** The reserved `credential-helpers` name for the auth files. */
export const AUTH_FILES_HELPER = "containers-auth.json";

function defaultEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

/** The files {@link AuthFiles} reads, in order (whether or not they exist). */
export function authFilePaths(options: AuthFilesOptions = {}): AuthFilePath[] {
  const env = options.env ?? defaultEnv;
  const home = env("HOME")?.replace(/\/+$/, "");
  const out: AuthFilePath[] = [];
  const add = (path: string | undefined, legacy = false, docker = false) => {
    if (path && !out.some((p) => p.path === path)) out.push({ path, legacy, docker });
  };
  const explicit = options.authFile ?? env("REGISTRY_AUTH_FILE");
  if (explicit) add(explicit, false, /(^|\/)config\.json$/.test(explicit));
  else {
    // As containers/image: without a runtime directory, the per-uid one under /run/containers.
    const run = env("XDG_RUNTIME_DIR")?.replace(/\/+$/, "");
    add(
      run
        ? `${run}/containers/auth.json`
        : `/run/containers/${options.uid ?? Deno.uid() ?? 0}/auth.json`,
    );
  }
  const config = env("XDG_CONFIG_HOME")?.replace(/\/+$/, "") ?? (home && `${home}/.config`);
  if (config) add(`${config}/containers/auth.json`);
  const dockerDir = env("DOCKER_CONFIG")?.replace(/\/+$/, "") ?? (home && `${home}/.docker`);
  if (dockerDir) add(`${dockerDir}/config.json`, false, true);
  if (home) add(`${home}/.dockercfg`, true, true);
  return out;
}

/**
 * Normalizes a credentials key: drops an `http(s)://` prefix and then everything after the
 * host, lowercases the host, maps Docker Hub's aliases to `docker.io`. `legacy` keys (from
 * `.dockercfg`) are host-only too.
 */
export function normalizeAuthKey(key: string, legacy = false): string {
  let k = key.trim();
  const schemed = /^https?:\/\//i.test(k);
  if (schemed) k = k.replace(/^https?:\/\//i, "");
  const slash = k.indexOf("/");
  let host = slash < 0 ? k : k.slice(0, slash);
  let rest = slash < 0 ? "" : k.slice(slash);
  if (schemed || legacy) rest = "";
  host = host.toLowerCase();
  if (isDockerHub(host)) host = "docker.io";
  rest = rest.replace(/\/+$/, "");
  return host + rest;
}

/** The keys to look up for `ref`, most specific first. */
export function authKeysFor(ref: RepositoryRef): string[] {
  const host = normalizeAuthKey(ref.host);
  const parts = ref.path.split("/").filter(Boolean);
  const keys: string[] = [];
  for (let n = parts.length; n > 0; n--) keys.push(`${host}/${parts.slice(0, n).join("/")}`);
  keys.push(host);
  return keys;
}

interface AuthEntry {
  auth?: string;
  username?: string;
  password?: string;
  identitytoken?: string;
  registrytoken?: string;
}

interface ParsedFile {
  auths: Map<string, AuthEntry>;
  credHelpers: Map<string, { helper: string; serverUrl: string }>;
  credsStore?: string;
}

async function readAuthFile(file: AuthFilePath): Promise<ParsedFile | undefined> {
  let path = file.path;
  let text: string;
  try {
    if ((await Deno.stat(path)).isDirectory) path = `${path.replace(/\/+$/, "")}/config.json`;
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) {
      return undefined;
    }
    throw new CredentialsFileError(`cannot read ${path}: ${(e as Error).message}`);
  }
  if (text.trim() === "") return undefined;
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new CredentialsFileError(`${path} is not valid JSON`);
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
    throw new CredentialsFileError(`${path} is not a JSON object`);
  }
  const d = doc as Record<string, unknown>;
  const rawAuths = file.legacy ? d : d.auths ?? {};
  if (typeof rawAuths !== "object" || rawAuths === null || Array.isArray(rawAuths)) {
    throw new CredentialsFileError(`${path}: "auths" is not an object`);
  }
  const auths = new Map<string, AuthEntry>();
  for (const [key, entry] of Object.entries(rawAuths as Record<string, unknown>)) {
    if (typeof entry !== "object" || entry === null) continue;
    const k = normalizeAuthKey(key, file.legacy);
    // A normalized key written twice: the first one (as Go's map order is random, any) wins.
    if (!auths.has(k)) auths.set(k, entry as AuthEntry);
  }
  const credHelpers = new Map<string, { helper: string; serverUrl: string }>();
  if (!file.legacy && typeof d.credHelpers === "object" && d.credHelpers !== null) {
    for (const [key, helper] of Object.entries(d.credHelpers as Record<string, unknown>)) {
      if (typeof helper === "string" && helper) {
        credHelpers.set(normalizeAuthKey(key, true), { helper, serverUrl: key });
      }
    }
  }
  const credsStore = file.docker && typeof d.credsStore === "string" && d.credsStore
    ? d.credsStore
    : undefined;
  return { auths, credHelpers, credsStore };
}

function decodeEntry(
  entry: AuthEntry,
  where: string,
  key: string,
): FoundCredentials | undefined {
  const source = where;
  if (entry.registrytoken) return { registryToken: entry.registrytoken, source, key };
  if (entry.identitytoken) {
    return { identityToken: entry.identitytoken, username: entry.username, source, key };
  }
  if (entry.auth) {
    let decoded: string;
    try {
      decoded = new TextDecoder().decode(Uint8Array.from(atob(entry.auth), (c) => c.charCodeAt(0)));
    } catch {
      throw new CredentialsFileError(`${where}: "auth" is not base64`);
    }
    const colon = decoded.indexOf(":");
    if (colon < 0) throw new CredentialsFileError(`${where}: "auth" is not user:password`);
    return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1), source, key };
  }
  if (entry.username && entry.password) {
    return { username: entry.username, password: entry.password, source, key };
  }
  return undefined;
}

/**
 * Runs `docker-credential-NAME get` for `serverUrl` (written to its stdin). Undefined when the
 * helper has nothing for it ("credentials not found"); throws {@link CredentialsFileError} when
 * the helper is missing, fails, times out or prints something that is not its JSON.
 */
export async function runCredentialHelper(
  name: string,
  serverUrl: string,
  key: string,
  timeoutMs = 30_000,
): Promise<FoundCredentials | undefined> {
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
    throw new CredentialsFileError(
      e instanceof Deno.errors.NotFound
        ? `credential helper ${program} is not on PATH`
        : `cannot run credential helper ${program}: ${(e as Error).message}`,
    );
  }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, timeoutMs);
  let out: Deno.CommandOutput;
  try {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(serverUrl)).catch(() => {});
    await w.close().catch(() => {});
    out = await child.output();
  } finally {
    clearTimeout(timer);
  }
  const stdout = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) {
    if (/credentials not found/i.test(stdout + new TextDecoder().decode(out.stderr))) {
      return undefined;
    }
    throw new CredentialsFileError(
      `credential helper ${program} failed for ${serverUrl} (${
        out.signal ? `killed by ${out.signal} after ${timeoutMs} ms?` : `exit code ${out.code}`
      })`,
    );
  }
  let parsed: { Username?: unknown; Secret?: unknown };
  try {
    parsed = JSON.parse(stdout);
  } catch {
    throw new CredentialsFileError(
      `credential helper ${program} printed something that is not JSON`,
    );
  }
  if (typeof parsed.Secret !== "string" || parsed.Secret === "") return undefined;
  const source = `credential helper ${program}`;
  if (parsed.Username === "<token>") return { identityToken: parsed.Secret, source, key };
  return {
    username: typeof parsed.Username === "string" ? parsed.Username : "",
    password: parsed.Secret,
    source,
    key,
  };
}

/**
 * Credential lookup over the auth files and credential helpers (see the module documentation).
 * Files are read on every lookup, so a `podman login` made while crfs runs is seen by the next
 * authentication; callers cache by {@link FoundCredentials.key}.
 *
 * @example
 * ```ts
 * const files = new AuthFiles({ authFile: flags.authfile });
 * const creds = await files.credentialsFor({ host: "quay.io", path: "team/app" });
 * if (creds?.password !== undefined) console.log(`user ${creds.username} from ${creds.source}`);
 * ```
 */
export class AuthFiles {
  readonly #opts: AuthFilesOptions;

  constructor(options: AuthFilesOptions = {}) {
    this.#opts = options;
  }

  /** The files consulted, in order. */
  paths(): AuthFilePath[] {
    return authFilePaths(this.#opts);
  }

  /** Credentials for the repository, or undefined when no source has any. */
  async credentialsFor(ref: RepositoryRef): Promise<FoundCredentials | undefined> {
    const helpers = this.#opts.credentialHelpers?.length
      ? this.#opts.credentialHelpers
      : [AUTH_FILES_HELPER];
    for (const helper of helpers) {
      const found = helper === AUTH_FILES_HELPER
        ? await this.#fromFiles(ref)
        : await runCredentialHelper(
          helper,
          normalizeAuthKey(ref.host),
          normalizeAuthKey(ref.host),
          this.#opts.helperTimeoutMs,
        );
      if (found) return found;
    }
    return undefined;
  }

  async #fromFiles(ref: RepositoryRef): Promise<FoundCredentials | undefined> {
    const keys = authKeysFor(ref);
    const host = keys[keys.length - 1];
    // Every file is read at once (a host's first request waits for these reads), and used in
    // order: a file's error counts only when the files before it had nothing.
    const reads = this.paths().map((file) => {
      const parsed = readAuthFile(file);
      parsed.catch(() => {});
      return { file, parsed };
    });
    for (const { file, parsed: reading } of reads) {
      const parsed = await reading;
      if (!parsed) continue;
      const helper = parsed.credHelpers.get(host);
      if (helper) {
        const found = await runCredentialHelper(
          helper.helper,
          helper.serverUrl,
          host,
          this.#opts.helperTimeoutMs,
        );
        if (found) return found;
        continue;
      }
      for (const key of keys) {
        const entry = parsed.auths.get(key);
        if (!entry) continue;
        const found = decodeEntry(entry, `${file.path} (key ${key})`, key);
        if (found) return found;
      }
      if (parsed.credsStore) {
        const serverUrl = host === "docker.io" ? "https://index.docker.io/v1/" : host;
        const found = await runCredentialHelper(
          parsed.credsStore,
          serverUrl,
          host,
          this.#opts.helperTimeoutMs,
        );
        if (found) return found;
      }
    }
    return undefined;
  }
}
