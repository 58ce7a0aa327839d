/**
 * Mount lifecycle with real processes: `unmount()` ends `closed`; a file held open keeps being
 * served after the detach until it is closed, or until the grace period ends and the connection
 * is aborted; a second mount over a live one is refused; SIGTERM/SIGINT to a serving child
 * unmounts it cleanly (exit 0, no mount left); a SIGKILLed server leaves a stale mount
 * (ENOTCONN) that the next `mount()` clears.
 *
 * @module
 */
import assert from "node:assert/strict";
import { detachUnmount, type FuseMount, mount } from "../../fs/fuse/mount.ts";
import { ROOT_ID } from "../../fs/fuse/ops.ts";
import { MemFs } from "./memfs.ts";
import { fuseMountsAt, sh, shOk, sleep } from "./helpers.ts";

const DENO = Deno.execPath();
const CHILD = new URL("./serve_child.ts", import.meta.url).pathname;

function helloFs(text = "hello\n"): MemFs {
  const fs = new MemFs();
  fs.addFile(ROOT_ID, "hello", text);
  return fs;
}

/** Reads lines from a stream as they come. */
function lines(stream: ReadableStream<Uint8Array>): () => Promise<string | null> {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  return async () => {
    while (!buf.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) return buf ? (buf = "", buf) : null;
      buf += value;
    }
    const i = buf.indexOf("\n");
    const line = buf.slice(0, i);
    buf = buf.slice(i + 1);
    return line;
  };
}

function timeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, rej) =>
      timer = setTimeout(() => rej(new Error(`timeout: ${what}`)), ms)
    ),
  ]).finally(() => clearTimeout(timer));
}

