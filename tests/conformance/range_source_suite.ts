/**
 * The range source conformance suite: every {@link RangeSource} held to the contract written in
 * format/range_source.ts — "exactly `length` bytes starting at `offset` (fewer only past the end
 * of the blob) … reject rather than return partial or wrong data". `range_sources_test.ts` calls
 * {@link rangeSourceConformance} once per implementation, and {@link hostileServerConformance}
 * once per implementation that reads over HTTP. A new source (a new driver's blob reader, a new
 * cache layer) is proven by adding one call there.
 *
 * The contract as tested:
 * - `size` is the blob's size;
 * - reads at 0, in the middle, of the last byte, of the whole blob, and straddling the end give
 *   exactly the bytes (straddling: the bytes up to the end);
 * - a read at the exact end, past the end, or of length 0 gives no bytes;
 * - a length far beyond the blob gives the rest of the blob;
 * - a negative offset or length rejects, and so does one that is not a whole number (NaN, 1.5,
 *   -Infinity) — an empty answer or another range's bytes would be wrong data;
 * - 24 overlapping reads at once each get their own exact bytes;
 * - `invalidate`, when present, resolves and reads stay exact.
 *
 * Over HTTP, {@link hostileServerConformance} serves the blob from a server that lies in one way
 * at a time (200 instead of 206 with a damaged body, short and long bodies, wrong, missing or
 * inconsistent `Content-Range`, a body cut mid-way, 5xx, 416, a whole body too short or too long): every read must then reject —
 * or, where the answer is still the truth (an honest `200` with the whole blob), give the exact
 * bytes. A correctly framed 206 with flipped bytes inside cannot be told from the truth at this
 * layer; chunk digests catch it (the blob suite's byte flips).
 *
 * @module
 */
import assert from "node:assert/strict";
import type { RangeSource } from "../../format/range_source.ts";
import { randomBytes } from "../helpers/images.ts";

/** A source under test that may hold resources (files). */
export type ClosableSource = RangeSource & { close?(): void | Promise<void> };

/** One implementation under test over known bytes. */
export interface RangeSourceCase {
  /** What the sources must read back. */
  bytes: Uint8Array;
  /** A fresh source over `bytes`; called once per clause, closed (if it can be) after it. */
  source(): ClosableSource | Promise<ClosableSource>;
  /** Releases what the case holds (servers, directories); awaited at the end. */
  close?: () => void | Promise<void>;
}

/** Deterministic bytes (xorshift), so failures name reproducible offsets. */
export const patternBytes = (n: number, seed = 7): Uint8Array<ArrayBuffer> => randomBytes(n, seed);

async function rejects(p: Promise<unknown>, what: string): Promise<Error> {
  let got: unknown;
  try {
    got = await p;
  } catch (e) {
    assert.ok(e instanceof Error, `${what}: rejected with a non-Error ${String(e)}`);
    assert.ok(e.message.length > 0, `${what}: error without a message`);
    return e;
  }
  const desc = got instanceof Uint8Array ? `${got.length} bytes` : String(got);
  assert.fail(`${what}: resolved with ${desc} instead of rejecting`);
}

async function exact(src: RangeSource, bytes: Uint8Array, offset: number, length: number) {
  const want = bytes.subarray(offset, Math.min(bytes.length, offset + length));
  const got = await src.read(offset, length);
  assert.ok(got instanceof Uint8Array, `read(${offset}, ${length}) gave no Uint8Array`);
  assert.equal(got.length, want.length, `read(${offset}, ${length}) length`);
  assert.deepEqual(got, want, `read(${offset}, ${length}) bytes`);
}

/** Options of {@link rangeSourceConformance}. */
export interface RangeSourceSuiteOptions {
  /**
   * Clauses (step titles, see {@link RANGE_SOURCE_CLAUSES}) this implementation is known to
   * break, each with where the fix goes. Such a step passes only while the clause still fails,
   * so fixing the implementation turns it red until the entry is removed.
   */
  knownViolations?: Record<string, string>;
}

