/**
 * What the dynamic loader reads of an ELF executable or shared library before the program runs:
 * its interpreter (`PT_INTERP`, e.g. `/lib64/ld-linux-x86-64.so.2`), the libraries it needs
 * (`DT_NEEDED`) and where it says to look for them (`DT_RUNPATH`, `DT_RPATH`). Read from the
 * file's bytes alone (program headers and the dynamic section, 32- and 64-bit, either byte
 * order); anything malformed or out of bounds gives undefined, never a throw.
 *
 * @module
 */

/** The loader's view of one ELF file. */
export interface ElfDeps {
  /** The program interpreter (absolute path), for executables that have one. */
  interpreter?: string;
  /** Names of the needed libraries, in order (`libc.so.6`). */
  needed: string[];
  /** Directories from `DT_RUNPATH` or `DT_RPATH` (`$ORIGIN` left as is). */
  runpath: string[];
  /** `e_machine` (62 x86-64, 183 AArch64, 3 i386, …). */
  machine: number;
}

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const DT_NEEDED = 1;
const DT_STRTAB = 5;
const DT_STRSZ = 10;
const DT_RPATH = 15;
const DT_RUNPATH = 29;
/** More program headers, dynamic entries or needed libraries than any real file has. */
const MAX_ENTRIES = 4096;

/** True when `bytes` start with the ELF magic. */
export function isElf(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === 0x7f && bytes[1] === 0x45 && bytes[2] === 0x4c &&
    bytes[3] === 0x46;
}

/** The interpreter, needed libraries and run paths of the ELF file `bytes`, or undefined. */
export function elfDeps(bytes: Uint8Array): ElfDeps | undefined {
  if (!isElf(bytes) || bytes.length < 52) return undefined;
  const wide = bytes[4] === 2;
  if (!wide && bytes[4] !== 1) return undefined;
  const little = bytes[5] === 1;
  if (!little && bytes[5] !== 2) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const inside = (at: number, n: number) => at >= 0 && n >= 0 && at + n <= bytes.length;
  const u16 = (at: number) => view.getUint16(at, little);
  const u32 = (at: number) => view.getUint32(at, little);
  const word = (at: number): number => {
    if (!wide) return u32(at);
    const v = view.getBigUint64(at, little);
    return v > BigInt(Number.MAX_SAFE_INTEGER) ? -1 : Number(v);
  };
  if (wide && bytes.length < 64) return undefined;
  const machine = u16(18);
  const phoff = word(wide ? 0x20 : 0x1c);
  const phentsize = u16(wide ? 0x36 : 0x2a);
  const phnum = u16(wide ? 0x38 : 0x2c);
  if (phoff <= 0 || phentsize < (wide ? 56 : 32) || phnum > MAX_ENTRIES) return undefined;
  if (!inside(phoff, phentsize * phnum)) return undefined;

  const loads: { vaddr: number; offset: number; size: number }[] = [];
  let interpreter: string | undefined;
  let dynamic: { offset: number; size: number } | undefined;
  for (let i = 0; i < phnum; i++) {
    const h = phoff + i * phentsize;
    const type = u32(h);
    const offset = word(h + (wide ? 8 : 4));
    const vaddr = word(h + (wide ? 16 : 8));
    const size = word(h + (wide ? 32 : 16));
    if (offset < 0 || vaddr < 0 || size < 0) return undefined;
    if (type === PT_LOAD) loads.push({ vaddr, offset, size });
    else if (type === PT_INTERP && inside(offset, size) && size > 1) {
      interpreter = cString(bytes, offset, offset + size);
    } else if (type === PT_DYNAMIC && inside(offset, size)) dynamic = { offset, size };
  }
  const out: ElfDeps = { needed: [], runpath: [], machine };
  if (interpreter?.startsWith("/")) out.interpreter = interpreter;
  if (!dynamic) return out;

  const entry = wide ? 16 : 8;
  const count = Math.min(Math.floor(dynamic.size / entry), MAX_ENTRIES);
  const needed: number[] = [];
  const paths: number[] = [];
  let strtab = -1;
  let strsz = -1;
  for (let i = 0; i < count; i++) {
    const e = dynamic.offset + i * entry;
    const tag = wide ? Number(view.getBigInt64(e, little)) : view.getInt32(e, little);
    const val = word(e + (wide ? 8 : 4));
    if (tag === 0) break;
    if (tag === DT_NEEDED) needed.push(val);
    else if (tag === DT_STRTAB) strtab = val;
    else if (tag === DT_STRSZ) strsz = val;
    else if (tag === DT_RUNPATH || tag === DT_RPATH) paths.push(val);
  }
  // DT_STRTAB is an address: the file offset is where a loaded segment maps it.
  const seg = loads.find((l) => strtab >= l.vaddr && strtab < l.vaddr + l.size);
  if (!seg || strsz <= 0) return out;
  const start = strtab - seg.vaddr + seg.offset;
  const end = Math.min(start + strsz, bytes.length);
  if (!inside(start, 0) || end <= start) return out;
  const str = (off: number) =>
    off >= 0 && start + off < end ? cString(bytes, start + off, end) : "";
  for (const n of needed) {
    const name = str(n);
    if (name) out.needed.push(name);
  }
  for (const p of paths) {
    for (const dir of str(p).split(":")) if (dir) out.runpath.push(dir);
  }
  return out;
}

/** The NUL-terminated string at `at` (before `end`), as UTF-8. */
function cString(bytes: Uint8Array, at: number, end: number): string {
  let z = at;
  while (z < end && bytes[z] !== 0) z++;
  return new TextDecoder().decode(bytes.subarray(at, z));
}
