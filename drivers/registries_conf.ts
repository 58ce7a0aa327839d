/**
 * The containers tools' registry configuration, as containers-registries.conf(5) and
 * containers-registries.conf.d(5) describe it, read the way podman and skopeo read it:
 *
 * - `$CONTAINERS_REGISTRIES_CONF` names the only file read, when set; otherwise
 * - the user's `$XDG_CONFIG_HOME/containers/registries.conf` (default `~/.config/…`) when it
 *   exists, *instead of* `/etc/containers/registries.conf` and `/etc/containers/registries.conf.d/`;
 *   otherwise the system file and then the system drop-ins;
 * - then the user's drop-ins `$XDG_CONFIG_HOME/containers/registries.conf.d/*.conf`.
 *
 * Drop-ins load in lexical order, only `*.conf` files; a later file's global settings replace
 * earlier ones, and its `[[registry]]` tables replace those with the same `prefix` (others are
 * added). Version 1 files (`[registries.search|insecure|block] registries = […]`) become the
 * equivalent `[[registry]]` tables.
 *
 * {@link resolveRegistry} picks the `[[registry]]` table whose `prefix` is the longest match of a
 * reference (`*.example.com` matches any subdomain) and returns the endpoints to try, in order:
 * the mirrors allowed for this reference (`pull-from-mirror`, `mirror-by-digest-only`), then the
 * primary `location` (the prefix rewritten) or the reference itself.
 *
 * @module
 */
import { DOCKER_HUB_HOST, isDockerHub } from "./reference.ts";
import { readTomlFile, type TomlTable } from "./toml.ts";

/** When a mirror may be used: for every pull, only for pulls by digest, only for pulls by tag. */
export type PullFromMirror = "all" | "digest-only" | "tag-only";

/** One `[[registry.mirror]]` table. */
export interface RegistryMirror {
  /** `host[:port][/namespace…]` replacing the table's prefix. */
  location: string;
  /** Plain http or unverified TLS allowed. */
  insecure: boolean;
  /** Which pulls use this mirror. */
  pullFromMirror: PullFromMirror;
}

/** One `[[registry]]` table, normalized. */
export interface RegistryEntry {
  /** What image names it applies to: `host[:port][/ns…][/repo[:tag|@digest]]` or `*.domain`. */
  prefix: string;
  /** Where the prefix-rooted namespace really lives; empty for a wildcard prefix (no rewrite). */
  location: string;
  /** Plain http or unverified TLS allowed. */
  insecure: boolean;
  /** Pulls of matching names are refused. */
  blocked: boolean;
  /** Mirrors, in the order to try them. */
  mirrors: RegistryMirror[];
  /** Mirrors only for pulls by digest. */
  mirrorByDigestOnly: boolean;
  /** The file this table came from, for messages. */
  file: string;
}

/** The merged configuration. */
export interface RegistriesConfig {
  /** `[[registry]]` tables, one per prefix. */
  registries: RegistryEntry[];
  /** `unqualified-search-registries`: hosts to try for short names, in order. */
  unqualifiedSearchRegistries: string[];
  /**
   * `credential-helpers`: where credentials come from, in order; `containers-auth.json` means
   * the auth files (containers-auth.json(5)). Default `["containers-auth.json"]`.
   */
  credentialHelpers: string[];
  /** `[aliases]`: short name → fully qualified name. */
  aliases: Record<string, string>;
  /** `short-name-mode`, if set. */
  shortNameMode?: "enforcing" | "permissive" | "disabled";
  /** The files read, in order. */
  files: string[];
}

/** A registries.conf that is invalid; the message names the file and what is wrong. */
export class RegistriesConfError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RegistriesConfError";
  }
}

/** Where {@link loadRegistriesConf} looks; every field defaults from the environment. */
export interface RegistriesConfPaths {
  /** Default `$CONTAINERS_REGISTRIES_CONF` or `/etc/containers/registries.conf`. */
  systemFile?: string;
  /** Default `/etc/containers/registries.conf.d` (none when `$CONTAINERS_REGISTRIES_CONF` is set). */
  systemDir?: string | null;
  /** Default `$XDG_CONFIG_HOME/containers/registries.conf` (none when the env override is set). */
  userFile?: string | null;
  /** Default `$XDG_CONFIG_HOME/containers/registries.conf.d` (idem). */
  userDir?: string | null;
}

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

/** `$XDG_CONFIG_HOME`, else `~/.config`; undefined without a home. */
export function xdgConfigHome(): string | undefined {
  const xdg = env("XDG_CONFIG_HOME");
  if (xdg) return xdg.replace(/\/+$/, "");
  const home = env("HOME");
  return home ? `${home.replace(/\/+$/, "")}/.config` : undefined;
}

