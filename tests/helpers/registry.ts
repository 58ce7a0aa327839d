/**
 * A real registry for tests: Debian's `docker-registry` (distribution 2.8) started on a free
 * loopback port with a temporary storage directory, optionally with htpasswd basic auth or token
 * auth (backed by the token server in `token_server.ts`).
 *
 * ```ts
 * const reg = await startRegistry({ auth: "basic" });
 * try {
 *   // talk to reg.host ("127.0.0.1:PORT") …
 *   const log = await reg.accessLog(); // [{ method, path, status, bytes, range? }, …]
 * } finally {
 *   await reg.stop();
 * }
 * ```
 *
 * The access log is parsed from the registry's own request log (its "response completed"
 * lines, and "error authorizing context" warnings for requests refused with 401, whose `bytes`
 * is then 0); the registry runs at `debug` level so that blob reads also log their start offset,
 * which with the bytes written gives the served `range` of every 206 response.
 * `accessLog()` first sends a marker request and waits for it to be logged, so every request
 * that completed before the call is in the result.
 *
 * @module
 */
import { startTokenServer, type TokenServer } from "./token_server.ts";

/** Options of {@link startRegistry}. */
export interface StartRegistryOptions {
  /** Authentication: none (default), htpasswd `basic`, or `token` (bearer tokens). */
  auth?: "basic" | "token";
  /** user → password; default `{ crfs: "crfs-secret-pw" }`. */
  users?: Record<string, string>;
  /** Loopback address to listen on; default 127.0.0.1. */
  hostname?: string;
  /** Token auth: actions anonymous clients get (e.g. `["pull"]`); default none. */
  anonymousActions?: string[];
  /** Token auth: refresh tokens (docker config `identitytoken`s) → user. */
  refreshTokens?: Record<string, string>;
  /** Token auth: `expires_in` the token server sends (0: omit it). */
  tokenExpiresIn?: number;
  /** Token auth: which response field carries the token. */
  tokenField?: "token" | "access_token" | "both";
  /** Token auth: seconds the JWT is valid, when different from `tokenExpiresIn`. */
  tokenJwtLifetime?: number;
  /** Extra top-level YAML appended to the registry config. */
  extraConfig?: string;
  /**
   * Serve https with this certificate and key: `host` and `url` then use `name` (which must
   * resolve to the listening address, e.g. an /etc/hosts line) and the helper trusts `ca`.
   */
  tls?: { name: string; certificate: string; key: string; ca: string };
}

/** One request as the registry logged it. */
export interface AccessLogEntry {
  method: string;
  /** Request URI (path and query). */
  path: string;
  status: number;
  /** Response body bytes written. */
  bytes: number;
  /** For 206 responses of blob reads: the byte range served, inclusive. */
  range?: { start: number; end: number };
}

/** The GETs of blobs `digests` in an access log (what a lazy pull should keep to ranges). */
export function blobGets(log: AccessLogEntry[], digests: string[]): AccessLogEntry[] {
  return log.filter((e) => e.method === "GET" && digests.some((d) => e.path.endsWith(`/${d}`)));
}

