/**
 * The test image of the mount tests: three layers made by GNU tar from real directory trees.
 *
 * - Layer 0: copies (`cp -a`) of this machine's `/etc`, `/usr/share/zoneinfo`,
 *   `/usr/share/perl5` and setuid/setgid programs from `/usr/bin`, a real file of 5–12 MB from
 *   `/usr/lib`, and `special/`: hardlinks made with `ln` (three names, across directories),
 *   symlinks (relative, absolute, dangling, to a directory), setuid/setgid/sticky modes, odd
 *   owners and modes, xattrs set with `setfattr` (user.* and trusted.*, on files, a directory
 *   and a symlink), devices made with `mknod` (one with a major/minor above 255), a fifo,
 *   sub-second mtimes, names that are not UTF-8 or hold spaces and a newline, a long name, a
 *   deep path, empty files and directories, and what the upper layers delete or replace.
 * - Layer 1: whiteouts of a file, of a directory and of a real directory
 *   (`usr/share/zoneinfo/Europe`), opaque directories (one over the real `usr/share/perl5`), a
 *   file replacing a directory and a directory replacing a file, a changed file with another
 *   owner and mode, a new hardlink pair, and real files (`/usr/share/doc/…`).
 * - Layer 2: a whiteout of a file of layer 1, a name whited out below re-created as a
 *   directory, a whiteout of a name that never existed, an opaque directory over two layers.
 *
 * @module
 */
import { bash, type Layer, tarTree, toEStargz } from "./helpers.ts";

const LAYER0 = String.raw`
d=$1; s=$d/special
mkdir -p "$d/usr/share" "$d/usr/bin" "$d/usr/lib" "$d/etc" "$s"
cp -a /etc/. "$d/etc/"
cp -a /usr/share/zoneinfo /usr/share/perl5 "$d/usr/share/"
for b in chage expiry gpasswd newgrp umount mount su fusermount3 ssh-agent; do
  if [ -f "/usr/bin/$b" ]; then cp -a "/usr/bin/$b" "$d/usr/bin/"; fi
done
big=$(find /usr/lib -xdev -type f -size +5M -size -12M 2>/dev/null | LC_ALL=C sort | head -n 1)
if [ -n "$big" ]; then cp -a "$big" "$d/usr/lib/real-big.bin"
else
  find /usr/lib -xdev -type f -size +100k 2>/dev/null | LC_ALL=C sort | head -n 300 |
    xargs cat 2>/dev/null | head -c 7000000 > "$d/usr/lib/real-big.bin" || true
fi
big=$d/usr/lib/real-big.bin

cd "$s"
printf 'hello\n' > hello.txt
mkdir sub xdir tmp empty-dir deep
ln hello.txt hard1; ln hello.txt sub/hard2
head -c 1000000 "$big" > data.bin; ln data.bin sub/data-link
ln -s hello.txt rel-link; ln -s /etc/passwd abs-link; ln -s nowhere dangling; ln -s sub dir-link
printf 'suid\n' > setuid; chmod 4755 setuid
printf 'sgid\n' > setgid; chmod 2711 setgid
chmod 1777 tmp
printf 'none\n' > mode000; chmod 000 mode000
printf 'private\n' > private; chown 1000:1000 private; chmod 600 private
chown 65534:65534 xdir; chmod 711 xdir
: > empty
setfattr -n user.comment -v 'hello world' hello.txt
setfattr -n user.binary -v 0x00ff10 data.bin
setfattr -n trusted.secret -v s3cret setuid
setfattr -n user.dirattr -v on-a-dir xdir
setfattr -h -n trusted.link -v on-a-symlink rel-link
mknod null c 1 3; mknod loop0 b 7 0; mknod bigdev c 300 70000; mkfifo fifo
chmod 640 null
touch "$(printf 'caf\xe9')" "$(printf 'raw-\xff\xfe')" 'with space' "$(printf 'new\nline')"
touch "$(printf 'l%.0s' $(seq 1 200))"
mkdir -p deep/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z/0123456789012345678901234567890123456789
printf 'deep\n' > deep/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z/0123456789012345678901234567890123456789/file-at-the-bottom.txt
printf 'to be deleted\n' > gone.txt
mkdir -p gone-dir/a/b; printf 'x\n' > gone-dir/a/b/x
mkdir -p opaque/sub; printf 'old\n' > opaque/old.txt; printf 'deep\n' > opaque/sub/deep.txt
mkdir -p replaced-dir/sub; printf 'x\n' > replaced-dir/sub/x
printf 'a file\n' > was-file
truncate -s 9M sparse.bin; printf 'middle' | dd of=sparse.bin bs=1 seek=4000000 conv=notrunc status=none
touch -h -d '2001-02-03 04:05:06.123456789' hello.txt
touch -h -d '@1234567890.000000001' rel-link
touch -d '@1500000000.999999999' data.bin
touch -d '@1600000000.5' sub
touch -d '@1000000000.25' xdir
`;