/** The paths {@link loadRegistriesConf} reads by default (see the module documentation). */
export function defaultRegistriesConfPaths(): Required<RegistriesConfPaths> {
  const override = env("CONTAINERS_REGISTRIES_CONF");
  if (override) return { systemFile: override, systemDir: null, userFile: null, userDir: null };
  const user = xdgConfigHome();
  return {
    systemFile: "/etc/containers/registries.conf",
    systemDir: "/etc/containers/registries.conf.d",
    userFile: user ? `${user}/containers/registries.conf` : null,
    userDir: user ? `${user}/containers/registries.conf.d` : null,
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw new RegistriesConfError(`cannot read ${path}: ${(e as Error).message}`);
  }
}

async function dropIns(dir: string | null | undefined): Promise<string[]> {
  if (!dir) return [];
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.name.endsWith(".conf") && (e.isFile || e.isSymlink)) names.push(e.name);
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return [];
    throw new RegistriesConfError(`cannot list ${dir}: ${(e as Error).message}`);
  }
  return names.sort().map((n) => `${dir}/${n}`);
}

/** The files {@link loadRegistriesConf} would read, in order (only those that exist). */
export async function registriesConfFiles(paths: RegistriesConfPaths = {}): Promise<string[]> {
  const p = { ...defaultRegistriesConfPaths(), ...paths };
  // Every place is looked at once (a cold start waits for each), and the answers taken in order:
  // a failure counts only where the sequential lookup would have reached it.
  const early = <T>(promise: Promise<T>): Promise<T> => {
    promise.catch(() => {});
    return promise;
  };
  const userFile = early(p.userFile ? exists(p.userFile) : Promise.resolve(false));
  const systemFile = early(p.systemFile ? exists(p.systemFile) : Promise.resolve(false));
  const systemDir = early(dropIns(p.systemDir));
  const userDir = early(dropIns(p.userDir));
  const files: string[] = [];
  if (await userFile) {
    files.push(p.userFile!);
  } else {
    if (await systemFile) files.push(p.systemFile!);
    files.push(...await systemDir);
  }
  files.push(...await userDir);
  return files;
}

/**
 * Reads and merges the registry configuration (see the module documentation). No file at all
 * gives the empty configuration. Throws {@link RegistriesConfError} for invalid files.
 *
 * @example
 * ```ts
 * const conf = await loadRegistriesConf();
 * const r = resolveRegistry(conf, parseReference("example.com/foo/app:1"));
 * for (const e of r.endpoints) console.log(e.host, e.repository, e.mirror);
 * ```
 */
export async function loadRegistriesConf(
  paths: RegistriesConfPaths = {},
): Promise<RegistriesConfig> {
  const files = await registriesConfFiles(paths);
  const conf: RegistriesConfig = {
    registries: [],
    unqualifiedSearchRegistries: [],
    credentialHelpers: ["containers-auth.json"],
    aliases: {},
    files,
  };
  // Read (and parsed) at once, merged in order: the first bad file is the one reported.
  const docs = files.map((file) => {
    const doc = readTomlFile(file);
    doc.catch(() => {});
    return doc;
  });
  for (const [i, file] of files.entries()) {
    let doc: TomlTable | undefined;
    try {
      doc = await docs[i];
    } catch (e) {
      throw new RegistriesConfError((e as Error).message);
    }
    if (doc) mergeRegistriesDocument(conf, doc, file);
  }
  return conf;
}

