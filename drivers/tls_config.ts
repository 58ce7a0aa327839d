/**
 * Per-registry TLS as containers-certs.d(5) describes it, for Deno's `fetch`:
 *
 * - the first existing directory named after the registry's `host[:port]` in
 *   `$XDG_CONFIG_HOME/containers/certs.d` (non-root only), `/etc/containers/certs.d`, then
 *   `/etc/docker/certs.d`; in it, `*.crt` files are CA certificates (trusted in addition to the
 *   system's) and `*.cert` + `*.key` files with the same base name a client certificate pair;
 * - the system CA store (`/etc/ssl/certs/ca-certificates.crt` on Debian), trusted beside Deno's
 *   built-in roots, so CAs installed with `update-ca-certificates` count;
 * - hosts with TLS verification off (`--tls-verify=false`, or `insecure = true` in
 *   registries.conf): https without any certificate check, which is not the same as plain http.
 *
 * Deno can trust extra CAs and present a client certificate per client
 * (`Deno.createHttpClient({ caCerts, cert, key })`), but it has no per-client switch to skip
 * verification: `--unsafely-ignore-certificate-errors=HOST,…` exists only as a process-wide
 * runtime flag (for `deno compile`d binaries, fixed at compile time). Hosts without verification
 * are therefore spoken to through `node:https` with `rejectUnauthorized: false`, wrapped to look
 * like `fetch` (streamed bodies, abort signals, no redirect following). {@link TlsClients.fetch}
 * picks the right path per URL, so it can be handed to the HTTP client as its `fetch`.
 *
 * {@link tlsErrorMessage} turns a TLS failure into one line that names the host and says what to
 * configure.
 *
 * @module
 */
import type { Agent } from "node:https";

/**
 * `node:https` and `node:stream`, loaded on the first request to a host without verification:
 * loading them costs several milliseconds of a process's start, which every other mount pays
 * for nothing.
 */
type NodeHttps = typeof import("node:https");
type NodeReadable = typeof import("node:stream").Readable;
let nodeHttps: Promise<[NodeHttps, NodeReadable]> | undefined;
function loadNodeHttps(): Promise<[NodeHttps, NodeReadable]> {
  return nodeHttps ??= Promise.all([import("node:https"), import("node:stream")])
    .then(([https, stream]) => [https.default ?? https, stream.Readable]);
}

/** The TLS settings for one registry host. */
export interface HostTlsConfig {
  /** The `host[:port]` they are for. */
  host: string;
  /** Certificates are checked (false: `--tls-verify=false`). */
  verify: boolean;
  /** Extra trusted CA certificates (PEM): the certs.d `*.crt` files and the system store. */
  caCerts: string[];
  /** Client certificate chain (PEM), from the first `*.cert` + `*.key` pair. */
  cert?: string;
  /** Client private key (PEM). */
  key?: string;
  /** The certs.d directory used, if any. */
  dir?: string;
  /** The files read from it (CA, client certificate and key files), for messages. */
  files: string[];
}

/** A certs.d directory that is wrong (a `*.cert` without its `*.key`, unreadable files). */
export class TlsConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TlsConfigError";
  }
}

/** Options of {@link hostTlsConfig} and {@link TlsClients}. */
export interface TlsOptions {
  /** Directories holding `HOST[:PORT]/` subdirectories, in order; default see the module doc. */
  certsDirs?: readonly string[];
  /** PEM bundle of the system CA store; `null` for none. Default the first that exists of
   * `/etc/ssl/certs/ca-certificates.crt`, `/etc/pki/tls/certs/ca-bundle.crt`. */
  systemCaFile?: string | null;
  /** Hosts (`name` or `name:port`) whose certificates are not checked. */
  noVerifyHosts?: readonly string[];
  /** `false` turns certificate checks off for every host (`--tls-verify=false`). */
  tlsVerify?: boolean;
}

const SYSTEM_CA_FILES = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"];

/** The default certs.d directories, in lookup order. */
export function defaultCertsDirs(): string[] {
  const dirs: string[] = [];
  let uid = 0;
  try {
    uid = Deno.uid() ?? 0;
  } catch { /* no permission: treat as root */ }
  if (uid !== 0) {
    const xdg = Deno.env.get("XDG_CONFIG_HOME") ||
      (Deno.env.get("HOME") ? `${Deno.env.get("HOME")}/.config` : undefined);
    if (xdg) dirs.push(`${xdg}/containers/certs.d`);
  }
  dirs.push("/etc/containers/certs.d", "/etc/docker/certs.d");
  return dirs;
}

