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
  const buffers = out.filter((x): x is Uint8Array => typeof x !== "string").map((x) =>
    x.buffer as ArrayBuffer
  );
  const transfer = [...new Set(buffers)];
  // Free the fetched bytes now rather than at this worker's next collection: V8 counts buffers
  // that arrive by transfer late, and a worker decoding a big read held a hundred MB of them.
  const input = job.bytes.buffer as ArrayBuffer;
  if (!transfer.includes(input)) input.transfer(0);
  return { result: out, transfer };
});