/** The clause titles of {@link rangeSourceConformance}, in the order they run. */
export const RANGE_SOURCE_CLAUSES: readonly string[] = [
  "size, and exact bytes at the start, middle, last byte and whole blob",
  "straddling the end gives the bytes up to the end; at or past the end none",
  "zero-length reads give no bytes",
  "negative offsets and lengths reject",
  "offsets and lengths that are not whole numbers reject",
  "concurrent overlapping reads each get their own exact bytes",
  "invalidate (when present) resolves and reads stay exact",
];

/**
 * Registers the contract test for one {@link RangeSource} implementation (a step per clause).
 * `make` sets the case up once (bytes of its choice, ideally over 64 KiB so reads span several
 * pages); its `source()` gives a fresh source per clause.
 *
 * @example
 * ```ts
 * rangeSourceConformance("BytesSource", () => {
 *   const bytes = patternBytes(200_000);
 *   return Promise.resolve({ bytes, source: () => new BytesSource(bytes) });
 * });
 * ```
 */
export function rangeSourceConformance(
  name: string,
  make: () => Promise<RangeSourceCase>,
  options: RangeSourceSuiteOptions = {},
): void {
  type Clause = { source: RangeSource; bytes: Uint8Array };
  const clauses: [string, (c: Clause) => Promise<void>][] = [];
  const test = (what: string, fn: (c: Clause) => Promise<void>) => clauses.push([what, fn]);

  test("size, and exact bytes at the start, middle, last byte and whole blob", async (c) => {
    const { source: s, bytes: b } = c;
    assert.ok(b.length >= 2, "the case's blob has at least 2 bytes");
    assert.equal(s.size, b.length, "size");
    const page = Math.min(4096, b.length);
    await exact(s, b, 0, 1);
    await exact(s, b, 0, page);
    await exact(s, b, Math.max(0, Math.floor(b.length / 2) - 1000), Math.min(30_001, b.length));
    await exact(s, b, b.length - 1, 1);
    await exact(s, b, b.length - page, page);
    await exact(s, b, 0, b.length);
  });

  test("straddling the end gives the bytes up to the end; at or past the end none", async (c) => {
    const { source: s, bytes: b } = c;
    await exact(s, b, Math.max(0, b.length - 3), 10);
    await exact(s, b, 1, b.length + 1000);
    await exact(s, b, 0, Number.MAX_SAFE_INTEGER - 1);
    for (const [o, n] of [[b.length, 1], [b.length, 0], [b.length + 1, 5], [b.length * 4, 100]]) {
      const got = await s.read(o, n);
      assert.equal(got.length, 0, `read(${o}, ${n}) past the end gave ${got.length} bytes`);
    }
  });

  test("zero-length reads give no bytes", async (c) => {
    const { source: s, bytes: b } = c;
    for (const o of [0, 1, Math.floor(b.length / 2), b.length - 1]) {
      const got = await s.read(o, 0);
      assert.equal(got.length, 0, `read(${o}, 0) gave ${got.length} bytes`);
    }
  });

  test("negative offsets and lengths reject", async (c) => {
    const { source: s, bytes: b } = c;
    await rejects(s.read(-1, 10), "read(-1, 10)");
    await rejects(s.read(-100, 1000), "read(-100, 1000)");
    await rejects(s.read(10, -1), "read(10, -1)");
    await rejects(s.read(Math.floor(b.length / 2), -5), "read(middle, -5)");
    // The source still works afterwards.
    await exact(s, b, 1, 10);
  });

  test("offsets and lengths that are not whole numbers reject", async (c) => {
    const { source: s, bytes: b } = c;
    await rejects(s.read(NaN, 10), "read(NaN, 10)");
    await rejects(s.read(1.5, 10), "read(1.5, 10)");
    await rejects(s.read(10, 2.5), "read(10, 2.5)");
    await rejects(s.read(10, NaN), "read(10, NaN)");
    await rejects(s.read(-Infinity, 10), "read(-Infinity, 10)");
    await exact(s, b, 1, 10);
  });

  test("concurrent overlapping reads each get their own exact bytes", async (c) => {
    const { source: s, bytes: b } = c;
    const ranges: [number, number][] = [];
    for (let i = 0; i < 24; i++) {
      const o = Math.floor((b.length * ((i * 7919) % 24)) / 24) - (i % 3) * 100;
      ranges.push([Math.max(0, o), 1 + ((i * 4099) % 20_000)]);
    }
    ranges.push([b.length - 1, 1], [0, b.length]);
    const got = await Promise.all(ranges.map(([o, n]) => s.read(o, n)));
    for (const [i, [o, n]] of ranges.entries()) {
      assert.deepEqual(got[i], b.subarray(o, Math.min(b.length, o + n)), `read(${o}, ${n})`);
    }
  });

  test("invalidate (when present) resolves and reads stay exact", async (c) => {
    const { source: s, bytes: b } = c;
    await exact(s, b, 1000, 5000);
    if (s.invalidate) {
      await s.invalidate(0, b.length);
      await s.invalidate(b.length - 1, 1);
    }
    await exact(s, b, 1000, 5000);
    await exact(s, b, b.length - 2, 2);
  });

  assert.deepEqual(clauses.map(([what]) => what), RANGE_SOURCE_CLAUSES);
  const known = options.knownViolations ?? {};
  for (const k of Object.keys(known)) {
    assert.ok(RANGE_SOURCE_CLAUSES.includes(k), `${name}: no clause ${JSON.stringify(k)}`);
  }
  Deno.test(`range source conformance: ${name}`, async (t) => {
    const c = await make();
    try {
      for (const [what, fn] of clauses) {
        const fix = known[what];
        await t.step(fix ? `${what} — KNOWN VIOLATION (${fix})` : what, async () => {
          const source = await c.source();
          try {
            if (!fix) return await fn({ source, bytes: c.bytes });
            await assert.rejects(
              fn({ source, bytes: c.bytes }),
              assert.AssertionError,
              `${name} now keeps "${what}": remove it from knownViolations`,
            );
          } finally {
            await source.close?.();
          }
        });
      }
    } finally {
      await c.close?.();
    }
  });
}

