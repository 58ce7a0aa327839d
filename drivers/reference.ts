/**
 * Image references: parsing, validation and formatting of `host[:port]/a/b/c[:tag][@digest]`.
 *
 * The grammar follows the distribution reference rules: the first path component is a registry
 * host when it contains a `.` or a `:`, is `localhost`, or is bracketed IPv6; otherwise the
 * reference is on Docker Hub (`registry-1.docker.io`, with `library/` added to one-component
 * names). `docker.io` and `index.docker.io` are normalized to `registry-1.docker.io`. The bare
 * first component `local` names crfs's own pseudo-registry of local files (see `local.ts`).
 *
 * Invalid input is a user error: {@link InvalidReferenceError} says what is wrong and where.
 *
 * @module
 */

/** The host every Docker Hub reference is normalized to. */
export const DOCKER_HUB_HOST = "registry-1.docker.io";
/** Host names that mean Docker Hub. */
export const DOCKER_HUB_ALIASES: readonly string[] = [
  "docker.io",
  "index.docker.io",
  "registry-1.docker.io",
  "registry.hub.docker.com",
];
/** The key Docker Hub credentials are stored under in a docker config file. */
export const DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/";
/** The pseudo-host of crfs's local image directory. */
export const LOCAL_HOST = "local";

/** A repository on a registry: `host` (with port, if any) and a `/`-separated `repository`. */
export interface RepositoryName {
  /** Registry host, lowercase, possibly with `:port`; IPv6 literals keep their brackets. */
  readonly host: string;
  /** Repository path, e.g. `library/ubuntu` or `a/b/c`. */
  readonly repository: string;
}

/** A parsed image reference: a repository plus a tag and/or a digest. */
export interface Reference extends RepositoryName {
  /** The tag, if one was given (or defaulted; see {@link ParseOptions.defaultTag}). */
  readonly tag?: string;
  /** The digest (`sha256:<64 hex>` or `sha512:<128 hex>`), if one was given. */
  readonly digest?: string;
}

/** Thrown for references that cannot be parsed; a user error. */
export class InvalidReferenceError extends Error {
  /** The text that failed to parse. */
  readonly input: string;
  /** Suggested process exit code: this is a user error. */
  readonly exitCode = 2;
  /** `message` replaces the default `invalid image reference "INPUT": REASON`. */
  constructor(input: string, reason: string, message?: string) {
    super(message ?? `invalid image reference ${JSON.stringify(input)}: ${reason}`);
    this.name = "InvalidReferenceError";
    this.input = input;
  }
}

/** Options for {@link parseReference}. */
export interface ParseOptions {
  /** Tag to fill in when neither a tag nor a digest is given; `null` leaves it unset. Default `latest`. */
  defaultTag?: string | null;
}

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
/**
 * The one tag pattern: letters, digits, `_`, `.`, `-`; at most 128; not starting with `.` or `-`.
 */
export const TAG_PATTERN: RegExp = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

/** Whether `text` is a valid tag (see {@link TAG_PATTERN}). */
export function isTag(text: string): boolean {
  return TAG_PATTERN.test(text);
}

/** An OCI image layout directory and, optionally, one of its tags: what `oci:DIR[:TAG]` names. */
export interface OciTarget {
  /** The layout directory. */
  dir: string;
  /** The tag (`org.opencontainers.image.ref.name`), when given. */
  tag?: string;
}

/**
 * The one parser of `oci:DIR[:TAG]`: undefined when `text` does not start with `oci:`. The tag
 * is after the last `:` that follows the last `/` (so `oci:/a:b/c` is the directory `/a:b/c`).
 * Throws {@link InvalidReferenceError} (exit code 2) for `oci:` without a directory and for a
 * bad tag.
 *
 * @example
 * ```ts
 * parseOciTarget("oci:/tmp/out:v1"); // { dir: "/tmp/out", tag: "v1" }
 * ```
 */
export function parseOciTarget(text: string): OciTarget | undefined {
  if (!text.startsWith("oci:")) return undefined;
  const rest = text.slice(4);
  if (rest === "") {
    throw new InvalidReferenceError(text, "no directory", `${text}: oci: needs a directory`);
  }
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/") && colon > 0) {
    const tag = rest.slice(colon + 1);
    if (!isTag(tag)) {
      throw new InvalidReferenceError(text, "bad tag", `${text}: bad tag ${JSON.stringify(tag)}`);
    }
    return { dir: rest.slice(0, colon), tag };
  }
  return { dir: rest };
}
const DOMAIN_COMPONENT = /^(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])$/;
const DIGEST = /^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([0-9a-fA-F]+)$/;
const MAX_NAME = 255;

