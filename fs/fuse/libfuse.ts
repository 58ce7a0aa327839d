/**
 * The native edge of the FUSE layer: Deno FFI bindings to libc (`read`, `write`, `writev`, `poll`,
 * `umount2`) and to libfuse3, which is used only to mount (`fuse_session_new` with an empty ops
 * table, `fuse_session_mount`, `fuse_session_fd`; as non-root libfuse goes through fusermount3).
 * The kernel protocol itself is spoken by `session.ts` over the returned `/dev/fuse` descriptor.
 *
 * Libraries are opened lazily, so importing this module needs no `--allow-ffi`. Nothing here
 * blocks the JS thread on I/O that could wait: the `/dev/fuse` descriptor is put in O_NONBLOCK
 * mode, so requests are read with plain synchronous `read`s that return EAGAIN when none is
 * queued; waiting for one is a `poll` run as a `nonblocking` FFI call on Deno's blocking pool,
 * like mounting and unmounting. Replies are plain `write`s, which the kernel completes without
 * waiting.
 *
 * @module
 */
import type { FuseIo } from "./session.ts";

const LIBC = "libc.so.6";
const LIBFUSE = "libfuse3.so.3";

const MNT_DETACH = 2;
const UMOUNT_NOFOLLOW = 8;
const POLLIN = 0x001;
const POLLERR = 0x008;
const POLLHUP = 0x010;
const POLLNVAL = 0x020;

const EAGAIN = 11;
const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;

