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

/** The status file node. */
export function statusNode(store: ImageStore): FsNode {
  let last = new Uint8Array();
  return {
    key: "status",
    volatility: "listing",
    dynamic: true,
    attr: () => ({ ...dirAttr(1), kind: "reg", mode: 0o444, size: last.length }),
    async read(offset, length) {
      if (offset === 0) last = new TextEncoder().encode(await statusJson(store));
      return last.subarray(offset, offset + length);
    },
  };
}
