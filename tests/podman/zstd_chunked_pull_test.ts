/**
 * podman's own zstd:chunked reader accepts crfs's zstd:chunked output: pushed to
 * docker-registry, pulled with partial pulls on (`enable_partial_images`), podman takes the
 * partial path ("Retrieved partial blob") and the image holds exactly what `tar -x` of the
 * input gives.
 *
 * @module
 */
import assert from "node:assert/strict";
import { ZSTD_LAYER_MEDIA_TYPE } from "../../format/zstd_chunked.ts";
import { writeZstdChunked } from "../../format/zstd_chunked_writer.ts";
import { run, sampleTree, writeOciLayout } from "../format/helpers.ts";
import { startRegistry } from "../helpers/registry.ts";

async function* once(b: Uint8Array) {
  yield b;
}

/** `cmd args`, never throwing: exit status and output. */
async function sh(cmd: string, args: string[], env: Record<string, string> = {}) {
  // podman keeps libpod state in its --tmpdir (default /run/libpod, shared by every podman on the
  // machine): each test's own, so that its `system reset` cannot touch another test's podman.
  if (cmd === "podman" && env.TMPDIR) args = ["--tmpdir", `${env.TMPDIR}/libpod-tmp`, ...args];
  const out = await new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { ok: out.success, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("podman pulls crfs's zstd:chunked layer partially and gets the input tree", async () => {
  const dir = await Deno.makeTempDir({ prefix: "crfs-zstd-podman-" });
  const reg = await startRegistry();
  const env = { CONTAINERS_STORAGE_CONF: `${dir}/storage.conf`, TMPDIR: dir };
  try {
    const tarPath = await sampleTree(dir);
    const parts: Uint8Array[] = [];
    const res = await writeZstdChunked(once(await Deno.readFile(tarPath)), (b) => {
      parts.push(b.slice());
    }, { chunkSize: 1 << 20 });
    const blob = new Uint8Array(res.blobSize);
    let o = 0;
    for (const p of parts) (blob.set(p, o), o += p.length);
    // An OCI layout with the layer as written, then skopeo copies it unchanged to the registry.
    const oci = `${dir}/oci`;
    await writeOciLayout(oci, blob, {
      mediaType: ZSTD_LAYER_MEDIA_TYPE,
      annotations: res.annotations,
      diffId: res.diffId,
    });
    const ref = `${reg.host}/zstd-chunked:t`;
    await run("skopeo", [
      "copy",
      "--quiet",
      "--dest-tls-verify=false",
      `oci:${oci}:t`,
      `docker://${ref}`,
    ]);
    await Deno.writeTextFile(
      `${dir}/storage.conf`,
      `[storage]\ndriver = "overlay"\ngraphroot = "${dir}/root"\nrunroot = "${dir}/run"\n\n` +
        `[storage.options]\npull_options = {enable_partial_images = "true", use_hard_links = "false"}\n`,
    );
    const pull = await sh(
      "podman",
      ["--log-level", "debug", "pull", "--tls-verify=false", ref],
      env,
    );
    assert.ok(pull.ok, pull.stderr);
    assert.match(pull.stderr, /Retrieved partial blob/, "podman took the zstd:chunked path");
    const mount = await sh("podman", ["image", "mount", ref], env);
    assert.ok(mount.ok, mount.stderr);
    const x = `${dir}/x`;
    await Deno.mkdir(x);
    await run("tar", ["-x", "-f", tarPath, "-C", x]);
    const diff = await sh("diff", ["-r", "--no-dereference", x, mount.stdout.trim()]);
    assert.ok(diff.ok, `podman's image differs from tar -x:\n${diff.stdout}${diff.stderr}`);
    const got = await sh("getfattr", [
      "-n",
      "user.crfs",
      "--only-values",
      `${mount.stdout.trim()}/etc/hello`,
    ]);
    assert.equal(got.stdout, "yes");
    const ranges = (await reg.accessLog()).filter((e) => e.status === 206);
    assert.ok(ranges.length >= 2, "podman fetched the manifest and the files by range");
  } finally {
    await sh("podman", ["image", "unmount", "-a"], env);
    await sh("podman", ["system", "reset", "-f"], env);
    await reg.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
