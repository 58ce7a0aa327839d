/**
 * The error type of the registry layer. Every failure a user can meet talking to a registry
 * (HTTP error statuses, the registry's JSON `errors`, unreachable hosts, timeouts, digest
 * mismatches, bad ranges) becomes a {@link RegistryError} with a stable `code` and a message that
 * names the reference or host involved. Messages never contain credentials.
 *
 * @module
 */

/**
 * Stable error codes. Registry codes from the distribution spec pass through as sent
 * (`MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`, `NAME_UNKNOWN`, `UNAUTHORIZED`, `DENIED`,
 * `TOOMANYREQUESTS`, …); crfs adds its own for failures without a registry body.
 */
export type RegistryErrorCode =
  | "UNAUTHORIZED"
  | "DENIED"
  | "NOT_FOUND"
  | "MANIFEST_UNKNOWN"
  | "BLOB_UNKNOWN"
  | "NAME_UNKNOWN"
  | "TOOMANYREQUESTS"
  | "UNSUPPORTED"
  | "CONNECTION"
  | "TIMEOUT"
  | "TLS"
  | "DNS"
  | "SERVER_ERROR"
  | "HTTP_ERROR"
  | "DIGEST_MISMATCH"
  | "BAD_RESPONSE"
  | "RANGE_NOT_SATISFIABLE"
  | "PLATFORM_NOT_FOUND"
  | "CREDENTIALS"
  | (string & Record<never, never>);

/** Details for {@link RegistryError}. */
export interface RegistryErrorInit {
  /** The error code. */
  code: RegistryErrorCode;
  /** HTTP status, when the failure was an HTTP response. */
  status?: number;
  /** What was being accessed (an image reference, `host/repo`, a host). */
  reference?: string;
  /** The registry's `detail`, or other structured context. */
  detail?: unknown;
  /** Whether retrying later may help (used by the HTTP layer). */
  transient?: boolean;
  /** The underlying error. */
  cause?: unknown;
}

/** A failure talking to a registry; see the module documentation. */
export class RegistryError extends Error {
  /** Stable code: a registry error code or one of crfs's own. */
  readonly code: RegistryErrorCode;
  /** HTTP status, when there was a response. */
  readonly status?: number;
  /** The reference, repository or host the operation was about. */
  readonly reference?: string;
  /** Extra detail from the registry. */
  readonly detail?: unknown;
  /** Whether a retry later may succeed. */
  readonly transient: boolean;
  /** Suggested process exit code (1: an error in the environment, not a crash). */
  readonly exitCode = 1;
  constructor(message: string, init: RegistryErrorInit) {
    super(message, init.cause !== undefined ? { cause: init.cause } : undefined);
    this.name = "RegistryError";
    this.code = init.code;
    this.status = init.status;
    this.reference = init.reference;
    this.detail = init.detail;
    this.transient = init.transient ?? false;
  }
}

/** Whether `e` is a {@link RegistryError}, optionally with one of `codes`. */
export function isRegistryError(e: unknown, ...codes: RegistryErrorCode[]): e is RegistryError {
  return e instanceof RegistryError && (codes.length === 0 || codes.includes(e.code));
}

/** Whether `e` means "does not exist" (404-like codes). */
export function isNotFound(e: unknown): boolean {
  return isRegistryError(e, "NOT_FOUND", "MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "NAME_UNKNOWN");
}
