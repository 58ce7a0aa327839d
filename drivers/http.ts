/**
 * The HTTP client every driver talks through: a wrapper around `fetch` that picks the scheme per
 * host (plain http only for loopback and explicitly insecure registries), bounds every attempt
 * with a timeout and every request with an overall deadline, retries transient failures
 * (5xx, 429 with `Retry-After`, resets, timeouts) with exponential backoff and jitter, follows
 * redirects itself (dropping `Authorization` when the host changes), turns registry error bodies
 * into {@link RegistryError}s, and can log requests to a `debug` sink with credentials redacted.
 *
 * Connections are kept alive by Deno's pooled `fetch` client.
 *
 * @module
 */
import { RegistryError } from "./errors.ts";
import { concat } from "../format/bytes.ts";
import { after, type Cancel } from "../format/timers.ts";
import { isTlsError, tlsErrorMessage } from "./tls_config.ts";

export { RegistryError } from "./errors.ts";

/** Options for {@link HttpClient}. */
export interface HttpOptions {
  /** Hosts (`name` or `name:port`) to talk to over plain http. Loopback hosts always are. */
  insecureRegistries?: readonly string[];
  /**
   * Hosts marked `insecure = true` in registries.conf: https first (the `fetch` given skips
   * certificate checks for them, see tls_config.ts), then plain http when https fails (a TLS
   * or connection error), as podman does. Redirects and token servers on them may use http.
   */
  httpsThenHttpHosts?: readonly string[];
  /**
   * Timeout of one attempt until the response headers arrive, and the longest pause allowed
   * while a body is read. Default 30 s.
   */
  timeoutMs?: number;
  /**
   * Overall deadline of one request including all retries (and, for buffered requests, reading
   * the body). Default 120 s.
   */
  deadlineMs?: number;
  /** Maximum retries after the first attempt. Default 4. */
  retries?: number;
  /** Base delay of the exponential backoff. Default 200 ms. */
  backoffMs?: number;
  /** Upper bound of one backoff delay. Default 5 s. */
  maxBackoffMs?: number;
  /** Longest `Retry-After` honoured; longer waits fail at once. Default 60 s. */
  maxRetryAfterMs?: number;
  /** Maximum redirects followed. Default 10. */
  maxRedirects?: number;
  /** Receives one line per request, retry and redirect; never any credential. */
  debug?: (line: string) => void;
  /** `User-Agent` header. */
  userAgent?: string;
  /** The fetch implementation (tests). Default `globalThis.fetch`. */
  fetch?: typeof fetch;
}

/** A request for {@link HttpClient}. */
export interface HttpRequest {
  /** Absolute URL. */
  url: string | URL;
  /** Method, default GET. */
  method?: string;
  /** Request headers. */
  headers?: HeadersInit;
  /** Body. A stream body is sent once: such requests are never retried or redirected with 307/308. */
  body?: Uint8Array | string | URLSearchParams | ReadableStream<Uint8Array> | null;
  /** Cancels the request (and any retry wait). */
  signal?: AbortSignal;
  /** What the request is about (an image reference, a host); starts every error message. */
  what?: string;
  /** Force retrying on (or off). Default: on for GET, HEAD, PUT, DELETE with a replayable body. */
  retry?: boolean;
  /** Per-attempt timeout for this request. */
  timeoutMs?: number;
  /** Overall deadline for this request. */
  deadlineMs?: number;
}

/**
 * Throw this (or a transient {@link RegistryError}) from a `consume` callback of
 * {@link HttpClient.requestWith} to have the whole attempt retried.
 */
export class RetryableError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "RetryableError";
  }
}

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const RETRY_STATUSES = new Set([408, 429, 500, 502, 503, 504]);
const IDEMPOTENT = new Set(["GET", "HEAD", "PUT", "DELETE", "OPTIONS"]);
/**
 * Query parameters of the registry API whose values are safe to log (pagination, upload
 * digests, cross-repository mounts, token scopes). Every other value is redacted: signed
 * storage URLs carry their secrets under names nobody can list in advance (`verify=`,
 * `X-Amz-Signature=`, `Expires=`, `hmac=`, …).
 */
