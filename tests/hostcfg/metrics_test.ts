/**
 * fs/metrics.ts: the text format (checked line by line against the exposition grammar, escaping,
 * cumulative histogram buckets), crfs's metric set with disk cache stats read at scrape time,
 * and a real scrape of the HTTP endpoint.
 */
import assert from "node:assert/strict";
import {
  crfsMetrics,
  METRICS_CONTENT_TYPE,
  MetricsRegistry,
  parseMetricsAddress,
  serveMetrics,
} from "../../fs/metrics.ts";

const NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*";
const LABELS =
  `\\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\[\\\\"n])*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\[\\\\"n])*")*)?\\}`;
const VALUE = "(?:[+-]?Inf|NaN|[+-]?(?:\\d+\\.?\\d*|\\.\\d+)(?:[eE][+-]?\\d+)?)";
const SAMPLE = new RegExp(`^(${NAME})(${LABELS})? (${VALUE})$`);
const HELP = new RegExp(`^# HELP (${NAME}) (?:[^\\\\\\n]|\\\\[\\\\n])*$`);
const TYPE = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`);

/** Checks `text` against the exposition format; returns samples as `name{labels}` → value. */
function checkFormat(text: string): Map<string, number> {
  assert.ok(text.endsWith("\n"), "ends with a newline");
  const samples = new Map<string, number>();
  const types = new Map<string, string>();
  const helped = new Set<string>();
  for (const line of text.slice(0, -1).split("\n")) {
    let m: RegExpExecArray | null;
    if ((m = HELP.exec(line))) {
      assert.ok(!helped.has(m[1]), `one HELP per metric: ${m[1]}`);
      helped.add(m[1]);
    } else if ((m = TYPE.exec(line))) {
      assert.ok(!types.has(m[1]), `one TYPE per metric: ${m[1]}`);
      types.set(m[1], m[2]);
    } else if ((m = SAMPLE.exec(line))) {
      const base = m[1].replace(/_(bucket|sum|count)$/, "");
      const family = types.has(m[1]) ? m[1] : base;
      assert.ok(types.has(family), `sample ${m[1]} has a TYPE line before it`);
      if (types.get(family) === "counter") assert.ok(family.endsWith("_total"), family);
      const key = m[1] + (m[2] ?? "");
      assert.ok(!samples.has(key), `duplicate sample ${key}`);
      samples.set(key, m[3] === "+Inf" ? Infinity : Number(m[3]));
    } else {
      assert.fail(`not a valid exposition line: ${JSON.stringify(line)}`);
    }
  }
  return samples;
}

Deno.test("metrics: text format, escaping, labels, histogram buckets", () => {
  const reg = new MetricsRegistry();
  const c = reg.counter("t_requests_total", 'Requests with "quotes", a \\ and\na newline.', [
    "host",
    "status",
  ]);
  c.inc({ host: 'we"ird\\host\nname', status: "200" });
  c.inc({ host: "a", status: "200" }, 5);
  const g = reg.gauge("t_open", "Open things.");
  g.set(undefined, 3);
  g.inc(undefined, -1);
  const h = reg.histogram("t_seconds", "Latency.", [0.1, 1, 0.01], ["op"]);
  for (const v of [0.005, 0.05, 0.5, 5]) h.observe({ op: "read" }, v);
  reg.gaugeFunc("t_func", "From elsewhere.", () => [[{ k: "x" }, 7], [{ k: "y" }, 8]], ["k"]);
  const s = checkFormat(reg.render());
  assert.equal(s.get('t_requests_total{host="we\\"ird\\\\host\\nname",status="200"}'), 1);
  assert.equal(s.get('t_requests_total{host="a",status="200"}'), 5);
  assert.equal(s.get("t_open"), 2);
  assert.equal(s.get('t_seconds_bucket{op="read",le="0.01"}'), 1);
  assert.equal(s.get('t_seconds_bucket{op="read",le="0.1"}'), 2);
  assert.equal(s.get('t_seconds_bucket{op="read",le="1"}'), 3);
  assert.equal(s.get('t_seconds_bucket{op="read",le="+Inf"}'), 4);
  assert.equal(s.get('t_seconds_count{op="read"}'), 4);
  assert.ok(Math.abs(s.get('t_seconds_sum{op="read"}')! - 5.555) < 1e-9);
  assert.equal(s.get('t_func{k="y"}'), 8);
  assert.throws(() => c.inc({ host: "a" }), /needs label status/);
  assert.throws(() => c.inc({ host: "a", status: "1", path: "/x" }), /has no label path/);
  assert.throws(() => c.inc({ host: "a", status: "1" }, -1), /only goes up/);
  assert.throws(() => reg.counter("t_bad", "x"), /should end in _total/);
  assert.throws(() => reg.gauge("t_open", "again"), /defined twice/);
  assert.throws(() => reg.gauge("t-dash", "x"), /bad metric name/);
});

Deno.test("metrics: the number of label sets per metric is bounded", () => {
  const reg = new MetricsRegistry();
  const c = reg.counter("t_paths_total", "x", ["path"]);
  for (let i = 0; i < 10_050; i++) c.inc({ path: `/p${i}` });
  const s = checkFormat(reg.render());
  assert.equal([...s.keys()].filter((k) => k.startsWith("t_paths_total{")).length, 10_000);
  assert.equal(s.get("crfs_metrics_dropped_series_total"), 50);
});

Deno.test("metrics: crfs's metrics over a real HTTP scrape", async () => {
  const stats = { hits: 4, misses: 2, writes: 2, evictions: 0, corrupt: 1, bytes: 12345 };
  const m = crfsMetrics({ cache: () => stats, cacheMaxBytes: 1 << 30 });
  m.registryRequests.inc({ host: "127.0.0.1:5000", kind: "blob", status: "206" });
  m.bytesFetched.inc({ host: "127.0.0.1:5000" }, 65536);
  m.fuseOperations.inc({ op: "read" }, 3);
  m.fuseSeconds.observe({ op: "read" }, 0.0003);
  m.fuseErrors.inc({ op: "lookup", errno: "ENOENT" });
  m.errors.inc({ kind: "UNAUTHORIZED" });
  const server = await serveMetrics("127.0.0.1:0", m.registry);
  try {
    assert.ok(server.port > 0);
    const res = await fetch(server.url);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), METRICS_CONTENT_TYPE);
    let s = checkFormat(await res.text());
    assert.equal(
      s.get('crfs_registry_requests_total{host="127.0.0.1:5000",kind="blob",status="206"}'),
      1,
    );
    assert.equal(s.get('crfs_registry_bytes_fetched_total{host="127.0.0.1:5000"}'), 65536);
    assert.equal(s.get('crfs_fuse_operations_total{op="read"}'), 3);
    assert.equal(s.get('crfs_fuse_operation_duration_seconds_bucket{op="read",le="0.0005"}'), 1);
    assert.equal(s.get('crfs_fuse_errors_total{op="lookup",errno="ENOENT"}'), 1);
    assert.equal(s.get('crfs_errors_total{kind="UNAUTHORIZED"}'), 1);
    assert.equal(s.get("crfs_cache_hits_total"), 4);
    assert.equal(s.get("crfs_cache_bytes"), 12345);
    assert.equal(s.get("crfs_cache_max_bytes"), 1 << 30);
    assert.ok(s.get("crfs_up_since_seconds")! > 1.7e9);
    // Values are read at each scrape.
    stats.hits = 10;
    s = checkFormat(await (await fetch(server.url)).text());
    assert.equal(s.get("crfs_cache_hits_total"), 10);
    const other = await fetch(server.url.replace("/metrics", "/other"));
    assert.equal(other.status, 404);
    await other.body?.cancel();
    const root = await fetch(server.url.replace("/metrics", "/"), { redirect: "manual" });
    assert.equal(root.status, 302);
    await root.body?.cancel();
    const post = await fetch(server.url, { method: "POST" });
    assert.equal(post.status, 405);
    await post.body?.cancel();
  } finally {
    await server.close();
  }
  await assert.rejects(() => fetch(server.url), TypeError);
});

Deno.test("metrics: --metrics-address parsing and a taken port", async () => {
  assert.deepEqual(parseMetricsAddress("127.0.0.1:9184"), { hostname: "127.0.0.1", port: 9184 });
  assert.deepEqual(parseMetricsAddress("[::1]:80"), { hostname: "::1", port: 80 });
  assert.throws(() => parseMetricsAddress("9184"), /takes HOST:PORT/);
  assert.throws(() => parseMetricsAddress("127.0.0.1:99999"), /takes HOST:PORT/);
  const first = await serveMetrics("127.0.0.1:0", new MetricsRegistry());
  try {
    await assert.rejects(
      () => serveMetrics(`127.0.0.1:${first.port}`, new MetricsRegistry()),
      /--metrics-address 127\.0\.0\.1:\d+: .*(in use|Address)/i,
    );
  } finally {
    await first.close();
  }
});
