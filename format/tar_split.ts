/**
 * tar-split (github.com/vbatts/tar-split), the stream containers/storage stores beside a
 * zstd:chunked layer to rebuild its exact tar: newline-separated JSON entries, `type` 2
 * ("segment": raw tar bytes between file contents, base64 in `payload`) and `type` 1 ("file":
 * `name` — or `name_raw`, base64, when not UTF-8 — `size`, and the CRC-64/ISO of the content,
 * big-endian, base64 in `payload`), each with its running `position`. crfs writes it; reading
 * files never needs it.
 *
 * @module
 */
import { base64 } from "./bytes.ts";
import { encodeName, hasEscapes } from "./names.ts";

const TABLE_HI = new Uint32Array(256);
const TABLE_LO = new Uint32Array(256);
for (let i = 0; i < 256; i++) {
  let hi = 0;
  let lo = i;
  for (let k = 0; k < 8; k++) {
    const odd = lo & 1;
    lo = ((lo >>> 1) | ((hi & 1) << 31)) >>> 0;
    hi >>>= 1;
    if (odd) hi = (hi ^ 0xd8000000) >>> 0; // the reflected ISO polynomial, 0xD800000000000000
  }
  TABLE_HI[i] = hi;
  TABLE_LO[i] = lo;
}

/** A running CRC-64/ISO (as Go's `crc64.MakeTable(crc64.ISO)`). */
export class Crc64 {
  #hi = 0xffffffff;
  #lo = 0xffffffff;
  /** Adds bytes. */
  update(b: Uint8Array): this {
    let hi = this.#hi;
    let lo = this.#lo;
    for (let i = 0; i < b.length; i++) {
      const t = (lo ^ b[i]) & 0xff;
      lo = (((lo >>> 8) | (hi << 24)) ^ TABLE_LO[t]) >>> 0;
      hi = ((hi >>> 8) ^ TABLE_HI[t]) >>> 0;
    }
    this.#hi = hi;
    this.#lo = lo;
    return this;
  }
  /** The checksum as 8 big-endian bytes. */
  digest(): Uint8Array {
    const out = new Uint8Array(8);
    const dv = new DataView(out.buffer);
    dv.setUint32(0, ~this.#hi >>> 0);
    dv.setUint32(4, ~this.#lo >>> 0);
    return out;
  }
}

/** Builds a tar-split stream entry by entry, in tar order. */
export class TarSplitWriter {
  #lines: string[] = [];
  #position = 0;

  /** Raw tar bytes (headers, padding, the end marker); empty segments are left out. */
  segment(raw: Uint8Array): void {
    if (raw.length === 0) return;
    this.#push(`{"type":2,"payload":"${base64(raw)}","position":${this.#position}}`);
  }

  /**
   * A file entry: its tar name (surrogate-escaped, see names.ts), content size, and the CRC-64
   * of its content (absent for empty content).
   */
  file(name: string, size: number, crc?: Uint8Array): void {
    const n = hasEscapes(name)
      ? `"name_raw":"${base64(encodeName(name))}"`
      : `"name":${JSON.stringify(name)}`;
    const s = size > 0 ? `,"size":${size}` : "";
    const p = crc ? `"${base64(crc)}"` : "null";
    this.#push(`{"type":1,${n}${s},"payload":${p},"position":${this.#position}}`);
  }

  /** The end: what follows the tar reader's stop (always one segment, maybe empty). */
  end(trailing: Uint8Array): void {
    this.#push(`{"type":2,"payload":"${base64(trailing)}","position":${this.#position}}`);
  }

  #push(line: string): void {
    this.#lines.push(line + "\n");
    this.#position++;
  }

  /** The stream's bytes. */
  bytes(): Uint8Array {
    return new TextEncoder().encode(this.#lines.join(""));
  }
}

/** One entry of a tar-split stream, decoded. */
export interface TarSplitEntry {
  type: 1 | 2;
  /** File entries: the name (raw names decoded to surrogate-escaped form by the caller). */
  name?: string;
  nameRaw?: Uint8Array;
  size?: number;
  payload?: Uint8Array;
  position: number;
}

/**
 * Parses a tar-split stream (newline-separated JSON), checking the shape of every entry.
 * Throws on malformed input.
 */
export function parseTarSplit(text: Uint8Array): TarSplitEntry[] {
  const lines = new TextDecoder("utf-8", { fatal: true }).decode(text).split("\n");
  const out: TarSplitEntry[] = [];
  const b64 = (v: unknown, what: string) => {
    if (v === null || v === undefined) return undefined;
    if (typeof v !== "string") throw new Error(`tar-split: ${what} is not base64`);
    const bin = atob(v);
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  };
  for (const [i, line] of lines.entries()) {
    if (line === "") continue;
    const o = JSON.parse(line) as Record<string, unknown>;
    if ((o.type !== 1 && o.type !== 2) || typeof o.position !== "number") {
      throw new Error(`tar-split: entry ${i} is malformed`);
    }
    if (o.size !== undefined && (typeof o.size !== "number" || o.size < 0)) {
      throw new Error(`tar-split: entry ${i} has a bad size`);
    }
    out.push({
      type: o.type,
      name: typeof o.name === "string" ? o.name : undefined,
      nameRaw: b64(o.name_raw, "name_raw"),
      size: o.size as number | undefined,
      payload: b64(o.payload, "payload"),
      position: o.position,
    });
  }
  return out;
}