const SAFE_PARAMS = new Set(["n", "last", "digest", "mount", "from", "scope", "service"]);

/** Whether `host` (optionally with port) is a loopback address or `localhost`. */
export function isLoopbackHost(host: string): boolean {
  const name = hostName(host);
  return name === "localhost" || name === "::1" || name === "[::1]" ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name);
}

/** The host name of `host[:port]` (IPv6 keeps its brackets). */
export function hostName(host: string): string {
  if (host.startsWith("[")) return host.slice(0, host.indexOf("]") + 1);
  const i = host.lastIndexOf(":");
  return (i >= 0 && host.indexOf(":") === i ? host.slice(0, i) : host).toLowerCase();
}

/**
 * `url` without user info and with every query value replaced by `REDACTED`, except the
 * registry API's own harmless parameters (`n`, `last`, `digest`, `mount`, `from`, `scope`,
 * `service`).
 */
export function redactUrl(url: string | URL): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return redactText(String(url));
  }
  u.username = "";
  u.password = "";
  if (u.search === "") return u.toString();
  const out = new URLSearchParams();
  for (const [key, value] of u.searchParams) {
    out.append(key, SAFE_PARAMS.has(key.toLowerCase()) ? value : "REDACTED");
  }
  u.search = out.toString();
  return u.toString();
}

/** Redacts URLs, bearer/basic credentials and `key=value` secrets inside free text. */
export function redactText(text: string): string {
  return text
    .replace(/\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+/gi, "$1 REDACTED")
    .replace(/https?:\/\/[^\s"'<>)]+/g, (m) => redactUrl(m))
    .replace(
      /([?&][^=&\s]*(?:pass|secret|token|key|auth|sig|credential)[^=&\s]*=)[^&\s"']*/gi,
      "$1REDACTED",
    );
}

/** Reads a response body fully, failing with `BAD_RESPONSE` beyond `limit` bytes. */
export async function readBody(
  res: Response,
  what: string,
  limit = 64 * 1024 * 1024,
): Promise<Uint8Array> {
  const len = Number(res.headers.get("content-length") ?? NaN);
  if (len > limit) {
    await res.body?.cancel();
    throw new RegistryError(`${what}: response of ${len} bytes exceeds the ${limit} byte limit`, {
      code: "BAD_RESPONSE",
      reference: what,
    });
  }
  if (!res.body) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = res.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > limit) {
        await reader.cancel();
        throw new RegistryError(`${what}: response exceeds the ${limit} byte limit`, {
          code: "BAD_RESPONSE",
          reference: what,
        });
      }
      chunks.push(value);
    }
  } finally {
    reader.releaseLock();
  }
  return concat(chunks, false);
}

/** Reads and parses a JSON response body, failing with `BAD_RESPONSE` on malformed JSON. */
export async function readJson<T = unknown>(
  res: Response,
  what: string,
  limit = 16 * 1024 * 1024,
): Promise<T> {
  const bytes = await readBody(res, what, limit);
  try {
    return JSON.parse(new TextDecoder().decode(bytes)) as T;
  } catch {
    throw new RegistryError(`${what}: the registry sent malformed JSON (HTTP ${res.status})`, {
      code: "BAD_RESPONSE",
      status: res.status,
      reference: what,
    });
  }
}

interface RegistryErrorBody {
  errors?: { code?: string; message?: string; detail?: unknown }[];
  message?: string;
  error?: string;
  details?: string;
}

/**
 * Turns a non-success response into a {@link RegistryError}, reading (a bounded part of) its body
 * for the registry's JSON `errors`. Consumes the body.
 */
