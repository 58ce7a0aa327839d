/**
 * containerd's filter syntax, as its snapshots `List` call carries it: each filter is a
 * comma-separated list of conditions that must all hold, and a snapshot is listed when any
 * filter matches (no filter: all). A condition is a field path, optionally followed by an
 * operator and a value:
 *
 * ```
 * name==default/3/k1
 * kind==committed,parent=="default/2/sha256:…"
 * labels."containerd.io/snapshot.ref"==sha256:…
 * labels.app                        (the label is present)
 * name~=^default/                   (regular expression)
 * name!=x
 * ```
 *
 * Path components are identifiers or double-quoted strings; values are double-quoted strings
 * (with backslash escapes), `/`-delimited or unquoted runs of characters up to the next comma.
 *
 * @module
 */

/** One condition of a filter. */
export interface Condition {
  path: string[];
  op?: "==" | "!=" | "~=";
  value?: string;
  regexp?: RegExp;
}

/** A parsed filter: all conditions must hold. */
export type Filter = Condition[];

/** A filter string that does not parse. */
export class FilterSyntaxError extends Error {
  constructor(filter: string, why: string) {
    super(`filter ${JSON.stringify(filter)}: ${why}`);
    this.name = "FilterSyntaxError";
  }
}

/** Parses one filter string. */
export function parseFilter(text: string): Filter {
  let i = 0;
  const fail = (why: string): never => {
    throw new FilterSyntaxError(text, `${why} at offset ${i}`);
  };
  const space = () => {
    while (i < text.length && /\s/.test(text[i])) i++;
  };
  const quoted = (): string => {
    const q = text[i++];
    let out = "";
    while (i < text.length && text[i] !== q) {
      if (text[i] === "\\" && i + 1 < text.length) {
        const c = text[++i];
        out += c === "n" ? "\n" : c === "t" ? "\t" : c;
      } else out += text[i];
      i++;
    }
    if (text[i] !== q) fail("unterminated quote");
    i++;
    return out;
  };
  const conditions: Filter = [];
  while (true) {
    space();
    const path: string[] = [];
    while (true) {
      if (text[i] === '"') path.push(quoted());
      else {
        const m = /^[A-Za-z_][A-Za-z0-9_-]*/.exec(text.slice(i));
        if (!m) fail("expected a field name");
        path.push(m![0]);
        i += m![0].length;
      }
      if (text[i] !== ".") break;
      i++;
    }
    space();
    const cond: Condition = { path };
    const op = text.slice(i, i + 2);
    if (op === "==" || op === "!=" || op === "~=") {
      i += 2;
      space();
      cond.op = op;
      let value: string;
      if (text[i] === '"') value = quoted();
      else if (text[i] === "/" && op === "~=") value = quoted();
      else {
        const end = text.indexOf(",", i);
        value = text.slice(i, end < 0 ? text.length : end).trimEnd();
        i = end < 0 ? text.length : end;
        if (value === "") fail("expected a value");
      }
      cond.value = value;
      if (op === "~=") {
        try {
          cond.regexp = new RegExp(value);
        } catch (e) {
          fail(`bad regular expression: ${(e as Error).message}`);
        }
      }
    }
    conditions.push(cond);
    space();
    if (i >= text.length) break;
    if (text[i] !== ",") fail("expected ','");
    i++;
  }
  return conditions;
}

/** Parses every filter (an empty list matches everything). */
export function parseFilters(texts: string[]): Filter[] {
  return texts.filter((t) => t.trim() !== "").map(parseFilter);
}

/** Looks a field path up in a snapshot's fields; undefined when absent. */
export type FieldLookup = (path: string[]) => string | undefined;

/** True when `lookup` satisfies any of `filters` (or there are none). */
export function matchesAny(filters: Filter[], lookup: FieldLookup): boolean {
  if (filters.length === 0) return true;
  return filters.some((f) =>
    f.every((c) => {
      const v = lookup(c.path);
      switch (c.op) {
        case undefined:
          return v !== undefined;
        case "==":
          return v === c.value;
        case "!=":
          return v !== c.value;
        case "~=":
          return v !== undefined && c.regexp!.test(v);
      }
    })
  );
}
