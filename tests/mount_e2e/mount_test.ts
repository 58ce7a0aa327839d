/**
 * `crfs mount` end to end, with real parts only: a two-layer image built with GNU tar from real
 * files (hardlinks, symlinks, setuid, xattrs, a fifo, a device, sub-second times, a name that is
 * not UTF-8, a whiteout, an opaque directory), converted to eStargz and pushed to a real
 * docker-registry; crfs mounted as its own process. Compared with `tar -x` of the same layers
 * and with kernel overlayfs — both over those extractions and stacked on crfs's own layer
 * directories, after the kernel's entry timeouts have expired. Also: stable inodes, parallel
 * readers, tag re-resolution, SIGTERM and SIGKILL (stale mount recovery), and a registry that
 * fails mid-read (EIO, then recovery).
 *
 * @module
 */
import assert from "node:assert/strict";
import { defaultDrivers } from "../../drivers/mod.ts";
import { pushEStargzImage } from "../../convert/push.ts";
import { startRegistry, type TestRegistry } from "../helpers/registry.ts";
import { startFaultProxy } from "../helpers/fault_proxy.ts";

const DENO = Deno.execPath();
const MAIN = new URL("../../main.ts", import.meta.url).pathname;

async function sh(script: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command("bash", {
    args: ["-c", script, "bash", ...args],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  if (!out.success) throw new Error(`${script}: ${new TextDecoder().decode(out.stderr)}`);
  return new TextDecoder().decode(out.stdout);
}

/** Builds the two layer directories on disk and returns their tarballs. */
async function buildLayers(work: string): Promise<Uint8Array[]> {
  await sh(
    `set -e; L0="$1/l0"; L1="$1/l1"; mkdir -p "$L0" "$L1"
    cd "$L0"
    mkdir -p etc app/sub dev opq/inner gone-dir data
    cp -a /usr/share/zoneinfo/Europe data/ ; cp /etc/os-release etc/
    printf 'hello\\n' > etc/hello; printf 'bye\\n' > etc/bye
    head -c 300000 /dev/urandom > app/big.bin; ln app/big.bin app/big.hard; ln app/big.bin app/sub/big.hard2
    ln -s ../etc/hello app/rel-link; ln -s /etc/os-release app/abs-link
    printf '#!/bin/sh\\n' > app/setuid; chmod 4755 app/setuid
    printf 'x' > app/xattr; setfattr -n user.comment -v 'crfs test' app/xattr
    mkfifo dev/fifo; mknod dev/null2 c 1 3
    printf 'old\\n' > opq/old; printf 'inner\\n' > opq/inner/f; printf 'g\\n' > gone-dir/g
    touch -d '2021-03-04 05:06:07.123456789' etc/hello
    printf 'not utf8\\n' > "$(printf 'name-\\377\\376')"
    chown 1000:1000 app/xattr; chmod 0640 etc/bye
    cd "$L1"
    mkdir -p etc opq app
    printf 'new\\n' > etc/new; touch etc/.wh.bye .wh.gone-dir opq/.wh..wh..opq
    printf 'fresh\\n' > opq/fresh; printf 'replaced\\n' > app/sub
    `,
    work,
  );
  const tars: Uint8Array[] = [];
  for (const l of ["l0", "l1"]) {
    await sh(
      `tar -cf "$1/$2.tar" --xattrs --xattrs-include='*' --numeric-owner -C "$1/$2" .`,
      work,
      l,
    );
    tars.push(await Deno.readFile(`${work}/${l}.tar`));
  }
  return tars;
}

/** Converts and pushes an image of `tars`; returns the manifest digest. */
async function pushImage(
  reg: TestRegistry,
  repo: string,
  tag: string,
  tars: Uint8Array[],
): Promise<string> {
  const driver = defaultDrivers().forHost(reg.host);
  const streams = tars.map((t) => ReadableStream.from([t]));
  const pushed = await pushEStargzImage(
    driver,
    { host: reg.host, repository: repo },
    tag,
    streams,
    {
      writer: { chunkSize: 64 << 10 },
    },
  );
  return pushed.digest;
}

/** A running `crfs mount` process. */
interface Mounted {
  mnt: string;
  child: Deno.ChildProcess;
  stderr: Promise<string>;
  stop(signal?: Deno.Signal): Promise<number>;
}

async function mountCrfs(mnt: string, args: string[]): Promise<Mounted> {
  const child = new Deno.Command(DENO, {
    args: ["run", "-A", MAIN, "mount", mnt, ...args],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  // Ready when crfs says so: a stat could be answered from the kernel's cache of an earlier
  // (now stale) mount at the same place.
  let text = "";
  let ready!: () => void;
  const up = new Promise<void>((r) => (ready = r));
  const stderr = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      if (text.includes("mounted at")) ready();
    }
    return text;
  })();
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  await Promise.race([up, child.status]);
  clearTimeout(timer);
  if (!text.includes("mounted at")) throw new Error(`crfs mount did not come up: ${await stderr}`);
  return {
    mnt,
    child,
    stderr,
    async stop(signal: Deno.Signal = "SIGTERM") {
      try {
        child.kill(signal);
      } catch { /* gone */ }
      const st = await child.status;
      await stderr;
      return st.code;
    },
  };
}

/** One line per file with everything `tar -x` restores, and the content's hash. */
async function describe(dir: string, overlay = false): Promise<string[]> {
  const out = await sh(
    `cd "$1" && find . -mindepth 1 -printf '%P|%y|%m|%U|%G|%s|%T@|%l|%n\\n' | LC_ALL=C sort`,
    dir,
  );
  const lines = out.trim().split("\n").map((l) => {
    const f = l.split("|");
    if (f[1] === "d") f[5] = "-"; // directory sizes are the filesystem's
    if (f[1] === "d" && overlay) f[8] = "-"; // kernel overlayfs reports merged dirs with 1 link
    return f.join("|");
  });
  const sums = await sh(
    `cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum`,
    dir,
  );
  const xattrs = await sh(
    `cd "$1" && getfattr -R -h -d -m '^user\\.|^trusted\\.' . 2>/dev/null || true`,
    dir,
  );
  return [...lines, ...sums.trim().split("\n"), ...xattrs.trim().split("\n").filter(Boolean)];
}

/** Extracts a layer tarball and turns its OCI whiteouts into overlayfs form. */
async function extractOverlayForm(tarPath: string, dir: string): Promise<void> {
  await sh(
    `set -e; mkdir -p "$2"; tar -xf "$1" --xattrs --xattrs-include='*' --numeric-owner -C "$2"
    cd "$2"
    find . -name '.wh..wh..opq' -print0 | while IFS= read -r -d '' f; do
      d=$(dirname "$f"); t=$(stat -c %.9Y "$d"); rm "$f"; setfattr -n trusted.overlay.opaque -v y "$d"; touch -d "@$t" "$d"
    done
    find . -name '.wh.*' -print0 | while IFS= read -r -d '' f; do
      d=$(dirname "$f"); b=$(basename "$f"); t=$(stat -c %.9Y "$f"); td=$(stat -c %.9Y "$d")
      rm "$f"; mknod "$d/\${b#.wh.}" c 0 0; chmod 0 "$d/\${b#.wh.}"; touch -h -d "@$t" "$d/\${b#.wh.}"; touch -d "@$td" "$d"
    done`,
    tarPath,
    dir,
  );
}

const esc = (p: string) => p.replaceAll(":", "\\:");

Deno.test({
  name:
    "crfs mount: layers, merged image and overlayfs equal tar -x; inodes stable; faults; signals",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const reg = await startRegistry();
    const proxy = startFaultProxy(reg.url);
    const work = await Deno.makeTempDir({ prefix: "crfs-mount-e2e-" });
    const mnt = `${work}/mnt`;
    const overlays: string[] = [];
    let m: Mounted | undefined;
    try {
      const tars = await buildLayers(work);
      const digest = await pushImage(reg, "e2e/img", "v1", tars);
      for (const [i, tar] of tars.entries()) await Deno.writeFile(`${work}/layer${i}.tar`, tar);
      // crfs talks to the registry through the fault proxy (healthy unless told otherwise).
      m = await mountCrfs(mnt, [
        "--cache-dir",
        `${work}/cache`,
        "--entry-ttl",
        "1",
        "--tag-ttl",
        "1",
      ]);
      const host = proxy.host;
      const layers = `${mnt}/layers/${host}/e2e/img/v1`;
      const image = `${mnt}/images/${host}/e2e/img/v1`;

      await t.step(
        "each layer directory equals tar -x of the layer, whiteouts in overlay form",
        async () => {
          assert.equal(
            await Deno.readLink(`${mnt}/layers/${host}/e2e/img/v1`),
            `sha256-${digest.slice(7)}`,
          );
          for (const i of [0, 1]) {
            const ext = `${work}/ext${i}`;
            await extractOverlayForm(`${work}/layer${i}.tar`, ext);
            assert.deepEqual(await describe(`${layers}/${i}`), await describe(ext), `layer ${i}`);
          }
        },
      );

      await t.step(
        "the merged image equals kernel overlayfs over the extracted layers",
        async () => {
          const merged = `${work}/merged-ref`;
          await Deno.mkdir(merged);
          await sh(
            `mount -t overlay overlay -o ro,lowerdir="$1":"$2" "$3"`,
            `${work}/ext1`,
            `${work}/ext0`,
            merged,
          );
          overlays.push(merged);
          const want = await describe(merged, true);
          assert.ok(
            want.some((l) => l.startsWith("etc/new|")) &&
              !want.some((l) => l.startsWith("etc/bye|")),
          );
          assert.deepEqual(await describe(image, true), want);
        },
      );

      await t.step(
        "overlayfs stacked on crfs's layer directories equals images/, after entry timeouts",
        async () => {
          const over = `${work}/over`;
          await Deno.mkdir(`${over}/u`, { recursive: true });
          await Deno.mkdir(`${over}/w`);
          await Deno.mkdir(`${over}/m`);
          await sh(
            `mount -t overlay overlay -o lowerdir="$1"/1:"$1"/0,upperdir="$2"/u,workdir="$2"/w "$2"/m`,
            esc(layers),
            over,
          );
          overlays.push(`${over}/m`);
          const want = await describe(image, true);
          assert.deepEqual(await describe(`${over}/m`, true), want);
          const ino = (await Deno.stat(`${over}/m/app/big.bin`)).ino;
          await new Promise((r) => setTimeout(r, 2500)); // past the 1 s entry/attribute timeouts
          assert.deepEqual(await describe(`${over}/m`, true), want, "no ESTALE, same tree");
          assert.equal((await Deno.stat(`${over}/m/app/big.bin`)).ino, ino);
          // The overlay is writable on top of the read-only image.
          await Deno.writeTextFile(`${over}/m/etc/hello`, "changed\n");
          assert.equal(await Deno.readTextFile(`${over}/m/etc/hello`), "changed\n");
          assert.equal(await Deno.readTextFile(`${image}/etc/hello`), "hello\n");
        },
      );

      await t.step("inode numbers are stable; hardlinks share one", async () => {
        const a = await Deno.stat(`${image}/app/big.bin`);
        const b = await Deno.stat(`${image}/app/big.hard`);
        assert.equal(a.ino, b.ino);
        assert.equal(a.nlink, 3);
        await new Promise((r) => setTimeout(r, 1500));
        assert.equal((await Deno.stat(`${image}/app/big.bin`)).ino, a.ino);
      });

      await t.step("many readers at once get exact bytes", async () => {
        const got = await sh(
          `cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -P 8 -n 4 sha256sum | sort -k2`,
          image,
        );
        const want = await sh(
          `cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sort -k2`,
          `${work}/merged-ref`,
        );
        assert.equal(got, want);
      });

      await t.step(
        "a failing registry gives EIO, not a hang or wrong bytes; reads recover",
        async () => {
          // A fresh image nothing has read yet: its TOC and chunks must come from the registry.
          const payload = new Uint8Array(200_000);
          for (let o = 0; o < payload.length; o += 65536) {
            crypto.getRandomValues(payload.subarray(o, o + 65536));
          }
          await Deno.mkdir(`${work}/l2/data`, { recursive: true });
          await Deno.writeFile(`${work}/l2/data/payload`, payload);
          await sh(`tar -cf "$1/l2.tar" -C "$1/l2" data`, work);
          await pushImage(reg, "e2e/img", "faulty", [await Deno.readFile(`${work}/l2.tar`)]);
          const file = `${mnt}/images/${host}/e2e/img/faulty/data/payload`;
          proxy.inject({ kind: "status", status: 503 }, { match: /\/blobs\//, times: Infinity });
          const started = Date.now();
          await assert.rejects(() => sh(`cat "$1" > /dev/null`, file), /Input\/output error/);
          assert.ok(Date.now() - started < 60_000, "within bounded time");
          proxy.clear();
          assert.deepEqual(await Deno.readFile(file), payload, "recovered, exact bytes");
        },
      );

      await t.step(
        "a re-pushed tag shows its new digest after --tag-ttl, without remounting",
        async () => {
          const d2 = await pushImage(reg, "e2e/img", "v1", [tars[0]]);
          await new Promise((r) => setTimeout(r, 2500));
          assert.equal(
            await Deno.readLink(`${mnt}/layers/${host}/e2e/img/v1`),
            `sha256-${d2.slice(7)}`,
          );
          assert.ok(
            await Deno.stat(`${mnt}/images/${host}/e2e/img/v1/etc/bye`),
            "the one-layer image has etc/bye",
          );
        },
      );

      await t.step("statfs, read-only, and EROFS for writes", async () => {
        const df = await sh(`stat -f -c '%T' "$1"`, mnt);
        assert.match(df, /fuse/);
        await assert.rejects(() => Deno.writeTextFile(`${image}/etc/x`, "x"));
        assert.match(
          await Deno.readTextFile("/proc/mounts"),
          new RegExp(`${mnt.replaceAll("/", "\\/")} fuse\\.crfs ro`),
        );
      });

      for (const p of overlays.reverse()) await sh(`umount "$1"`, p);
      overlays.length = 0;

      await t.step("SIGTERM unmounts cleanly", async () => {
        assert.equal(await m!.stop("SIGTERM"), 0);
        m = undefined;
        assert.ok(!(await Deno.readTextFile("/proc/mounts")).includes(` ${mnt} `));
      });

      await t.step(
        "a mount left stale by SIGKILL is recovered by the next crfs mount",
        async () => {
          m = await mountCrfs(mnt, ["--cache-dir", `${work}/cache`]);
          await m.stop("SIGKILL");
          m = undefined;
          await assert.rejects(() => sh(`ls "$1"`, mnt), /not connected/);
          m = await mountCrfs(mnt, ["--cache-dir", `${work}/cache`]);
          assert.equal(
            await Deno.readTextFile(`${mnt}/images/${host}/e2e/img/v1/etc/hello`),
            "hello\n",
          );
        },
      );
    } finally {
      for (const p of overlays.reverse()) await sh(`umount -l "$1"`, p).catch(() => {});
      if (m) await m.stop("SIGTERM");
      await sh(`grep -q " $1 " /proc/mounts && umount -l "$1" || true`, mnt).catch(() => {});
      await proxy.stop();
      await reg.stop();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});