export async function responseError(res: Response, what: string): Promise<RegistryError> {
  let body: RegistryErrorBody | undefined;
  try {
    const bytes = await readBody(res, what, 64 * 1024);
    const text = new TextDecoder().decode(bytes);
    if (text.trim().startsWith("{")) body = JSON.parse(text);
  } catch {
    // An unreadable error body: the status alone has to do.
  }
  const status = res.status;
  const first = body?.errors?.[0];
  const registryCode = first?.code;
  let code: string = registryCode ?? defaultCode(status);
  let text = first?.message ?? body?.message ?? body?.error ?? "";
  switch (status) {
    case 401:
      code = registryCode ?? "UNAUTHORIZED";
      text = "authentication required" +
        (text && text !== "authentication required" ? ` (${text})` : "");
      break;
    case 403:
      code = registryCode ?? "DENIED";
      text = "access denied" + (text && text !== "access denied" ? ` (${text})` : "");
      break;
    case 404:
      text = text || "not found";
      break;
    case 429: {
      const after = res.headers.get("retry-after");
      text = "too many requests (rate limited)" + (after ? `; retry after ${after}` : "");
      break;
    }
    default:
      if (!text) text = status >= 500 ? `registry failure` : `unexpected response`;
  }
  if (body?.errors && body.errors.length > 1) {
    text += "; " + body.errors.slice(1).map((e) => e.message ?? e.code).join("; ");
  }
  text = redactText(text).slice(0, 500);
  return new RegistryError(
    `${what}: ${text} (HTTP ${status}${registryCode ? ` ${registryCode}` : ""})`,
    {
      code,
      status,
      reference: what,
      detail: first?.detail,
      transient: RETRY_STATUSES.has(status),
    },
  );
}

function defaultCode(status: number): string {
  if (status === 401) return "UNAUTHORIZED";
  if (status === 403) return "DENIED";
  if (status === 404) return "NOT_FOUND";
  if (status === 416) return "RANGE_NOT_SATISFIABLE";
  if (status === 429) return "TOOMANYREQUESTS";
  if (status >= 500) return "SERVER_ERROR";
  return "HTTP_ERROR";
}

/** The HTTP client; see the module documentation. */
export class HttpClient {
  readonly #opts: Required<
    Omit<HttpOptions, "debug" | "fetch" | "insecureRegistries" | "httpsThenHttpHosts">
  >;
  readonly #insecure: Set<string>;
  readonly #httpsFirst: Set<string>;
  /** `httpsThenHttpHosts` found to need plain http. */
  readonly #fellBack = new Set<string>();
  readonly #debug?: (line: string) => void;
  readonly #fetch: typeof fetch;

  constructor(options: HttpOptions = {}) {
    this.#opts = {
      timeoutMs: options.timeoutMs ?? 30_000,
      deadlineMs: options.deadlineMs ?? 120_000,
      retries: options.retries ?? 4,
      backoffMs: options.backoffMs ?? 200,
      maxBackoffMs: options.maxBackoffMs ?? 5_000,
      maxRetryAfterMs: options.maxRetryAfterMs ?? 60_000,
      maxRedirects: options.maxRedirects ?? 10,
      userAgent: options.userAgent ?? "crfs/0.1",
    };
    this.#insecure = new Set((options.insecureRegistries ?? []).map((h) => h.toLowerCase()));
    this.#httpsFirst = new Set((options.httpsThenHttpHosts ?? []).map((h) => h.toLowerCase()));
    this.#debug = options.debug;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /**
   * Whether plain http may be used with `host` (loopback, listed as insecure, or an
   * https-then-http host).
   */
  isInsecure(host: string): boolean {
    const h = host.toLowerCase();
    return isLoopbackHost(h) || this.#insecure.has(h) || this.#insecure.has(hostName(h)) ||
      this.#isHttpsFirst(h);
  }

