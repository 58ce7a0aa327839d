/**
 * Real FUSE mounts of the in-memory test filesystem, checked with real tools in child processes:
 * attributes, raw-byte names, symlinks, device nodes and fifos, xattrs (including the ERANGE and
 * size-query protocol, through raw syscalls from perl), statfs, the mount table entry, EROFS for
 * writes, and the debug hook.
 *
 * @module
 */
import assert from "node:assert/strict";
import { makeDev, S_IFBLK, S_IFCHR, S_IFIFO, S_IFSOCK } from "../../fs/fuse/abi.ts";
import { ROOT_ID } from "../../fs/fuse/ops.ts";
import { readMountinfo } from "../../fs/fuse/mount.ts";
import { MemFs } from "./memfs.ts";
import { run, sameBytes, sh, shOk, withMount } from "./helpers.ts";

const enc = new TextEncoder();

Deno.test("attributes of files, dirs and the root match what stat(1) sees", async () => {
  const fs = new MemFs();
  fs.addFile(ROOT_ID, "hello", "hello world\n", {
    mode: 0o640,
    uid: 1234,
    gid: 5678,
    mtimeSec: 1_700_000_000,
    mtimeNsec: 123_456_789,
  });
  const d = fs.addDir(ROOT_ID, "sub", { mode: 0o750, mtimeSec: 1_600_000_000 });
  fs.addDir(d, "inner");
  fs.addFile(d, "empty", "");
  await withMount(fs, async (mp) => {
    const f = "%s|%b|%a|%F|%h|%u|%g|%.9Y|%.9X|%.9Z|%i|%o";
    const hello = (await shOk(`stat -c '${f}' "$1"`, `${mp}/hello`)).out.trim();
    assert.equal(
      hello,
      "12|1|640|regular file|1|1234|5678|1700000000.123456789|1700000000.123456789|" +
        `1700000001.000000005|2|4096`,
    );
    const sub = (await shOk(`stat -c '%a|%F|%h|%.0Y' "$1"`, `${mp}/sub`)).out.trim();
    assert.equal(sub, "750|directory|3|1600000000");
    assert.equal(
      (await shOk(`stat -c '%s|%F' "$1"`, `${mp}/sub/empty`)).out.trim(),
      "0|regular empty file",
    );
    assert.equal((await shOk(`stat -c '%i|%F|%a' "$1"`, mp)).out.trim(), "1|directory|755");
    assert.equal((await shOk(`cat "$1"`, `${mp}/hello`)).out, "hello world\n");
    const ls = (await shOk(`ls -ln "$1"`, mp)).out;
    assert.match(ls, /-rw-r----- 1 1234 5678 +12 .* hello/);
  });
});

Deno.test("non-UTF-8 names are served and looked up as raw bytes", async () => {
  const fs = new MemFs();
  const weird = new Uint8Array([0x66, 0xff, 0xfe, 0x80, 0x0a, 0x20, 0x5c]); // "f\xff\xfe\x80\n \\"
  fs.addFile(ROOT_ID, weird, "weird content");
  fs.addFile(ROOT_ID, "plain", "p");
  fs.addFile(ROOT_ID, "ünïcødé ✓", "u");
  await withMount(fs, async (mp) => {
    const r = await shOk(`cd "$1" && find . -mindepth 1 -print0 | sort -z`, mp);
    const names = splitNul(r.stdout).map((b) => b.subarray(2)); // drop "./"
    const want = [weird, enc.encode("plain"), enc.encode("ünïcødé ✓")]
      .sort(compareBytes);
    assert.equal(names.length, 3);
    names.sort(compareBytes).forEach((n, i) => sameBytes(n, want[i], `name ${i}`));
    // Look the weird name up by its bytes (printf builds them; the argument is not UTF-8).
    // $(...) would strip the name's newline, so printf a trailing "." and cut it off.
    const c2 = await shOk(
      `n="$(printf 'f\\377\\376\\200\\n \\134.')"; n="\${n%.}"; cat "$1/$n"`,
      mp,
    );
    assert.equal(c2.out, "weird content");
    assert.equal((await shOk(`cat "$1/ünïcødé ✓"`, mp)).out, "u");
    const missing = await sh(`cat "$1/$(printf 'f\\377')"`, mp);
    assert.notEqual(missing.code, 0);
    assert.match(missing.err, /No such file/);
  });
});