/** Merges one parsed file into `conf` (exported for tests and for callers with their own text). */
export function mergeRegistriesDocument(
  conf: RegistriesConfig,
  doc: TomlTable,
  file: string,
): void {
  const bad = (what: string) => new RegistriesConfError(`${file}: ${what}`);
  const v1 = doc.registries;
  const v2Keys = ["registry", "unqualified-search-registries", "aliases"];
  if (v1 !== undefined) {
    if (v2Keys.some((k) => k in doc)) {
      throw bad("mixes the version 1 [registries.*] tables with version 2 settings");
    }
    if (!isTable(v1)) throw bad("[registries] must be a table");
    const list = (kind: string): string[] => {
      const t = v1[kind];
      if (t === undefined) return [];
      if (!isTable(t)) throw bad(`[registries.${kind}] must be a table`);
      return stringArray(t.registries ?? [], `registries.${kind}.registries`, bad);
    };
    const search = list("search");
    if (search.length) conf.unqualifiedSearchRegistries = search;
    for (const [kind, field] of [["insecure", "insecure"], ["block", "blocked"]] as const) {
      for (const host of list(kind)) {
        const entry = upsert(conf, host, file);
        entry[field] = true;
      }
    }
    return;
  }
  for (const key of Object.keys(doc)) {
    if (
      ![
        ...v2Keys,
        "credential-helpers",
        "short-name-mode",
      ].includes(key)
    ) {
      throw bad(`unknown setting ${JSON.stringify(key)}`);
    }
  }
  if (doc["unqualified-search-registries"] !== undefined) {
    conf.unqualifiedSearchRegistries = stringArray(
      doc["unqualified-search-registries"],
      "unqualified-search-registries",
      bad,
    );
    for (const h of conf.unqualifiedSearchRegistries) {
      if (h.includes("/")) throw bad(`unqualified-search-registries: ${h} is not host[:port]`);
    }
  }
  if (doc["credential-helpers"] !== undefined) {
    const helpers = stringArray(doc["credential-helpers"], "credential-helpers", bad);
    conf.credentialHelpers = helpers.length ? helpers : ["containers-auth.json"];
  }
  if (doc["short-name-mode"] !== undefined) {
    const mode = doc["short-name-mode"];
    if (mode !== "" && mode !== "enforcing" && mode !== "permissive" && mode !== "disabled") {
      throw bad("short-name-mode is one of enforcing, permissive, disabled");
    }
    conf.shortNameMode = mode === "" ? undefined : mode;
  }
  if (doc.aliases !== undefined) {
    if (!isTable(doc.aliases)) throw bad("[aliases] must be a table");
    for (const [name, value] of Object.entries(doc.aliases)) {
      if (typeof value !== "string") throw bad(`alias ${name} must be a string`);
      if (value === "") delete conf.aliases[name];
      else conf.aliases[name] = value;
    }
  }
  if (doc.registry !== undefined) {
    if (!Array.isArray(doc.registry)) throw bad("registry must be an array of [[registry]] tables");
    for (const [i, raw] of doc.registry.entries()) {
      if (!isTable(raw)) throw bad(`[[registry]] #${i + 1} is not a table`);
      const entry = parseEntry(raw, file, `[[registry]] #${i + 1}`);
      const at = conf.registries.findIndex((r) => r.prefix === entry.prefix);
      if (at >= 0) conf.registries[at] = entry;
      else conf.registries.push(entry);
    }
  }
}

function upsert(conf: RegistriesConfig, host: string, file: string): RegistryEntry {
  let entry = conf.registries.find((r) => r.prefix === host);
  if (!entry) {
    entry = {
      prefix: host,
      location: host,
      insecure: false,
      blocked: false,
      mirrors: [],
      mirrorByDigestOnly: false,
      file,
    };
    conf.registries.push(entry);
  }
  return entry;
}

function isTable(v: unknown): v is TomlTable {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function stringArray(v: unknown, what: string, bad: (w: string) => Error): string[] {
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) {
    throw bad(`${what} must be an array of strings`);
  }
  return v as string[];
}

function bool(t: TomlTable, key: string, bad: (w: string) => Error): boolean {
  const v = t[key];
  if (v === undefined) return false;
  if (typeof v !== "boolean") throw bad(`${key} must be true or false`);
  return v;
}

function str(t: TomlTable, key: string, bad: (w: string) => Error): string {
  const v = t[key];
  if (v === undefined) return "";
  if (typeof v !== "string") throw bad(`${key} must be a string`);
  return v.trim();
}

/** Docker Hub's host in the form registries.conf uses. */
const HUB = "docker.io";

/** `docker.io` for Docker Hub's aliases; the lowercased host otherwise. */
function logicalHost(host: string): string {
  return isDockerHub(host) ? HUB : host.toLowerCase();
}

function normalizeName(name: string): string {
  const slash = name.indexOf("/");
  const host = slash < 0 ? name : name.slice(0, slash);
  return logicalHost(host) + (slash < 0 ? "" : name.slice(slash));
}