/** One way a hostile blob server answers a ranged `GET`. */
export type HostileAnswer =
  | "honest-206"
  | "whole-200"
  | "whole-200-corrupt"
  | "whole-200-short"
  | "whole-200-long"
  | "short-206"
  | "long-206"
  | "shifted-206"
  | "no-content-range-206"
  | "wrong-total-206"
  | "cut-206"
  | "status-500"
  | "status-416";

/** Answers that tell the truth: the source may use them, but must return exact bytes. */
const TRUTHFUL: HostileAnswer[] = ["honest-206", "whole-200"];

const ALL_ANSWERS: HostileAnswer[] = [
  "honest-206",
  "whole-200",
  "whole-200-corrupt",
  "whole-200-short",
  "whole-200-long",
  "short-206",
  "long-206",
  "shifted-206",
  "no-content-range-206",
  "wrong-total-206",
  "cut-206",
  "status-500",
  "status-416",
];

/** A loopback server that answers every blob `GET` in one {@link HostileAnswer} way. */
export interface HostileBlobServer {
  /** `HOST:PORT`. */
  host: string;
  /** `http://HOST:PORT`. */
  url: string;
  /** How blob requests are answered now. */
  answer: HostileAnswer;
  /** Blob requests answered so far. */
  requests: number;
  stop(): Promise<void>;
}

/**
 * Starts a hostile server: `/v2/` answers 200 (a registry's ping), every other path `GET`s the
 * blob `bytes` answered the {@link HostileAnswer} way `answer` says.
 */