/** A temp dir whose mountpoint is cleaned of any FUSE mount, whatever happens in `fn`. */
async function withDir(fn: (mp: string) => Promise<void>): Promise<void> {
  const tmp = await Deno.makeTempDir({ prefix: "crfs-fuse-life-" });
  const mp = `${tmp}/mnt`;
  try {
    await fn(mp);
  } finally {
    for (let i = 0; i < 8 && await fuseMountsAt(mp) > 0; i++) {
      await detachUnmount(mp).catch(() => {});
    }
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

function killQuietly(child: Deno.ChildProcess): void {
  try {
    child.kill("SIGKILL");
  } catch {
    // already exited
  }
}

Deno.test("unmount() detaches and resolves closed; the mountpoint is a plain dir again", async () => {
  await withDir(async (mp) => {
    const m = await mount(mp, helloFs());
    let closed = false;
    m.closed.then(() => closed = true);
    assert.equal((await shOk(`cat "$1/hello"`, mp)).out, "hello\n");
    assert.equal(await fuseMountsAt(mp), 1);
    await m.unmount();
    assert.equal(closed, true);
    await timeout(m.closed, 1000, "closed");
    assert.equal(await fuseMountsAt(mp), 0);
    assert.equal((await shOk(`ls -A "$1" | wc -l`, mp)).out.trim(), "0");
    await m.unmount(); // idempotent
  });
});

Deno.test("an open file is served after the detach; closed waits for it", async () => {
  await withDir(async (mp) => {
    const m = await mount(mp, helloFs("still served\n"));
    const child = new Deno.Command("sh", {
      args: ["-c", `exec 3< "$1/hello"; echo opened; read x; cat <&3`, "sh", mp],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    try {
      const next = lines(child.stdout);
      assert.equal(await timeout(next(), 5000, "opened"), "opened");
      let unmounted = false;
      const u = m.unmount({ graceMs: 20_000 }).then(() => unmounted = true);
      await sleep(300);
      assert.equal(await fuseMountsAt(mp), 0, "detached from the tree");
      assert.equal(unmounted, false, "still serving the open file");
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode("go\n"));
      await w.close();
      assert.equal(await timeout(next(), 5000, "content"), "still served");
      assert.equal((await child.status).code, 0);
      await timeout(u, 5000, "unmount after the file was closed");
    } finally {
      killQuietly(child);
      await m.unmount({ graceMs: 0 });
    }
  });
});

Deno.test("after the grace period the connection is aborted, ending closed", async () => {
  await withDir(async (mp) => {
    const m = await mount(mp, helloFs());
    const child = new Deno.Command("sh", {
      args: ["-c", `exec 3< "$1/hello"; echo opened; exec sleep 30`, "sh", mp],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    try {
      const next = lines(child.stdout);
      assert.equal(await timeout(next(), 5000, "opened"), "opened");
      const t0 = Date.now();
      await timeout(m.unmount({ graceMs: 300 }), 10_000, "unmount with abort");
      assert.ok(Date.now() - t0 >= 300);
      await timeout(m.closed, 1000, "closed");
    } finally {
      killQuietly(child);
      await child.status;
    }
  });
});

Deno.test("mounting over a live FUSE mount is refused", async () => {
  await withDir(async (mp) => {
    const m = await mount(mp, helloFs());
    try {
      await assert.rejects(mount(mp, helloFs()), /live fuse\.crfs mount/);
      assert.equal((await shOk(`cat "$1/hello"`, mp)).out, "hello\n");
    } finally {
      await m.unmount();
    }
  });
});

async function startChild(mp: string, mode = ""): Promise<[Deno.ChildProcess, string]> {
  const child = new Deno.Command(DENO, {
    args: ["run", "-A", CHILD, mp, mode],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const first = await timeout(lines(child.stdout)(), 20_000, "child ready");
  assert.match(first ?? "", /^ready \d+:\d+$/);
  return [child, first!.split(" ")[1]];
}

for (const sig of ["SIGTERM", "SIGINT"] as const) {
  Deno.test(`${sig} to a serving process unmounts and exits cleanly`, async () => {
    await withDir(async (mp) => {
      const [child] = await startChild(mp);
      try {
        assert.equal((await shOk(`cat "$1/hello"`, mp)).out, "hello from the child\n");
        child.kill(sig);
        const st = await timeout(child.status, 15_000, "child exit");
        const err = new TextDecoder().decode(
          await new Response(child.stderr).arrayBuffer(),
        );
        assert.equal(st.code, 0, err);
        assert.match(err, new RegExp(`got ${sig}`));
        assert.equal(await fuseMountsAt(mp), 0);
        const r = await sh(`stat -c %F "$1"`, mp);
        assert.equal(r.out.trim(), "directory");
      } finally {
        killQuietly(child);
      }
    });
  });
}

Deno.test("a SIGKILLed server's stale mount is cleared by the next mount", async () => {
  await withDir(async (mp) => {
    const [child] = await startChild(mp, "nosignal");
    let m: FuseMount | undefined;
    try {
      assert.equal((await shOk(`cat "$1/hello"`, mp)).out, "hello from the child\n");
      child.kill("SIGKILL");
      await child.status;
      await child.stderr.cancel();
      const stale = await sh(`stat "$1"`, mp);
      assert.notEqual(stale.code, 0);
      assert.match(stale.err, /Transport endpoint is not connected/);
      assert.equal(await fuseMountsAt(mp), 1);
      m = await mount(mp, helloFs("fresh\n"));
      assert.equal(await fuseMountsAt(mp), 1);
      assert.equal((await shOk(`cat "$1/hello"`, mp)).out, "fresh\n");
    } finally {
      killQuietly(child);
      await m?.unmount();
    }
    assert.equal(await fuseMountsAt(mp), 0);
  });
});

Deno.test("a hung server's mount (SIGSTOPped) is cleared after the probe times out", async () => {
  await withDir(async (mp) => {
    const [child] = await startChild(mp, "nosignal");
    let m: FuseMount | undefined;
    try {
      child.kill("SIGSTOP");
      const t0 = Date.now();
      m = await mount(mp, helloFs("after hang\n"), { staleProbeMs: 500 });
      assert.ok(Date.now() - t0 >= 500, "waited for the probe");
      assert.equal(await fuseMountsAt(mp), 1);
      assert.equal((await shOk(`cat "$1/hello"`, mp)).out, "after hang\n");
    } finally {
      killQuietly(child);
      await child.status;
      await child.stderr.cancel().catch(() => {});
      await m?.unmount();
    }
  });
});
