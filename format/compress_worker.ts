/**
 * Worker side of the compression pool: compresses batches of gzip members off the main thread.
 * Messages in: `{ id, level, members: Uint8Array[] }`; out: `{ id, members: Uint8Array[] }` or
 * `{ id, error }`.
 *
 * @module
 */
import { gzipMember } from "./gzip.ts";

interface Job {
  id: number;
  level: number;
  members: Uint8Array[];
}

const scope = self as unknown as {
  onmessage: ((e: MessageEvent<Job>) => void) | null;
  postMessage(msg: unknown, transfer?: Transferable[]): void;
};

scope.onmessage = (e: MessageEvent<Job>) => {
  const { id, level, members } = e.data;
  try {
    const out = members.map((m) => gzipMember([m], level));
    scope.postMessage({ id, members: out }, out.map((m) => m.buffer as ArrayBuffer));
  } catch (err) {
    scope.postMessage({ id, error: String(err) });
  }
};
