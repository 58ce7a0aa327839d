/**
 * The FUSE request loop: reads kernel requests from a `/dev/fuse` descriptor, decodes them, calls
 * the filesystem's `FuseOps`, and writes exactly one reply per request (none for FORGET,
 * BATCH_FORGET, INTERRUPT). Exceptions become error replies (a `FuseError`'s errno, otherwise
 * EIO), so no caller is ever left waiting.
 *
 * One pump reads the descriptor without blocking (`FuseIo.readNow`) and hands each request to its
 * handler without waiting for it, so a slow READ never holds up other requests. When nothing is
 * queued it first lets the handlers' promises settle (their replies go out), then keeps polling
 * for a short, adaptive while (a caller like `find` or `stat` sends its next request a few µs
 * after its reply; waking up from the blocking pool costs far more), and only then waits for the
 * descriptor on Deno's blocking pool (`FuseIo.wait`). A busy pump gives the event loop a turn at
 * least every `TURN_MS`.
 *
 * Hot-path replies reuse buffers: READ replies go out of a pool of `16 + maxRead` byte buffers
 * that are also offered to `FuseOps.read` to fill; everything else is encoded into one shared
 * scratch buffer and written synchronously right after encoding.
 *
 * @module
 */
import {
  cstringAt,
  decodeInitIn,
  direntPlusSize,
  direntSize,
  encodeAttrOut,
  encodeDirent,
  encodeEntryOut,
  encodeGetxattrOut,
  encodeInitOut,
  encodeOpenOut,
  encodeOutHeader,
  encodeStatfsOut,
  ENTRY_OUT_SIZE,
  Errno,
  FOPEN_CACHE_DIR,
  FOPEN_DIRECT_IO,
  FOPEN_KEEP_CACHE,
  getU64,
  IN_HEADER_SIZE,
  InitFlag,
  InitIn,
  KERNEL_MAJOR,
  KERNEL_MINOR,
  MIN_READ_BUFFER,
  Op,
  opName,
  OUT_HEADER_SIZE,
  WRITE_IN_SIZE,
  WRITE_OPS,
} from "./abi.ts";
import type { DirItem, EntryChange, EntryReply, FuseOps, MaybePromise } from "./ops.ts";
import { errnoOf, FuseError } from "./ops.ts";

/** The descriptor-level I/O a session needs; `libfuse.ts` provides it over `/dev/fuse`. */
export interface FuseIo {
  /**
   * Reads one request into `buf` without waiting: bytes read, `-EAGAIN` if no request is queued,
   * another `-errno` on error.
   */
  readNow(buf: Uint8Array<ArrayBuffer>): number;
  /**
   * Resolves once a request may be queued or the connection has ended (it may also resolve
   * early), or after `timeoutMs` (-1: no limit). At most one wait is pending at a time.
   */
  wait(timeoutMs: number): Promise<void>;
  /** Writes one reply; bytes written or `-errno`. Must not block. */
  write(buf: Uint8Array<ArrayBuffer>, len: number): number;
  /** Writes one reply made of two pieces (header, payload); bytes written or `-errno`. */
  write2(
    a: Uint8Array<ArrayBuffer>,
    alen: number,
    b: Uint8Array<ArrayBufferLike>,
    blen: number,
  ): number;
  /** After a failed read: true if the connection is gone for good (unmounted or aborted). */
  gone(): boolean;
}

/** Session tuning and hooks. */
export interface SessionOptions {
  /** Called with one line per request and per reply. */
  debug?: (line: string) => void;
  /** Called for exceptions from `FuseOps` that are not `FuseError`s (answered with EIO). */
  onError?: (err: unknown, op: string) => void;
  /**
   * Ignored: one non-blocking reader serves every request (several requests are always worked
   * on at once). Kept so that callers passing it still compile.
   */
  readers?: number;
  /** Largest READ in bytes (sets max_pages). Default 1 MiB. */
  maxRead?: number;
  /** max_write announced in INIT (sizes the request buffers). Default 128 KiB. */
  maxWrite?: number;
  /** Kernel limit on concurrent background requests (readahead). Default 64. */
  maxBackground?: number;
}

/** Counters of the request loop. */
export interface SessionStats {
  /** Requests read from the descriptor. */
  requests: number;
  /**
   * Times the loop found nothing to read after polling and waited on the blocking pool (each
   * costs the next request a thread hop and a wake of the event loop, tens of µs).
   */
  waits: number;
}

