/**
 * Errors caused by the user's input, shared by `convert/` and every command in `cmd/` (which
 * re-exports them from cmd/cli.ts): printed as one line without a stack trace, with an exit
 * code.
 *
 * @module
 */

/** An error caused by the user's input: printed as one line, without a stack trace. */
export class UserError extends Error {
  /** The process exit code to use (2 for usage errors, 1 otherwise). */
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = "UserError";
    this.exitCode = exitCode;
  }
}

/** A usage error: bad flags or arguments. Exit code 2. */
export class UsageError extends UserError {
  constructor(message: string) {
    super(message, 2);
    this.name = "UsageError";
  }
}
