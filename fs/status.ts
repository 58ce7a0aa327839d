/**
 * The mount's status file (`crfs-status.json` at its root): per layer, the bytes and range
 * requests fetched from the registry, chunks served from the cache, and background (prefetch and
 * read-ahead) traffic; and the disk cache's counters. Read it any time: it is regenerated on
 * every read.
 *
 * @module
 */
import type { ImageStore } from "./image_store.ts";
import { dirAttr, type FsNode } from "./node.ts";

/** Renders the status document. */
export async function statusJson(store: ImageStore): Promise<string> {
  const layers = (await store.openLayers()).map(({ digest, reader }) => ({
    digest,
    ...reader.stats,
  }));
  const total = {
    bytesFetched: 0,
    requests: 0,
    cacheHits: 0,
    chunksFetched: 0,
    backgroundBytes: 0,
  };
  for (const l of layers) {
    for (const k of Object.keys(total) as (keyof typeof total)[]) total[k] += l[k];
  }
  const disk = store.disk
    ? { dir: store.disk.dir, maxBytes: store.disk.maxBytes, ...store.disk.stats }
    : null;
  return JSON.stringify({ total, layers, diskCache: disk }, null, 2) + "\n";
}

/** The status file node: every lookup gives a fresh snapshot of the status. */
export function statusNode(store: ImageStore): FsNode {
  let n = 0;
  const snapshot = async (): Promise<FsNode> => {
    const bytes = new TextEncoder().encode(await statusJson(store));
    return {
      key: `status:${++n}`,
      volatility: "volatile",
      attr: () => ({ ...dirAttr(1), type: "reg", mode: 0o444, size: bytes.length }),
      read: (offset, length) => Promise.resolve(bytes.subarray(offset, offset + length)),
    };
  };
  return {
    key: "status",
    volatility: "volatile",
    attr: () => ({ ...dirAttr(1), type: "reg", mode: 0o444, size: 0 }),
    read: async (offset, length) => (await snapshot()).read!(offset, length),
    snapshot,
  };
}
