/**
 * What differs between the lazily readable layer formats, behind one small interface: where a
 * blob's TOC is (from the descriptor's annotations, or from the footer at the blob's end), how
 * the compressed TOC becomes TOC JSON, and how chunks are compressed. One implementation per
 * variant: gzip stargz and eStargz (stargz_layer.ts), zstd:chunked (zstd_chunked.ts); the
 * reader tries each.
 *
 * @module
 */
import type { ChunkCodec } from "./chunk_decode.ts";
import type { Footer } from "./footer.ts";

/** The layer formats crfs reads. */
export type LayerFormatName = "stargz" | "estargz" | "zstd:chunked";

/** Where a blob's TOC is, as its annotations or footer say. */
export interface TOCLocation {
  /** Which variant the blob is. */
  format: LayerFormatName;
  /** The footer (or its equivalent from annotations): `tocOffset` is where content ends. */
  footer: Footer;
  /** Extent `[start, end)` of the compressed TOC in the blob. */
  start: number;
  end: number;
  /** Size of the TOC JSON, when the footer or annotations give it. */
  uncompressedSize?: number;
  /** `sha256:…` the compressed TOC bytes must have (zstd:chunked manifest checksum). */
  compressedDigest?: string;
}

/** A TOC or footer that is not well-formed for its format. */
export class LayerFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LayerFormatError";
  }
}

/** One layer format. */
export interface LayerFormat {
  /** How the format's chunks are compressed. */
  readonly codec: ChunkCodec;
  /**
   * The TOC's location from a layer descriptor's annotations, or undefined when they do not
   * locate it. Throws {@link LayerFormatError} when they claim this format but are malformed.
   */
  fromAnnotations(annotations: Record<string, string>, blobSize: number): TOCLocation | undefined;
  /**
   * The TOC's location from `tail`, the last bytes of a blob of `blobSize` bytes, or undefined
   * when the tail does not end with this format's footer.
   */
  fromTail(tail: Uint8Array, blobSize: number): TOCLocation | undefined;
  /**
   * The TOC JSON from the compressed TOC bytes `[loc.start, loc.end)`, never more than
   * `maxBytes`. Throws {@link LayerFormatError} (or a codec error) when they are not one. Async:
   * it may first load the decompressor these bytes need.
   */
  decodeTOC(compressed: Uint8Array, loc: TOCLocation, maxBytes: number): Promise<Uint8Array>;
  /**
   * What {@link decodeTOC} gave for the same bytes, synchronously: for a TOC parsed again after
   * `decodeTOC` succeeded on them (what it loaded is there by then).
   */
  decodeTOCAgain(compressed: Uint8Array, loc: TOCLocation, maxBytes: number): Uint8Array;
}
