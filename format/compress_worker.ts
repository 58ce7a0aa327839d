/**
 * Worker side of the compression pool: compresses a batch of gzip members off the main thread.
 *
 * @module
 */
import { gzipMember } from "./gzip.ts";
import { serveJobs } from "./worker_pool.ts";

serveJobs((job: { level: number; members: Uint8Array[] }) => {
  const out = job.members.map((m) => gzipMember([m], job.level));
  return { result: out, transfer: out.map((m) => m.buffer as ArrayBuffer) };
});
