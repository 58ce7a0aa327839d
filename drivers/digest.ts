/**
 * Content digests: `sha256:<hex>` of exact bytes, all at once or incrementally over a stream,
 * and verification that fails loudly instead of passing wrong bytes on. Whole byte arrays are
 * digested with Web Crypto; the incremental {@link Digester} (digester.ts, `node:crypto`) is
 * loaded when first needed, so that importing this module loads nothing of Node's.
 *
 * @module
 */
import { sha256Hex } from "../format/sha256.ts";
import type { Digester } from "./digester.ts";
import { RegistryError } from "./errors.ts";

export type { Digester };

/** Returns `sha256:<hex>` of `bytes` (Web Crypto, format/sha256.ts). */
export async function sha256Digest(bytes: Uint8Array): Promise<string> {
  return `sha256:${await sha256Hex(bytes)}`;
}

/** The algorithm part of a digest (`sha256`), or undefined when malformed. */
export function digestAlgorithm(digest: string): string | undefined {
  const i = digest.indexOf(":");
  return i > 0 ? digest.slice(0, i) : undefined;
}

/** A new incremental {@link Digester} for `algorithm` (sha256, sha384, sha512). */
export async function newDigester(algorithm = "sha256"): Promise<Digester> {
  const { Digester } = await import("./digester.ts");
  return new Digester(algorithm);
}

/** Digest of `bytes` with the algorithm `expected` uses (sha256 by default). */
export async function digestLike(expected: string, bytes: Uint8Array): Promise<string> {
  const algorithm = digestAlgorithm(expected) ?? "sha256";
  if (algorithm === "sha256") return await sha256Digest(bytes);
  const d = await newDigester(algorithm);
  d.update(bytes);
  return d.digest();
}

/** A {@link RegistryError} (`DIGEST_MISMATCH`) for content that does not match its digest. */
export function digestMismatch(what: string, expected: string, actual: string): RegistryError {
  return new RegistryError(
    `${what}: content digest mismatch: expected ${expected}, got ${actual}`,
    {
      code: "DIGEST_MISMATCH",
      reference: what,
      detail: { expected, actual },
    },
  );
}

/**
 * A pass-through stream that digests what flows through it and errors at the end when the
 * digest (or, if given, the size) differs from what was expected.
 */
export function verifyingStream(
  what: string,
  expected: string,
  size?: number,
): TransformStream<Uint8Array, Uint8Array> {
  let d: Digester;
  return new TransformStream<Uint8Array, Uint8Array>({
    async start() {
      d = await newDigester(digestAlgorithm(expected) ?? "sha256");
    },
    transform(chunk, controller) {
      d.update(chunk);
      if (size !== undefined && d.bytes > size) {
        controller.error(
          new RegistryError(`${what}: more than the expected ${size} bytes`, {
            code: "BAD_RESPONSE",
            reference: what,
          }),
        );
        return;
      }
      controller.enqueue(chunk);
    },
    flush(controller) {
      if (size !== undefined && d.bytes !== size) {
        controller.error(
          new RegistryError(`${what}: got ${d.bytes} bytes, expected ${size}`, {
            code: "BAD_RESPONSE",
            reference: what,
          }),
        );
        return;
      }
      const actual = d.digest();
      if (actual !== expected) controller.error(digestMismatch(what, expected, actual));
    },
  });
}
