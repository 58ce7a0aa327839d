/**
 * The layer store's pure parts: directory names of references (standard padded base64, one
 * name per reference, only references with a tag or a digest) and the `info` document.
 *
 * @module
 */
import assert from "node:assert/strict";
import { decodeRefName, encodeRefName, layerInfo } from "../../fs/layer_store.ts";
import { announcedLayer } from "../../format/layer_kind.ts";
import { unqualified } from "../../fs/snapshotter/remote_layers.ts";

const D = `sha256:${"ab".repeat(32)}`;

Deno.test("reference names: standard padded base64 of what podman pulls", () => {
  assert.equal(encodeRefName("127.0.0.1:5000/my/img:tag"), "MTI3LjAuMC4xOjUwMDAvbXkvaW1nOnRhZw==");
  assert.deepEqual(decodeRefName("MTI3LjAuMC4xOjUwMDAvbXkvaW1nOnRhZw=="), {
    host: "127.0.0.1:5000",
    repository: "my/img",
    tag: "tag",
  });
  assert.deepEqual(decodeRefName(encodeRefName(`127.0.0.1:5000/a/b/c@${D}`)), {
    host: "127.0.0.1:5000",
    repository: "a/b/c",
    digest: D,
  });
  // Docker Hub names, normalized or familiar, land on the same repository.
  for (const ref of ["docker.io/library/debian:12", "debian:12"]) {
    assert.deepEqual(decodeRefName(encodeRefName(ref)), {
      host: "registry-1.docker.io",
      repository: "library/debian",
      tag: "12",
    });
  }
  // Text beyond ASCII encodes as UTF-8 without error (and is no valid repository anyway).
  assert.equal(encodeRefName("h.example/ü:1"), btoa("h.example/\xc3\xbc:1"));
  assert.equal(decodeRefName(encodeRefName("h.example/ü:1")), undefined);
});

Deno.test("reference names: anything else is no reference", () => {
  for (
    const name of [
      "",
      "not base64!",
      "MTI3LjAuMC4xOjUwMDAvbXkvaW1nOnRhZw", // unpadded
      "MTI3-jAu", // URL-safe alphabet
      encodeRefName("127.0.0.1:5000/my/img").replace(/=+$/, ""),
      encodeRefName("127.0.0.1:5000/my/img"), // neither tag nor digest
      encodeRefName("127.0.0.1:5000/My/Img:x"), // not a valid repository
      btoa("\xff\xfe"), // not UTF-8
      "sha256:" + "0".repeat(64),
    ]
  ) {
    assert.equal(decodeRefName(name), undefined, name);
  }
  // A non-canonical encoding (trailing bits set) of a valid reference is refused too.
  const canonical = encodeRefName("a.io/x:1");
  const last = canonical.replace(/=+$/, "").at(-1)!;
  const bumped = canonical.replace(/[^=](=+)$/, (_m, pad) => {
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    return alphabet[alphabet.indexOf(last) + 1] + pad;
  });
  assert.notEqual(bumped, canonical);
  assert.equal(atob(bumped), atob(canonical), "same bytes");
  assert.equal(decodeRefName(bumped), undefined);
});

Deno.test("info: the fields containers/storage reads, with their types", () => {
  const toc = `sha256:${"cd".repeat(32)}`;
  const diff = `sha256:${"ef".repeat(32)}`;
  const desc = {
    mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
    digest: D,
    size: 1234,
    annotations: {
      "containerd.io/snapshot/stargz/toc.digest": toc,
      "io.containers.estargz.uncompressed-size": "5678",
    },
  };
  assert.deepEqual(layerInfo(desc, diff, toc), {
    "compressed-diff-digest": D,
    "compressed-size": 1234,
    "diff-digest": diff,
    "diff-size": 5678,
    compression: 2,
    "toc-digest": toc,
  });
  // Without a usable uncompressed size annotation, diff-size is left out.
  for (const bad of [undefined, "", "-1", "1.5", "x"]) {
    const annotations: Record<string, string> = { ...desc.annotations };
    if (bad === undefined) delete annotations["io.containers.estargz.uncompressed-size"];
    else annotations["io.containers.estargz.uncompressed-size"] = bad;
    assert.equal("diff-size" in layerInfo({ ...desc, annotations }, diff, toc), false, bad);
  }
});

Deno.test("info: a zstd:chunked layer says zstd (4) and its manifest checksum", () => {
  const checksum = `sha256:${"12".repeat(32)}`;
  const diff = `sha256:${"ef".repeat(32)}`;
  const desc = {
    mediaType: "application/vnd.oci.image.layer.v1.tar+zstd",
    digest: D,
    size: 999,
    annotations: {
      "io.github.containers.zstd-chunked.manifest-checksum": checksum,
      "io.github.containers.zstd-chunked.manifest-position": "900:80:300:1",
    },
  };
  const kind = announcedLayer(desc.annotations);
  assert.deepEqual(kind, { format: "zstd:chunked", tocKey: checksum });
  assert.deepEqual(layerInfo(desc, diff, kind!.tocKey!, kind!.format), {
    "compressed-diff-digest": D,
    "compressed-size": 999,
    "diff-digest": diff,
    compression: 4,
    "toc-digest": checksum,
  });
});

Deno.test("snapshotter: eStargz and zstd:chunked layers qualify, others say why not", () => {
  const z = {
    mediaType: "application/vnd.oci.image.layer.v1.tar+zstd",
    digest: D,
    size: 1,
    annotations: { "io.containers.zstd-chunked.manifest-position": "1:2:3:1" },
  };
  assert.equal(unqualified(z), undefined);
  assert.match(unqualified({ ...z, annotations: {} })!, /not zstd:chunked/);
  const g = {
    mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
    digest: D,
    size: 1,
    annotations: { "containerd.io/snapshot/stargz/toc.digest": D },
  };
  assert.equal(unqualified(g), undefined);
  // zstd:chunked annotations on a gzip layer, or a zstd media type without them: not lazy.
  assert.match(unqualified({ ...z, mediaType: g.mediaType })!, /not eStargz/);
  assert.match(
    unqualified({ ...g, mediaType: "application/vnd.oci.image.layer.v1.tar" })!,
    /media type/,
  );
});