/** What INIT settled on. */
export interface InitInfo {
  /** Protocol minor version the kernel offered. */
  kernelMinor: number;
  /** Protocol minor version in use. */
  minor: number;
  /** Capability flags the kernel offered. */
  kernelFlags: number;
  /** Capability flags in use. */
  flags: number;
  maxReadahead: number;
  maxWrite: number;
  maxPages: number;
}

const PAGE = 4096;
const DIRENT_MIN = direntSize(1);
const DIRENTPLUS_MIN = direntPlusSize(1);
const READ_POOL_MAX = 64;
const EAGAIN = Errno.EAGAIN;
/** Longest and shortest time the pump polls for the next request before waiting for it. */
const SPIN_MAX_MS = 0.1;
const SPIN_MIN_MS = 0.01;
/** A busy pump lets the event loop run (timers, sockets) at least this often. */
const TURN_MS = 2;
/** Microtask turns given to the handlers of the requests just read before polling again. */
const SETTLE_TICKS = 12;

/** Name-changing requests `FuseOps.changeEntry` may take, with the size of their fixed part. */
const ENTRY_CHANGES = new Map<number, [EntryChange, number]>([
  [Op.CREATE, ["create", 16]], // fuse_create_in
  [Op.MKNOD, ["mknod", 16]], // fuse_mknod_in
  [Op.MKDIR, ["mkdir", 8]], // fuse_mkdir_in
  [Op.UNLINK, ["unlink", 0]],
  [Op.RMDIR, ["rmdir", 0]],
]);

const errnoNames = new Map<number, string>(Object.entries(Errno).map(([k, v]) => [v, k]));
const dec = new TextDecoder("utf-8", { fatal: false });

function isThenable<T>(v: MaybePromise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown } | null)?.then === "function";
}

function isDot(name: Uint8Array): boolean {
  return name[0] === 0x2e && (name.length === 1 || (name.length === 2 && name[1] === 0x2e));
}

/**
 * Serves one FUSE connection. Create it with the descriptor's I/O and the filesystem, then
 * `start()`; the session ends by itself when the kernel connection ends (unmount or abort).
 */
export class FuseSession {
  readonly #io: FuseIo;
  readonly #ops: FuseOps;
  readonly #debug?: (line: string) => void;
  readonly #onError: (err: unknown, op: string) => void;
  readonly #maxRead: number;
  readonly #maxWrite: number;
  readonly #maxBackground: number;
  readonly #readBufSize: number;
  readonly #plus: boolean;

  #started = false;
  #dead = false;
  #inFlight = 0;
  #init?: InitInfo;
  #useReaddirplus = false;
  #initWaiter = Promise.withResolvers<InitInfo>();
  #closed = Promise.withResolvers<void>();

  #errBuf = new Uint8Array(OUT_HEADER_SIZE);
  #errDv = new DataView(this.#errBuf.buffer);
  #scratch = new Uint8Array(64 * 1024);
  #scratchDv = new DataView(this.#scratch.buffer);
  #readPool: Uint8Array<ArrayBuffer>[] = [];
  #interrupts = new Map<number, AbortController>();
  #stats: SessionStats = { requests: 0, waits: 0 };

  /** Resolves when the connection has ended and the pump has stopped reading. */
  readonly closed: Promise<void> = this.#closed.promise;

