/**
 * Reading environment variables without failing: {@link env} is the one helper the drivers use
 * for their `$CRFS_*`, `$DOCKER_CONFIG`, `$HOME`, … defaults.
 *
 * @module
 */

/**
 * The value of environment variable `name`; undefined when unset, empty, or not readable
 * (Deno without `--allow-env`).
 *
 * @example
 * ```ts
 * const dir = env("CRFS_LOCAL_DIR") ?? `${env("HOME") ?? "."}/.local/share/crfs/local`;
 * ```
 */
export function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}
