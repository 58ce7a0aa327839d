/**
 * The `local` host through a real `crfs mount`: its `.stargz` files are served by the `local`
 * driver like any registry host (`layers/local/NAME/latest → sha256-<manifest>`,
 * `images/local/NAME/latest/`) besides the documented `layers/local/NAME.stargz/`, and their
 * layers open like registry layers: reads are counted in `crfs-status.json` under the file's
 * digest, inode keys are the layer digest (one inode whichever path reaches a file), and `--verify require`
 * refuses a blob without chunk digests.
 *
 * @module
 */
import assert from "node:assert/strict";
import { startMount } from "./helpers.ts";
import { requireRoot } from "../helpers/require_root.ts";

const FIXTURES = new URL("../../../shared/fixtures/crfs-legacy", import.meta.url).pathname;
const ROOT = new URL("../../", import.meta.url).pathname;

async function sha256File(path: string): Promise<string> {
  const hash = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return `sha256:${[...new Uint8Array(hash)].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

interface StatusLayer {
  digest: string;
  bytesFetched: number;
  requests: number;
}

Deno.test({
  name:
    "crfs mount: local files are layers of the local driver, counted in the status file, verified",
  async fn() {
    requireRoot("FUSE mounts");
    const work = await Deno.makeTempDir({ prefix: "crfs-mount-local-" });
    try {
      await Deno.mkdir(`${work}/local`);
      const convert = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          `${ROOT}main.ts`,
          "convert",
          "-q",
          `${FIXTURES}/synthetic-small.tar`,
          `${work}/local/app.stargz`,
        ],
        cwd: ROOT,
        stdout: "null",
        stderr: "piped",
      }).output();
      assert.equal(convert.code, 0, new TextDecoder().decode(convert.stderr));
      await Deno.copyFile(
        `${FIXTURES}/synthetic-small.crfs-64k.stargz`,
        `${work}/local/old.stargz`,
      );
      const appDigest = await sha256File(`${work}/local/app.stargz`);

      {
        const m = await startMount(`${work}/mnt`, ["--local-dir", `${work}/local`]);
        try {
          const hello = await Deno.readTextFile(`${m.mnt}/layers/local/app.stargz/data/hello.txt`);
          assert.equal(hello, "hello\n");
          // The ordinary host form of the same file.
          assert.deepEqual(
            (await Array.fromAsync(Deno.readDir(`${m.mnt}/layers/local`))).map((e) => e.name)
              .sort(),
            ["app", "old"],
          );
          const tag = await Deno.readLink(`${m.mnt}/layers/local/app/latest`);
          assert.match(tag, /^sha256-[0-9a-f]{64}$/);
          assert.equal(
            await Deno.readTextFile(`${m.mnt}/layers/local/app/${tag}/0/data/hello.txt`),
            "hello\n",
          );
          assert.equal(
            await Deno.readTextFile(`${m.mnt}/images/local/app/latest/data/hello.txt`),
            "hello\n",
          );
          assert.equal(
            await Deno.readTextFile(`${m.mnt}/images/local/app.stargz/data/hello.txt`),
            "hello\n",
          );
          // A bigger file, so the layer's reads show.
          const bin = await Deno.readFile(`${m.mnt}/layers/local/app.stargz/data/big.bin`);
          assert.equal(bin.length, 204800);
          const status = JSON.parse(await Deno.readTextFile(`${m.mnt}/crfs-status.json`)) as {
            layers: StatusLayer[];
          };
          const app = status.layers.find((l) => l.digest === appDigest);
          assert.ok(app, `status lists the local layer ${appDigest}: ${JSON.stringify(status)}`);
          assert.ok(app.requests > 0 && app.bytesFetched > 0, JSON.stringify(app));
          // Inode keys are the layer's digest and path: both paths name one inode.
          assert.equal(
            (await Deno.stat(`${m.mnt}/layers/local/app.stargz/data/hello.txt`)).ino,
            (await Deno.stat(`${m.mnt}/layers/local/app/${tag}/0/data/hello.txt`)).ino,
          );
          // The legacy blob opens under the default policy.
          assert.equal(
            await Deno.readTextFile(`${m.mnt}/layers/local/old.stargz/data/hello.txt`),
            "hello\n",
          );
        } finally {
          await m.stop();
        }
      }

      // A legacy blob with files of several chunks: no chunk digests for them (one-chunk files
      // are checked by their file digest).
      await Deno.copyFile(
        `${FIXTURES}/synthetic-tree.crfs-64k.stargz`,
        `${work}/local/old-chunked.stargz`,
      );
      // --verify require: the legacy blob without chunk digests is refused, the eStargz one read.
      const m = await startMount(`${work}/mnt`, [
        "--local-dir",
        `${work}/local`,
        "--verify",
        "require",
      ]);
      try {
        assert.equal(
          await Deno.readTextFile(`${m.mnt}/layers/local/app.stargz/data/hello.txt`),
          "hello\n",
        );
        await assert.rejects(
          () => Deno.readFile(`${m.mnt}/layers/local/old-chunked.stargz/tree/large.bin`),
          (e: Error) => /Input\/output error|os error 5/.test(e.message),
        );
        assert.match(
          m.stderr(),
          /old-chunked.*the TOC has no chunk digests \(--verify require\)/,
        );
      } finally {
        await m.stop();
      }
    } finally {
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});
