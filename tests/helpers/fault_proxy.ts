/**
 * A loopback HTTP proxy in front of a real server (usually the test registry) that injects
 * faults into chosen requests: error statuses, `429` + `Retry-After`, connection resets in the
 * middle of a body, cleanly truncated bodies, slow drip-fed bodies, delays, a wrong
 * `Content-Range`, `Range` being ignored (the upstream then answers 200 with the whole body),
 * corrupted bytes, changed headers and redirects. Everything else passes through unchanged.
 *
 * ```ts
 * const proxy = startFaultProxy(reg.url);
 * proxy.inject({ kind: "status", status: 503 }, { match: /\/blobs\//, times: 2 });
 * // talk to proxy.host instead of reg.host …
 * proxy.log; // [{ method, path, status, range, authorization, fault }, …]
 * await proxy.stop();
 * ```
 *
 * @module
 */

/** A fault to inject. */
export type Fault =
  | { kind: "status"; status: number; headers?: Record<string, string>; body?: string }
  | { kind: "reset"; afterBytes: number }
  | { kind: "truncate"; afterBytes: number }
  | { kind: "drip"; chunkBytes: number; intervalMs: number }
  | { kind: "delay"; ms: number }
  | { kind: "ignore-range" }
  | { kind: "wrong-content-range"; shift: number }
  | { kind: "corrupt"; offset?: number }
  | { kind: "set-header"; headers: Record<string, string | null> }
  | { kind: "redirect"; status?: number; location: (url: URL) => string };

/** Which requests a fault applies to and how often. */
export interface FaultRuleOptions {
  /** A regexp tested on method + " " + path-with-query, or a predicate; default every request. */
  match?: RegExp | ((req: Request, url: URL) => boolean);
  /** How many matching requests get the fault; default 1, `Infinity` for all. */
  times?: number;
}

/** One request that went through the proxy. */
export interface ProxyLogEntry {
  method: string;
  /** Path and query. */
  path: string;
  /** Status answered to the client. */
  status: number;
  /** The client's `Range` header, if any. */
  range?: string;
  /** Whether the client sent `Authorization`. */
  authorization: boolean;
  /** The fault kind applied, if any. */
  fault?: string;
}

/** A running fault proxy. */
export interface FaultProxy {
  /** `HOST:PORT` of the proxy. */
  host: string;
  /** `http://HOST:PORT`. */
  url: string;
  /** Adds a fault rule; rules are tried in the order added. */
  inject(fault: Fault, options?: FaultRuleOptions): void;
  /** Removes all fault rules. */
  clear(): void;
  /** Requests so far. */
  log: ProxyLogEntry[];
  /** Stops the proxy. */
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

interface Rule {
  fault: Fault;
  match?: FaultRuleOptions["match"];
  left: number;
}

const HOP_BY_HOP = [
  "connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
  "proxy-connection",
  "te",
  "trailer",
];

/** Starts a fault proxy to `upstream` (an `http://host:port` URL); see the module documentation. */
export function startFaultProxy(
  upstream: string,
  options: { hostname?: string } = {},
): FaultProxy {
  const hostname = options.hostname ?? "127.0.0.1";
  const rules: Rule[] = [];
  const log: ProxyLogEntry[] = [];
  const up = new URL(upstream);
  let self = "";

  const pick = (req: Request, url: URL): Fault | undefined => {
    for (const r of rules) {
      if (r.left <= 0) continue;
      const m = r.match;
      const hit = m === undefined
        ? true
        : m instanceof RegExp
        ? m.test(`${req.method} ${url.pathname}${url.search}`)
        : m(req, url);
      if (hit) {
        r.left--;
        return r.fault;
      }
    }
    return undefined;
  };

  const handler = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    const fault = pick(req, url);
    const entry: ProxyLogEntry = {
      method: req.method,
      path: url.pathname + url.search,
      status: 0,
      authorization: req.headers.has("authorization"),
      ...(req.headers.get("range") ? { range: req.headers.get("range")! } : {}),
      ...(fault ? { fault: fault.kind } : {}),
    };
    log.push(entry);
    const done = (res: Response) => {
      entry.status = res.status;
      return res;
    };
    if (fault?.kind === "status") {
      await req.body?.cancel();
      return done(
        new Response(
          fault.body ??
            JSON.stringify({ errors: [{ code: "UNAVAILABLE", message: "injected fault" }] }),
          {
            status: fault.status,
            headers: { "content-type": "application/json", ...(fault.headers ?? {}) },
          },
        ),
      );
    }
    if (fault?.kind === "redirect") {
      await req.body?.cancel();
      return done(
        new Response(null, {
          status: fault.status ?? 307,
          headers: { location: fault.location(url) },
        }),
      );
    }
    if (fault?.kind === "delay") await new Promise((r) => setTimeout(r, fault.ms));
    const headers = new Headers(req.headers);
    for (const h of HOP_BY_HOP) headers.delete(h);
    headers.delete("host");
    headers.delete("accept-encoding");
    headers.set("x-forwarded-host", self);
    headers.set("x-forwarded-proto", "http");
    if (fault?.kind === "ignore-range") headers.delete("range");
    let res: Response;
    try {
      res = await fetch(new URL(url.pathname + url.search, up), {
        method: req.method,
        headers,
        body: req.body,
        redirect: "manual",
      });
    } catch (e) {
      return done(new Response(`proxy: upstream failed: ${(e as Error).message}`, { status: 502 }));
    }
    const out = new Headers(res.headers);
    for (const h of HOP_BY_HOP) out.delete(h);
    let body: ReadableStream<Uint8Array> | null = res.body;
    switch (fault?.kind) {
      case "reset":
        body = limitStream(res.body, fault.afterBytes, "error");
        break;
      case "truncate":
        out.delete("content-length");
        body = limitStream(res.body, fault.afterBytes, "close");
        break;
      case "drip":
        out.delete("content-length");
        body = dripStream(res.body, fault.chunkBytes, fault.intervalMs);
        break;
      case "wrong-content-range": {
        const cr = out.get("content-range");
        const m = cr ? /^bytes (\d+)-(\d+)\/(.+)$/.exec(cr) : null;
        if (m) {
          out.set(
            "content-range",
            `bytes ${Number(m[1]) + fault.shift}-${Number(m[2]) + fault.shift}/${m[3]}`,
          );
        }
        break;
      }
      case "corrupt":
        body = corruptStream(res.body, fault.offset ?? 0);
        break;
      case "set-header":
        for (const [k, v] of Object.entries(fault.headers)) {
          v === null ? out.delete(k) : out.set(k, v);
        }
        break;
    }
    const nullBody = req.method === "HEAD" || res.status === 204 || res.status === 304;
    if (nullBody) await body?.cancel();
    return done(
      new Response(nullBody ? null : body, {
        status: res.status,
        statusText: res.statusText,
        headers: out,
      }),
    );
  };

