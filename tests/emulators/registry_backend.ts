/**
 * Shared by the emulators: a real (unauthenticated) docker-registry as the backend that stores
 * the images, queried for its catalog, tags and manifests, and a pass-through for `/v2/…`
 * requests (with `X-Forwarded-Host`, so the registry's upload `Location`s point back at the
 * emulator).
 *
 * @module
 */

const ACCEPT = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.docker.distribution.manifest.v2+json",
].join(", ");

/** Every repository of the backend (following `Link` pages). */
export async function backendCatalog(backend: string): Promise<string[]> {
  const out: string[] = [];
  let url: string | undefined = `${backend}/v2/_catalog?n=1000`;
  while (url) {
    const res: Response = await fetch(url);
    if (!res.ok) throw new Error(`backend catalog: HTTP ${res.status}`);
    out.push(...((await res.json()).repositories ?? []));
    const link = res.headers.get("link");
    const m = link ? /<([^>]+)>/.exec(link) : null;
    url = m ? new URL(m[1], backend).href : undefined;
  }
  return out;
}

/** The tags of a backend repository (empty when it does not exist). */
export async function backendTags(backend: string, repo: string): Promise<string[]> {
  const res = await fetch(`${backend}/v2/${repo}/tags/list`);
  if (res.status === 404) {
    await res.body?.cancel();
    return [];
  }
  if (!res.ok) throw new Error(`backend tags of ${repo}: HTTP ${res.status}`);
  return (await res.json()).tags ?? [];
}

/** A manifest of the backend: digest, media type, bytes and parsed JSON. */
export async function backendManifest(
  backend: string,
  repo: string,
  ref: string,
): Promise<
  { digest: string; mediaType: string; bytes: Uint8Array; json: Record<string, unknown> }
> {
  const res = await fetch(`${backend}/v2/${repo}/manifests/${ref}`, {
    headers: { accept: ACCEPT },
  });
  if (!res.ok) throw new Error(`backend manifest ${repo}:${ref}: HTTP ${res.status}`);
  const bytes = new Uint8Array(await res.arrayBuffer());
  return {
    digest: res.headers.get("docker-content-digest") ?? "",
    mediaType: (res.headers.get("content-type") ?? "").split(";")[0],
    bytes,
    json: JSON.parse(new TextDecoder().decode(bytes)),
  };
}

/** Forwards a `/v2/…` request to the backend unchanged and returns its answer. */
export async function forward(req: Request, backend: string, selfHost: string): Promise<Response> {
  const url = new URL(req.url);
  const headers = new Headers(req.headers);
  for (const h of ["host", "connection", "accept-encoding", "authorization"]) headers.delete(h);
  headers.set("x-forwarded-host", selfHost);
  headers.set("x-forwarded-proto", "http");
  const res = await fetch(`${backend}${url.pathname}${url.search}`, {
    method: req.method,
    headers,
    body: req.body,
    redirect: "manual",
  });
  const out = new Headers(res.headers);
  out.delete("connection");
  out.delete("transfer-encoding");
  const empty = req.method === "HEAD" || res.status === 204 || res.status === 304;
  if (empty) await res.body?.cancel();
  return new Response(empty ? null : res.body, { status: res.status, headers: out });
}