async function readText(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    throw new TlsConfigError(`cannot read ${path}: ${(e as Error).message}`);
  }
}

let systemBundle: Promise<string | undefined> | undefined;

async function systemCa(file: string | null | undefined): Promise<string | undefined> {
  if (file === null) return undefined;
  if (file !== undefined) return await readText(file);
  systemBundle ??= (async () => {
    for (const f of SYSTEM_CA_FILES) {
      try {
        return await Deno.readTextFile(f);
      } catch { /* try the next */ }
    }
    return undefined;
  })();
  return await systemBundle;
}

function hostMatches(list: readonly string[] | undefined, host: string): boolean {
  const h = host.toLowerCase();
  const name = h.replace(/:\d+$/, "");
  return (list ?? []).some((x) => x.toLowerCase() === h || x.toLowerCase() === name);
}

/**
 * The TLS settings for `host` (`name[:port]`) under `options`. Throws {@link TlsConfigError}
 * for a broken certs.d directory.
 *
 * @example
 * ```ts
 * const cfg = await hostTlsConfig("registry.lan:5000");
 * const client = Deno.createHttpClient({ caCerts: cfg.caCerts, cert: cfg.cert, key: cfg.key });
 * ```
 */
export async function hostTlsConfig(
  host: string,
  options: TlsOptions = {},
): Promise<HostTlsConfig> {
  const verify = options.tlsVerify !== false && !hostMatches(options.noVerifyHosts, host);
  const out: HostTlsConfig = { host, verify, caCerts: [], files: [] };
  for (const base of options.certsDirs ?? defaultCertsDirs()) {
    const dir = `${base.replace(/\/+$/, "")}/${host}`;
    const names: string[] = [];
    try {
      for await (const e of Deno.readDir(dir)) if (!e.isDirectory) names.push(e.name);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) continue;
      throw new TlsConfigError(`cannot list ${dir}: ${(e as Error).message}`);
    }
    names.sort();
    out.dir = dir;
    for (const n of names.filter((n) => n.endsWith(".crt"))) {
      out.caCerts.push(await readText(`${dir}/${n}`));
      out.files.push(`${dir}/${n}`);
    }
    for (const n of names.filter((n) => n.endsWith(".key"))) {
      if (!names.includes(n.replace(/\.key$/, ".cert"))) {
        throw new TlsConfigError(
          `${dir}/${n}: a client key without its certificate (${n.replace(/\.key$/, ".cert")})`,
        );
      }
    }
    const certs = names.filter((n) => n.endsWith(".cert"));
    for (const n of certs) {
      const keyName = n.replace(/\.cert$/, ".key");
      if (!names.includes(keyName)) {
        throw new TlsConfigError(`${dir}/${n}: a client certificate without its key (${keyName})`);
      }
    }
    if (certs.length > 0) {
      // Deno presents one client certificate per connection: the first pair by name.
      out.cert = await readText(`${dir}/${certs[0]}`);
      out.key = await readText(`${dir}/${certs[0].replace(/\.cert$/, ".key")}`);
      out.files.push(`${dir}/${certs[0]}`, `${dir}/${certs[0].replace(/\.cert$/, ".key")}`);
    }
    break; // the first existing directory is the one used
  }
  const sys = await systemCa(options.systemCaFile);
  if (sys) out.caCerts.push(sys);
  return out;
}

/** Whether `e` (from `fetch` or `node:https`) is a TLS failure. */
export function isTlsError(e: unknown): boolean {
  return /certificate|tls|ssl|handshake|InvalidContentType|corrupt message|UnknownIssuer|self[- ]signed|CERT_|wrong version number/i
    .test(errorText(e));
}

function errorText(e: unknown): string {
  let text = "";
  for (let x: unknown = e, depth = 0; x && depth < 5; depth++) {
    if (x instanceof Error) {
      text += ` ${x.message}`;
      x = (x as Error & { cause?: unknown }).cause;
    } else {
      text += ` ${String(x)}`;
      break;
    }
  }
  return text.trim();
}

/**
 * One line for a TLS failure talking to `host`: what went wrong in words, and what to configure.
 * `config` (when known) names the certs.d directory in use.
 */
