/**
 * Every layer format crfs reads, held to the blob conformance suite (blob_suite.ts): legacy
 * google/crfs stargz (the shared fixtures), crfs's own eStargz at several chunk sizes and with
 * small files sharing gzip members (`innerOffset`), eStargz converted a second time by crfs,
 * eStargz written by the reference Go writer (containerd/stargz-snapshotter's `estargz`
 * package, tests/helpers/reference.ts), and zstd:chunked written by crfs, by skopeo and by the
 * reference Go `estargz/zstdchunked` writer — each found from its annotations and from its
 * footer alone.
 *
 * A new layer format joins by adding ONE `blobConformance(name, makeCase)` call below.
 *
 * @module
 */
import { type BlobCase, blobConformance } from "./blob_suite.ts";
import { convert, FIXTURES } from "../unit/tree_helpers.ts";
import { buildWithReference } from "../helpers/reference.ts";
import { buildZstdChunkedWithReference } from "../helpers/reference_zstd.ts";
import { skopeoZstdChunked } from "../format/helpers.ts";
import { writeEStargz, type WriterOptions } from "../../format/writer.ts";
import {
  writeZstdChunked,
  type ZstdChunkedWriterOptions,
} from "../../format/zstd_chunked_writer.ts";
import { concat } from "../../format/bytes.ts";

/** Bytes a writer gives to its sink, joined. */
async function collect(
  write: (sink: (b: Uint8Array) => void) => Promise<unknown>,
): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  await write((b) => {
    parts.push(b.slice());
  });
  return concat(parts);
}

async function* once(b: Uint8Array) {
  yield b;
}

/** crfs's zstd:chunked writer: the blob, its TOC digest and descriptor annotations. */
async function crfsZstdChunked(tar: Uint8Array, opts: ZstdChunkedWriterOptions) {
  let result;
  const blob = await collect(async (sink) => {
    result = await writeZstdChunked(once(tar), sink, { workers: 0, ...opts });
  });
  return { blob, result: result! as Awaited<ReturnType<typeof writeZstdChunked>> };
}