function parseEntry(t: TomlTable, file: string, where: string): RegistryEntry {
  const bad = (what: string) => new RegistriesConfError(`${file}: ${where}: ${what}`);
  const known = ["prefix", "location", "insecure", "blocked", "mirror", "mirror-by-digest-only"];
  for (const k of Object.keys(t)) if (!known.includes(k)) throw bad(`unknown key ${k}`);
  let prefix = str(t, "prefix", bad);
  let location = str(t, "location", bad);
  if (!prefix && !location) throw bad("needs a prefix or a location");
  if (location.includes("*")) throw bad(`location ${location} may not contain a wildcard`);
  if (/[:@]/.test(location.slice(location.indexOf("/") + 1)) && location.includes("/")) {
    throw bad(`location ${location} may not carry a tag or digest`);
  }
  if (!prefix) prefix = location;
  if (prefix.startsWith("*.")) {
    if (/[/:*]/.test(prefix.slice(2))) {
      throw bad(`wildcard prefix ${prefix} must be *.domain only (no port, path or inner *)`);
    }
    prefix = prefix.toLowerCase();
  } else if (prefix.includes("*")) {
    throw bad(`prefix ${prefix}: a wildcard is allowed only as a leading *.`);
  } else {
    prefix = normalizeName(prefix);
  }
  if (!location && !prefix.startsWith("*.")) location = prefix;
  if (location) location = normalizeName(location);
  const byDigest = bool(t, "mirror-by-digest-only", bad);
  const mirrors: RegistryMirror[] = [];
  if (t.mirror !== undefined) {
    if (!Array.isArray(t.mirror)) {
      throw bad("mirror must be an array of [[registry.mirror]] tables");
    }
    for (const [j, m] of t.mirror.entries()) {
      const mbad = (what: string) => bad(`[[registry.mirror]] #${j + 1}: ${what}`);
      if (!isTable(m)) throw mbad("not a table");
      for (const k of Object.keys(m)) {
        if (!["location", "insecure", "pull-from-mirror"].includes(k)) {
          throw mbad(`unknown key ${k}`);
        }
      }
      const loc = str(m, "location", mbad);
      if (!loc) throw mbad("needs a location");
      if (loc.includes("*")) throw mbad(`location ${loc} may not contain a wildcard`);
      const pull = str(m, "pull-from-mirror", mbad) || "all";
      if (pull !== "all" && pull !== "digest-only" && pull !== "tag-only") {
        throw mbad("pull-from-mirror is one of all, digest-only, tag-only");
      }
      if (byDigest && m["pull-from-mirror"] !== undefined) {
        throw mbad("pull-from-mirror cannot be combined with mirror-by-digest-only");
      }
      mirrors.push({
        location: normalizeName(loc),
        insecure: bool(m, "insecure", mbad),
        pullFromMirror: byDigest ? "digest-only" : pull,
      });
    }
  }
  return {
    prefix,
    location,
    insecure: bool(t, "insecure", bad),
    blocked: bool(t, "blocked", bad),
    mirrors,
    mirrorByDigestOnly: byDigest,
    file,
  };
}

/** What {@link resolveRegistry} needs of a reference (a `Reference` from reference.ts fits). */
export interface ReferenceLike {
  /** Registry host (Docker Hub in any of its spellings). */
  host: string;
  /** Repository path. */
  repository: string;
  /** Tag, if any. */
  tag?: string;
  /** Digest, if any. */
  digest?: string;
}

/** One place to pull a reference from. */
export interface RegistryEndpoint {
  /** `host[:port]/repository` to use (after rewriting). */
  location: string;
  /** The endpoint's host, in crfs's form (Docker Hub is `registry-1.docker.io`). */
  host: string;
  /** The repository on that host. */
  repository: string;
  /** Plain http or unverified TLS allowed. */
  insecure: boolean;
  /** A mirror (true) or the primary location (false). */
  mirror: boolean;
}

/** The result of {@link resolveRegistry}. */
export interface ResolvedRegistry {
  /** Pulls of this reference are forbidden by the configuration. */
  blocked: boolean;
  /** Where to try, in order: allowed mirrors first, the primary location last. */
  endpoints: RegistryEndpoint[];
  /** The table that matched, if any. */
  entry?: RegistryEntry;
}

function splitLocation(location: string): { host: string; repository: string } {
  const slash = location.indexOf("/");
  const host = slash < 0 ? location : location.slice(0, slash);
  const repository = slash < 0 ? "" : location.slice(slash + 1);
  return { host: host === HUB ? DOCKER_HUB_HOST : host, repository };
}

/** Whether the wildcard `*.domain` matches `host[:port]`. */
function wildcardMatches(prefix: string, host: string): boolean {
  const name = host.replace(/:\d+$/, "");
  return name.endsWith(prefix.slice(1)) && name.length > prefix.length - 1;
}