export function tlsErrorMessage(host: string, error: unknown, config?: HostTlsConfig): string {
  const text = errorText(error);
  const dir = config?.dir ?? `/etc/containers/certs.d/${host}`;
  const noVerify =
    `or skip certificate checks for it with --tls-verify=false (or insecure = true in registries.conf)`;
  if (
    /UnknownIssuer|unknown ca|self[- ]signed|unable to get (local )?issuer|UNABLE_TO_VERIFY/i.test(
      text,
    )
  ) {
    return `TLS: the certificate of ${host} is signed by an unknown authority: put that CA ` +
      `certificate in ${dir}/ca.crt (or the system CA store), ${noVerify}`;
  }
  if (
    /NotValidForName|not valid for name|ERR_TLS_CERT_ALTNAME|hostname\/IP does not match/i.test(
      text,
    )
  ) {
    return `TLS: the certificate of ${host} is not valid for the name ${
      host.replace(/:\d+$/, "")
    }: use the name it was issued for, ${noVerify}`;
  }
  if (/Expired|CERT_HAS_EXPIRED|NotValidYet/i.test(text)) {
    return `TLS: the certificate of ${host} has expired or is not yet valid, ${noVerify}`;
  }
  if (
    /CertificateRequired|certificate required|HandshakeFailure|alert.*(bad|unknown) certificate|BadCertificate/i
      .test(text)
  ) {
    return `TLS: ${host} refused the connection without an accepted client certificate: put ` +
      `client.cert and client.key in ${dir}/`;
  }
  if (
    /InvalidContentType|corrupt message|wrong version number|packet length too long/i.test(text)
  ) {
    return `TLS: ${host} does not speak TLS on that port: if it serves plain http, list it as ` +
      `an insecure registry (--insecure-registry ${host}, or insecure = true in registries.conf)`;
  }
  return `TLS: handshake with ${host} failed (${text.slice(0, 160)}): check ${dir}/, ${noVerify}`;
}

/**
 * Per-host TLS clients and a `fetch` that uses them (see the module documentation). Close it when
 * done to release the clients.
 *
 * @example
 * ```ts
 * const tls = new TlsClients({ noVerifyHosts: ["registry.lan:5000"] });
 * const http = new HttpClient({ fetch: tls.fetch });
 * // … later
 * tls.close();
 * ```
 */
export class TlsClients {
  readonly #opts: TlsOptions;
  readonly #configs = new Map<string, Promise<HostTlsConfig>>();
  readonly #clients = new Map<string, Deno.HttpClient>();
  readonly #agents = new Map<string, Agent>();

  constructor(options: TlsOptions = {}) {
    this.#opts = options;
  }

