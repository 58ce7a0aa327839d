/**
 * A loopback HTTP server for tests that serves fixed byte blobs by path (with `Range` support,
 * like the object storage registries redirect to) and records every request's headers, so tests
 * can check what a client sent — for example that `Authorization` was dropped after a redirect
 * to another host.
 *
 * @module
 */

/** One recorded request. */
export interface RecordedRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
}

/** A running static server. */
export interface StaticServer {
  /** `HOST:PORT`. */
  host: string;
  /** `http://HOST:PORT`. */
  url: string;
  /** path → bytes served; add entries at any time. */
  files: Map<string, Uint8Array>;
  /** Requests so far. */
  requests: RecordedRequest[];
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts a static server on `hostname` (default 127.0.0.1; any 127.x.y.z works on Linux). */
export function startStaticServer(options: { hostname?: string } = {}): StaticServer {
  const hostname = options.hostname ?? "127.0.0.1";
  const files = new Map<string, Uint8Array>();
  const requests: RecordedRequest[] = [];
  const server = Deno.serve({ hostname, port: 0, onListen() {} }, (req) => {
    const url = new URL(req.url);
    requests.push({
      method: req.method,
      path: url.pathname + url.search,
      headers: Object.fromEntries(req.headers),
    });
    const bytes = files.get(url.pathname);
    if (!bytes) return new Response("not found", { status: 404 });
    const head = req.method === "HEAD";
    const range = req.headers.get("range");
    const m = range ? /^bytes=(\d*)-(\d*)$/.exec(range) : null;
    if (m) {
      let start = m[1] === "" ? bytes.length - Number(m[2]) : Number(m[1]);
      let end = m[1] === "" || m[2] === ""
        ? bytes.length - 1
        : Math.min(Number(m[2]), bytes.length - 1);
      if (start < 0) start = 0;
      if (start >= bytes.length || end < start) {
        return new Response(null, {
          status: 416,
          headers: { "content-range": `bytes */${bytes.length}` },
        });
      }
      end = Math.min(end, bytes.length - 1);
      return new Response(head ? null : bytes.slice(start, end + 1), {
        status: 206,
        headers: {
          "content-range": `bytes ${start}-${end}/${bytes.length}`,
          "content-type": "application/octet-stream",
          "content-length": String(end - start + 1),
        },
      });
    }
    return new Response(head ? null : bytes.slice(), {
      headers: {
        "content-type": "application/octet-stream",
        "content-length": String(bytes.length),
      },
    });
  });
  const port = (server.addr as Deno.NetAddr).port;
  const s: StaticServer = {
    host: `${hostname}:${port}`,
    url: `http://${hostname}:${port}`,
    files,
    requests,
    async stop() {
      await server.shutdown();
    },
    [Symbol.asyncDispose]() {
      return s.stop();
    },
  };
  return s;
}
