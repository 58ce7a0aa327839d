/**
 * Metrics in the Prometheus text exposition format (version 0.0.4): a small registry of
 * counters, gauges and histograms with labels, values read from elsewhere at scrape time
 * (`counterFunc`/`gaugeFunc`, e.g. the disk cache's own counters), the metric names crfs
 * exports ({@link crfsMetrics}, all in one place), and an HTTP endpoint serving `/metrics`
 * (`--metrics-address 127.0.0.1:PORT`).
 *
 * Label values are escaped as the format requires; a metric's label names are fixed when it is
 * defined, and using others is a programming error (thrown). Series are created on first use;
 * the number of distinct label sets per metric is capped ({@link MAX_SERIES}) so that a bug
 * labelling by path cannot grow memory without bound (further sets are counted in
 * `crfs_metrics_dropped_series_total`).
 *
 * @module
 */
import type { DiskCacheStats } from "./disk_cache.ts";

/** Label values by label name. */
export type Labels = Record<string, string>;

/** The most label sets one metric keeps. */
export const MAX_SERIES = 10_000;

/** The content type of the text format. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function escapeHelp(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

/** A sample value as the format writes it (`+Inf`, `-Inf`, `NaN`, or a number). */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

function labelText(names: readonly string[], values: readonly string[], extra?: string): string {
  const parts = names.map((n, i) => `${n}="${escapeLabel(values[i])}"`);
  if (extra) parts.push(extra);
  return parts.length ? `{${parts.join(",")}}` : "";
}

abstract class Metric {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  abstract readonly type: "counter" | "gauge" | "histogram";
  protected readonly owner: MetricsRegistry;

  constructor(owner: MetricsRegistry, name: string, help: string, labelNames: readonly string[]) {
    if (!NAME_RE.test(name)) throw new Error(`bad metric name ${name}`);
    for (const l of labelNames) {
      if (!LABEL_RE.test(l) || l.startsWith("__") || l === "le") {
        throw new Error(`bad label name ${l} on ${name}`);
      }
    }
    this.owner = owner;
    this.name = name;
    this.help = help;
    this.labelNames = labelNames;
  }

  /** The label values of `labels` in definition order; throws on unknown or missing names. */
  protected key(labels: Labels | undefined): string[] {
    const l = labels ?? {};
    for (const k of Object.keys(l)) {
      if (!this.labelNames.includes(k)) throw new Error(`${this.name} has no label ${k}`);
    }
    return this.labelNames.map((n) => {
      const v = l[n];
      if (v === undefined) throw new Error(`${this.name} needs label ${n}`);
      return String(v);
    });
  }

  /** The exposition lines of this metric. */
  abstract render(): string[];

