/**
 * `crfs demo`: the main job end to end on an embedded default, with nothing but this machine.
 * It starts Debian's `docker-registry` on loopback, builds a small real image from files of this
 * machine (two layers, one with a whiteout), converts the layers to eStargz and pushes them,
 * mounts crfs, lists and reads files through the mount with ordinary tools, reports the bytes
 * fetched from the registry against the image size (from the registry's own access log), and
 * cleans everything up.
 *
 * @module
 */
import { defaultDrivers } from "../drivers/mod.ts";
import { CrfsFilesystem } from "../fs/filesystem.ts";
import { mount } from "../fs/fuse/mount.ts";
import { ImageStore } from "../fs/image_store.ts";
import { rootNode } from "../fs/registry_tree.ts";
import { type Command, formatBytes, parseFlags, UserError } from "./cli.ts";
import { pushEStargzImage } from "../convert/push.ts";

const HELP = `Usage: crfs demo [--keep]

Runs crfs's main job on this machine alone: starts a local docker-registry on 127.0.0.1,
builds an image from real files of this machine (/etc/os-release, /usr/share/zoneinfo,
/usr/share/perl5, /usr/share/doc, /usr/share/locale), converts it to eStargz and pushes it, mounts it with crfs, lists and reads
files through the mount, prints how many bytes came from the registry, and cleans up.

Needs root (for the FUSE mount) and the Debian packages docker-registry and fuse3
('./dev demo' installs them).

Options:
      --keep      leave the registry and the mount running until Ctrl-C
  -h, --help      show this help
`;

/** A docker-registry process on a free loopback port, with its access log. */
class LocalRegistry {
  readonly host: string;
  readonly #child: Deno.ChildProcess;
  readonly #log: string[] = [];
  readonly #dir: string;
  private constructor(host: string, child: Deno.ChildProcess, dir: string) {
    this.host = host;
    this.#child = child;
    this.#dir = dir;
    const pump = async (s: ReadableStream<Uint8Array>) => {
      const dec = new TextDecoderStream();
      let buf = "";
      for await (const t of s.pipeThrough(dec)) {
        buf += t;
        const lines = buf.split("\n");
        buf = lines.pop()!;
        this.#log.push(...lines);
      }
    };
    pump(child.stdout);
    pump(child.stderr);
  }

  static async start(dir: string): Promise<LocalRegistry> {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    listener.close();
    const config = `${dir}/registry.yml`;
    await Deno.writeTextFile(
      config,
      `version: 0.1
log: {level: info, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: ${dir}/data}}
http: {addr: 127.0.0.1:${port}}
`,
    );
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command("docker-registry", {
        args: ["serve", config],
        stdout: "piped",
        stderr: "piped",
      })
        .spawn();
    } catch {
      throw new UserError(
        "docker-registry is not installed (apt-get install docker-registry, or ./dev demo)",
      );
    }
    const reg = new LocalRegistry(`127.0.0.1:${port}`, child, dir);
    for (let i = 0; i < 100; i++) {
      try {
        const r = await fetch(`http://127.0.0.1:${port}/v2/`);
        await r.body?.cancel();
        if (r.ok) return reg;
      } catch { /* not up yet */ }
      await new Promise((r) => setTimeout(r, 50));
    }
    await reg.stop();
    throw new UserError("docker-registry did not start");
  }

  /** Bytes of blob bodies served since `mark`, and the number of blob requests. */
  blobTraffic(mark: number): { bytes: number; requests: number } {
    let bytes = 0;
    let requests = 0;
    for (const line of this.#log.slice(mark)) {
      const m = /"GET \/v2\/[^"]*\/blobs\/sha256:[0-9a-f]+ HTTP\/[0-9.]+" (\d+) (\d+)/.exec(line);
      if (m && (m[1] === "200" || m[1] === "206")) {
        bytes += Number(m[2]);
        requests++;
      }
    }
    return { bytes, requests };
  }

  get mark(): number {
    return this.#log.length;
  }

  async stop(): Promise<void> {
    try {
      this.#child.kill("SIGTERM");
    } catch { /* gone */ }
    await this.#child.status;
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }
}

