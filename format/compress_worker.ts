/**
 * Worker side of the compression pool: compresses a batch of gzip members (or zstd frames) off
 * the main thread.
 *
 * @module
 */
import type { ChunkCodec } from "./chunk_decode.ts";
import { gzipMember } from "./gzip.ts";
import { serveJobs } from "./worker_pool.ts";
import { zstdCompress } from "./zstd.ts";

serveJobs((job: { level: number; members: Uint8Array[]; codec?: ChunkCodec }) => {
  const out = job.members.map((m) =>
    job.codec === "zstd" ? zstdCompress(m, job.level) : gzipMember([m], job.level)
  );
  return { result: out, transfer: out.map((m) => m.buffer as ArrayBuffer) };
});