  /** The settings for `host`, read once. */
  config(host: string): Promise<HostTlsConfig> {
    const key = host.toLowerCase();
    let p = this.#configs.get(key);
    if (!p) {
      p = hostTlsConfig(key, this.#opts);
      this.#configs.set(key, p);
      p.catch(() => this.#configs.delete(key));
    }
    return p;
  }

  /** A `fetch` that applies the host's TLS settings to https URLs. */
  readonly fetch: typeof fetch = async (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    if (url.protocol !== "https:" || (init as { client?: unknown } | undefined)?.client) {
      return await fetch(input, init);
    }
    const cfg = await this.config(url.host);
    try {
      if (!cfg.verify) return await this.#insecureFetch(url, input, init, cfg);
      return await fetch(input, { ...init, client: this.#client(cfg) });
    } catch (e) {
      if (e instanceof DOMException) throw e;
      if (isTlsError(e)) throw new TypeError(tlsErrorMessage(url.host, e, cfg), { cause: e });
      // With TLS 1.3 a server that wants a client certificate rejects it after the handshake,
      // which fetch reports as a broken connection: ask the server once, outside fetch.
      if (
        !cfg.cert &&
        /broken pipe|connection reset|connection closed|reset by peer/i.test(errorText(e))
      ) {
        const alert = await probeTlsAlert(url, cfg);
        if (alert) throw new TypeError(tlsErrorMessage(url.host, alert, cfg), { cause: e });
      }
      throw e;
    }
  };

  #client(cfg: HostTlsConfig): Deno.HttpClient {
    let c = this.#clients.get(cfg.host);
    if (!c) {
      c = cfg.cert && cfg.key
        ? Deno.createHttpClient({ caCerts: cfg.caCerts, cert: cfg.cert, key: cfg.key })
        : Deno.createHttpClient({ caCerts: cfg.caCerts });
      this.#clients.set(cfg.host, c);
    }
    return c;
  }

  #agent(https: NodeHttps, cfg: HostTlsConfig): Agent {
    let a = this.#agents.get(cfg.host);
    if (!a) {
      a = new https.Agent({
        keepAlive: true,
        rejectUnauthorized: false,
        ...(cfg.cert && cfg.key ? { cert: cfg.cert, key: cfg.key } : {}),
      });
      this.#agents.set(cfg.host, a);
    }
    return a;
  }

  async #insecureFetch(
    url: URL,
    input: RequestInfo | URL,
    init: RequestInit | undefined,
    cfg: HostTlsConfig,
  ): Promise<Response> {
    const req = input instanceof Request ? input : undefined;
    const method = (init?.method ?? req?.method ?? "GET").toUpperCase();
    const headers: Record<string, string> = {};
    new Headers(init?.headers ?? req?.headers).forEach((v, k) => headers[k] = v);
    const signal = init?.signal ?? req?.signal ?? undefined;
    let body: Uint8Array | ReadableStream<Uint8Array> | undefined;
    const raw = init?.body ?? req?.body ?? undefined;
    if (raw instanceof ReadableStream) body = raw;
    else if (raw !== undefined && raw !== null) {
      body = new Uint8Array(await new Response(raw as BodyInit).arrayBuffer());
      if (typeof raw === "string" && !headers["content-type"]) {
        headers["content-type"] = "text/plain;charset=UTF-8";
      }
      if (raw instanceof URLSearchParams && !headers["content-type"]) {
        headers["content-type"] = "application/x-www-form-urlencoded;charset=UTF-8";
      }
    }
    const [https, Readable] = await loadNodeHttps();
    signal?.throwIfAborted();
    return await new Promise<Response>((resolve, reject) => {
      const r = https.request(url, { method, headers, agent: this.#agent(https, cfg) }, (res) => {
        const h = new Headers();
        for (const [k, v] of Object.entries(res.headers)) {
          if (v === undefined) continue;
          for (const x of Array.isArray(v) ? v : [v]) h.append(k, x);
        }
        const status = res.statusCode ?? 502;
        const nullBody = method === "HEAD" || [101, 204, 205, 304].includes(status);
        if (nullBody) res.resume();
        const stream = nullBody ? null : Readable.toWeb(res) as ReadableStream<Uint8Array>;
        resolve(new Response(stream, { status, statusText: res.statusMessage, headers: h }));
      });
      const onAbort = () => {
        r.destroy(signal!.reason);
        reject(signal!.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      r.on("close", () => signal?.removeEventListener("abort", onAbort));
      r.on("error", (e: Error & { code?: string }) => reject(asFetchError(url, e)));
      if (body instanceof ReadableStream) {
        (async () => {
          try {
            for await (const chunk of body) {
              if (!r.write(chunk)) await new Promise((ok) => r.once("drain", ok));
            }
            r.end();
          } catch (e) {
            r.destroy(e as Error);
          }
        })();
      } else r.end(body);
    });
  }

  /** Releases every client and agent. */
  close(): void {
    for (const c of this.#clients.values()) c.close();
    for (const a of this.#agents.values()) a.destroy();
    this.#clients.clear();
    this.#agents.clear();
  }
}

/**
 * Connects to `url`'s server with TLS as `cfg` says and sends a request line; returns the TLS
 * alert it answers with (e.g. "received fatal alert: BadCertificate" when it wants a client
 * certificate), or undefined when it answers normally, closes silently or does not answer in 3 s.
 */
async function probeTlsAlert(url: URL, cfg: HostTlsConfig): Promise<Error | undefined> {
  if (!cfg.verify) return undefined;
  let conn: Deno.TlsConn | undefined;
  const timer = setTimeout(() => conn?.close(), 3000);
  try {
    conn = await Deno.connectTls({
      hostname: url.hostname.replace(/^\[|\]$/g, ""),
      port: Number(url.port || 443),
      caCerts: cfg.caCerts,
    });
    await conn.handshake();
    await conn.write(new TextEncoder().encode(`HEAD / HTTP/1.1\r\nHost: ${url.host}\r\n\r\n`));
    await conn.read(new Uint8Array(64));
    return undefined;
  } catch (e) {
    return /alert|certificate/i.test(errorText(e)) ? e as Error : undefined;
  } finally {
    clearTimeout(timer);
    try {
      conn?.close();
    } catch { /* closed by the timer */ }
  }
}

/** A `node:https` error in the shape `fetch` throws (a TypeError whose text says what failed). */
function asFetchError(url: URL, e: Error & { code?: string }): TypeError {
  const what: Record<string, string> = {
    ECONNREFUSED: "Connection refused",
    ECONNRESET: "connection reset",
    ENOTFOUND: "dns error: failed to lookup address information",
    EAI_AGAIN: "dns error: failed to lookup address information",
    ETIMEDOUT: "connection timed out",
  };
  const text = (e.code && what[e.code]) ?? e.message;
  return new TypeError(`error sending request for url (${url.origin}/): ${text}`, { cause: e });
}