  protected header(): string[] {
    return [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`];
  }
}

abstract class Series<T> extends Metric {
  protected readonly series = new Map<string, { values: string[]; data: T }>();
  /** Series keys of frozen label sets (callers on hot paths pass the same frozen object). */
  readonly #frozenKeys = new WeakMap<Labels, string>();

  protected get(labels: Labels | undefined, make: () => T): T | undefined {
    let k = labels && this.#frozenKeys.get(labels);
    let values: string[] | undefined;
    if (k === undefined) {
      values = this.key(labels);
      k = JSON.stringify(values);
      if (labels && Object.isFrozen(labels)) this.#frozenKeys.set(labels, k);
    }
    let s = this.series.get(k);
    if (!s) {
      if (this.series.size >= MAX_SERIES) {
        this.owner.droppedSeries++;
        return undefined;
      }
      s = { values: values ?? this.key(labels), data: make() };
      this.series.set(k, s);
    }
    return s.data;
  }
}

/** A series of plain numbers per label set: what {@link Counter} and {@link Gauge} share. */
abstract class ValueSeries extends Series<{ v: number }> {
  /** Adds `n` to the series of `labels` (no-op once the series cap is reached). */
  protected add(labels: Labels | undefined, n: number): void {
    const s = this.get(labels, () => ({ v: 0 }));
    if (s) s.v += n;
  }

  /** The current value of a series (0 when unused). */
  value(labels?: Labels): number {
    return this.series.get(JSON.stringify(this.key(labels)))?.data.v ?? 0;
  }

  render(): string[] {
    const out = this.header();
    for (const { values, data } of this.series.values()) {
      out.push(`${this.name}${labelText(this.labelNames, values)} ${formatValue(data.v)}`);
    }
    return out;
  }
}

/** A monotonically increasing count. Names end in `_total`. */
export class Counter extends ValueSeries {
  readonly type = "counter" as const;

  /** Adds `n` (default 1, must be ≥ 0) to the series of `labels`. */
  inc(labels?: Labels, n = 1): void {
    if (!(n >= 0)) throw new Error(`${this.name}: a counter only goes up (got ${n})`);
    this.add(labels, n);
  }
}

/** A value that goes up and down. */
export class Gauge extends ValueSeries {
  readonly type = "gauge" as const;

  /** Sets the series of `labels` to `v`. */
  set(labels: Labels | undefined, v: number): void {
    const s = this.get(labels, () => ({ v: 0 }));
    if (s) s.v = v;
  }

  /** Adds `n` (may be negative). */
  inc(labels?: Labels, n = 1): void {
    this.add(labels, n);
  }
}

interface HistogramData {
  counts: number[];
  sum: number;
  count: number;
}

/** Observations counted in cumulative buckets, with their sum and count. */
export class Histogram extends Series<HistogramData> {
  readonly type = "histogram" as const;
  readonly buckets: readonly number[];

  constructor(
    owner: MetricsRegistry,
    name: string,
    help: string,
    labelNames: readonly string[],
    buckets: readonly number[],
  ) {
    super(owner, name, help, labelNames);
    const b = [...buckets].sort((x, y) => x - y);
    if (b.length === 0 || b.some((x, i) => !Number.isFinite(x) || (i > 0 && x === b[i - 1]))) {
      throw new Error(`${name}: buckets must be distinct finite numbers`);
    }
    this.buckets = b;
  }

  /** Records one observation `v` in the series of `labels`. */
  observe(labels: Labels | undefined, v: number): void {
    const s = this.get(labels, () => ({ counts: this.buckets.map(() => 0), sum: 0, count: 0 }));
    if (!s) return;
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]) s.counts[i]++;
    s.sum += v;
    s.count++;
  }

  /** Starts a timer; calling the result observes the seconds elapsed. */
  startTimer(labels?: Labels): () => number {
    const t0 = performance.now();
    return () => {
      const s = (performance.now() - t0) / 1000;
      this.observe(labels, s);
      return s;
    };
  }

  render(): string[] {
    const out = this.header();
    for (const { values, data } of this.series.values()) {
      for (let i = 0; i < this.buckets.length; i++) {
        const le = `le="${formatValue(this.buckets[i])}"`;
        out.push(`${this.name}_bucket${labelText(this.labelNames, values, le)} ${data.counts[i]}`);
      }
      out.push(
        `${this.name}_bucket${labelText(this.labelNames, values, 'le="+Inf"')} ${data.count}`,
      );
      out.push(`${this.name}_sum${labelText(this.labelNames, values)} ${formatValue(data.sum)}`);
      out.push(`${this.name}_count${labelText(this.labelNames, values)} ${data.count}`);
    }
    return out;
  }
}

/** What a scrape-time metric function returns: one value, or values per label set. */
export type SampledValue = number | Array<[Labels, number]>;

class FuncMetric extends Metric {
  readonly type: "counter" | "gauge";
  readonly #read: () => SampledValue;

  constructor(
    owner: MetricsRegistry,
    type: "counter" | "gauge",
    name: string,
    help: string,
    labelNames: readonly string[],
    read: () => SampledValue,
  ) {
    super(owner, name, help, labelNames);
    this.type = type;
    this.#read = read;
  }

  render(): string[] {
    const out = this.header();
    let v: SampledValue;
    try {
      v = this.#read();
    } catch {
      return out; // a source that fails to read shows no sample this scrape
    }
    if (typeof v === "number") {
      if (this.labelNames.length === 0) out.push(`${this.name} ${formatValue(v)}`);
      return out;
    }
    for (const [labels, value] of v) {
      out.push(`${this.name}${labelText(this.labelNames, this.key(labels))} ${formatValue(value)}`);
    }
    return out;
  }
}

/**
 * A set of metrics rendered together.
 *
 * @example
 * ```ts
 * const reg = new MetricsRegistry();
 * const reads = reg.counter("app_reads_total", "Reads.", ["kind"]);
 * reads.inc({ kind: "file" });
 * console.log(reg.render());
 * ```
 */
export class MetricsRegistry {
  readonly #metrics = new Map<string, Metric>();
  /** Label sets refused because a metric had {@link MAX_SERIES} already. */
  droppedSeries = 0;

  #add<M extends Metric>(m: M): M {
    if (this.#metrics.has(m.name)) throw new Error(`metric ${m.name} defined twice`);
    this.#metrics.set(m.name, m);
    return m;
  }

  /** Defines a counter (`name` should end in `_total`). */
  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    if (!name.endsWith("_total")) throw new Error(`counter ${name} should end in _total`);
    return this.#add(new Counter(this, name, help, labelNames));
  }

  /** Defines a gauge. */
  gauge(name: string, help: string, labelNames: readonly string[] = []): Gauge {
    return this.#add(new Gauge(this, name, help, labelNames));
  }

  /** Defines a histogram with upper bucket bounds `buckets` (`+Inf` is implied). */
  histogram(
    name: string,
    help: string,
    buckets: readonly number[],
    labelNames: readonly string[] = [],
  ): Histogram {
    return this.#add(new Histogram(this, name, help, labelNames, buckets));
  }

  /** Defines a counter whose value is read from `read` at each scrape. */
  counterFunc(
    name: string,
    help: string,
    read: () => SampledValue,
    labelNames: readonly string[] = [],
  ): void {
    if (!name.endsWith("_total")) throw new Error(`counter ${name} should end in _total`);
    this.#add(new FuncMetric(this, "counter", name, help, labelNames, read));
  }

  /** Defines a gauge whose value is read from `read` at each scrape. */
  gaugeFunc(
    name: string,
    help: string,
    read: () => SampledValue,
    labelNames: readonly string[] = [],
  ): void {
    this.#add(new FuncMetric(this, "gauge", name, help, labelNames, read));
  }

  /** Whether a metric of that name is defined. */
  has(name: string): boolean {
    return this.#metrics.has(name);
  }

  /** The whole registry in the text format (ends with a newline). */
  render(): string {
    const lines: string[] = [];
    for (const m of this.#metrics.values()) lines.push(...m.render());
    lines.push(
      "# HELP crfs_metrics_dropped_series_total Label sets not recorded because a metric had too many.",
      "# TYPE crfs_metrics_dropped_series_total counter",
      `crfs_metrics_dropped_series_total ${this.droppedSeries}`,
    );
    return lines.join("\n") + "\n";
  }
}

/** Latency buckets in seconds, from 50 µs (a cached FUSE read) to 30 s (a slow registry). */
export const LATENCY_BUCKETS = [
  0.00005,
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
];

/** The metrics crfs exports, by what they count. */
export interface CrfsMetrics {
  /** The registry they live in. */
  registry: MetricsRegistry;
  /** `crfs_registry_requests_total{host,kind,status}`: HTTP requests to registries. */
  registryRequests: Counter;
  /** `crfs_registry_request_duration_seconds{host,kind}`: until the response headers. */
  registryRequestSeconds: Histogram;
  /** `crfs_registry_bytes_fetched_total{host}`: body bytes received from registries. */
  bytesFetched: Counter;
  /** `crfs_registry_retries_total{host}`: retried attempts. */
  registryRetries: Counter;
  /** `crfs_token_requests_total{host}`: bearer tokens fetched (renewals included). */
  tokenRequests: Counter;
  /** `crfs_fuse_operations_total{op}`: FUSE requests served, by operation. */
  fuseOperations: Counter;
  /** `crfs_fuse_operation_duration_seconds{op}`: FUSE request latency. */
  fuseSeconds: Histogram;
  /** `crfs_fuse_errors_total{op,errno}`: FUSE replies with an error (ENOENT included). */
  fuseErrors: Counter;
  /** `crfs_fuse_read_bytes_total`: bytes returned to FUSE reads. */
  fuseReadBytes: Counter;
  /** `crfs_errors_total{kind}`: failures by kind (registry error codes, EIO, cache writes). */
  errors: Counter;
  /** `crfs_layers_open`: layers whose TOC is open. */
  layersOpen: Gauge;
  /** `crfs_up_since_seconds`: Unix time the process started serving. */
  upSince: Gauge;
}

/** Disk cache counters as `fs/disk_cache.ts` keeps them (`DiskCache.stats`). */
export type CacheStatsLike = DiskCacheStats;

/**
 * Defines crfs's metrics in a registry (a new one by default). `cache` (the disk cache's stats
 * object, read at each scrape) adds `crfs_cache_hits_total`, `crfs_cache_misses_total`,
 * `crfs_cache_writes_total`, `crfs_cache_evictions_total`, `crfs_cache_corrupt_total`,
 * `crfs_cache_bytes` and `crfs_cache_max_bytes`.
 *
 * @example
 * ```ts
 * const m = crfsMetrics({ cache: () => disk.stats, cacheMaxBytes: disk.maxBytes });
 * m.fuseOperations.inc({ op: "read" });
 * const server = await serveMetrics("127.0.0.1:9184", m.registry);
 * ```
 */
export function crfsMetrics(
  options: {
    registry?: MetricsRegistry;
    cache?: () => CacheStatsLike | undefined;
    cacheMaxBytes?: number;
  } = {},
): CrfsMetrics {
  const r = options.registry ?? new MetricsRegistry();
  const m: CrfsMetrics = {
    registry: r,
    registryRequests: r.counter(
      "crfs_registry_requests_total",
      "HTTP requests to registries, by host, kind (manifest, blob, token, tags, catalog, other) and status.",
      ["host", "kind", "status"],
    ),
    registryRequestSeconds: r.histogram(
      "crfs_registry_request_duration_seconds",
      "Seconds from sending a registry request to its response headers.",
      LATENCY_BUCKETS,
      ["host", "kind"],
    ),
    bytesFetched: r.counter(
      "crfs_registry_bytes_fetched_total",
      "Response body bytes received from registries.",
      ["host"],
    ),
    registryRetries: r.counter(
      "crfs_registry_retries_total",
      "Registry request attempts retried after a transient failure.",
      ["host"],
    ),
    tokenRequests: r.counter(
      "crfs_token_requests_total",
      "Bearer tokens requested from token servers, renewals included.",
      ["host"],
    ),
    fuseOperations: r.counter(
      "crfs_fuse_operations_total",
      "FUSE requests served, by operation.",
      ["op"],
    ),
    fuseSeconds: r.histogram(
      "crfs_fuse_operation_duration_seconds",
      "Seconds to answer a FUSE request, by operation.",
      LATENCY_BUCKETS,
      ["op"],
    ),
    fuseErrors: r.counter(
      "crfs_fuse_errors_total",
      "FUSE replies with an error, by operation and errno name.",
      ["op", "errno"],
    ),
    fuseReadBytes: r.counter("crfs_fuse_read_bytes_total", "Bytes returned to FUSE reads."),
    errors: r.counter("crfs_errors_total", "Failures, by kind.", ["kind"]),
    layersOpen: r.gauge("crfs_layers_open", "Layers whose table of contents is open."),
    upSince: r.gauge("crfs_up_since_seconds", "Unix time at which this crfs started serving."),
  };
  m.upSince.set(undefined, Math.floor(Date.now() / 1000));
  const cache = options.cache;
  if (cache) {
    const stat = (k: keyof CacheStatsLike) => () => cache()?.[k] ?? 0;
    r.counterFunc("crfs_cache_hits_total", "Reads served from the disk cache.", stat("hits"));
    r.counterFunc(
      "crfs_cache_misses_total",
      "Reads the disk cache could not serve.",
      stat("misses"),
    );
    r.counterFunc("crfs_cache_writes_total", "Files written to the disk cache.", stat("writes"));
    r.counterFunc(
      "crfs_cache_evictions_total",
      "Files evicted from the disk cache to stay within its budget.",
      stat("evictions"),
    );
    r.counterFunc(
      "crfs_cache_corrupt_total",
      "Cached entries dropped because their bytes failed a check.",
      stat("corrupt"),
    );
    r.gaugeFunc("crfs_cache_bytes", "Bytes in the disk cache.", stat("bytes"));
    if (options.cacheMaxBytes !== undefined) {
      const max = options.cacheMaxBytes;
      r.gaugeFunc("crfs_cache_max_bytes", "The disk cache's size budget in bytes.", () => max);
    }
  }
  return m;
}

/** Parses `--metrics-address HOST:PORT` (`[::1]:PORT` for IPv6); throws a one-line error. */
export function parseMetricsAddress(text: string): { hostname: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\[\]]+):(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[2]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) {
    throw new Error(
      `--metrics-address takes HOST:PORT (e.g. 127.0.0.1:9184), not ${JSON.stringify(text)}`,
    );
  }
  return { hostname: m[1].replace(/^\[|\]$/g, ""), port };
}

/** A running metrics endpoint. */
export interface MetricsServer {
  /** Where it listens (the real port when 0 was asked for). */
  hostname: string;
  port: number;
  /** `http://HOST:PORT/metrics`. */
  url: string;
  /** Stops listening and waits for open requests. */
  close(): Promise<void>;
}

/**
 * Serves `registry` at `http://ADDRESS/metrics` (and `/` redirects there; anything else is 404).
 * Throws a one-line error when the address is bad or taken.
 */
export async function serveMetrics(
  address: string,
  registry: MetricsRegistry,
): Promise<MetricsServer> {
  const { hostname, port } = parseMetricsAddress(address);
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({ hostname, port, onListen() {} }, (req) => {
      const path = new URL(req.url).pathname;
      if (req.method !== "GET" && req.method !== "HEAD") {
        return new Response("method not allowed\n", {
          status: 405,
          headers: { allow: "GET, HEAD" },
        });
      }
      if (path === "/") return Response.redirect(new URL("/metrics", req.url), 302);
      if (path !== "/metrics") return new Response("not found; try /metrics\n", { status: 404 });
      return new Response(req.method === "HEAD" ? null : registry.render(), {
        headers: { "content-type": METRICS_CONTENT_TYPE, "cache-control": "no-store" },
      });
    });
  } catch (e) {
    throw new Error(`--metrics-address ${address}: ${(e as Error).message}`);
  }
  await Promise.resolve();
  const addr = server.addr;
  const shownHost = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return {
    hostname: addr.hostname,
    port: addr.port,
    url: `http://${shownHost}:${addr.port}/metrics`,
    close: () => server.shutdown(),
  };
}
