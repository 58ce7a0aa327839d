/**
 * What a read-only filesystem owes its users, through a real `crfs mount` of a local stargz
 * file: statfs, `ro` in the mount table and EROFS for every kind of change, permission checks by
 * the kernel on the image's own modes and owners (as root and as other users, `--allow-other`
 * opt-in), readdir offsets that stay valid (`telldir`/`seekdir` over a directory of thousands of
 * entries), and `--debug` logging the FUSE operations.
 *
 * @module
 */
import assert from "node:assert/strict";
import { bash, run, startMount, tarTree, toEStargz } from "./helpers.ts";
import { requireRoot } from "../helpers/require_root.ts";

const ENTRIES = 3000;

/** The local stargz file under `<work>/local/acl.stargz`. */
async function buildLayer(work: string): Promise<void> {
  const dir = `${work}/tree`;
  await bash(
    `d=$1; mkdir -p "$d/bigdir" "$d/dir700" "$d/dir-nobody"; cd "$d"
    printf 'public\\n' > pub.txt; chmod 644 pub.txt
    printf 'private\\n' > private; chown 1000:1000 private; chmod 600 private
    printf 'nothing\\n' > mode000; chmod 000 mode000
    printf '#!/bin/sh\\necho ran as $(id -u)\\n' > exe; chmod 755 exe
    printf 'inside\\n' > dir700/f; chmod 700 dir700
    printf 'theirs\\n' > dir-nobody/f; chown -R 65534:65534 dir-nobody; chmod 700 dir-nobody
    pad=$(printf 'x%.0s' $(seq 1 60))
    for i in $(seq -w 1 ${ENTRIES}); do : > "bigdir/entry-$i-$pad"; done`,
    [dir],
  );
  await tarTree(dir, `${work}/acl.tar`);
  const l = await toEStargz(`${work}/acl.tar`);
  await Deno.mkdir(`${work}/local`);
  await Deno.rename(l.blob, `${work}/local/acl.stargz`);
}

/** Runs `sh -c script` as `uid:gid` (no supplementary groups). */
function as(uid: number, script: string, ...args: string[]) {
  return run("setpriv", [
    `--reuid=${uid}`,
    `--regid=${uid}`,
    "--clear-groups",
    "sh",
    "-c",
    script,
    "sh",
    ...args,
  ]);
}