/**
 * Parses an image reference such as `ubuntu`, `quay.io/a/b:1.0`, `127.0.0.1:5000/x@sha256:…`
 * or `local/foo`. Throws {@link InvalidReferenceError} with a specific reason on bad input.
 */
export function parseReference(text: string, options: ParseOptions = {}): Reference {
  const input = text;
  if (typeof text !== "string" || text.length === 0) {
    throw new InvalidReferenceError(String(text), "empty reference");
  }
  if (/\s/.test(text)) throw new InvalidReferenceError(input, "contains whitespace");
  if (text.includes("://")) {
    throw new InvalidReferenceError(input, "a reference has no scheme; drop the `…://` prefix");
  }
  let rest = text;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    validateDigest(digest, input);
  }
  // The tag is after the last ':' that follows the last '/'.
  let tag: string | undefined;
  const slash = rest.lastIndexOf("/");
  const colon = rest.lastIndexOf(":");
  if (colon > slash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!isTag(tag)) {
      throw new InvalidReferenceError(
        input,
        tag.length === 0 ? "empty tag after ':'" : `bad tag ${JSON.stringify(tag)} ` +
          "(letters, digits, '_', '.', '-'; at most 128; not starting with '.' or '-')",
      );
    }
  }
  if (rest.length === 0) throw new InvalidReferenceError(input, "missing repository name");
  const parts = rest.split("/");
  let host: string;
  if (parts.length > 1 && looksLikeHost(parts[0])) {
    host = normalizeHost(parts.shift()!, input);
  } else {
    host = DOCKER_HUB_HOST;
  }
  if (DOCKER_HUB_ALIASES.includes(host)) {
    host = DOCKER_HUB_HOST;
    if (parts.length === 1) parts.unshift("library");
  }
  const repository = validateRepository(parts, input);
  if (tag === undefined && digest === undefined) {
    const defaultTag = options.defaultTag === undefined ? "latest" : options.defaultTag;
    if (defaultTag !== null) tag = defaultTag;
  }
  return { host, repository, ...(tag !== undefined ? { tag } : {}), ...(digest ? { digest } : {}) };
}

/** Whether `text` parses as an image reference. */
export function isReference(text: string): boolean {
  try {
    parseReference(text);
    return true;
  } catch {
    return false;
  }
}

/**
 * Parses `host/repo/path` (no tag or digest) into a {@link RepositoryName}, with the same host
 * rules and Docker Hub normalization as {@link parseReference}.
 */
export function parseRepositoryName(text: string): RepositoryName {
  const ref = parseReference(text, { defaultTag: null });
  if (ref.tag !== undefined || ref.digest !== undefined) {
    throw new InvalidReferenceError(text, "expected a repository name without a tag or digest");
  }
  return { host: ref.host, repository: ref.repository };
}

/**
 * Builds a validated {@link RepositoryName} from a host and a repository path (e.g. from a
 * listing or a path in the mounted tree).
 */
export function repositoryName(host: string, repository: string): RepositoryName {
  const input = `${host}/${repository}`;
  let h = normalizeHost(host, input);
  const parts = repository.split("/");
  if (DOCKER_HUB_ALIASES.includes(h)) {
    h = DOCKER_HUB_HOST;
    if (parts.length === 1) parts.unshift("library");
  }
  return { host: h, repository: validateRepository(parts, input) };
}

/** Options for {@link formatReference}. */
export interface FormatOptions {
  /** Use Docker's familiar short form on Docker Hub (`ubuntu:22.04`, `user/app`). */
  familiar?: boolean;
}

/** Formats a reference as `host/repository[:tag][@digest]`; inverse of {@link parseReference}. */
export function formatReference(
  ref: Reference | RepositoryName,
  options: FormatOptions = {},
): string {
  let name = `${ref.host}/${ref.repository}`;
  if (options.familiar && ref.host === DOCKER_HUB_HOST) {
    name = ref.repository.startsWith("library/") && ref.repository.split("/").length === 2
      ? ref.repository.slice("library/".length)
      : ref.repository;
  }
  const r = ref as Reference;
  return name + (r.tag !== undefined ? `:${r.tag}` : "") + (r.digest ? `@${r.digest}` : "");
}