  const server = Deno.serve({ hostname, port: 0, onListen() {} }, handler);
  const port = (server.addr as Deno.NetAddr).port;
  self = `${hostname}:${port}`;
  const proxy: FaultProxy = {
    host: self,
    url: `http://${self}`,
    inject(fault, opts = {}) {
      rules.push({ fault, match: opts.match, left: opts.times ?? 1 });
    },
    clear() {
      rules.length = 0;
    },
    log,
    async stop() {
      await server.shutdown();
    },
    [Symbol.asyncDispose]() {
      return proxy.stop();
    },
  };
  return proxy;
}

function limitStream(
  src: ReadableStream<Uint8Array> | null,
  limit: number,
  how: "error" | "close",
): ReadableStream<Uint8Array> | null {
  if (!src) return src;
  const reader = src.getReader();
  let sent = 0;
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      const { done, value } = await reader.read();
      if (done) {
        c.close();
        return;
      }
      const room = limit - sent;
      if (value.length >= room) {
        if (room > 0) c.enqueue(value.subarray(0, room));
        sent = limit;
        await reader.cancel();
        if (how === "error") {
          // Let the partial chunk reach the socket before breaking the connection.
          await new Promise((r) => setTimeout(r, 20));
          c.error(
            new Error(
              "fault proxy: injected connection reset (expected by the test that asked for it)",
            ),
          );
        } else c.close();
        return;
      }
      sent += value.length;
      c.enqueue(value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

function dripStream(
  src: ReadableStream<Uint8Array> | null,
  chunkBytes: number,
  intervalMs: number,
): ReadableStream<Uint8Array> | null {
  if (!src) return src;
  const reader = src.getReader();
  let pending: Uint8Array = new Uint8Array(0);
  let ended = false;
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      while (pending.length === 0 && !ended) {
        const { done, value } = await reader.read();
        if (done) ended = true;
        else pending = value;
      }
      if (pending.length === 0) {
        c.close();
        return;
      }
      await new Promise((r) => setTimeout(r, intervalMs));
      c.enqueue(pending.slice(0, chunkBytes));
      pending = pending.subarray(chunkBytes);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

function corruptStream(
  src: ReadableStream<Uint8Array> | null,
  offset: number,
): ReadableStream<Uint8Array> | null {
  if (!src) return src;
  let pos = 0;
  return src.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, c) {
        if (offset >= pos && offset < pos + chunk.length) {
          const copy = chunk.slice();
          copy[offset - pos] ^= 0xff;
          c.enqueue(copy);
        } else c.enqueue(chunk);
        pos += chunk.length;
      },
    }),
  );
}