async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new UserError(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** `tar -c ARGS` as a stream, failing with tar's message when tar fails. */
function tarStream(args: string[]): ReadableStream<Uint8Array> {
  const tar = new Deno.Command("tar", { args: ["-c", ...args], stdout: "piped", stderr: "piped" })
    .spawn();
  const err = new Response(tar.stderr).text();
  return tar.stdout.pipeThrough(
    new TransformStream({
      async flush() {
        const st = await tar.status;
        if (!st.success) throw new UserError(`tar: ${(await err).trim()}`);
      },
    }),
  );
}

export const demoCommand: Command = {
  name: "demo",
  summary: "run the main job on this machine alone (local registry, real image, mount, read)",
  help: HELP,
  async run(args) {
    const { values } = parseFlags(args, { keep: { type: "boolean" } });
    if (Deno.uid() !== 0) {
      throw new UserError("the demo mounts FUSE: run it as root (sudo ./dev demo)");
    }
    const work = await Deno.makeTempDir({ prefix: "crfs-demo-" });
    const say = (s: string) => console.log(s);
    const registry = await LocalRegistry.start(work);
    let unmount: (() => Promise<void>) | undefined;
    try {
      say(`1. docker-registry is serving at http://${registry.host}`);

      // 2. A small real image: files of this machine in two layers; the upper one deletes a
      //    file of the lower one (an OCI whiteout) and adds its own.
      const extra = `${work}/layer2`;
      await Deno.mkdir(`${extra}/etc`, { recursive: true });
      await Deno.writeTextFile(`${extra}/etc/crfs-demo.txt`, "served lazily by crfs\n");
      await Deno.writeFile(`${extra}/etc/.wh.debian_version`, new Uint8Array());
      const present = [];
      for (
        const p of [
          "etc/os-release",
          "usr/lib/os-release",
          "etc/debian_version",
          "usr/share/zoneinfo",
          "usr/share/perl5",
          "usr/share/doc",
          "usr/share/locale",
        ]
      ) {
        try {
          await Deno.stat(`/${p}`);
          present.push(p);
        } catch { /* not on this machine */ }
      }
      const drivers = defaultDrivers();
      const repo = { host: registry.host, repository: "demo/debian-files" };
      const pushed = await pushEStargzImage(drivers.forHost(registry.host), repo, "v1", [
        tarStream(["-f", "-", "-C", "/", ...present]),
        tarStream(["-f", "-", "-C", extra, "etc"]),
      ], { config: { config: { Cmd: ["/bin/sh"] } } });
      const imageBytes = pushed.size;
      const uncompressed = pushed.layers.reduce((a, l) => a + l.uncompressedSize, 0);
      say(
        `2. built and pushed ${repo.repository}:v1 from real files: ${pushed.layers.length} eStargz layers, ${
          formatBytes(imageBytes)
        } (${formatBytes(uncompressed)} uncompressed)`,
      );

      // 3. Mount and read through the mount with ordinary tools.
      const mnt = `${work}/mnt`;
      const store = new ImageStore(drivers, { tagTtlMs: 60_000 });
      const fs = new CrfsFilesystem(rootNode(store, { hosts: [registry.host] }), {
        tagTtlMs: 60_000,
      });
      const before = registry.mark;
      const m = await mount(mnt, fs);
      unmount = () => m.unmount();
      say(`3. mounted crfs at ${mnt}`);
      const img = `${mnt}/images/${registry.host}/demo/debian-files/v1`;
      say(`\n$ ls -l ${img}/etc`);
      say((await run("ls", ["-l", `${img}/etc`])).trimEnd());
      say(`\n$ cat ${img}/etc/crfs-demo.txt`);
      say((await run("cat", [`${img}/etc/crfs-demo.txt`])).trimEnd());
      if (present.includes("etc/os-release")) {
        say(`\n$ head -2 ${img}/etc/os-release`);
        say((await run("head", ["-2", `${img}/etc/os-release`])).trimEnd());
      }
      if (present.includes("usr/share/zoneinfo")) {
        const zone = "usr/share/zoneinfo/Europe/Paris";
        const [a, b] = await Promise.all([
          run("sha256sum", [`${img}/${zone}`]),
          run("sha256sum", [`/${zone}`]),
        ]);
        const same = a.split(" ")[0] === b.split(" ")[0];
        say(`\n$ sha256sum …/${zone}   (${same ? "identical to" : "DIFFERENT from"} /${zone})`);
        say(a.trimEnd());
        if (!same) throw new UserError(`bytes read through crfs differ from /${zone}`);
      }
      const gone = await Deno.stat(`${img}/etc/debian_version`).then(() => false, () => true);
      say(
        `\netc/debian_version is ${
          gone ? "hidden by the upper layer's whiteout, as it should be" : "STILL VISIBLE"
        }`,
      );
      const traffic = registry.blobTraffic(before);
      say(
        `\n4. fetched ${
          formatBytes(traffic.bytes)
        } of blob data in ${traffic.requests} range requests, out of ${
          formatBytes(imageBytes)
        } of layers (${
          (100 * traffic.bytes / imageBytes).toFixed(1)
        }%), according to the registry's access log`,
      );
      if (values.keep) {
        say(`\nThe mount stays at ${mnt}; Ctrl-C to unmount and clean up.`);
        await new Promise<void>((resolve) => Deno.addSignalListener("SIGINT", resolve));
      }
    } finally {
      if (unmount) await unmount().catch(() => {});
      await registry.stop();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
    say("5. unmounted, registry stopped, temporary files removed");
    return 0;
  },
};
