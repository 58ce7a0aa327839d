/**
 * An incremental digester (sha256, sha384, sha512) over `node:crypto`. Kept apart from
 * digest.ts so that what only checks whole manifests (Web Crypto) does not load Node's
 * compatibility layer: code on a mount's way up gets one with digest.ts {@link newDigester}.
 *
 * @module
 */
import { createHash, type Hash } from "node:crypto";

/** An incremental digester for one of the algorithms registries use (sha256, sha384, sha512). */
export class Digester {
  readonly algorithm: string;
  readonly #hash: Hash;
  /** Bytes seen so far. */
  bytes = 0;
  constructor(algorithm = "sha256") {
    if (!["sha256", "sha384", "sha512"].includes(algorithm)) {
      throw new Error(`unsupported digest algorithm ${JSON.stringify(algorithm)}`);
    }
    this.algorithm = algorithm;
    this.#hash = createHash(algorithm);
  }
  /** Feeds `chunk`. */
  update(chunk: Uint8Array): void {
    this.#hash.update(chunk);
    this.bytes += chunk.length;
  }
  /** The digest of everything fed, as `algorithm:hex`. Call once. */
  digest(): string {
    return `${this.algorithm}:${this.#hash.digest("hex")}`;
  }
}