  #isHttpsFirst(host: string): boolean {
    const h = host.toLowerCase();
    return this.#httpsFirst.has(h) || this.#httpsFirst.has(hostName(h));
  }

  /**
   * `http://host` or `https://host`: http for loopback and listed insecure hosts; https for
   * https-then-http hosts until https failed on them once.
   */
  baseUrl(host: string): string {
    const h = host.toLowerCase();
    if (this.#isHttpsFirst(h)) return `${this.#fellBack.has(h) ? "http" : "https"}://${host}`;
    return `${this.isInsecure(host) ? "http" : "https"}://${host}`;
  }

  /** Writes a line to the debug sink, if any (the text is redacted first). */
  log(line: string): void {
    if (this.#debug) this.#debug(redactText(line));
  }

  /**
   * Sends `req`, retrying transient failures, and returns the final response whatever its
   * status, with its body unread. The body is guarded by an idle timeout (no data for the
   * per-attempt timeout aborts it). The caller must consume or cancel the body.
   */
  async request(req: HttpRequest): Promise<Response> {
    return await this.#run(req, undefined);
  }

  /**
   * Sends `req` and runs `consume` on the response inside the retry loop: a body that breaks
   * off or stalls, or a {@link RetryableError} / transient {@link RegistryError} thrown by
   * `consume`, retries the whole request. The overall deadline covers `consume`.
   */
  async requestWith<T>(req: HttpRequest, consume: (res: Response) => Promise<T>): Promise<T> {
    return await this.#run(req, consume);
  }

  async #run<T>(req: HttpRequest, consume: ((res: Response) => Promise<T>) | undefined): Promise<T>;
  async #run(req: HttpRequest, consume: undefined): Promise<Response>;
  async #run<T>(
    req: HttpRequest,
    consume: ((res: Response) => Promise<T>) | undefined,
  ): Promise<T | Response> {
    const method = (req.method ?? "GET").toUpperCase();
    let url = new URL(req.url);
    if (url.protocol === "https:" && this.#fellBack.has(url.host.toLowerCase())) {
      url = httpUrl(url);
    }
    let triedHttp = false;
    const what = req.what ?? url.host;
    const replayable = !(req.body instanceof ReadableStream);
    const retryable = replayable && (req.retry ?? IDEMPOTENT.has(method));
    const deadlineMs = req.deadlineMs ?? this.#opts.deadlineMs;
    const deadline = Date.now() + deadlineMs;
    let lastError: RegistryError | undefined;
    for (let attempt = 0;; attempt++) {
      req.signal?.throwIfAborted();
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw gaveUp(what, deadlineMs, lastError);
      }
      const canRetry = retryable && attempt < this.#opts.retries;
      const controller = new AbortController();
      const onAbort = () => controller.abort(req.signal?.reason);
      req.signal?.addEventListener("abort", onAbort, { once: true });
      const idleMs = req.timeoutMs ?? this.#opts.timeoutMs;
      const headerMs = Math.min(idleMs, remaining);
      let why: "headers" | "deadline" | undefined;
      const abortFor = (reason: "headers" | "deadline") => () => {
        why = reason;
        controller.abort(new DOMException(`timed out (${reason})`, "TimeoutError"));
      };
      let headerTimer: Cancel | undefined = after(headerMs, abortFor("headers"));
      // A buffered request (consume) is bounded by the deadline as a whole; a streamed body
      // only by its idle timeout once handed over.
      let deadlineTimer: Cancel | undefined = consume
        ? after(remaining, abortFor("deadline"))
        : undefined;
      const cleanup = () => {
        headerTimer?.();
        deadlineTimer?.();
        headerTimer = deadlineTimer = undefined;
        req.signal?.removeEventListener("abort", onAbort);
      };
      let handedOff = false;
      try {
        const raw = await this.#follow(req, method, url, controller.signal, what);
        headerTimer?.();
        headerTimer = undefined;
        if (RETRY_STATUSES.has(raw.status) && canRetry) {
          const delay = this.#retryDelay(raw, attempt);
          if (delay !== undefined && Date.now() + delay < deadline) {
            await raw.body?.cancel();
            lastError = new RegistryError(`${what}: HTTP ${raw.status}`, {
              code: raw.status === 429 ? "TOOMANYREQUESTS" : "SERVER_ERROR",
              status: raw.status,
              reference: what,
              transient: true,
            });
            this.log(
              `retry ${attempt + 1}/${this.#opts.retries} of ${method} ${
                redactUrl(url)
              } in ${delay} ms: HTTP ${raw.status}`,
            );
            cleanup();
            await sleep(delay, req.signal);
            continue;
          }
        }
        if (!consume) {
          handedOff = true;
          deadlineTimer?.();
          deadlineTimer = undefined;
          return guardBody(raw, idleMs, controller, cleanup, what);
        }
        const res = guardBody(raw, idleMs, controller, () => {}, what);
        try {
          return await consume(res);
        } finally {
          if (res.body && !res.bodyUsed) await res.body.cancel().catch(() => {});
        }
      } catch (e) {
        if (req.signal?.aborted) throw req.signal.reason ?? e;
        if (why === "deadline") {
          throw gaveUp(what, deadlineMs, lastError);
        }
        const err = classifyError(e, why === "headers", what, url, headerMs);
        if (
          !triedHttp && url.protocol === "https:" && this.#isHttpsFirst(url.host) &&
          (err.code === "TLS" || err.code === "CONNECTION")
        ) {
          // registries.conf insecure = true: https did not work, plain http next (once).
          triedHttp = true;
          this.#fellBack.add(url.host.toLowerCase());
          this.log(`${url.host}: https failed (${err.message}); trying plain http (insecure)`);
          url = httpUrl(url);
          cleanup();
          continue;
        }
        if (!err.transient || !canRetry) throw err;
        lastError = err;
        const delay = this.#backoff(attempt);
        if (Date.now() + delay >= deadline) throw err;
        this.log(
          `retry ${attempt + 1}/${this.#opts.retries} of ${method} ${
            redactUrl(url)
          } in ${delay} ms: ${err.message}`,
        );
        cleanup();
        await sleep(delay, req.signal);
      } finally {
        if (!handedOff) cleanup();
      }
    }
  }

  #backoff(attempt: number): number {
    const base = Math.min(this.#opts.maxBackoffMs, this.#opts.backoffMs * 2 ** attempt);
    return Math.round(base / 2 + Math.random() * base / 2);
  }

  /** Delay before retrying a retryable status, or undefined to give up (Retry-After too long). */
  #retryDelay(res: Response, attempt: number): number | undefined {
    const header = res.headers.get("retry-after");
    if (header !== null) {
      let ms: number | undefined;
      if (/^\s*\d+\s*$/.test(header)) ms = Number(header) * 1000;
      else {
        const t = Date.parse(header);
        if (!Number.isNaN(t)) ms = Math.max(0, t - Date.now());
      }
      if (ms !== undefined) return ms > this.#opts.maxRetryAfterMs ? undefined : ms;
    }
    return this.#backoff(attempt);
  }

  async #follow(
    req: HttpRequest,
    method0: string,
    url0: URL,
    signal: AbortSignal,
    what: string,
  ): Promise<Response> {
    let url = url0;
    let method = method0;
    let body = req.body ?? undefined;
    const headers = new Headers(req.headers);
    if (!headers.has("user-agent")) headers.set("user-agent", this.#opts.userAgent);
    for (let hop = 0;; hop++) {
      const t0 = performance.now();
      let res: Response;
      try {
        res = await this.#fetch(url, {
          method,
          headers,
          body: body as BodyInit | undefined,
          signal,
          redirect: "manual",
        });
      } catch (e) {
        if (this.#debug) this.log(`${method} ${redactUrl(url)} -> error: ${errorText(e)}`);
        throw e;
      }
      // Every request's line, built only when someone reads it (redacting parses the URL).
      if (this.#debug) {
        const auth = headers.get("authorization")?.split(" ")[0]?.toLowerCase();
        this.log(
          `${method} ${redactUrl(url)} -> ${res.status} ${
            res.headers.get("content-length") ?? "-"
          } bytes ` +
            `${Math.round(performance.now() - t0)} ms${auth ? ` (auth: ${auth})` : ""}` +
            (headers.has("range") ? ` range=${headers.get("range")}` : ""),
        );
      }
      const location = res.headers.get("location");
      if (!REDIRECT_STATUSES.has(res.status) || location === null) return res;
      await res.body?.cancel();
      if (hop >= this.#opts.maxRedirects) {
        throw new RegistryError(`${what}: more than ${this.#opts.maxRedirects} redirects`, {
          code: "BAD_RESPONSE",
          status: res.status,
          reference: what,
        });
      }
      let next: URL;
      try {
        next = new URL(location, url);
      } catch {
        throw new RegistryError(`${what}: redirect to an invalid location`, {
          code: "BAD_RESPONSE",
          reference: what,
        });
      }
      if (next.protocol !== "http:" && next.protocol !== "https:") {
        throw new RegistryError(`${what}: redirect to unsupported scheme ${next.protocol}`, {
          code: "BAD_RESPONSE",
          reference: what,
        });
      }
      if (next.protocol === "http:" && !this.isInsecure(next.host)) {
        // Plain http only to loopback and explicitly insecure hosts, whatever the redirect
        // came from (a loopback or insecure registry may not send us elsewhere in the clear).
        throw new RegistryError(
          `${what}: refusing a redirect to plain http on ${next.host} (` +
            `not loopback and not listed as an insecure registry)`,
          {
            code: "BAD_RESPONSE",
            reference: what,
          },
        );
      }
      if (next.host !== url.host) headers.delete("authorization");
      if (res.status === 303 || ((res.status === 301 || res.status === 302) && method === "POST")) {
        if (method !== "HEAD") method = "GET";
        body = undefined;
        headers.delete("content-type");
        headers.delete("content-length");
      } else if (body instanceof ReadableStream) {
        throw new RegistryError(
          `${what}: cannot resend a streamed body after a ${res.status} redirect`,
          {
            code: "BAD_RESPONSE",
            reference: what,
          },
        );
      }
      this.log(
        `redirect ${res.status} -> ${redactUrl(next)}${
          next.host !== url.host ? " (authorization dropped)" : ""
        }`,
      );
      url = next;
    }
  }
}

