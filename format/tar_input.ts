/**
 * The input side of crfs's layer writers: a tar stream that may arrive plain, gzip-compressed or
 * zstd-compressed (zstd:chunked included), told apart by its first bytes and decompressed.
 *
 * @module
 */
import { gunzipStream, isGzip } from "./gzip.ts";
import { isZstd, unzstdStream } from "./zstd.ts";

/**
 * The plain tar bytes of `input`, which is a tar, tar.gz or tar.zst stream (the compression is
 * recognised from the first non-empty chunk). An empty input gives no bytes.
 *
 * @example
 * ```ts
 * for await (const bytes of tarStream(Deno.stdin.readable)) console.log(bytes.length);
 * ```
 */
export async function* tarStream(input: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const it = input[Symbol.asyncIterator]();
  let first = await it.next();
  while (!first.done && first.value.length === 0) first = await it.next();
  if (first.done) return;
  const head = first.value;
  async function* all() {
    yield head;
    while (true) {
      const r = await it.next();
      if (r.done) return;
      yield r.value;
    }
  }
  if (isGzip(head)) yield* gunzipStream(all());
  else if (isZstd(head)) yield* unzstdStream(all());
  else yield* all();
}
