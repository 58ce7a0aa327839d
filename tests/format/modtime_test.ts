/**
 * TOC times: the fast path for `YYYY-MM-DDTHH:MM:SSZ` gives what the general RFC 3339 parser
 * (`Date.UTC`) gives, fields past their range included, and malformed times are refused.
 *
 * @module
 */
import assert from "node:assert/strict";
import { cachedModTime, formatModTime, parseModTime } from "../../format/toc.ts";

/** The general parser's answer, for comparison: Date.UTC over the fields. */
function viaDate(text: string): { sec: number; nsec: number } | null {
  const m = /^(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)[Zz]$/.exec(text);
  if (!m) return null;
  const [, y, mo, d, h, mi, s] = m;
  return { sec: Date.UTC(+y, +mo - 1, +d, +h, +mi, +s) / 1000, nsec: 0 };
}

Deno.test("plain UTC times parse as Date.UTC reads them", () => {
  let x = 12345;
  const rand = (n: number) => (x = (x * 1103515245 + 12345) % 2 ** 31) % n;
  const p2 = (n: number) => String(n).padStart(2, "0");
  for (let i = 0; i < 20_000; i++) {
    const year = i % 5 === 0 ? rand(10_000) : 1900 + rand(300);
    const text = `${String(year).padStart(4, "0")}-${p2(rand(100))}-${p2(rand(100))}${
      i % 2 ? "T" : "t"
    }${p2(rand(100))}:${p2(rand(100))}:${p2(rand(100))}${i % 3 ? "Z" : "z"}`;
    assert.deepEqual(parseModTime(text), viaDate(text), text);
  }
  for (const sec of [0, 1, 86_399, 951_782_400, 1_700_000_000, -1, -2_208_988_800]) {
    assert.deepEqual(parseModTime(formatModTime(sec, 0)), { sec, nsec: 0 }, `${sec}`);
  }
});

Deno.test("other RFC 3339 forms and malformed times", () => {
  assert.deepEqual(parseModTime("2020-01-01T00:00:00.5Z"), { sec: 1_577_836_800, nsec: 5e8 });
  assert.deepEqual(parseModTime("2020-01-01T01:00:00+01:00"), { sec: 1_577_836_800, nsec: 0 });
  assert.deepEqual(parseModTime("0050-01-01T00:00:00Z"), viaDate("0050-01-01T00:00:00Z"));
  for (
    const bad of [
      "",
      "2020-1-01T00:00:00Z",
      "2020-01-01 00:00:00Z",
      "2020-01-01T00:00:00",
      "2020-01-01T00:00:0aZ",
      "\uff12020-01-01T00:00:00Z",
      "2020-01-01T00:00:00Zx",
      "yesterday",
    ]
  ) {
    assert.equal(parseModTime(bad), null, JSON.stringify(bad));
    assert.equal(cachedModTime(bad), null, JSON.stringify(bad));
  }
  // The memo of the last answer gives the answer of its own text only.
  assert.deepEqual(cachedModTime("2020-01-01T00:00:00Z"), { sec: 1_577_836_800, nsec: 0 });
  assert.deepEqual(cachedModTime("2020-01-01T00:00:01Z"), { sec: 1_577_836_801, nsec: 0 });
  assert.deepEqual(cachedModTime("2020-01-01T00:00:01Z"), { sec: 1_577_836_801, nsec: 0 });
});
