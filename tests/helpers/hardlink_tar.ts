/**
 * A GNU tar where a name is given to a second file after a hardlink kept the first one: `a`,
 * `b` hardlinked to `a`, then a new `a` appended with `tar --append` (`b` keeps "old\n", the
 * new `a` holds "newer-content\n").
 *
 * @module
 */

/** Writes the tar under `dir` (sources in `dir/src`); returns its path. */
export async function appendedHardlinkTar(dir: string): Promise<string> {
  const script = `set -eu; mkdir -p "$1/src"; cd "$1/src"; echo old > a; ln a b
    tar --create --file=../t.tar --numeric-owner a b; rm a; echo newer-content > a
    tar --append --file=../t.tar --numeric-owner a`;
  const r = await new Deno.Command("bash", { args: ["-c", script, "bash", dir] }).output();
  if (r.code !== 0) throw new Error(`GNU tar: ${new TextDecoder().decode(r.stderr)}`);
  return `${dir}/t.tar`;
}
