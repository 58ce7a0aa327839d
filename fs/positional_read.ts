/**
 * Positional reads of local files through libc (`open`, `pread` on a thread of the runtime's
 * pool, `posix_fadvise`, `close`): a read at an offset with no shared file position, so that
 * concurrent reads of one open file need no locking (Deno's `FsFile` has only `seek` + `read`).
 * The decoded-chunk cache serves FUSE reads from its files with it, straight into the buffer the
 * reply is sent from. Where libc cannot be loaded (no FFI permission), {@link PreadFile.open}
 * answers null and callers read files their usual way.
 *
 * @module
 */

const O_RDONLY = 0;
const O_CLOEXEC = 0o2000000;
const POSIX_FADV_WILLNEED = 3;

const symbols = {
  open: { parameters: ["buffer", "i32"], result: "i32" },
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize", nonblocking: true },
  posix_fadvise: { parameters: ["i32", "i64", "i64", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
} as const;

let lib: Deno.DynamicLibrary<typeof symbols> | null | undefined;

function libc(): Deno.DynamicLibrary<typeof symbols> | null {
  if (lib === undefined) {
    try {
      lib = Deno.dlopen("libc.so.6", symbols);
    } catch {
      lib = null;
    }
  }
  return lib;
}

/** A file open for positional reads; {@link close} it once (after its reads settled). */
export class PreadFile {
  readonly #fd: number;
  #closed = false;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /** Opens `path` read-only: the file, or null when it cannot be opened or there is no libc. */
  static open(path: string): PreadFile | null {
    const c = libc();
    if (!c) return null;
    const fd = c.symbols.open(new TextEncoder().encode(`${path}\0`), O_RDONLY | O_CLOEXEC);
    return fd < 0 ? null : new PreadFile(fd);
  }

  /**
   * Reads into `buf` from file offset `offset` until `buf` is full or the file ends; the
   * number of bytes read (short only at the end of the file). Throws on an I/O error.
   */
  async read(buf: Uint8Array<ArrayBuffer>, offset: number): Promise<number> {
    if (this.#closed) throw new Error("pread: file closed");
    const c = libc()!;
    let got = 0;
    while (got < buf.length) {
      const n = Number(
        await c.symbols.pread(
          this.#fd,
          buf.subarray(got),
          BigInt(buf.length - got),
          BigInt(offset + got),
        ),
      );
      if (n < 0) throw new Error("pread failed");
      if (n === 0) break;
      got += n;
    }
    return got;
  }

  /** Whether {@link close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Asks the kernel to read the whole file into its page cache in the background. */
  willNeed(): void {
    if (!this.#closed) libc()!.symbols.posix_fadvise(this.#fd, 0n, 0n, POSIX_FADV_WILLNEED);
  }

  /** Closes the file (only once no read is under way: its descriptor may be reused). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    libc()!.symbols.close(this.#fd);
  }
}
