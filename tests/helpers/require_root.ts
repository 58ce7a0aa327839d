/**
 * Tests that need root (FUSE mounts, drop_caches, users, device modes) say so loudly instead of
 * skipping: CI runs as root, and a run without it must fail, not pass by leaving tests out.
 *
 * @module
 */

/** Throws unless this process runs as root; `why` names what needs it. */
export function requireRoot(why: string): void {
  if (Deno.uid() !== 0) throw new Error(`this test needs root (${why}); run the tests as root`);
}
