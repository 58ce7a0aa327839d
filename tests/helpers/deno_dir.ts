/**
 * The Deno cache directory of this test process, for crfs subprocesses started with a fresh
 * `HOME` or `XDG_CACHE_HOME`: without it they would look for npm packages (smol-toml, which the
 * registry configuration reads with) in an empty cache and download them.
 *
 * @module
 */

/** `$DENO_DIR`, else `$XDG_CACHE_HOME/deno`, else `~/.cache/deno` — as Deno itself picks it. */
export function denoDir(): string {
  const explicit = Deno.env.get("DENO_DIR");
  if (explicit) return explicit;
  const cache = Deno.env.get("XDG_CACHE_HOME") ?? `${Deno.env.get("HOME") ?? "/root"}/.cache`;
  return `${cache}/deno`;
}