/** The tag or digest a reference points at: the digest if present, else the tag, else `latest`. */
export function referenceTarget(ref: Reference): string {
  return ref.digest ?? ref.tag ?? "latest";
}

/** Whether `host` is Docker Hub (after normalization). */
export function isDockerHub(host: string): boolean {
  return DOCKER_HUB_ALIASES.includes(host.toLowerCase());
}

/** Validates a digest string (`algorithm:hex`); throws {@link InvalidReferenceError}. */
export function validateDigest(digest: string, input = digest): string {
  const m = DIGEST.exec(digest);
  if (!m) {
    throw new InvalidReferenceError(
      input,
      `bad digest ${JSON.stringify(digest)} (want sha256:<64 hex>)`,
    );
  }
  const [, algorithm, hex] = m;
  const lengths: Record<string, number> = { sha256: 64, sha384: 96, sha512: 128 };
  if (!(algorithm in lengths)) {
    throw new InvalidReferenceError(
      input,
      `unsupported digest algorithm ${JSON.stringify(algorithm)}`,
    );
  }
  if (hex.length !== lengths[algorithm]) {
    throw new InvalidReferenceError(
      input,
      `${algorithm} digest must have ${lengths[algorithm]} hex digits, not ${hex.length}`,
    );
  }
  if (hex !== hex.toLowerCase()) {
    throw new InvalidReferenceError(input, "digest hex must be lowercase");
  }
  return digest;
}

/** Whether `text` is a valid digest string. */
export function isDigest(text: string): boolean {
  try {
    validateDigest(text);
    return true;
  } catch {
    return false;
  }
}

function looksLikeHost(first: string): boolean {
  return first.includes(".") || first.includes(":") || first === "localhost" ||
    first === LOCAL_HOST || first.startsWith("[") || first !== first.toLowerCase();
}

function normalizeHost(host: string, input: string): string {
  let name = host;
  let port: string | undefined;
  if (host.startsWith("[")) {
    const end = host.indexOf("]");
    if (end < 0) throw new InvalidReferenceError(input, "unterminated IPv6 address in host");
    name = host.slice(0, end + 1);
    const after = host.slice(end + 1);
    if (after !== "") {
      if (!after.startsWith(":")) {
        throw new InvalidReferenceError(input, `bad host ${JSON.stringify(host)}`);
      }
      port = after.slice(1);
    }
    if (!/^\[[0-9A-Fa-f:.]+\]$/.test(name)) {
      throw new InvalidReferenceError(input, `bad IPv6 address ${JSON.stringify(name)}`);
    }
  } else {
    const c = host.indexOf(":");
    if (c >= 0) {
      name = host.slice(0, c);
      port = host.slice(c + 1);
    }
    if (name.length === 0) throw new InvalidReferenceError(input, "empty host name");
    for (const comp of name.split(".")) {
      if (!DOMAIN_COMPONENT.test(comp)) {
        throw new InvalidReferenceError(input, `bad host name ${JSON.stringify(name)}`);
      }
    }
  }
  if (port !== undefined) {
    const n = Number(port);
    if (!/^\d{1,5}$/.test(port) || n < 1 || n > 65535) {
      throw new InvalidReferenceError(input, `bad port ${JSON.stringify(port)} (want 1-65535)`);
    }
    return `${name.toLowerCase()}:${n}`;
  }
  return name.toLowerCase();
}

function validateRepository(parts: string[], input: string): string {
  for (const p of parts) {
    if (p.length === 0) {
      throw new InvalidReferenceError(
        input,
        "empty path component (check for '//' or a trailing '/')",
      );
    }
    if (!PATH_COMPONENT.test(p)) {
      const reason = p !== p.toLowerCase()
        ? `repository names must be lowercase (${JSON.stringify(p)})`
        : `bad path component ${JSON.stringify(p)} (lowercase letters and digits, ` +
          "separated by '.', '_', '__' or '-')";
      throw new InvalidReferenceError(input, reason);
    }
  }
  const repository = parts.join("/");
  if (repository.length > MAX_NAME) {
    throw new InvalidReferenceError(input, `repository name longer than ${MAX_NAME} characters`);
  }
  return repository;
}
