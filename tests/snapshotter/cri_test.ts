/**
 * The Kubernetes path: containerd's CRI plugin with `snapshotter = "crfs"` and
 * `disable_snapshot_annotations = false`, and an image pulled through the CRI API the way the
 * kubelet pulls (`runtime.v1.ImageService/PullImage`, with a small grpc-js client over the
 * vendored CRI proto). The eStargz image's layers become crfs remote snapshots from the CRI
 * labels (`containerd.io/snapshot/cri.*`) without any layer blob download, and a container runs
 * from the image.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { assert, assertEquals } from "../cmd/helpers.ts";
import { loadProto } from "../../fs/snapshotter/grpc_service.ts";
import { imageFixture } from "./fixture.ts";
import { Containerd, mountsUnder, startSnapshotter } from "./helpers.ts";

/** A CRI ImageService client on containerd's socket. */
function criImages(address: string) {
  const pkg = loadProto("k8s.io/cri-api/pkg/apis/runtime/v1/api.proto") as // deno-lint-ignore no-explicit-any
  any;
  const client = new pkg.runtime.v1.ImageService(
    `unix:${address}`,
    grpc.credentials.createInsecure(),
  );
  // deno-lint-ignore no-explicit-any
  const call = (method: string, req: unknown): Promise<any> =>
    new Promise((resolve, reject) =>
      client[method](
        req,
        { deadline: Date.now() + 120_000 },
        (err: grpc.ServiceError | null, res: unknown) => err ? reject(err) : resolve(res),
      )
    );
  return { call, close: () => client.close() };
}

Deno.test("CRI: PullImage (what the kubelet calls) of an eStargz image through crfs is lazy, and the image runs", async () => {
  await using f = await imageFixture();
  const dir = await Deno.makeTempDir({ prefix: "crfs-snap-cri-" });
  try {
    const root = `${dir}/root`;
    const sock = `${dir}/crfs.sock`;
    await using sn = await startSnapshotter(root, sock);
    await using c = await Containerd.start({
      crfsSocket: sock,
      cri: { snapshotter: "crfs", plainHttp: [f.reg.host] },
    });
    const cri = criImages(c.address);
    try {
      f.reg.clearLog();
      const pulled = await cri.call("PullImage", { image: { image: f.estargz } });
      assert(/^sha256:[0-9a-f]{64}$/.test(pulled.image_ref), `image ref ${pulled.image_ref}`);
      const status = await cri.call("ImageStatus", { image: { image: f.estargz } });
      assertEquals(status.image.id, pulled.image_ref);
      assert(status.image.repo_tags.includes(f.estargz), JSON.stringify(status.image.repo_tags));

      const log = await f.reg.accessLog();
      const whole = log.filter((e) =>
        e.method === "GET" && e.status === 200 &&
        f.estargzLayers.some((d) => e.path.endsWith(`/blobs/${d}`))
      );
      assertEquals(whole, [], `no layer blob downloaded:\n${sn.stderr()}`);
      const table = JSON.parse(await Deno.readTextFile(`${root}/metadata.json`))
        .snapshots as Record<
          string,
          { kind: string; labels: Record<string, string> }
        >;
      const remote = Object.values(table).filter((r) =>
        r.labels["containerd.io/snapshot/remote"] === "remote snapshot"
      );
      assertEquals(remote.length, f.estargzLayers.length, "every layer is a remote snapshot");
      assert(
        remote.every((r) => r.labels["containerd.io/snapshot/cri.image-ref"] === f.estargz),
        "made from the CRI labels",
      );
    } finally {
      cri.close();
    }
    // The image the CRI pulled runs through crfs (in the CRI's namespace).
    const ran = await c.ctrOk([
      "-n",
      "k8s.io",
      "run",
      "--rm",
      "--snapshotter",
      "crfs",
      f.estargz,
      "cri1",
      "/bin/sh",
      "-c",
      "cat /etc/hello.txt /data/small.txt",
    ]);
    assertEquals(ran.out, "hello again\nsmall\n");
  } finally {
    for (const m of await mountsUnder(dir)) {
      await new Deno.Command("umount", { args: ["-l", m] }).output();
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