const LAYER1 = String.raw`
d=$1; s=$d/special
mkdir -p "$s/opaque" "$s/was-file" "$d/usr/share/zoneinfo" "$d/usr/share/perl5" "$d/usr/share/doc" "$d/etc"
: > "$s/.wh.gone.txt"; : > "$s/.wh.gone-dir"
: > "$s/opaque/.wh..wh..opq"; printf 'new\n' > "$s/opaque/new.txt"
printf 'now a file\n' > "$s/replaced-dir"
printf 'inside\n' > "$s/was-file/inside.txt"; printf 'stays\n' > "$s/was-file/stays.txt"
printf 'pair\n' > "$s/pair-a"; ln "$s/pair-a" "$s/pair-b"
printf 'suid in layer 1\n' > "$s/setuid-1"; chmod 4750 "$s/setuid-1"
: > "$d/usr/share/zoneinfo/.wh.Europe"
: > "$d/usr/share/perl5/.wh..wh..opq"; printf 'perl5 replaced\n' > "$d/usr/share/perl5/README.crfs"
printf 'crfs-test\n' > "$d/etc/hostname"; chown 1000:1000 "$d/etc/hostname"; chmod 600 "$d/etc/hostname"
for p in bash coreutils tar; do
  if [ -d "/usr/share/doc/$p" ]; then cp -a "/usr/share/doc/$p" "$d/usr/share/doc/"; fi
done
chmod 750 "$s"
touch -d '@1700000000.75' "$s/opaque"
`;

const LAYER2 = String.raw`
d=$1; s=$d/special
mkdir -p "$s/was-file" "$s/gone.txt" "$s/opaque"
: > "$s/was-file/.wh.inside.txt"
printf 'back\n' > "$s/gone.txt/again"
: > "$s/.wh.never-existed"
: > "$s/opaque/.wh..wh..opq"; printf 'newer\n' > "$s/opaque/new2.txt"
chmod 751 "$s"
`;

/** The test image on disk. */
export interface TestImage {
  /** Bottom first. */
  layers: Layer[];
  /** The staging trees the layers were made from (removed after tar). */
  scripts: string[];
}

/** Builds the three layers under `work` (plain tar and eStargz of each). */
export async function buildTestImage(work: string): Promise<TestImage> {
  const scripts = [LAYER0, LAYER1, LAYER2];
  const layers: Layer[] = [];
  for (let i = 0; i < scripts.length; i++) {
    const stage = `${work}/stage${i}`;
    await Deno.mkdir(stage);
    await bash(scripts[i], [stage]);
    await tarTree(stage, `${work}/layer${i}.tar`);
    await Deno.remove(stage, { recursive: true });
    layers.push(await toEStargz(`${work}/layer${i}.tar`));
  }
  return { layers, scripts };
}