  constructor(io: FuseIo, ops: FuseOps, options: SessionOptions = {}) {
    this.#io = io;
    this.#ops = ops;
    this.#debug = options.debug;
    this.#onError = options.onError ?? ((err, op) => console.error(`fuse: ${op} failed:`, err));
    this.#maxRead = Math.max(PAGE, Math.ceil((options.maxRead ?? 1 << 20) / PAGE) * PAGE);
    this.#maxWrite = Math.max(PAGE, options.maxWrite ?? 128 * 1024);
    this.#maxBackground = Math.min(0xffff, Math.max(1, options.maxBackground ?? 64));
    this.#readBufSize = Math.max(
      MIN_READ_BUFFER,
      IN_HEADER_SIZE + WRITE_IN_SIZE + this.#maxWrite + PAGE,
    );
    this.#plus = typeof ops.readdirplusEntry === "function";
    this.#initWaiter.promise.catch(() => {});
  }

  /** The negotiated INIT parameters, once INIT has been answered. */
  get init(): InitInfo | undefined {
    return this.#init;
  }

  /** Requests read so far, and how often the pump waited for the descriptor to get one. */
  get stats(): Readonly<SessionStats> {
    return this.#stats;
  }

  /** Requests being worked on right now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /**
   * Starts reading requests. Resolves once the kernel's INIT has been answered (the filesystem
   * is usable then); rejects if the connection ends first.
   */
  start(): Promise<InitInfo> {
    if (!this.#started) {
      this.#started = true;
      this.#pump().catch((err) => this.#onError(err, "reader")).finally(() => this.#end());
    }
    return this.#initWaiter.promise;
  }

  #end(): void {
    this.#dead = true;
    for (const ac of this.#interrupts.values()) ac.abort();
    this.#initWaiter.reject(new Error("FUSE connection ended before INIT"));
    this.#closed.resolve();
  }

  async #pump(): Promise<void> {
    const io = this.#io;
    const buf = new Uint8Array(this.#readBufSize);
    const dv = new DataView(buf.buffer);
    let failures = 0;
    let unsettled = 0; // requests handed out since the handlers last had microtask turns
    let spinMs = SPIN_MAX_MS;
    let turnStart = performance.now();
    let lastServed = turnStart;
    while (!this.#dead) {
      const n = io.readNow(buf);
      if (n >= IN_HEADER_SIZE) {
        failures = 0;
        this.#handle(buf, dv, Math.min(n, dv.getUint32(0, true)));
        this.#stats.requests++;
        if (++unsettled < 16) continue;
      } else if (n !== -EAGAIN) {
        if (this.#dead || io.gone()) return;
        // Interrupted or a request withdrawn by the kernel: try again, slowly if it persists.
        if (++failures % 16 === 0) await new Promise((r) => setTimeout(r, 10));
        continue;
      }
      if (unsettled > 0) {
        // Let the handlers just started run as far as they can without I/O: their replies go out.
        unsettled = 0;
        for (let i = 0; i < SETTLE_TICKS && this.#inFlight > 0; i++) await null;
        const t = performance.now();
        lastServed = t;
        if (t - turnStart >= TURN_MS) {
          await io.wait(0);
          turnStart = performance.now();
        }
        continue;
      }
      const t = performance.now();
      if (t - lastServed < spinMs && t - turnStart < TURN_MS) {
        // The next request of a busy caller is usually a few µs away: poll for it a little.
        await null;
        continue;
      }
      if (t - lastServed >= spinMs) spinMs = Math.max(SPIN_MIN_MS, spinMs / 2);
      this.#stats.waits++;
      await io.wait(t - turnStart >= TURN_MS ? 0 : -1);
      turnStart = performance.now();
      // A request that came soon after the last one would have been caught by a longer poll.
      if (turnStart - lastServed < SPIN_MAX_MS) spinMs = SPIN_MAX_MS;
    }
  }

  // ---- replies -------------------------------------------------------------------------------

  #log(line: string): void {
    try {
      this.#debug!(line);
    } catch {
      // A broken logger must not break the filesystem.
    }
  }

  #sent(unique: number, errno: number, len: number, rc: number): void {
    const what = errno ? `${errnoNames.get(errno) ?? "errno"} (${errno})` : `ok ${len - 16}B`;
    const fail = rc < 0 ? ` write failed: ${errnoNames.get(-rc) ?? -rc}` : "";
    this.#log(`#${unique} <- ${what}${fail}`);
  }

  #replyErr(unique: number, errno: number): void {
    if (this.#dead) return;
    encodeOutHeader(this.#errDv, 0, OUT_HEADER_SIZE, errno, unique);
    const rc = this.#io.write(this.#errBuf, OUT_HEADER_SIZE);
    if (this.#debug) this.#sent(unique, errno, OUT_HEADER_SIZE, rc);
  }

  /** Makes sure the scratch buffer holds `n` bytes; returns its DataView. */
  #scratchFor(n: number): DataView {
    if (this.#scratch.length < n) {
      this.#scratch = new Uint8Array(Math.max(n, this.#scratch.length * 2));
      this.#scratchDv = new DataView(this.#scratch.buffer);
    }
    return this.#scratchDv;
  }

  /** Sends the reply whose body of `bodyLen` bytes sits in scratch at offset 16. */
  #replyScratch(unique: number, bodyLen: number): void {
    if (this.#dead) return;
    const len = OUT_HEADER_SIZE + bodyLen;
    encodeOutHeader(this.#scratchDv, 0, len, 0, unique);
    const rc = this.#io.write(this.#scratch, len);
    if (this.#debug) this.#sent(unique, 0, len, rc);
  }

  /** Sends `data` as the reply body without copying it. */
  #replyBytes(unique: number, data: Uint8Array, len = data.length): void {
    if (this.#dead) return;
    const dv = this.#scratchDv;
    encodeOutHeader(dv, 0, OUT_HEADER_SIZE + len, 0, unique);
    const rc = this.#io.write2(this.#scratch, OUT_HEADER_SIZE, data, len);
    if (this.#debug) this.#sent(unique, 0, OUT_HEADER_SIZE + len, rc);
  }

  #entry(dv: DataView, off: number, e: EntryReply): void {
    encodeEntryOut(dv, off, e.nodeId, e.generation ?? 0, e.entryTtlMs, e.attrTtlMs, e.attr);
  }

  // ---- dispatch ------------------------------------------------------------------------------

  /** Runs one request's async handler; whatever happens, the request gets exactly one reply. */
  #track(unique: number, opcode: number, work: Promise<void>): void {
    this.#inFlight++;
    work.then(
      () => {
        this.#inFlight--;
      },
      (err) => {
        this.#inFlight--;
        this.#fail(unique, opcode, err);
      },
    );
  }

  /** Answers a request whose handler failed with `err`. */
  #fail(unique: number, opcode: number, err: unknown): void {
    this.#report(err, opcode);
    this.#replyErr(unique, errnoOf(err));
  }

  /**
   * Calls `reply` with an op's result: at once if the op answered synchronously (exceptions go
   * to the caller), else when its promise settles (a rejection or a throwing `reply` is
   * answered with the errno). A `FuseError` answered as the result is replied as its errno.
   */
  #then<T>(
    unique: number,
    opcode: number,
    result: MaybePromise<T | FuseError>,
    reply: (v: T) => void,
  ): void {
    if (!isThenable(result)) {
      if (result instanceof FuseError) this.#replyErr(unique, errnoOf(result));
      else reply(result);
      return;
    }
    this.#inFlight++;
    result.then(
      (v) => {
        this.#inFlight--;
        if (this.#dead) return;
        if (v instanceof FuseError) {
          this.#replyErr(unique, errnoOf(v));
          return;
        }
        try {
          reply(v);
        } catch (err) {
          this.#fail(unique, opcode, err);
        }
      },
      (err) => {
        this.#inFlight--;
        this.#fail(unique, opcode, err);
      },
    );
  }

  /** Decodes one request (synchronously: `buf` is reused as soon as this returns). */
  #handle(buf: Uint8Array, dv: DataView, len: number): void {
    const opcode = dv.getUint32(4, true);
    const unique = getU64(dv, 8);
    const nodeId = getU64(dv, 16);
    const B = IN_HEADER_SIZE;
    const debug = this.#debug !== undefined;
    let detail = "";
    // Calls the op and replies, or arranges the reply (a promise: tracked until it settles).
    let work: (() => void | Promise<void>) | undefined;
    let now: (() => void) | undefined;
    try {
      switch (opcode) {
        case Op.READ: {
          const fh = getU64(dv, B);
          const offset = getU64(dv, B + 8);
          const size = dv.getUint32(B + 16, true);
          if (debug) detail = ` fh=${fh} off=${offset} size=${size}`;
          work = () => this.#read(unique, nodeId, fh, offset, size);
          break;
        }
        case Op.LOOKUP: {
          const name = cstringAt(buf, B, len);
          if (debug) detail = ` name=${JSON.stringify(dec.decode(name))}`;
          work = () => this.#lookup(unique, nodeId, name);
          break;
        }
        case Op.GETATTR:
          work = () => this.#getattr(unique, nodeId);
          break;
        case Op.FORGET: {
          const n = getU64(dv, B);
          if (debug) detail = ` nlookup=${n}`;
          now = () => this.#forget(nodeId, n);
          break;
        }
        case Op.BATCH_FORGET: {
          const count = dv.getUint32(B, true);
          const pairs: number[] = [];
          for (let i = 0, off = B + 8; i < count && off + 16 <= len; i++, off += 16) {
            pairs.push(getU64(dv, off), getU64(dv, off + 8));
          }
          if (debug) detail = ` count=${count}`;
          now = () => {
            for (let i = 0; i < pairs.length; i += 2) this.#forget(pairs[i], pairs[i + 1]);
          };
          break;
        }
        case Op.READLINK:
          work = () => this.#readlink(unique, nodeId);
          break;
        case Op.OPEN: {
          const flags = dv.getUint32(B, true);
          if (debug) detail = ` flags=0x${flags.toString(16)}`;
          work = () => this.#open(unique, nodeId, flags);
          break;
        }
        case Op.RELEASE:
        case Op.RELEASEDIR: {
          const fh = getU64(dv, B);
          if (debug) detail = ` fh=${fh}`;
          work = () => this.#release(unique, opcode, nodeId, fh);
          break;
        }
        case Op.OPENDIR:
          work = () => this.#opendir(unique, nodeId);
          break;
        case Op.READDIR:
        case Op.READDIRPLUS: {
          const fh = getU64(dv, B);
          const offset = getU64(dv, B + 8);
          const size = dv.getUint32(B + 16, true);
          if (debug) detail = ` fh=${fh} off=${offset} size=${size}`;
          work = opcode === Op.READDIRPLUS && this.#useReaddirplus
            ? () => this.#readdirplus(unique, nodeId, fh, offset, size)
            : () => this.#readdir(unique, nodeId, fh, offset, size);
          break;
        }
        case Op.GETXATTR: {
          const size = dv.getUint32(B, true);
          const name = cstringAt(buf, B + 8, len);
          if (debug) detail = ` name=${JSON.stringify(dec.decode(name))} size=${size}`;
          work = () => this.#getxattr(unique, nodeId, name, size);
          break;
        }
        case Op.LISTXATTR: {
          const size = dv.getUint32(B, true);
          if (debug) detail = ` size=${size}`;
          work = () => this.#listxattr(unique, nodeId, size);
          break;
        }
        case Op.STATFS:
          work = () => this.#statfs(unique, nodeId);
          break;
        case Op.ACCESS: {
          const mask = dv.getUint32(B, true);
          if (debug) detail = ` mask=${mask}`;
          work = () => this.#access(unique, nodeId, mask);
          break;
        }
        case Op.INTERRUPT: {
          const target = getU64(dv, B);
          if (debug) detail = ` target=#${target}`;
          now = () => this.#interrupts.get(target)?.abort();
          break;
        }
        case Op.INIT: {
          const inp = decodeInitIn(dv, B, len - B);
          if (debug) detail = ` ${inp.major}.${inp.minor} flags=0x${inp.flags.toString(16)}`;
          now = () => this.#doInit(unique, inp);
          break;
        }
        case Op.DESTROY:
          now = () => this.#replyErr(unique, 0);
          break;
        case Op.NOTIFY_REPLY:
          break;
        case Op.CREATE:
        case Op.MKNOD:
        case Op.MKDIR:
        case Op.UNLINK:
        case Op.RMDIR: {
          if (!this.#ops.changeEntry) {
            now = () => this.#replyErr(unique, Errno.EROFS);
            break;
          }
          const [change, fixed] = ENTRY_CHANGES.get(opcode)!;
          const name = cstringAt(buf, B + fixed, len);
          if (debug) detail = ` name=${JSON.stringify(dec.decode(name))}`;
          work = () => this.#changeEntry(unique, opcode, change, nodeId, name);
          break;
        }
        default: {
          const errno = WRITE_OPS.has(opcode) ? Errno.EROFS : Errno.ENOSYS;
          now = () => this.#replyErr(unique, errno);
          break;
        }
      }
    } catch (err) {
      // A malformed request: still answer it (unless it is one that takes no answer).
      this.#report(err, opcode);
      if (opcode !== Op.FORGET && opcode !== Op.BATCH_FORGET && opcode !== Op.INTERRUPT) {
        now = () => this.#replyErr(unique, Errno.EIO);
      }
    }
    if (debug) this.#log(`#${unique} -> ${opName(opcode)} node=${nodeId}${detail}`);
    if (work) {
      try {
        const pending = work();
        if (pending) this.#track(unique, opcode, pending);
      } catch (err) {
        this.#fail(unique, opcode, err);
      }
    } else now?.();
  }

  #report(err: unknown, opcode: number): void {
    if (err instanceof FuseError || this.#dead) return;
    if (err instanceof DOMException && err.name === "AbortError") return;
    try {
      this.#onError(err, opName(opcode));
    } catch {
      // A broken hook must not break the filesystem.
    }
  }

  #forget(nodeId: number, nlookup: number): void {
    if (!this.#ops.forget) return;
    try {
      this.#ops.forget(nodeId, nlookup);
    } catch (err) {
      this.#report(err, Op.FORGET);
    }
  }

  #doInit(unique: number, inp: InitIn): void {
    if (inp.major !== KERNEL_MAJOR) {
      this.#replyErr(unique, Errno.EPROTO);
      this.#initWaiter.reject(new Error(`unsupported FUSE protocol ${inp.major}.${inp.minor}`));
      return;
    }
    const wanted = InitFlag.ASYNC_READ | InitFlag.PARALLEL_DIROPS | InitFlag.MAX_PAGES |
      InitFlag.CACHE_SYMLINKS | InitFlag.ABORT_ERROR | (this.#plus ? InitFlag.DO_READDIRPLUS : 0);
    const flags = (wanted & inp.flags) >>> 0;
    this.#useReaddirplus = (flags & InitFlag.DO_READDIRPLUS) !== 0;
    const info: InitInfo = {
      kernelMinor: inp.minor,
      minor: Math.min(inp.minor, KERNEL_MINOR),
      kernelFlags: inp.flags >>> 0,
      flags,
      maxReadahead: inp.maxReadahead,
      maxWrite: this.#maxWrite,
      maxPages: this.#maxRead / PAGE,
    };
    const sdv = this.#scratchFor(OUT_HEADER_SIZE + 64);
    encodeInitOut(sdv, OUT_HEADER_SIZE, {
      major: KERNEL_MAJOR,
      minor: info.minor,
      maxReadahead: info.maxReadahead,
      flags,
      maxBackground: this.#maxBackground,
      congestionThreshold: Math.max(1, Math.floor(this.#maxBackground * 3 / 4)),
      maxWrite: info.maxWrite,
      timeGran: 1,
      maxPages: info.maxPages,
      flags2: 0,
    });
    this.#replyScratch(unique, 64);
    this.#init = info;
    if (this.#debug) {
      this.#log(
        `INIT kernel ${inp.major}.${inp.minor} flags=0x${(inp.flags >>> 0).toString(16)} ` +
          `-> 7.${info.minor} flags=0x${flags.toString(16)} max_pages=${info.maxPages}`,
      );
    }
    this.#initWaiter.resolve(info);
  }

  // ---- operations ----------------------------------------------------------------------------

  async #read(unique: number, nodeId: number, fh: number, offset: number, size: number) {
    const ac = new AbortController();
    this.#interrupts.set(unique, ac);
    const pooled = size <= this.#maxRead;
    const buf = pooled
      ? (this.#readPool.pop() ?? new Uint8Array(OUT_HEADER_SIZE + this.#maxRead))
      : new Uint8Array(OUT_HEADER_SIZE + size);
    try {
      const into = buf.subarray(OUT_HEADER_SIZE, OUT_HEADER_SIZE + size);
      const data = await this.#ops.read(nodeId, fh, offset, size, ac.signal, into);
      if (this.#dead) return;
      const n = Math.min(data.length, size);
      const hdv = new DataView(buf.buffer, 0, OUT_HEADER_SIZE);
      encodeOutHeader(hdv, 0, OUT_HEADER_SIZE + n, 0, unique);
      let rc: number;
      if (data.buffer === buf.buffer && data.byteOffset === OUT_HEADER_SIZE) {
        rc = this.#io.write(buf, OUT_HEADER_SIZE + n);
      } else {
        rc = this.#io.write2(buf, OUT_HEADER_SIZE, data, n);
      }
      if (this.#debug) this.#sent(unique, 0, OUT_HEADER_SIZE + n, rc);
    } finally {
      this.#interrupts.delete(unique);
      if (pooled && this.#readPool.length < READ_POOL_MAX) this.#readPool.push(buf);
    }
  }

  #lookup(unique: number, parent: number, name: Uint8Array): void {
    this.#then(unique, Op.LOOKUP, this.#ops.lookup(parent, name), (e) => {
      this.#entry(this.#scratchDv, OUT_HEADER_SIZE, e);
      this.#replyScratch(unique, ENTRY_OUT_SIZE);
    });
  }

  #getattr(unique: number, nodeId: number): void {
    this.#then(unique, Op.GETATTR, this.#ops.getattr(nodeId), (r) => {
      encodeAttrOut(this.#scratchDv, OUT_HEADER_SIZE, r.ttlMs, nodeId, r.attr);
      this.#replyScratch(unique, 104);
    });
  }

  #readlink(unique: number, nodeId: number): void {
    this.#then(unique, Op.READLINK, this.#ops.readlink(nodeId), (t) => this.#replyBytes(unique, t));
  }

  #open(unique: number, nodeId: number, flags: number): void {
    this.#then(unique, Op.OPEN, this.#ops.open(nodeId, flags), (r) => {
      const of = (r.keepCache ? FOPEN_KEEP_CACHE : 0) | (r.directIo ? FOPEN_DIRECT_IO : 0);
      encodeOpenOut(this.#scratchDv, OUT_HEADER_SIZE, r.fh ?? 0, of);
      this.#replyScratch(unique, 16);
    });
  }

  #opendir(unique: number, nodeId: number): void {
    const r = this.#ops.opendir ? this.#ops.opendir(nodeId) : {};
    this.#then(unique, Op.OPENDIR, r, (r) => {
      const of = (r.cacheDir ? FOPEN_CACHE_DIR : 0) | (r.keepCache ? FOPEN_KEEP_CACHE : 0);
      encodeOpenOut(this.#scratchDv, OUT_HEADER_SIZE, r.fh ?? 0, of);
      this.#replyScratch(unique, 16);
    });
  }

  #release(unique: number, opcode: number, nodeId: number, fh: number): void {
    try {
      if (opcode === Op.RELEASE) this.#ops.release?.(nodeId, fh);
      else this.#ops.releasedir?.(nodeId, fh);
    } catch (err) {
      this.#report(err, opcode);
    }
    this.#replyErr(unique, 0);
  }

  #readdir(unique: number, nodeId: number, fh: number, offset: number, size: number): void {
    const items = this.#ops.readdir(nodeId, fh, offset, Math.floor(size / DIRENT_MIN));
    this.#then(unique, Op.READDIR, items, (items) => {
      const dv = this.#scratchFor(OUT_HEADER_SIZE + size);
      const buf = this.#scratch;
      let pos = OUT_HEADER_SIZE;
      const end = OUT_HEADER_SIZE + size;
      for (const it of items) {
        if (pos + direntSize(it.name.length) > end) break;
        pos = encodeDirent(buf, dv, pos, it.ino, it.next, it.type, it.name);
      }
      if (pos === OUT_HEADER_SIZE && items.length > 0) throw new FuseError(Errno.EINVAL);
      this.#replyScratch(unique, pos - OUT_HEADER_SIZE);
    });
  }

  /**
   * READDIRPLUS: answered in the same turn when the listing and its entries are (a directory
   * in memory), else once they settle.
   */
  #readdirplus(
    unique: number,
    nodeId: number,
    fh: number,
    offset: number,
    size: number,
  ): void | Promise<void> {
    const items = this.#ops.readdir(nodeId, fh, offset, Math.floor(size / DIRENTPLUS_MIN));
    if (isThenable(items)) {
      return items.then((items) => this.#readdirplusItems(unique, nodeId, items, size));
    }
    return this.#readdirplusItems(unique, nodeId, items, size);
  }

  #readdirplusItems(
    unique: number,
    nodeId: number,
    items: DirItem[],
    size: number,
  ): void | Promise<void> {
    let total = 0;
    let count = 0;
    for (const it of items) {
      const sz = direntPlusSize(it.name.length);
      if (total + sz > size) break;
      total += sz;
      count++;
    }
    if (count === 0 && items.length > 0) throw new FuseError(Errno.EINVAL);
    const chosen = items.length === count ? items : items.slice(0, count);
    const ops = this.#ops;
    // Entries answered at once are taken as they come (no promise per entry); those answered
    // later are awaited together. The first failure ends the reply there.
    const values = new Array<EntryReply | null>(count).fill(null);
    let emit = count;
    let failure: unknown;
    let pending: Promise<void>[] | undefined;
    const failAt = (i: number, err: unknown) => {
      if (i < emit) {
        emit = i;
        failure = err;
      }
    };
    for (let i = 0; i < count; i++) {
      const it = chosen[i];
      if (isDot(it.name)) continue;
      let r: MaybePromise<EntryReply>;
      try {
        r = ops.readdirplusEntry!(nodeId, it);
      } catch (err) {
        failAt(i, err);
        continue;
      }
      if (isThenable(r)) {
        (pending ??= []).push(r.then((e) => {
          values[i] = e;
        }, (err) => failAt(i, err)));
      } else {
        values[i] = r;
      }
    }
    const send = () => {
      // Send the prefix that resolved; undo the lookups of later entries that resolved anyway.
      for (let i = emit + 1; i < count; i++) {
        const e = values[i];
        if (e && e.nodeId) this.#forget(e.nodeId, 1);
      }
      if (emit === 0 && count > 0) throw failure;
      this.#readdirplusSend(unique, chosen, values, emit, size);
    };
    if (pending) return Promise.all(pending).then(send);
    send();
  }

  #readdirplusSend(
    unique: number,
    chosen: DirItem[],
    values: (EntryReply | null)[],
    emit: number,
    size: number,
  ): void {
    if (this.#dead) return;
    this.#scratchFor(OUT_HEADER_SIZE + size);
    const buf = this.#scratch;
    const dv = this.#scratchDv;
    let pos = OUT_HEADER_SIZE;
    for (let i = 0; i < emit; i++) {
      const it = chosen[i];
      const e = values[i];
      if (e) this.#entry(dv, pos, e);
      else buf.fill(0, pos, pos + ENTRY_OUT_SIZE);
      pos = encodeDirent(buf, dv, pos + ENTRY_OUT_SIZE, it.ino, it.next, it.type, it.name);
    }
    this.#replyScratch(unique, pos - OUT_HEADER_SIZE);
  }

  #getxattr(unique: number, nodeId: number, name: Uint8Array, size: number): void {
    const value = this.#ops.getxattr(nodeId, name);
    this.#then(unique, Op.GETXATTR, value, (v) => this.#sized(unique, v, size));
  }

  #listxattr(unique: number, nodeId: number, size: number): void {
    this.#then(unique, Op.LISTXATTR, this.#ops.listxattr(nodeId), (names) => {
      let n = 0;
      for (const name of names) n += name.length + 1;
      const list = new Uint8Array(n);
      let p = 0;
      for (const name of names) {
        list.set(name, p);
        p += name.length + 1;
      }
      this.#sized(unique, list, size);
    });
  }

  /** xattr size protocol: size 0 asks for the length, a too-small size is ERANGE. */
  #sized(unique: number, value: Uint8Array, size: number): void {
    if (size === 0) {
      encodeGetxattrOut(this.#scratchDv, OUT_HEADER_SIZE, value.length);
      this.#replyScratch(unique, 8);
    } else if (value.length > size) {
      this.#replyErr(unique, Errno.ERANGE);
    } else {
      this.#replyBytes(unique, value);
    }
  }

  #statfs(unique: number, nodeId: number): void {
    this.#then(unique, Op.STATFS, this.#ops.statfs(nodeId), (st) => {
      encodeStatfsOut(this.#scratchDv, OUT_HEADER_SIZE, st);
      this.#replyScratch(unique, 80);
    });
  }

  #changeEntry(
    unique: number,
    opcode: number,
    change: EntryChange,
    parent: number,
    name: Uint8Array,
  ): void {
    this.#then(unique, opcode, this.#ops.changeEntry!(change, parent, name), () => {
      // Success has no body only for removals; creating would need an entry (and open) reply.
      this.#replyErr(unique, change === "unlink" || change === "rmdir" ? 0 : Errno.EROFS);
    });
  }

  #access(unique: number, nodeId: number, mask: number): void {
    if (!this.#ops.access) throw new FuseError(Errno.ENOSYS);
    this.#then(unique, Op.ACCESS, this.#ops.access(nodeId, mask), () => this.#replyErr(unique, 0));
  }
}