export function startHostileBlobServer(bytes: Uint8Array<ArrayBuffer>): HostileBlobServer {
  const size = bytes.length;
  const state: HostileBlobServer = {
    host: "",
    url: "",
    answer: "honest-206",
    requests: 0,
    stop: () => server.shutdown(),
  };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/v2/" || path === "/v2") return new Response("{}", { status: 200 });
    state.requests++;
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.get("range") ?? "");
    const start = m ? Number(m[1]) : 0;
    const end = m ? Math.min(Number(m[2]), size - 1) : size - 1;
    const slice = bytes.slice(start, end + 1);
    const partial = (body: Uint8Array<ArrayBuffer>, range: string) =>
      new Response(body, { status: 206, headers: { "content-range": range } });
    const cr = `bytes ${start}-${end}/${size}`;
    switch (state.answer) {
      case "honest-206":
        return m ? partial(slice, cr) : new Response(bytes);
      case "whole-200":
        return new Response(bytes);
      case "whole-200-corrupt": {
        const bad = bytes.slice();
        bad[Math.floor(size / 2)] ^= 0xff;
        bad[start] ^= 0x01;
        return new Response(bad);
      }
      case "whole-200-short":
        return new Response(bytes.slice(0, size - 1), {
          headers: { "content-length": String(size - 1) },
        });
      case "whole-200-long": {
        const longer = new Uint8Array(size + 1);
        longer.set(bytes);
        return new Response(longer);
      }
      case "short-206":
        return partial(slice.subarray(0, Math.max(0, slice.length - 1)), cr);
      case "long-206": {
        const longer = new Uint8Array(slice.length + 1);
        longer.set(slice);
        longer[slice.length] = 0x42;
        return partial(longer, cr);
      }
      case "shifted-206":
        return partial(bytes.slice(start + 1, end + 2), `bytes ${start + 1}-${end + 1}/${size}`);
      case "no-content-range-206":
        return new Response(slice, { status: 206 });
      case "wrong-total-206":
        return partial(slice, `bytes ${start}-${end}/${size + 1}`);
      case "cut-206": {
        const half = slice.subarray(0, Math.floor(slice.length / 2));
        const body = new ReadableStream<Uint8Array>({
          start(ctl) {
            ctl.enqueue(half);
            ctl.close();
          },
        });
        return new Response(body, {
          status: 206,
          headers: { "content-range": cr, "content-length": String(slice.length) },
        });
      }
      case "status-500":
        return new Response("boom", { status: 500 });
      case "status-416":
        return new Response(null, { status: 416, headers: { "content-range": `bytes */${size}` } });
    }
  });
  const addr = server.addr as Deno.NetAddr;
  state.host = `127.0.0.1:${addr.port}`;
  state.url = `http://${state.host}`;
  return state;
}

/**
 * Registers, for one HTTP range source, a test with a step per {@link HostileAnswer}: `make` builds a fresh
 * source reading `bytes` (with the given digest) from the hostile server at `server.url`. Lying
 * answers must make every read reject; truthful ones must give exact bytes.
 */
export function hostileServerConformance(
  name: string,
  make: (server: HostileBlobServer, bytes: Uint8Array, digest: string) => Promise<RangeSource>,
): void {
  const bytes = patternBytes(150_000, 99);
  Deno.test(`range source conformance: ${name}: hostile servers`, async (t) => {
    const digest = `sha256:${
      Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)))
        .map((x) => x.toString(16).padStart(2, "0")).join("")
    }`;
    const server = startHostileBlobServer(bytes);
    try {
      for (const answer of ALL_ANSWERS) {
        const truthful = TRUTHFUL.includes(answer);
        const title = `${answer} ${truthful ? "gives exact bytes" : "makes every read reject"}`;
        await t.step(title, async () => {
          server.answer = answer;
          const before = server.requests;
          const src = await make(server, bytes, digest) as ClosableSource;
          try {
            for (const [o, n] of [[0, 1], [70_000, 5000], [bytes.length - 1, 1], [10, 200]]) {
              const what = `${answer}: read(${o}, ${n})`;
              if (truthful) await exact(src, bytes, o, n);
              else await rejects(src.read(o, n), what);
            }
            assert.ok(server.requests > before, "the source asked the server");
          } finally {
            await src.close?.();
          }
        });
      }
    } finally {
      await server.stop();
    }
  });
}