/** The table whose prefix is the longest match of `name` (`host/repo[:tag][@digest]`). */
export function findRegistryEntry(
  conf: RegistriesConfig,
  name: string,
): RegistryEntry | undefined {
  const host = name.split("/")[0];
  let best: RegistryEntry | undefined;
  for (const r of conf.registries) {
    let ok: boolean;
    if (r.prefix.startsWith("*.")) ok = wildcardMatches(r.prefix, host);
    else {
      ok = name.startsWith(r.prefix) &&
        (name.length === r.prefix.length || "/:@".includes(name[r.prefix.length]));
      // A bare `host` prefix must not match `host:port`.
      if (ok && !r.prefix.includes("/") && name[r.prefix.length] === ":") {
        ok = host === r.prefix;
      }
    }
    if (ok && (!best || r.prefix.length > best.prefix.length)) best = r;
  }
  return best;
}

/**
 * Where to pull `ref` from under `conf` (see the module documentation). The rewriting keeps
 * everything after the matched prefix, so a prefix of `example.com/foo` with location
 * `mirror.lan/bar` maps `example.com/foo/app` to `mirror.lan/bar/app`.
 */
export function resolveRegistry(conf: RegistriesConfig, ref: ReferenceLike): ResolvedRegistry {
  const repoName = `${logicalHost(ref.host)}/${ref.repository}`;
  const full = repoName + (ref.tag ? `:${ref.tag}` : "") + (ref.digest ? `@${ref.digest}` : "");
  const entry = findRegistryEntry(conf, full);
  const asIs = (insecure: boolean, mirror: boolean): RegistryEndpoint => ({
    location: repoName,
    ...splitLocation(repoName),
    insecure,
    mirror,
  });
  if (!entry) return { blocked: false, endpoints: [asIs(false, false)] };
  const wildcard = entry.prefix.startsWith("*.");
  const rewrite = (location: string): string => {
    if (wildcard) {
      // The mirror stands in for the matched host.
      const slash = repoName.indexOf("/");
      return location + repoName.slice(slash);
    }
    // A prefix naming a tag or digest rewrites only the repository part.
    const matched = Math.min(entry.prefix.length, repoName.length);
    return location + repoName.slice(matched);
  };
  const endpoints: RegistryEndpoint[] = [];
  for (const m of entry.mirrors) {
    if (m.pullFromMirror === "digest-only" && !ref.digest) continue;
    if (m.pullFromMirror === "tag-only" && ref.digest) continue;
    const location = rewrite(m.location);
    endpoints.push({ location, ...splitLocation(location), insecure: m.insecure, mirror: true });
  }
  if (wildcard || !entry.location) endpoints.push(asIs(entry.insecure, false));
  else {
    const location = rewrite(entry.location);
    endpoints.push({
      location,
      ...splitLocation(location),
      insecure: entry.insecure,
      mirror: false,
    });
  }
  return { blocked: entry.blocked, endpoints, entry };
}

/** The hosts to try for a short name, in order (`unqualified-search-registries`). */
export function searchRegistries(conf: RegistriesConfig): string[] {
  return [...conf.unqualifiedSearchRegistries];
}

/**
 * Whether `text` (as the user typed it) is a short name: its first component names no registry
 * (no `.` or `:`, not `localhost`) — what `unqualified-search-registries` applies to.
 */
export function isShortName(text: string): boolean {
  const slash = text.indexOf("/");
  if (slash < 0) return true;
  const first = text.slice(0, slash);
  return !(first.includes(".") || first.includes(":") || first === "localhost" ||
    first.startsWith("["));
}

/**
 * The fully qualified names to try for a short name, in order: its `[aliases]` entry if there
 * is one (tag and digest carried over), else one per search registry (`docker.io` names get
 * `library/` for one-component names, as podman does). Empty when no registry is configured.
 */
export function shortNameCandidates(conf: RegistriesConfig, shortName: string): string[] {
  const m = /^([^@:]+(?:\/[^@:]+)*)((?::[^@/]+)?(?:@.+)?)$/.exec(shortName);
  const name = m ? m[1] : shortName;
  const suffix = m ? m[2] : "";
  const alias = conf.aliases[name];
  if (alias) return [alias + suffix];
  return conf.unqualifiedSearchRegistries.map((host) => {
    const repo = isDockerHub(host) && !name.includes("/") ? `library/${name}` : name;
    return `${host}/${repo}${suffix}`;
  });
}

/** Hosts the configuration marks insecure (their primary location or a mirror's). */
export function insecureHosts(conf: RegistriesConfig): string[] {
  const out = new Set<string>();
  for (const r of conf.registries) {
    if (r.insecure && r.location) out.add(splitLocation(r.location).host);
    for (const m of r.mirrors) if (m.insecure) out.add(splitLocation(m.location).host);
  }
  return [...out];
}