/** `url` with the http scheme (same host and port). */
function httpUrl(url: URL): URL {
  const u = new URL(url);
  u.protocol = "http:";
  return u;
}

function stripWhat(message: string, what: string): string {
  return message.startsWith(`${what}: `) ? message.slice(what.length + 2) : message;
}

function errorText(e: unknown): string {
  if (e instanceof Error) {
    const cause = e.cause instanceof Error ? `: ${e.cause.message}` : "";
    return redactText(e.message + cause);
  }
  return redactText(String(e));
}

/** Maps a thrown value from fetch or a consume callback to a RegistryError (transient or not). */
function classifyError(
  e: unknown,
  timedOut: boolean,
  what: string,
  url: URL,
  timeoutMs: number,
): RegistryError {
  if (e instanceof RegistryError) return e;
  if (e instanceof RetryableError) {
    return new RegistryError(`${what}: ${redactText(e.message)}`, {
      code: "BAD_RESPONSE",
      reference: what,
      transient: true,
    });
  }
  if (timedOut || (e instanceof DOMException && e.name === "TimeoutError")) {
    return new RegistryError(
      `${what}: no response from ${url.host} within ${Math.round(timeoutMs)} ms`,
      {
        code: "TIMEOUT",
        reference: what,
        transient: true,
      },
    );
  }
  const text = errorText(e);
  if (
    e instanceof TypeError || e instanceof Deno.errors.ConnectionReset ||
    e instanceof Deno.errors.BrokenPipe
  ) {
    if (/connection refused/i.test(text)) {
      return new RegistryError(`${what}: cannot connect to ${url.host} (connection refused)`, {
        code: "CONNECTION",
        reference: what,
        transient: true,
      });
    }
    if (/dns error|failed to lookup|name or service not known|no address associated/i.test(text)) {
      return new RegistryError(`${what}: cannot resolve host ${url.hostname}`, {
        code: "DNS",
        reference: what,
      });
    }
    if (e instanceof TypeError && e.message.startsWith("TLS: ")) {
      // Already worded by TlsClients (tls_config.ts): host, cause and what to configure.
      return new RegistryError(`${what}: ${e.message}`, { code: "TLS", reference: what });
    }
    if (isTlsError(e)) {
      return new RegistryError(`${what}: ${tlsErrorMessage(url.host, e)}`, {
        code: "TLS",
        reference: what,
      });
    }
    return new RegistryError(`${what}: connection to ${url.host} failed (${text.slice(0, 300)})`, {
      code: "CONNECTION",
      reference: what,
      transient: true,
    });
  }
  if (e instanceof Error) {
    const err = new RegistryError(`${what}: ${redactText(e.message)}`, {
      code: "BAD_RESPONSE",
      reference: what,
    });
    return err;
  }
  return new RegistryError(`${what}: ${redactText(String(e))}`, {
    code: "BAD_RESPONSE",
    reference: what,
  });
}

