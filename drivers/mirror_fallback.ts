/**
 * Pulling through the endpoints registries.conf gives a reference (see registries_conf.ts):
 * each mirror in order, then the primary location, the first that answers wins — as podman
 * does, any failure of a mirror (down, missing the image, refusing) moves on to the next. A
 * blocked reference fails at once. When every endpoint fails, the error names each endpoint with
 * its failure and carries the primary's error code (so "not found" stays "not found").
 *
 * Blobs are content-addressed: once a manifest came from an endpoint, its layers can be read from
 * the same one ({@link FallbackResult.endpoint}), falling back through the list again if that
 * endpoint goes away.
 *
 * @module
 */
import { RegistryError } from "./errors.ts";
import type { RegistryEndpoint, ResolvedRegistry } from "./registries_conf.ts";

/** What {@link withEndpoints} returns: the value and the endpoint that gave it. */
export interface FallbackResult<T> {
  value: T;
  endpoint: RegistryEndpoint;
  /** Endpoints tried before it, with their errors (for debug logs). */
  failures: { endpoint: RegistryEndpoint; error: unknown }[];
}

/**
 * Runs `attempt` on each endpoint of `resolved` in order until one succeeds. `what` names the
 * reference in messages. An abort of `signal` stops at once with its reason.
 *
 * @example
 * ```ts
 * const resolved = resolveRegistry(conf, ref);
 * const { value: manifest, endpoint } = await withEndpoints(resolved, formatReference(ref),
 *   (e) => driver.getManifest({ host: e.host, repository: e.repository }, referenceTarget(ref)));
 * ```
 */
export async function withEndpoints<T>(
  resolved: ResolvedRegistry,
  what: string,
  attempt: (endpoint: RegistryEndpoint) => Promise<T>,
  signal?: AbortSignal,
): Promise<FallbackResult<T>> {
  if (resolved.blocked) {
    throw new RegistryError(
      `${what}: pulling is blocked by ${resolved.entry?.file ?? "registries.conf"} (prefix ${
        resolved.entry?.prefix ?? "?"
      })`,
      { code: "DENIED", reference: what },
    );
  }
  const failures: { endpoint: RegistryEndpoint; error: unknown }[] = [];
  for (const endpoint of resolved.endpoints) {
    signal?.throwIfAborted();
    try {
      return { value: await attempt(endpoint), endpoint, failures };
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      failures.push({ endpoint, error });
    }
  }
  const last = failures.at(-1)?.error;
  if (failures.length === 1) throw last;
  const parts = failures.map(({ endpoint, error }) =>
    `${endpoint.mirror ? "mirror" : "primary"} ${endpoint.location}: ${
      error instanceof Error ? error.message : String(error)
    }`
  );
  throw new RegistryError(`${what}: no endpoint could serve it (${parts.join("; ")})`, {
    code: last instanceof RegistryError ? last.code : "CONNECTION",
    status: last instanceof RegistryError ? last.status : undefined,
    reference: what,
    cause: last,
  });
}