Deno.test("symlinks, devices, fifos and sockets", async () => {
  const fs = new MemFs();
  fs.addFile(ROOT_ID, "target", "pointed at\n");
  fs.addSymlink(ROOT_ID, "rel", "target");
  fs.addSymlink(ROOT_ID, "dangling", "no/such/thing");
  fs.addSymlink(ROOT_ID, "long", "x".repeat(4000));
  fs.addSpecial(ROOT_ID, "null", S_IFCHR, makeDev(1, 3), { mode: 0o666 });
  fs.addSpecial(ROOT_ID, "sda", S_IFBLK, makeDev(8, 300));
  fs.addSpecial(ROOT_ID, "pipe", S_IFIFO);
  fs.addSpecial(ROOT_ID, "sock", S_IFSOCK);
  await withMount(fs, async (mp) => {
    assert.equal((await shOk(`readlink "$1/rel"`, mp)).out, "target\n");
    assert.equal((await shOk(`cat "$1/rel"`, mp)).out, "pointed at\n");
    assert.equal((await shOk(`readlink "$1/dangling"`, mp)).out, "no/such/thing\n");
    assert.equal((await shOk(`readlink "$1/long"`, mp)).out, "x".repeat(4000) + "\n");
    assert.notEqual((await sh(`cat "$1/dangling"`, mp)).code, 0);
    // Twice: the second readlink may come from the kernel's symlink cache.
    assert.equal((await shOk(`readlink "$1/rel"`, mp)).out, "target\n");
    const st = (await shOk(
      `cd "$1" && stat -c '%n|%F|%t|%T|%a|%s' rel null sda pipe sock`,
      mp,
    )).out.trim().split("\n");
    assert.deepEqual(st, [
      "rel|symbolic link|0|0|777|6",
      "null|character special file|1|3|666|0",
      "sda|block special file|8|12c|644|0",
      "pipe|fifo|0|0|644|0",
      "sock|socket|0|0|644|0",
    ]);
    // The mount is nodev: the device node is visible but not usable.
    assert.notEqual((await sh(`head -c 1 "$1/null"`, mp)).code, 0);
  });
});

function perlXattr(fn: "get" | "list", path: string, name: string, size: number) {
  // Raw getxattr(2)/listxattr(2) with an exact buffer size; prints "<ret> <errno> <hex data>".
  const script = `
    my ($fn, $path, $name, $size) = @ARGV;
    my $buf = "\\0" x ($size > 0 ? $size : 1);
    my $r = $fn eq "get"
      ? syscall(191, $path, $name, ($size > 0 ? $buf : 0), $size)
      : syscall(194, $path, ($size > 0 ? $buf : 0), $size);
    my $e = $! + 0;
    print "$r ", ($r < 0 ? $e : 0), " ", ($r > 0 && $size > 0 ? unpack("H*", substr($buf, 0, $r)) : ""), "\\n";
  `;
  return run("perl", ["-e", script, fn, path, name, String(size)]);
}