/**
 * Wraps `res`'s body so that a stall longer than `idleMs` aborts it with a TIMEOUT error, and so
 * that `cleanup` runs when the body ends, fails or is cancelled.
 */
function guardBody(
  res: Response,
  idleMs: number,
  controller: AbortController,
  cleanup: () => void,
  what: string,
): Response {
  if (!res.body) {
    cleanup();
    return res;
  }
  const reader = res.body.getReader();
  let idle: Cancel | undefined;
  let stalled = false;
  const done = () => {
    idle?.();
    idle = undefined;
    cleanup();
  };
  const body = new ReadableStream<Uint8Array>({
    async pull(c) {
      idle = after(idleMs, () => {
        stalled = true;
        controller.abort(new DOMException("stalled", "TimeoutError"));
      });
      try {
        const { done: end, value } = await reader.read();
        idle?.();
        idle = undefined;
        if (end) {
          done();
          c.close();
        } else c.enqueue(value);
      } catch (e) {
        done();
        c.error(
          stalled
            ? new RegistryError(`${what}: no data for ${idleMs} ms`, {
              code: "TIMEOUT",
              reference: what,
              transient: true,
            })
            : new RegistryError(`${what}: connection broke off while reading (${errorText(e)})`, {
              code: "CONNECTION",
              reference: what,
              transient: true,
            }),
        );
      }
    },
    async cancel(reason) {
      done();
      await reader.cancel(reason).catch(() => {});
    },
  }, { highWaterMark: 0 });
  const nullBody = res.status === 204 || res.status === 304;
  const out = new Response(nullBody ? null : body, {
    status: res.status,
    statusText: res.statusText,
    headers: res.headers,
  });
  if (nullBody) {
    reader.cancel().catch(() => {});
    done();
  }
  return out;
}

/** Sleeps `ms`, waking early (with the abort reason) when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const cancel = after(ms, () => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    });
    const onAbort = () => {
      cancel();
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** The `TIMEOUT` error when the overall deadline of a request has passed. */
function gaveUp(what: string, deadlineMs: number, lastError: RegistryError | undefined) {
  return new RegistryError(
    `${what}: gave up after ${Math.round(deadlineMs / 100) / 10} s` +
      (lastError ? ` (last error: ${stripWhat(lastError.message, what)})` : ""),
    { code: "TIMEOUT", reference: what, cause: lastError, transient: true },
  );
}
