/**
 * Rootless podman through `crfs store` run by the same non-root user, against a loopback
 * docker-registry holding an eStargz image (this machine's programs, pushed with convert/push.ts).
 * The user's podman (runc, its storage under the user's home, its user namespace from
 * /etc/subuid) pulls the image with the store as an additional layer store: no layer blob is
 * downloaded, and `podman run` prints files crfs serves.
 *
 * `/dev/fuse` is set to 0666 for the test and restored; the user is removed afterwards.
 *
 * @module
 */
import { assert, assertEquals, materialize, run, type Spec } from "../cmd/helpers.ts";
import { defaultDrivers } from "../../drivers/mod.ts";
import { pushEStargzImage } from "../../convert/push.ts";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { baseLayer } from "../podman/helpers.ts";
import { randomBytes } from "../helpers/images.ts";
import { fuseMountedAt, TestUser, withDevFuseMode } from "./helpers.ts";

/**
 * A tar of `spec` whose root directory is 0755 (readable inside a user namespace), owners as
 * on disk: root, except the paths in `owners` (path → "uid:gid").
 */
async function tarOf(
  spec: Record<string, Spec>,
  work: string,
  name: string,
  owners: Record<string, string> = {},
): Promise<Uint8Array> {
  const tree = `${work}/${name}`;
  await Deno.mkdir(tree);
  await materialize(tree, spec);
  await Deno.chmod(tree, 0o755);
  for (const [path, owner] of Object.entries(owners)) {
    await run("chown", [owner, `${tree}/${path}`]);
  }
  await run("tar", ["--sort=name", "--numeric-owner", "-cf", `${tree}.tar`, "-C", tree, "."]);
  return await Deno.readFile(`${tree}.tar`);
}

/**
 * A registry with `rl/run:v1`: this machine's programs; then files (one of uid 1000, a 4 MiB
 * one, a directory made opaque later); then a whiteout, the opaque directory and a new file.
 */
async function registryWithRunnableImage(): Promise<{ reg: TestRegistry; layers: Layer[] }> {
  const reg = await startRegistry();
  const work = await Deno.makeTempDir({ prefix: "crfs-rootless-podman-img-" });
  try {
    const big = randomBytes(4 << 20, 11);
    const tars = [
      await tarOf(await baseLayer(), work, "l0"),
      await tarOf(
        {
          "etc/hello.txt": "hello rootless\n",
          "etc/gone.txt": "x\n",
          "home/user/mine.txt": "user's own\n",
          "data/big.bin": big,
          "opaque/old.txt": "old\n",
        },
        work,
        "l1",
        { "home/user": "1000:1000", "home/user/mine.txt": "1000:1000" },
      ),
      await tarOf(
        {
          "etc/gone.txt": { whiteout: true },
          "etc/new.txt": "new\n",
          "opaque": { opaque: true },
          "opaque/fresh.txt": "fresh\n",
        },
        work,
        "l2",
      ),
    ];
    const pushed = await pushEStargzImage(
      defaultDrivers().forHost(reg.host),
      { host: reg.host, repository: "rl/run" },
      "v1",
      tars.map((t) => ReadableStream.from([t])),
    );
    return {
      reg,
      layers: pushed.layers.map((l) => ({ digest: l.blobDigest, size: l.blobSize })),
    };
  } catch (e) {
    await reg.stop();
    throw e;
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

interface Layer {
  digest: string;
  size: number;
}

/** What the container prints: owners as it sees them, contents, whiteout and opaque results. */
const SCRIPT = [
  "stat -c '%n %u:%g %a' /etc/hello.txt /home/user/mine.txt /usr/bin/sh",
  "cat /etc/hello.txt /etc/new.txt /home/user/mine.txt",
  "ls /etc/gone.txt 2>/dev/null || echo gone.txt hidden",
  "ls /opaque",
  "echo written > /etc/hello.txt && cat /etc/hello.txt",
  "id -u",
].join("; ");

Deno.test("rootless podman pulls and runs an eStargz image lazily through the user's crfs store", async () => {
  const { reg, layers } = await registryWithRunnableImage();
  await using _reg = reg;
  await using user = await TestUser.create();
  await withDevFuseMode(0o666, async () => {
    const store = `${user.home}/store`;
    // Before the user's first podman command: its namespace keeps the mounts it saw then.
    const crfs = await user.startCrfs(["store", store], [store]);
    const podman = (args: string[]) =>
      user.run("podman", [
        "--runtime",
        "runc",
        "--storage-driver",
        "overlay",
        "--storage-opt",
        `overlay.additionallayerstore=${store}:ref`,
        ...args,
      ]);
    try {
      const ref = `${reg.host}/rl/run:v1`;
      reg.clearLog();
      const pull = await podman(["pull", "--quiet", "--tls-verify=false", ref]);
      assertEquals(pull.code, 0, pull.stderr);
      const runArgs = ["run", "--rm", "--network", "none", ref, "sh", "-c"];
      const r = await podman([...runArgs, SCRIPT]);
      assertEquals(r.code, 0, r.stderr);
      assertEquals(
        r.stdout,
        "/etc/hello.txt 0:0 644\n/home/user/mine.txt 1000:1000 644\n/usr/bin/sh 0:0 755\n" +
          "hello rootless\nnew\nuser's own\n" +
          "gone.txt hidden\n" +
          "fresh.txt\n" +
          "written\n" +
          "0\n",
      );
      // A container user other than root reads through the store too.
      const u = await podman([
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        "1000:1000",
        ref,
        "sh",
        "-c",
        "id -u; cat /home/user/mine.txt",
      ]);
      assertEquals(u.code, 0, u.stderr);
      assertEquals(u.stdout, "1000\nuser's own\n");
      // Lazily: layer blobs only in ranges, the 4 MiB data layer hardly read.
      const digests = new Set(layers.map((l) => l.digest));
      const reqs = (await reg.accessLog()).filter((e) =>
        e.method === "GET" && digests.has(e.path.split("/").at(-1) ?? "")
      );
      assert(reqs.length > 0, "no layer was read through the store");
      assertEquals(reqs.filter((e) => e.status !== 206), [], "a layer blob was downloaded whole");
      const data = layers[1];
      const dataBytes = reqs.filter((e) => e.path.endsWith(data.digest))
        .reduce((n, e) => n + e.bytes, 0);
      assert(dataBytes < data.size / 4, `data layer: ${dataBytes} of ${data.size} bytes fetched`);
      // podman's own storage is the user's, under its home.
      const images = await podman(["images", "--format", "{{.Repository}}:{{.Tag}}"]);
      assertEquals(images.stdout.trim(), `${reg.host}/rl/run:v1`);
      const graph = await Deno.stat(`${user.home}/.local/share/containers/storage`);
      assertEquals(graph.uid, user.uid);
    } finally {
      await podman(["system", "reset", "-f"]);
      assertEquals(await crfs.kill("SIGTERM"), 0, crfs.stderr());
    }
    assert(!await fuseMountedAt(store), "crfs store left its mount");
  });
});