Deno.test("xattrs: getfattr, size queries, ERANGE, ENODATA, listxattr", async () => {
  const fs = new MemFs();
  fs.addFile(ROOT_ID, "f", "x", {
    xattrs: { "user.a": "alpha", "user.bin": new Uint8Array([0, 1, 255]), "trusted.t": "tt" },
  });
  fs.addFile(ROOT_ID, "none", "y");
  await withMount(fs, async (mp) => {
    const d = (await shOk(`getfattr --absolute-names -d -m - -e hex "$1"`, `${mp}/f`)).out;
    assert.match(d, /user\.a=0x616c706861/);
    assert.match(d, /user\.bin=0x0001ff/);
    assert.match(d, /trusted\.t=0x7474/);
    const one = await shOk(`getfattr --only-values -n user.a "$1"`, `${mp}/f`);
    assert.equal(one.out, "alpha");
    const miss = await sh(`getfattr -n user.missing "$1"`, `${mp}/f`);
    assert.notEqual(miss.code, 0);
    assert.match(miss.err, /No such attribute/);
    assert.equal((await shOk(`getfattr --absolute-names -d -m - "$1"`, `${mp}/none`)).out, "");

    const f = `${mp}/f`;
    assert.equal((await perlXattr("get", f, "user.a", 0)).out.trim(), "5 0");
    assert.equal((await perlXattr("get", f, "user.a", 4)).out.trim(), "-1 34"); // ERANGE
    assert.equal((await perlXattr("get", f, "user.a", 5)).out.trim(), "5 0 616c706861");
    assert.equal((await perlXattr("get", f, "user.a", 100)).out.trim(), "5 0 616c706861");
    assert.equal((await perlXattr("get", f, "user.zz", 100)).out.trim(), "-1 61"); // ENODATA
    const listLen = "user.a\0user.bin\0trusted.t\0".length;
    assert.equal((await perlXattr("list", f, "", 0)).out.trim(), `${listLen} 0`);
    assert.equal((await perlXattr("list", f, "", listLen - 1)).out.trim(), "-1 34");
    const full = (await perlXattr("list", f, "", listLen)).out.trim().split(" ");
    assert.equal(full[0], String(listLen));
    const names = new TextDecoder().decode(hex(full[2])).split("\0").filter(Boolean).sort();
    assert.deepEqual(names, ["trusted.t", "user.a", "user.bin"]);
    assert.equal((await perlXattr("list", `${mp}/none`, "", 0)).out.trim(), "0 0");
    // Setting is refused: the mount is read-only.
    const set = await sh(`setfattr -n user.x -v 1 "$1"`, f);
    assert.match(set.err, /Read-only file system/);
  });
});

Deno.test("statfs, mount table entry, EROFS for writes, debug log", async () => {
  const fs = new MemFs();
  fs.addFile(ROOT_ID, "f", "data");
  const lines: string[] = [];
  await withMount(fs, async (mp, m) => {
    const st = (await shOk(`stat -f -c '%b|%f|%a|%c|%d|%S|%l|%T' "$1"`, mp)).out.trim();
    assert.equal(st, `1000|0|0|${fs.nodes.size}|0|4096|255|fuseblk`);
    const info = (await readMountinfo()).filter((e) => e.mountPoint === mp);
    assert.equal(info.length, 1);
    assert.equal(info[0].fsType, "fuse.crfs");
    assert.equal(info[0].source, "crfs");
    assert.equal(info[0].device, m.device);
    const proc = (await Deno.readTextFile("/proc/mounts")).split("\n").find((l) =>
      l.split(" ")[1] === mp
    );
    assert.match(proc!, /^crfs \S+ fuse\.crfs ro,.*default_permissions/);
    const ra = (await Deno.readTextFile(`/sys/class/bdi/${m.device}/read_ahead_kb`)).trim();
    assert.equal(ra, "1024");
    assert.equal(m.init.maxPages, 256);
    for (
      const cmd of [
        `touch "$1/new"`,
        `mkdir "$1/d"`,
        `rm -f "$1/f"`,
        `echo x >> "$1/f"`,
        `ln -s a "$1/l"`,
        `mv "$1/f" "$1/g"`,
        `chmod 600 "$1/f"`,
      ]
    ) {
      const r = await sh(cmd, mp);
      assert.notEqual(r.code, 0, cmd);
      assert.match(r.err, /Read-only file system/, cmd);
    }
    assert.equal((await shOk(`cat "$1/f"`, mp)).out, "data");
    assert.ok(lines.some((l) => /LOOKUP node=1 name="f"/.test(l)), "debug saw LOOKUP");
    assert.ok(lines.some((l) => /<- ok/.test(l)), "debug saw replies");
  }, { debug: (l) => lines.push(l) });
});

function splitNul(b: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let s = 0;
  for (let i = 0; i < b.length; i++) {
    if (b[i] === 0) {
      out.push(b.subarray(s, i));
      s = i + 1;
    }
  }
  return out;
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

function hex(s: string): Uint8Array {
  return Uint8Array.from(s.match(/../g) ?? [], (h) => parseInt(h, 16));
}
