/**
 * Runs every benchmark (or those named on the command line), each printing a table with crfs
 * beside its peer: `deno task bench [convert|toc_open|…]`.
 *
 * @module
 */
const ALL = [
  "convert",
  "toc_open",
  "lazy",
  "mount_read",
  "mount_walk",
  "podman",
  "vs_stargz_store",
  "fuse_roundtrip",
  "snapshotter",
];
const chosen = Deno.args.length > 0 ? Deno.args : ALL;
for (const name of chosen) {
  if (!ALL.includes(name)) {
    console.error(`bench: unknown benchmark ${name}; have ${ALL.join(", ")}`);
    Deno.exit(2);
  }
  const url = new URL(`./${name}.ts`, import.meta.url).pathname;
  const st = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", url],
    stdout: "inherit",
    stderr: "inherit",
  })
    .output();
  if (!st.success) Deno.exit(1);
}