const libcSymbols = {
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  sched_yield: { parameters: [], result: "i32" },
  poll_wait: {
    name: "poll",
    parameters: ["buffer", "u64", "i32"],
    result: "i32",
    nonblocking: true,
  },
  writev: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  umount2: { parameters: ["buffer", "i32"], result: "i32", nonblocking: true },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

const libfuseSymbols = {
  fuse_session_new: {
    parameters: ["buffer", "buffer", "usize", "pointer"],
    result: "pointer",
  },
  fuse_session_mount: { parameters: ["pointer", "buffer"], result: "i32", nonblocking: true },
  fuse_session_fd: { parameters: ["pointer"], result: "i32" },
  fuse_session_destroy: { parameters: ["pointer"], result: "void" },
  fuse_opt_free_args: { parameters: ["buffer"], result: "void" },
} as const;

let libc: Deno.DynamicLibrary<typeof libcSymbols> | undefined;
let libfuse: Deno.DynamicLibrary<typeof libfuseSymbols> | undefined;

function c(): Deno.DynamicLibrary<typeof libcSymbols>["symbols"] {
  libc ??= Deno.dlopen(LIBC, libcSymbols);
  return libc.symbols;
}

function f(): Deno.DynamicLibrary<typeof libfuseSymbols>["symbols"] {
  libfuse ??= Deno.dlopen(LIBFUSE, libfuseSymbols);
  return libfuse.symbols;
}

const enc = new TextEncoder();

/** A NUL-terminated copy of `s`. */
function cstr(s: string): Uint8Array<ArrayBuffer> {
  const b = enc.encode(s);
  const out = new Uint8Array(b.length + 1);
  out.set(b);
  return out;
}

let errnoView: Deno.UnsafePointerView | null | undefined;

/** errno of the JS thread, meaningful right after a synchronous (not `nonblocking`) FFI call. */
export function lastErrno(): number {
  if (errnoView === undefined) {
    // The JS thread never changes, so neither does the address of its errno.
    const p = c().__errno_location();
    errnoView = p === null ? null : new Deno.UnsafePointerView(p);
  }
  return errnoView === null ? 0 : errnoView.getInt32();
}

/** A `/dev/fuse` descriptor seen as the session's I/O. */
class DeviceIo implements FuseIo {
  readonly fd: number;
  #iov = new BigUint64Array(4);
  #iovBytes = new Uint8Array(this.#iov.buffer);
  #pollfd = new Uint8Array(8);
  #pollDv = new DataView(this.#pollfd.buffer);
  #waitFd = new Uint8Array(8);

  constructor(fd: number) {
    this.fd = fd;
    const libc = c();
    const fl = libc.fcntl(fd, F_GETFL, 0);
    if (fl < 0 || libc.fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
      throw new Error(`cannot make /dev/fuse non-blocking (errno ${lastErrno()})`);
    }
    const dv = new DataView(this.#waitFd.buffer);
    dv.setInt32(0, fd, true);
    dv.setInt16(4, POLLIN, true);
  }

  #lastLen = 0;
  #lastLenBig = 0n;

  readNow(buf: Uint8Array<ArrayBuffer>): number {
    if (buf.length !== this.#lastLen) {
      this.#lastLen = buf.length;
      this.#lastLenBig = BigInt(buf.length);
    }
    const libc = c();
    const n = Number(libc.read(this.fd, buf, this.#lastLenBig));
    if (n >= 0) return n;
    const errno = lastErrno();
    // Nothing queued: let whoever shares this CPU run first (often the caller just answered,
    // about to send its next request).
    if (errno === EAGAIN) libc.sched_yield();
    return -errno;
  }

  async wait(timeoutMs: number): Promise<void> {
    // Its own pollfd: the kernel writes revents into it from the blocking pool's thread.
    await c().poll_wait(this.#waitFd, 1n, timeoutMs);
  }

  write(buf: Uint8Array<ArrayBuffer>, len: number): number {
    const n = Number(c().write(this.fd, buf, BigInt(len)));
    return n < 0 ? -lastErrno() : n;
  }

  write2(
    a: Uint8Array<ArrayBuffer>,
    alen: number,
    b: Uint8Array<ArrayBufferLike>,
    blen: number,
  ): number {
    if (blen === 0) return this.write(a, alen);
    const iov = this.#iov;
    iov[0] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(a)));
    iov[1] = BigInt(alen);
    iov[2] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(b as Uint8Array<ArrayBuffer>)));
    iov[3] = BigInt(blen);
    const n = Number(c().writev(this.fd, this.#iovBytes, 2));
    return n < 0 ? -lastErrno() : n;
  }

  gone(): boolean {
    const dv = this.#pollDv;
    dv.setInt32(0, this.fd, true);
    dv.setInt16(4, 0, true);
    dv.setInt16(6, 0, true);
    const r = c().poll(this.#pollfd, 1n, 0);
    if (r < 0) return true;
    return (dv.getInt16(6, true) & (POLLERR | POLLHUP | POLLNVAL)) !== 0;
  }
}

/** A mounted libfuse session whose `/dev/fuse` descriptor the caller serves. */
export interface KernelMount {
  /** The `/dev/fuse` descriptor. */
  readonly fd: number;
  /** I/O over `fd` for `FuseSession`. */
  readonly io: FuseIo;
  /**
   * Frees the libfuse session and closes the descriptor (which ends the connection). Call only
   * when no `wait` on the descriptor is pending (the session has ended).
   */
  destroy(): void;
}

/**
 * Mounts a FUSE filesystem at `mountpoint` (absolute, existing directory) through libfuse, with
 * mount options `opts` (e.g. `["ro", "default_permissions", "fsname=x", "subtype=crfs"]`).
 * Installs no signal handlers and starts no threads; the kernel's INIT request waits on the
 * returned descriptor.
 */
export async function kernelMount(mountpoint: string, opts: string[]): Promise<KernelMount> {
  const fuse = f();
  const argStrings = ["crfs", ...(opts.length ? ["-o", opts.join(",")] : [])].map(cstr);
  const argv = new BigUint64Array(argStrings.length + 1);
  argStrings.forEach((s, i) => {
    argv[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(s)));
  });
  const args = new Uint8Array(24);
  const adv = new DataView(args.buffer);
  adv.setInt32(0, argStrings.length, true);
  adv.setBigUint64(8, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(argv))), true);
  adv.setInt32(16, 0, true);
  // An all-zero ops table of size 0: libfuse never dispatches a request for this session.
  const emptyOps = new Uint8Array(8);
  const se = fuse.fuse_session_new(args, emptyOps, 0n, null);
  // libfuse has copied what it keeps (the call is synchronous, so nothing was collected).
  fuse.fuse_opt_free_args(args);
  if (se === null) throw new Error("fuse_session_new failed (bad mount options?)");
  const rc = await fuse.fuse_session_mount(se, cstr(mountpoint));
  if (rc !== 0) {
    fuse.fuse_session_destroy(se);
    throw new Error(`mounting FUSE at ${mountpoint} failed (libfuse: see stderr)`);
  }
  const fd = fuse.fuse_session_fd(se);
  let destroyed = false;
  return {
    fd,
    io: new DeviceIo(fd),
    destroy() {
      if (destroyed) return;
      destroyed = true;
      fuse.fuse_session_destroy(se);
    },
  };
}

/** `umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW)`; true on success (needs privilege). */
export async function umountDetach(path: string): Promise<boolean> {
  return (await c().umount2(cstr(path), MNT_DETACH | UMOUNT_NOFOLLOW)) === 0;
}