async function sh(script: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command("bash", {
    args: ["-c", script, "bash", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`${script}: ${new TextDecoder().decode(out.stderr)}`);
}

let layerTar: Promise<Uint8Array> | undefined;

/**
 * A layer tar made by GNU tar from real files: hardlinks, symlinks, setuid, sticky, xattrs, a
 * fifo, devices, sub-second and old times, a name that is not UTF-8, an empty file, whiteouts,
 * a file over several chunks, owners other than root.
 */
function gnuLayer(): Promise<Uint8Array> {
  return layerTar ??= (async () => {
    const work = await Deno.makeTempDir({ prefix: "crfs-conformance-" });
    try {
      await sh(
        `set -e; cd "$1"; mkdir -p l/etc l/app/sub l/dev l/opq l/tmp l/empty-dir; cd l
        cp /etc/os-release etc/; printf 'hello\\n' > etc/hello; : > etc/empty
        head -c 300000 /dev/urandom > app/big.bin; ln app/big.bin app/big.hard
        ln app/big.bin app/sub/big.hard2
        ln -s ../etc/hello app/rel-link; ln -s /etc/os-release app/abs-link
        ln -s "$(printf 'target-\\377')" app/odd-link
        printf '#!/bin/sh\\n' > app/setuid; chmod 4755 app/setuid; chmod 1777 tmp
        printf 'x' > app/xattr; setfattr -n user.comment -v 'crfs test' app/xattr
        setfattr -n user.bin -v 0x00ff01 app/xattr
        mkfifo dev/fifo; mknod dev/null2 c 1 3; mknod dev/blk b 7 200
        printf 'old\\n' > opq/old; touch opq/.wh..wh..opq etc/.wh.gone
        printf 'not utf8\\n' > "$(printf 'name-\\377\\376')"
        touch -d '2021-03-04 05:06:07.123456789' etc/hello
        touch -h -d '1999-12-31 23:59:59.5' app/rel-link
        touch -d '1970-01-02 00:00:00' etc/empty
        chown 1000:1000 app/xattr; chown 65534:70000 etc/hello; chmod 0640 etc/os-release
        find . -type d -exec touch -d '2020-02-03 04:05:06.75' {} +
        cd ..; tar -cf layer.tar --xattrs --xattrs-include='*' --numeric-owner -C l .`,
        work,
      );
      return await Deno.readFile(`${work}/layer.tar`);
    } finally {
      await Deno.remove(work, { recursive: true });
    }
  })();
}

// --- legacy google/crfs stargz (47-byte footer, no chunk digests) -----------------------------
// google/crfs stored U+FFFD for bytes that are not UTF-8 and rounded times to whole seconds.
// GNU tar cannot restore two xattrs of synthetic-small.tar (a `LIBARCHIVE.xattr.user.la` record
// and a security.capability the kernel refuses), so the oracle leaves them out.
const TAR_X_CANNOT_RESTORE = ["user.la", "security.capability"];
const LEGACY_QUIRKS = {
  lossyNames: true,
  wholeSecondTimes: true,
  ignoreXattrs: TAR_X_CANNOT_RESTORE,
};
for (
  const [blob, tar] of [
    ["synthetic-small.crfs.stargz", "synthetic-small.tar"],
    ["synthetic-small.crfs-64k.stargz", "synthetic-small.tar"],
    ["synthetic-tree.crfs-64k.stargz", "synthetic-tree.tar"],
    ["synthetic-gnu.crfs.stargz", "synthetic-gnu.tar"],
  ]
) {
  blobConformance(`legacy google/crfs ${blob}`, async (): Promise<BlobCase> => ({
    blob: await Deno.readFile(`${FIXTURES}/${blob}`),
    tar: await Deno.readFile(`${FIXTURES}/${tar}`),
    quirks: LEGACY_QUIRKS,
  }));
}

// --- crfs's eStargz writer at several chunk sizes --------------------------------------------
for (const [label, chunkSize] of [["4 KiB", 4 << 10], ["64 KiB", 64 << 10], ["4 MiB", 4 << 20]]) {
  blobConformance(`crfs eStargz, ${label} chunks`, async (): Promise<BlobCase> => {
    const tar = await gnuLayer();
    const { blob, result } = await convert(tar, { chunkSize: chunkSize as number, workers: 0 });
    return { blob, tar, tocDigest: result.tocDigest };
  });
}

blobConformance("crfs eStargz of the legacy fixture synthetic-small.tar", async () => {
  const tar = await Deno.readFile(`${FIXTURES}/synthetic-small.tar`);
  const { blob, result } = await convert(tar, { chunkSize: 64 << 10, workers: 0 });
  return { blob, tar, tocDigest: result.tocDigest, quirks: { ignoreXattrs: TAR_X_CANNOT_RESTORE } };
});

// --- crfs eStargz converted again (the writer's input is itself an eStargz blob) --------------
blobConformance("crfs eStargz reconverted", async () => {
  const tar = await gnuLayer();
  const first = await convert(tar, { chunkSize: 64 << 10, workers: 0 });
  const { blob, result } = await convert(first.blob, { chunkSize: 16 << 10, workers: 0 });
  return { blob, tar, tocDigest: result.tocDigest };
});

// --- eStargz written by the reference Go writer ----------------------------------------------
blobConformance("reference Go estargz writer, 64 KiB chunks", async () => {
  const tar = await gnuLayer();
  const work = await Deno.makeTempDir({ prefix: "crfs-conformance-ref-" });
  try {
    await Deno.writeFile(`${work}/in.tar`, tar);
    const built = await buildWithReference(`${work}/in.tar`, `${work}/out.stargz`, {
      chunkSize: 64 << 10,
      gomaxprocs: 1,
    });
    return {
      blob: await Deno.readFile(`${work}/out.stargz`),
      tar,
      tocDigest: built.tocDigest,
      // Go's encoding/json writes U+FFFD for name bytes that are not UTF-8; the writer rounds
      // times to whole seconds (RFC 3339 without fraction).
      quirks: { lossyNames: true, wholeSecondTimes: true },
    };
  } finally {
    await Deno.remove(work, { recursive: true });
  }
});

// --- crfs eStargz with small files sharing gzip members (innerOffset) -------------------------
for (const minChunkSize of [16 << 10, 1 << 20]) {
  blobConformance(
    `crfs eStargz, --min-chunk-size ${minChunkSize >> 10} KiB (innerOffset)`,
    async () => {
      const tar = await gnuLayer();
      let tocDigest = "";
      const opts: WriterOptions = { chunkSize: 64 << 10, minChunkSize, workers: 0 };
      const blob = await collect(async (sink) => {
        tocDigest = (await writeEStargz(once(tar), sink, opts)).tocDigest;
      });
      return { blob, tar, tocDigest };
    },
  );
}

// --- zstd:chunked written by crfs: from the annotations and from the footer (v1 and v2) -------
blobConformance("crfs zstd:chunked, 64 KiB chunks, found from the annotations", async () => {
  const tar = await gnuLayer();
  const { blob, result } = await crfsZstdChunked(tar, { chunkSize: 64 << 10 });
  return { blob, tar, tocDigest: result.tocDigest, annotations: result.annotations };
});
for (const footer of ["v1", "v2"] as const) {
  blobConformance(`crfs zstd:chunked, 4 MiB chunks, found from the ${footer} footer`, async () => {
    const tar = await gnuLayer();
    const { blob, result } = await crfsZstdChunked(tar, { footer });
    return { blob, tar, tocDigest: result.tocDigest };
  });
}

// --- zstd:chunked written by skopeo (containers/storage's writer) -----------------------------
// Go's encoding/json writes U+FFFD for name bytes that are not UTF-8.
let skopeoBlob: Promise<{ blob: Uint8Array; annotations: Record<string, string> }> | undefined;
function skopeoLayer() {
  return skopeoBlob ??= (async () => {
    const work = await Deno.makeTempDir({ prefix: "crfs-conformance-skopeo-" });
    try {
      const l = await skopeoZstdChunked(work, await gnuLayer());
      return { blob: await Deno.readFile(l.path), annotations: l.annotations };
    } finally {
      await Deno.remove(work, { recursive: true });
    }
  })();
}
blobConformance("skopeo zstd:chunked, found from the annotations", async () => {
  const { blob, annotations } = await skopeoLayer();
  return { blob, tar: await gnuLayer(), annotations, quirks: { lossyNames: true } };
});
blobConformance("skopeo zstd:chunked, found from the footer", async () => {
  const { blob } = await skopeoLayer();
  return { blob, tar: await gnuLayer(), quirks: { lossyNames: true } };
});

// --- zstd:chunked written by the reference Go estargz/zstdchunked writer ----------------------
blobConformance("reference Go zstdchunked writer, 64 KiB chunks", async () => {
  const tar = await gnuLayer();
  const work = await Deno.makeTempDir({ prefix: "crfs-conformance-refz-" });
  try {
    await Deno.writeFile(`${work}/in.tar`, tar);
    const built = await buildZstdChunkedWithReference(
      `${work}/in.tar`,
      `${work}/out.zst`,
      64 << 10,
    );
    return {
      blob: await Deno.readFile(`${work}/out.zst`),
      tar,
      tocDigest: built.tocDigest,
      annotations: built.annotations,
      quirks: { lossyNames: true, wholeSecondTimes: true },
    };
  } finally {
    await Deno.remove(work, { recursive: true });
  }
});
