/**
 * Worker side of the decode pool: decompresses and checks the chunks of one fetched range.
 * Answers, per chunk, its bytes or the reason it failed, and hands the fetched bytes' buffer back
 * for the pool's next job.
 *
 * @module
 */
import { type ChunkSpec, decodeChunk, type MemberMemo } from "./chunk_decode.ts";
import type { DecodeAnswer, DecodeJob } from "./decode_pool.ts";
import { serveJobs } from "./worker_pool.ts";

serveJobs(async (job: DecodeJob) => {
  const out: (Uint8Array | string)[] = [];
  const memo: MemberMemo = new Map();
  for (const c of job.chunks as ChunkSpec[]) {
    try {
      out.push(await decodeChunk(job.bytes, c, job.verify, memo));
    } catch (e) {
      out.push((e as Error).message);
    }
  }
  const buffers = out.filter((x): x is Uint8Array => typeof x !== "string").map((x) =>
    x.buffer as ArrayBuffer
  );
  const transfer = [...new Set(buffers)];
  // The fetched bytes' buffer goes back for the pool's next job (and so is not left for this
  // worker to collect: V8 counts buffers that arrive by transfer late, and a worker decoding a
  // big read held a hundred MB of them).
  const input = job.bytes.buffer as ArrayBuffer;
  const answer: DecodeAnswer = { chunks: out };
  if (!transfer.includes(input)) {
    answer.input = input;
    transfer.push(input);
  }
  return { result: answer, transfer };
});
