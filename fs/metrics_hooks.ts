/**
 * Feeding crfs's metrics (metrics.ts) without touching the code being measured: a `fetch`
 * wrapper that counts registry requests, their latency and the body bytes received (hand it to
 * the drivers as their `fetch`), and a wrapper of a FUSE file system's operations that counts
 * them, times them and counts their errors by errno (hand it to `mount()` instead of the file
 * system itself).
 *
 * Request kinds come from the URL: `ping` (`/v2/`), `manifest`, `blob`, `upload`, `tags`,
 * `catalog`, `token` (a token realm: any non-`/v2/` URL with a `scope` or `service` parameter, or
 * a POST form), `other`.
 *
 * @module
 */
import type { CrfsMetrics } from "./metrics.ts";
import { Errno, errnoOf, FuseError, type FuseOps } from "./fuse/ops.ts";

/** The kind of a registry request, by its URL and method. */
export function requestKind(url: URL, method = "GET"): string {
  const p = url.pathname;
  if (p === "/v2/" || p === "/v2") return "ping";
  if (p.startsWith("/v2/")) {
    if (p === "/v2/_catalog") return "catalog";
    if (/\/manifests\/[^/]+$/.test(p)) return "manifest";
    if (/\/blobs\/uploads(\/|$)/.test(p)) return "upload";
    if (/\/blobs\/[^/]+$/.test(p)) return "blob";
    if (/\/tags\/list$/.test(p)) return "tags";
    return "other";
  }
  if (url.searchParams.has("scope") || url.searchParams.has("service") || method === "POST") {
    return "token";
  }
  return "other";
}

/**
 * `inner` with every request counted in `metrics`: `crfs_registry_requests_total`
 * (`status` is the HTTP status, or `error` when no response came), the latency to the headers,
 * body bytes in `crfs_registry_bytes_fetched_total` as they are read, token requests, and
 * failures in `crfs_errors_total{kind="connection"}`.
 *
 * @example
 * ```ts
 * const m = crfsMetrics();
 * const drivers = defaultDrivers({ fetch: instrumentFetch(tls.fetch, m) });
 * ```
 */
export function instrumentFetch(inner: typeof fetch, metrics: CrfsMetrics): typeof fetch {
  return async (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const method = (init?.method ?? (input instanceof Request ? input.method : "GET"))
      .toUpperCase();
    const host = url.host;
    const kind = requestKind(url, method);
    const stop = metrics.registryRequestSeconds.startTimer({ host, kind });
    let res: Response;
    try {
      res = await inner(input, init);
    } catch (e) {
      stop();
      metrics.registryRequests.inc({ host, kind, status: "error" });
      if (!(e instanceof DOMException)) metrics.errors.inc({ kind: "connection" });
      throw e;
    }
    stop();
    metrics.registryRequests.inc({ host, kind, status: String(res.status) });
    if (kind === "token") metrics.tokenRequests.inc({ host });
    if (!res.body) return res;
    const counted = res.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          metrics.bytesFetched.inc({ host }, chunk.byteLength);
          controller.enqueue(chunk);
        },
      }),
    );
    return new Response(counted, {
      status: res.status,
      statusText: res.statusText,
      headers: res.headers,
    });
  };
}

const EIO_LABELS = Object.freeze({ kind: "EIO" });
const ERRNO_NAMES = new Map<number, string>(
  Object.entries(Errno).map(([name, n]) => [n as number, name]),
);

/**
 * `ops` with every operation counted and timed in `metrics` (`crfs_fuse_operations_total`,
 * `crfs_fuse_operation_duration_seconds`), failures (thrown, rejected, or a `FuseError` answered
 * as the result) counted by errno name in `crfs_fuse_errors_total`, EIO also in
 * `crfs_errors_total{kind="EIO"}`, and the bytes of successful reads in
 * `crfs_fuse_read_bytes_total`. Methods keep their `this`; synchronous answers stay synchronous.
 */
export function instrumentFuseOps<T extends FuseOps>(ops: T, metrics: CrfsMetrics): T {
  // One wrapper per method (made on first use), with its label set: a request costs no
  // allocation here beyond the timer.
  const wrappers = new Map<string, { of: unknown; wrapper: unknown }>();
  const wrap = (op: string, value: (...args: unknown[]) => unknown, target: T) => {
    // Frozen label sets: the registry finds their series without building keys.
    const labels = Object.freeze({ op });
    const errorLabels = new Map<number, Readonly<{ op: string; errno: string }>>();
    const countError = (errno: number) => {
      let l = errorLabels.get(errno);
      if (!l) {
        l = Object.freeze({ op, errno: ERRNO_NAMES.get(errno) ?? String(errno) });
        errorLabels.set(errno, l);
      }
      metrics.fuseErrors.inc(l);
      if (errno === Errno.EIO) metrics.errors.inc(EIO_LABELS);
    };
    const done = (t0: number, v: unknown) => {
      metrics.fuseSeconds.observe(labels, (performance.now() - t0) / 1000);
      if (v instanceof FuseError) countError(errnoOf(v));
      else if (op === "read" && v instanceof Uint8Array) {
        metrics.fuseReadBytes.inc(undefined, v.length);
      }
      return v;
    };
    const failed = (t0: number, err: unknown): never => {
      metrics.fuseSeconds.observe(labels, (performance.now() - t0) / 1000);
      countError(errnoOf(err));
      throw err;
    };
    return function (this: unknown, ...args: unknown[]) {
      const t0 = performance.now();
      let result: unknown;
      metrics.fuseOperations.inc(labels);
      try {
        result = value.apply(target, args);
      } catch (err) {
        failed(t0, err);
      }
      if (result instanceof Promise) {
        return result.then((v) => done(t0, v), (err) => failed(t0, err));
      }
      return done(t0, result);
    };
  };
  return new Proxy(ops, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (typeof value !== "function" || typeof prop !== "string") return value;
      const had = wrappers.get(prop);
      if (had?.of === value) return had.wrapper;
      const wrapper = wrap(prop, value as (...args: unknown[]) => unknown, target);
      wrappers.set(prop, { of: value, wrapper });
      return wrapper;
    },
  });
}