Deno.test({
  name: "crfs mount: statfs, EROFS, permissions, --allow-other, readdir offsets, --debug",
  async fn(t) {
    requireRoot("FUSE mounts");
    const work = await Deno.makeTempDir({ prefix: "crfs-mount-acl-" });
    // The mount point's parents must be searchable by other users for the access tests.
    await Deno.chmod(work, 0o755);
    const stops: (() => Promise<unknown>)[] = [];
    try {
      await buildLayer(work);
      const m = await startMount(`${work}/mnt`, ["--local-dir", `${work}/local`, "--debug"]);
      stops.push(m.stop);
      const root = `${m.mnt}/images/local/acl.stargz`;

      await t.step(
        "statfs answers: fuse, 4 KiB blocks, 255-byte names, no free space",
        async () => {
          const r = await run("stat", ["-f", "-c", "%T %S %l %b %f %a %d", m.mnt]);
          assert.equal(r.code, 0, r.err);
          const [type, bsize, namelen, blocks, bfree, bavail, ffree] = r.out.trim().split(" ");
          assert.match(type, /fuse/);
          assert.deepEqual([bsize, namelen, blocks, bfree, bavail, ffree], [
            "4096",
            "255",
            "0",
            "0",
            "0",
            "0",
          ]);
          assert.equal((await run("df", [m.mnt])).code, 0);
          assert.equal((await run("stat", ["-f", root])).code, 0);
          assert.notEqual((await run("stat", [`${root}/no-such-name`])).code, 0);
        },
      );

      await t.step("read-only: ro in the mount table, EROFS for every change", async () => {
        const line = (await Deno.readTextFile("/proc/self/mounts")).split("\n")
          .find((l) => l.split(" ")[1] === m.mnt)!;
        assert.match(line, / fuse\.crfs ro[, ]/);
        assert.doesNotMatch(line, /allow_other/);
        const changes = [
          `touch "$1/new"`,
          `echo x > "$1/pub.txt"`,
          `echo x >> "$1/pub.txt"`,
          `truncate -s 0 "$1/pub.txt"`,
          `mkdir "$1/d"`,
          `rm "$1/pub.txt"`,
          `rmdir "$1/dir700"`,
          `mv "$1/pub.txt" "$1/moved"`,
          `ln "$1/pub.txt" "$1/hard"`,
          `ln -s x "$1/sym"`,
          `chmod 600 "$1/pub.txt"`,
          `chown 1:1 "$1/pub.txt"`,
          `touch -d @1 "$1/pub.txt"`,
          `setfattr -n user.x -v 1 "$1/pub.txt"`,
          `mknod "$1/fifo" p`,
        ];
        for (const c of changes) {
          const r = await run("sh", ["-c", c, "sh", root]);
          assert.notEqual(r.code, 0, c);
          assert.match(r.err, /Read-only file system/, `${c}: ${r.err}`);
        }
        assert.equal((await run("cat", [`${root}/pub.txt`])).out, "public\n");
      });

      await t.step(
        "access(2) as root: reads allowed, writes refused, x needs an x bit",
        async () => {
          const ok = async (test: string, path: string) =>
            (await run("sh", ["-c", `test ${test} "$1"`, "sh", `${root}/${path}`])).code === 0;
          assert.ok(await ok("-r", "mode000"));
          assert.equal((await run("cat", [`${root}/mode000`])).out, "nothing\n");
          assert.ok(!(await ok("-w", "pub.txt")), "no write access on a read-only mount");
          assert.ok(!(await ok("-w", "dir700")));
          assert.ok(await ok("-x", "exe"));
          assert.ok(!(await ok("-x", "pub.txt")));
          assert.ok(await ok("-x", "dir700"));
          assert.equal((await run(`${root}/exe`, [])).out, "ran as 0\n");
        },
      );

      await t.step("other users: refused without --allow-other", async () => {
        const r = await as(65534, `ls "$1"`, m.mnt);
        assert.notEqual(r.code, 0);
        assert.match(r.err, /Permission denied/);
      });

      await t.step("readdir offsets are stable: telldir/seekdir over 3000 entries", async () => {
        const perl = String.raw`
          opendir(my $d, $ARGV[0]) or die "opendir: $!";
          my (@names, @pos);
          while (1) { my $p = telldir($d); my $n = readdir($d); last unless defined $n;
                      push @pos, $p; push @names, $n; }
          for my $i (0, 1, 2, 1000, 1777, 2500, $#names, 3, 1500) {
            seekdir($d, $pos[$i]); my $n = readdir($d);
            die "seekdir to entry $i gave $n, not $names[$i]\n" unless $n eq $names[$i];
          }
          rewinddir($d); my @again;
          while (defined(my $n = readdir($d))) { push @again, $n }
          die "second pass differs\n" unless join("\0", @again) eq join("\0", @names);
          print scalar(@names), "\n";`;
        const dir = `${root}/bigdir`;
        const a = await run("perl", ["-e", perl, dir]);
        assert.equal(a.code, 0, a.err);
        assert.equal(a.out.trim(), String(ENTRIES + 2));
        // The same order from a fresh open, and from the layer view of the same file.
        const b = await run("perl", ["-e", perl, dir]);
        assert.equal(b.out, a.out, b.err);
        const l1 = await run("ls", ["-f", dir]);
        const l2 = await run("ls", ["-f", `${m.mnt}/layers/local/acl.stargz/bigdir`]);
        assert.equal(l1.out, l2.out);
        assert.equal(l1.out.split("\n").filter(Boolean).length, ENTRIES + 2);
        // "." and ".." carry the directory's and its parent's inode numbers.
        const dots = await run("sh", [
          "-c",
          `ls -ai "$1" | head -n 2; stat -c %i "$1" "$1/.."`,
          "sh",
          dir,
        ]);
        const [dot, dotdot, self, parent] = dots.out.trim().split("\n").map((l) => l.trim());
        assert.equal(dot, `${self} .`);
        assert.equal(dotdot, `${parent} ..`);
      });

      await t.step(
        "ls -l asks crfs for the SELinux label and ACLs once, not per file",
        async () => {
          const before = m.stderr().length;
          const r = await run("ls", ["-lR", root]);
          assert.equal(r.code, 0, r.err);
          assert.ok(r.out.split("\n").length > ENTRIES);
          const asked = m.stderr().slice(before).match(/-> GETXATTR /g) ?? [];
          assert.ok(asked.length <= 4, `${asked.length} GETXATTR requests for ls -lR`);
          const sel = await run("getfattr", ["-n", "security.selinux", `${root}/pub.txt`]);
          assert.match(sel.err, /Operation not supported/);
          const other = await run("getfattr", ["-n", "user.none", `${root}/pub.txt`]);
          assert.match(other.err, /No such attribute/);
        },
      );

      await t.step("--debug logs FUSE operations", () => {
        const log = m.stderr();
        assert.match(log, /fuse: INIT kernel 7\.\d+/);
        assert.match(log, /fuse: #\d+ -> LOOKUP node=1 name="images"/);
        assert.match(log, /fuse: #\d+ -> (READDIRPLUS|READDIR) node=\d+ fh=\d+/);
        assert.match(log, /fuse: #\d+ -> READ node=\d+ fh=\d+ off=0 size=\d+/);
        assert.match(log, /fuse: #\d+ -> STATFS/);
        assert.match(log, /fuse: #\d+ <- ok \d+B/);
        assert.match(log, /fuse: #\d+ -> LOOKUP node=\d+ name="no-such-name"/);
      });

      const s = await m.stop();
      assert.equal(s.code, 0);

      await t.step("--allow-other: the image's modes and owners decide", async () => {
        const m2 = await startMount(`${work}/mnt`, [
          "--local-dir",
          `${work}/local`,
          "--allow-other",
        ]);
        stops.push(m2.stop);
        const line = (await Deno.readTextFile("/proc/self/mounts")).split("\n")
          .find((l) => l.split(" ")[1] === m2.mnt)!;
        assert.match(line, /allow_other/);
        const nobody = (script: string) => as(65534, script, root);
        assert.equal((await nobody(`cat "$1/pub.txt"`)).out, "public\n");
        const priv = await nobody(`cat "$1/private"`);
        assert.match(priv.err, /Permission denied/);
        assert.equal((await as(1000, `cat "$1/private"`, root)).out, "private\n");
        assert.match((await nobody(`cat "$1/mode000"`)).err, /Permission denied/);
        assert.match((await nobody(`ls "$1/dir700"`)).err, /Permission denied/);
        assert.equal((await nobody(`cat "$1/dir-nobody/f"`)).out, "theirs\n");
        assert.match((await as(1000, `cat "$1/dir-nobody/f"`, root)).err, /Permission denied/);
        assert.equal((await nobody(`"$1/exe"`)).out, "ran as 65534\n");
        assert.match((await nobody(`touch "$1/dir-nobody/new"`)).err, /Read-only file system/);
        assert.equal((await nobody(`ls "$1/bigdir" | wc -l`)).out.trim(), String(ENTRIES));
      });
    } finally {
      for (const s of stops.reverse()) await s().catch(() => {});
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});