/** A running registry. */
export interface TestRegistry {
  /** `127.0.0.1:PORT` (with `tls`: `NAME:PORT`): the host part of image references. */
  host: string;
  /** `http://127.0.0.1:PORT` (with `tls`: `https://NAME:PORT`). */
  url: string;
  /** The users (user → password) when auth is on. */
  users: Record<string, string>;
  /** The auth mode. */
  auth?: "basic" | "token";
  /** Temporary directory holding config, storage and htpasswd. */
  dir: string;
  /** The token server, with auth "token". */
  tokenServer?: TokenServer;
  /** Parsed log of completed requests (see the module documentation). */
  accessLog(): Promise<AccessLogEntry[]>;
  /** Forgets the log so far. */
  clearLog(): void;
  /** Raw output lines of the registry (for diagnostics). */
  output(): string[];
  /** Kills the registry and removes its temporary directory. Safe to call twice. */
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** A free TCP port on `hostname` (bound and released; the caller retries on a race). */
export function freePort(hostname = "127.0.0.1"): number {
  const l = Deno.listen({ hostname, port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Parses logfmt (`key=value key="quoted \" value"`). */
export function parseLogfmt(line: string): Record<string, string> {
  const out: Record<string, string> = {};
  const re = /([\w.]+)=("(?:[^"\\]|\\.)*"|\S*)/g;
  for (const m of line.matchAll(re)) {
    let v = m[2];
    if (v.startsWith('"')) {
      try {
        v = JSON.parse(v);
      } catch {
        v = v.slice(1, -1);
      }
    }
    out[m[1]] = v;
  }
  return out;
}

async function htpasswd(path: string, users: Record<string, string>): Promise<void> {
  let first = true;
  for (const [user, password] of Object.entries(users)) {
    const out = await new Deno.Command("htpasswd", {
      args: [first ? "-Bbc" : "-Bb", path, user, password],
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error(`htpasswd failed: ${new TextDecoder().decode(out.stderr)}`);
    first = false;
  }
}

/** Starts a registry; see the module documentation. Always `stop()` it (use try/finally). */
export async function startRegistry(options: StartRegistryOptions = {}): Promise<TestRegistry> {
  const hostname = options.hostname ?? "127.0.0.1";
  const users = options.users ?? { crfs: "crfs-secret-pw" };
  const dir = await Deno.makeTempDir({ prefix: "crfs-registry-" });
  let tokenServer: TokenServer | undefined;
  try {
    let authConfig = "";
    if (options.auth === "basic") {
      await htpasswd(`${dir}/htpasswd`, users);
      authConfig = `auth:\n  htpasswd:\n    realm: crfs-test\n    path: ${dir}/htpasswd\n`;
    } else if (options.auth === "token") {
      tokenServer = await startTokenServer({
        users,
        service: "crfs-test-registry",
        issuer: "crfs-test-issuer",
        hostname,
        anonymousActions: options.anonymousActions,
        refreshTokens: options.refreshTokens,
        expiresIn: options.tokenExpiresIn,
        tokenField: options.tokenField,
        jwtLifetime: options.tokenJwtLifetime,
      });
      await Deno.writeTextFile(`${dir}/token-cert.pem`, tokenServer.certPem);
      authConfig =
        `auth:\n  token:\n    realm: ${tokenServer.realm}\n    service: crfs-test-registry\n` +
        `    issuer: crfs-test-issuer\n    rootcertbundle: ${dir}/token-cert.pem\n`;
    }
    let lastError: Error | undefined;
    for (let attempt = 0; attempt < 5; attempt++) {
      const port = freePort(hostname);
      const config = `version: 0.1\n` +
        `log: {level: debug, formatter: text, accesslog: {disabled: true}}\n` +
        `storage: {filesystem: {rootdirectory: ${dir}/data}, delete: {enabled: true}, ` +
        `maintenance: {uploadpurging: {enabled: false}}}\n` +
        `http: {addr: "${hostname}:${port}", secret: crfs-test-secret` +
        (options.tls
          ? `, tls: {certificate: ${options.tls.certificate}, key: ${options.tls.key}}`
          : "") +
        `}\n` +
        authConfig + (options.extraConfig ?? "");
      await Deno.writeTextFile(`${dir}/config.yml`, config);
      try {
        return await launch(dir, hostname, port, users, options.auth, tokenServer, options.tls);
      } catch (e) {
        lastError = e as Error;
        if (!/address already in use/i.test(lastError.message)) break;
      }
    }
    throw lastError ?? new Error("registry did not start");
  } catch (e) {
    await tokenServer?.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw e;
  }
}

async function launch(
  dir: string,
  hostname: string,
  port: number,
  users: Record<string, string>,
  auth: "basic" | "token" | undefined,
  tokenServer: TokenServer | undefined,
  tls: StartRegistryOptions["tls"],
): Promise<TestRegistry> {
  const child = new Deno.Command("docker-registry", {
    args: ["serve", `${dir}/config.yml`],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const raw: string[] = [];
  let entries: AccessLogEntry[] = [];
  const offsets = new Map<string, number>();
  const marks = new Set<string>();
  const onLine = (line: string) => {
    raw.push(line);
    if (raw.length > 5000) raw.splice(0, raw.length - 2000);
    if (!line.includes("http.request.id=")) return;
    const f = parseLogfmt(line);
    const id = f["http.request.id"];
    const reader = /filesystem\.Reader\(".*", (\d+)\)/.exec(f.msg ?? "");
    if (reader) {
      offsets.set(id, Number(reader[1]));
      return;
    }
    // Requests refused by auth are logged as a warning, without a "response completed" line.
    const refused = /^error authorizing context/.test(f.msg ?? "");
    if (!refused && !/^response completed/.test(f.msg ?? "")) return;
    const path = f["http.request.uri"] ?? "";
    const mark = /[?&]crfs-log-mark=([\w-]+)/.exec(path);
    if (mark) {
      marks.add(mark[1]);
      return;
    }
    const status = refused ? 401 : Number(f["http.response.status"] ?? 0);
    const bytes = Number(f["http.response.written"] ?? 0);
    const entry: AccessLogEntry = { method: f["http.request.method"] ?? "", path, status, bytes };
    const start = offsets.get(id);
    if (status === 206 && start !== undefined) entry.range = { start, end: start + bytes - 1 };
    offsets.delete(id);
    entries.push(entry);
  };
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    let buf = "";
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      buf += text;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        onLine(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    }
    if (buf) onLine(buf);
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  const host = `${tls?.name ?? hostname}:${port}`;
  const url = tls ? `https://${host}` : `http://${host}`;
  const client = tls
    ? Deno.createHttpClient({ caCerts: [await Deno.readTextFile(tls.ca)] })
    : undefined;
  const get = (u: string, signal: AbortSignal) => fetch(u, { signal, client });
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  const stopProcess = async () => {
    if (!exited) {
      try {
        child.kill("SIGTERM");
      } catch {
        // already exited
      }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch {
          // gone
        }
      }, 3000);
      await status;
      clearTimeout(timer);
    }
    await pumps;
  };
  // Wait for readiness.
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (exited) {
      await pumps;
      client?.close();
      throw new Error(`docker-registry exited during start-up:\n${raw.slice(-20).join("\n")}`);
    }
    try {
      const res = await get(`${url}/v2/`, AbortSignal.timeout(1000));
      await res.body?.cancel();
      if (res.status === 200 || res.status === 401) break;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) {
      await stopProcess();
      client?.close();
      throw new Error(`docker-registry did not become ready:\n${raw.slice(-20).join("\n")}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  let stopped = false;
  let markCounter = 0;
  const reg: TestRegistry = {
    host,
    url,
    users,
    auth,
    dir,
    tokenServer,
    async accessLog() {
      if (!exited) {
        const mark = `m${++markCounter}-${crypto.randomUUID().slice(0, 8)}`;
        try {
          const res = await get(`${url}/v2/?crfs-log-mark=${mark}`, AbortSignal.timeout(2000));
          await res.body?.cancel();
          const until = Date.now() + 2000;
          while (!marks.has(mark) && Date.now() < until) {
            await new Promise((r) => setTimeout(r, 10));
          }
        } catch {
          // registry gone: return what was logged
        }
      }
      return entries.slice();
    },
    clearLog() {
      entries = [];
    },
    output() {
      return raw.slice();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopProcess();
      client?.close();
      await tokenServer?.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
    [Symbol.asyncDispose]() {
      return reg.stop();
    },
  };
  return reg;
}
