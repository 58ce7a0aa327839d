/**
 * Worker side of the decode pool: decompresses and checks the chunks of one fetched range.
 * Answers, per chunk, its bytes or the reason it failed.
 *
 * @module
 */
import { type ChunkSpec, decodeChunk, type MemberMemo } from "./chunk_decode.ts";
import { serveJobs } from "./worker_pool.ts";

serveJobs(async (job: { bytes: Uint8Array; chunks: ChunkSpec[]; verify: boolean }) => {
  const out: (Uint8Array | string)[] = [];
  const memo: MemberMemo = new Map();
  for (const c of job.chunks) {
    try {
      out.push(await decodeChunk(job.bytes, c, job.verify, memo));
    } catch (e) {
      out.push((e as Error).message);
    }
  }
  const transfer = out.filter((x): x is Uint8Array => typeof x !== "string").map((x) =>
    x.buffer as ArrayBuffer
  );
  return { result: out, transfer };
});
