/**
 * An emulator of Google Container Registry's listing API and of the GCE metadata server, for
 * tests. Written from Google's public documentation (Container Registry "Listing images" /
 * the Docker Registry API extension behind `gcloud container images list` and `list-tags`, and
 * the Compute Engine metadata server documentation), not from any client's code:
 *
 * - `GET /v2/<path>/tags/list` answers `{name, child, tags, manifest}` where `child` lists the
 *   names one level below `<path>` and `manifest` maps each digest to `{imageSizeBytes,
 *   mediaType, tag: [...], timeCreatedMs, timeUploadedMs}`, the numbers as strings, as GCR does.
 * - `GET /computeMetadata/v1/project/project-id` needs `Metadata-Flavor: Google` and answers the
 *   project as text, with that header.
 * - Every other `/v2/…` request is passed to a real docker-registry (the backend), which holds
 *   the images.
 *
 * @module
 */
import { backendCatalog, backendManifest, backendTags, forward } from "./registry_backend.ts";

/** A running GCR emulator. */
export interface GcrEmulator {
  /** `http://127.0.0.1:PORT`: give it to the GCR driver as `gcrUrl`. */
  url: string;
  /** `127.0.0.1:PORT`; also usable as `GCE_METADATA_HOST`. */
  host: string;
  /** Paths requested, in order. */
  requests: { method: string; path: string; metadataFlavor?: string }[];
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts the emulator in front of the registry at `backend` (e.g. `reg.url`). */
export function startGcrEmulator(
  options: { backend: string; project: string; hostname?: string },
): GcrEmulator {
  const hostname = options.hostname ?? "127.0.0.1";
  const requests: GcrEmulator["requests"] = [];
  let self = "";

  async function list(path: string): Promise<Response> {
    const repos = await backendCatalog(options.backend);
    const child = new Set<string>();
    for (const r of repos) {
      if (r.startsWith(`${path}/`)) child.add(r.slice(path.length + 1).split("/")[0]);
    }
    const isRepo = repos.includes(path);
    if (!isRepo && child.size === 0) {
      return Response.json({
        errors: [{ code: "NAME_UNKNOWN", message: `Repository "${path}" not found` }],
      }, { status: 404 });
    }
    const manifest: Record<string, Record<string, unknown>> = {};
    const tags = isRepo ? await backendTags(options.backend, path) : [];
    for (const tag of tags) {
      const m = await backendManifest(options.backend, path, tag);
      const entry = manifest[m.digest] ??= {
        imageSizeBytes: String(sizeOf(m.json)),
        layerId: "",
        mediaType: m.mediaType,
        tag: [],
        timeCreatedMs: "1700000000000",
        timeUploadedMs: "1700000001000",
      };
      (entry.tag as string[]).push(tag);
    }
    return Response.json({ child: [...child].sort(), manifest, name: path, tags });
  }

  const server = Deno.serve({ hostname, port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    requests.push({
      method: req.method,
      path: url.pathname + url.search,
      ...(req.headers.get("metadata-flavor")
        ? { metadataFlavor: req.headers.get("metadata-flavor")! }
        : {}),
    });
    if (url.pathname === "/computeMetadata/v1/project/project-id") {
      if (req.headers.get("metadata-flavor") !== "Google") {
        return new Response("Missing Metadata-Flavor:Google header.", { status: 403 });
      }
      return new Response(options.project, {
        headers: { "metadata-flavor": "Google", "content-type": "application/text" },
      });
    }
    const m = /^\/v2\/(.+)\/tags\/list$/.exec(url.pathname);
    if (m && req.method === "GET") return await list(m[1]);
    if (url.pathname.startsWith("/v2/")) return await forward(req, options.backend, self);
    return new Response("not found", { status: 404 });
  });
  const port = (server.addr as Deno.NetAddr).port;
  self = `${hostname}:${port}`;
  const emu: GcrEmulator = {
    url: `http://${self}`,
    host: self,
    requests,
    async stop() {
      await server.shutdown();
    },
    [Symbol.asyncDispose]() {
      return emu.stop();
    },
  };
  return emu;
}

function sizeOf(json: Record<string, unknown>): number {
  const layers = (json.layers as { size?: number }[] | undefined) ?? [];
  const config = (json.config as { size?: number } | undefined)?.size ?? 0;
  return layers.reduce((n, l) => n + (l.size ?? 0), config);
}
