// Lens files. Two formats:
// - the published artifact (anthropics/jacobian-lens, TransformerLens's JacobianLens.save, the
//   lenses on neuronpedia/jacobian-lens): torch.save of
//     {"J": {layer (int): tensor [d, d] (fp16)}, "n_prompts": int, "source_layers": [int], "d_model": int}
//   (plus an optional "metadata" dict), i.e. a zip archive whose data.pkl is a pickle (protocol
//   2) and whose data/<key> entries hold the tensors' raw storage. Read and written here
//   without Python: a ZIP reader/writer for stored (uncompressed) entries — torch writes no
//   other kind — that reads each tensor at its offset (a 70B lens is ~10 GB, never loaded
//   whole), and the small subset of pickle this dict needs. No pickle opcode runs code: an
//   unknown opcode or any global outside the tensor-rebuilding ones is refused.
// - safetensors (the public packages write none; our own layout): tensors "J.<layer>" and the
//   scalars as strings in __metadata__. See docs/lens-format.md.
import { randomBytes } from "node:crypto";
import { closeSync, fstatSync, fsyncSync, openSync, readSync, renameSync, rmSync, writeSync } from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { LljError } from "./errors.js";

export interface LensData {
  /**
   * layer → J_l, row-major [d_out, d_in] = [d_model, d_model], the orientation of the public
   * package (jlens/lens.py): row i is output coordinate i of the final layer, and the lens
   * applies it as J_l h (jlens's transport computes h @ J.T for rows h).
   */
  J: Map<number, Float32Array>;
  dModel: number;
  nPrompts: number;
  /** The fitted layers, ascending; always the keys of J. */
  sourceLayers: number[];
  /** The storage type the file held (read), or the one to write when options.dtype is not given. */
  dtype?: LensDtype;
  /** Scalars and strings kept beside the matrices (the published format's optional "metadata"). */
  metadata?: Record<string, string | number | boolean | null>;
}

/** Storage types: f16 (as published) and f32 are written; bf16 and f64 are also read. */
export type LensDtype = "f16" | "f32" | "bf16" | "f64";

export type LensFormat = "torch" | "safetensors";

const bad = (file: string, what: string) => new LljError(`lens file ${file}: ${what}`, { code: "INVALID_ARGUMENT" });

// ---------------------------------------------------------------- fp16

const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);

/** IEEE half → float (subnormals, infinities and NaN included). */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** float → IEEE half, rounding to nearest even (as numpy and torch do). */
export function floatToHalf(x: number): number {
  f32[0] = x;
  const b = u32[0], sign = (b >>> 16) & 0x8000, e = (b >>> 23) & 0xff, m = b & 0x7fffff;
  if (e === 0xff) return sign | 0x7c00 | (m ? 0x200 : 0);
  const E = e - 127 + 15;
  if (E >= 31) return sign | 0x7c00;  // overflow → infinity
  if (E <= 0) {  // subnormal half (or zero)
    if (E < -10) return sign;
    const mant = m | 0x800000, shift = 14 - E;
    let h = mant >>> shift;
    const rest = mant & ((1 << shift) - 1), half = 1 << (shift - 1);
    if (rest > half || (rest === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (E << 10) | (m >>> 13);
  const rest = m & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++;  // may carry into the exponent: correct
  return sign | h;
}

// ---------------------------------------------------------------- file access

class Reader {
  readonly size: number;
  constructor(readonly file: string, readonly fd: number) {
    this.size = fstatSync(fd).size;
  }
  read(offset: number, length: number): Buffer {
    if (offset < 0 || length < 0 || offset + length > this.size) throw bad(this.file, `truncated: needs bytes ${offset}..${offset + length} of ${this.size}`);
    const buf = Buffer.alloc(length);
    let got = 0;
    while (got < length) {
      const r = readSync(this.fd, buf, got, length - got, offset + got);
      if (r === 0) throw bad(this.file, "truncated");
      got += r;
    }
    return buf;
  }
}

function withFile<T>(file: string, fn: (r: Reader) => T): T {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch (e) {
    throw new LljError(`cannot open the lens file ${file}: ${(e as Error).message}`, { code: "INVALID_ARGUMENT", cause: e });
  }
  try {
    if (!fstatSync(fd).isFile()) throw bad(file, "not a regular file");
    return fn(new Reader(file, fd));
  } finally {
    closeSync(fd);
  }
}

/** Writes through a temporary file renamed into place: a failed write leaves no half file. */
function atomically(file: string, write: (put: (b: Uint8Array) => void) => void): void {
  // beside the target (rename is atomic only within one file system), unique per call
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  let fd: number;
  try {
    fd = openSync(tmp, "wx");
  } catch (e) {
    throw new LljError(`cannot write the lens file ${file}: ${(e as Error).message}`, { code: "INVALID_ARGUMENT", cause: e });
  }
  try {
    write((b) => {
      let off = 0;
      while (off < b.length) off += writeSync(fd, b, off, b.length - off);
    });
    fsyncSync(fd);  // the data on disk before the name points at it
    closeSync(fd);
    renameSync(tmp, file);
  } catch (e) {
    try { closeSync(fd); } catch { /* already closed */ }
    rmSync(tmp, { force: true });
    if (e instanceof LljError) throw e;
    throw new LljError(`cannot write the lens file ${file}: ${(e as Error)?.message ?? String(e)}`, { code: "INVALID_ARGUMENT", cause: e });
  }
}

// ---------------------------------------------------------------- zip (stored entries)

interface ZipEntry { name: string; method: number; size: number; compressed: number; crc: number; dataOffset: number; localOffset: number }

function readZip(r: Reader): Map<string, ZipEntry> {
  // the end-of-central-directory record: within the last 64 KiB + 22 bytes
  const tailLen = Math.min(r.size, 65557), tail = r.read(r.size - tailLen, tailLen);
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--) if (tail.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
  if (eocd < 0) throw bad(r.file, "not a zip archive (no end of central directory): not a torch.save file");
  let count = tail.readUInt16LE(eocd + 10), cdSize = tail.readUInt32LE(eocd + 12), cdOffset = tail.readUInt32LE(eocd + 16);
  const locator = eocd - 20;
  if (locator >= 0 && tail.readUInt32LE(locator) === 0x07064b50) {  // ZIP64 (torch writes it past 4 GiB)
    const at = Number(tail.readBigUInt64LE(locator + 8));
    if (at > r.size - 56) throw bad(r.file, "truncated: the ZIP64 end of central directory is past the end of the file");
    const rec = r.read(at, 56);
    if (rec.readUInt32LE(0) !== 0x06064b50) throw bad(r.file, "broken ZIP64 end of central directory");
    count = Number(rec.readBigUInt64LE(32));
    cdSize = Number(rec.readBigUInt64LE(40));
    cdOffset = Number(rec.readBigUInt64LE(48));
  }
  if (count > 1e6 || cdSize > 64 << 20) throw bad(r.file, `implausible zip central directory (${count} entries, ${cdSize} bytes)`);
  const cd = r.read(cdOffset, cdSize), entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== 0x02014b50) throw bad(r.file, "broken zip central directory");
    const method = cd.readUInt16LE(p + 10);
    let size = cd.readUInt32LE(p + 24), compressed = cd.readUInt32LE(p + 20), localOffset = cd.readUInt32LE(p + 42);
    const nameLen = cd.readUInt16LE(p + 28), extraLen = cd.readUInt16LE(p + 30), commentLen = cd.readUInt16LE(p + 32);
    const extraEnd = p + 46 + nameLen + extraLen;
    if (extraEnd + commentLen > cd.length) throw bad(r.file, "broken zip central directory (an entry runs past it)");
    const name = cd.toString("utf8", p + 46, p + 46 + nameLen);
    // ZIP64 extra field: the 64-bit values of those stored as 0xFFFFFFFF, in this order
    for (let e = p + 46 + nameLen; e + 4 <= extraEnd;) {
      const id = cd.readUInt16LE(e), len = cd.readUInt16LE(e + 2);
      if (e + 4 + len > extraEnd) throw bad(r.file, `broken zip extra field of ${name}`);
      if (id === 1) {
        let q = e + 4;
        const next = () => {
          if (q + 8 > e + 4 + len) throw bad(r.file, `broken ZIP64 extra field of ${name}`);
          const v = Number(cd.readBigUInt64LE(q));
          q += 8;
          return v;
        };
        if (size === 0xffffffff) size = next();
        if (compressed === 0xffffffff) compressed = next();
        if (localOffset === 0xffffffff) localOffset = next();
      }
      e += 4 + len;
    }
    entries.set(name, { name, method, size, compressed, crc: cd.readUInt32LE(p + 16), localOffset, dataOffset: -1 });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return entries;
}

/** The entry's data offset (after its local header), checking it is stored, not compressed. */
function entryData(r: Reader, e: ZipEntry): ZipEntry {
  if (e.method !== 0) throw bad(r.file, `zip entry ${e.name} is compressed (method ${e.method}); torch.save writes stored entries only (re-save it with torch.save)`);
  if (e.compressed !== e.size) throw bad(r.file, `zip entry ${e.name} is stored but its two sizes differ (${e.compressed} and ${e.size})`);
  if (e.dataOffset < 0) {
    const h = r.read(e.localOffset, 30);
    if (h.readUInt32LE(0) !== 0x04034b50) throw bad(r.file, `broken local header of ${e.name}`);
    e.dataOffset = e.localOffset + 30 + h.readUInt16LE(26) + h.readUInt16LE(28);
  }
  if (e.dataOffset + e.size > r.size) throw bad(r.file, `truncated: entry ${e.name} runs past the end of the file`);
  return e;
}

/** An entry's bytes (or the part [from, from + length)), CRC-checked when they are the whole entry. */
function entryBytes(r: Reader, e: ZipEntry, from = 0, length = e.size): Buffer {
  const b = r.read(e.dataOffset + from, length);
  if (from === 0 && length === e.size && crc32(b) !== e.crc) throw bad(r.file, `zip entry ${e.name} is corrupt (its CRC-32 does not match)`);
  return b;
}

let crcTable: Uint32Array | undefined;
function crc32(b: Uint8Array): number {
  if (typeof zlib.crc32 === "function") return zlib.crc32(b);  // native, Node ≥ 20.15

  crcTable ??= Uint32Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c;
  });
  let c = 0xffffffff;
  for (let i = 0; i < b.length; i++) c = crcTable[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * A zip of stored entries, written in one pass: each entry's bytes are made only when it is
 * written (`data` may be a function), so a multi-GB lens is never whole in memory. Data start
 * 64-byte aligned as torch aligns them (padding in an extra field of id "FB", as torch names
 * it); ZIP64 records where an offset or size needs them, or everywhere with `zip64`.
 */
function writeZip(put: (b: Uint8Array) => void, entries: Array<{ name: string; data: Uint8Array | (() => Uint8Array) }>, zip64All = false): void {
  let offset = 0;
  const central: Buffer[] = [];
  const emit = (b: Uint8Array) => { put(b); offset += b.length; };
  const MAX = 0xffffffff;
  for (const entry of entries) {
    const data = typeof entry.data === "function" ? entry.data() : entry.data;
    const nameBuf = Buffer.from(entry.name, "utf8"), crc = crc32(data), localOffset = offset;
    const big = zip64All || data.length >= MAX || offset >= MAX;
    const zip64 = Buffer.alloc(big ? 20 : 0);
    if (big) {  // local ZIP64 extra: uncompressed, compressed size
      zip64.writeUInt16LE(1, 0);
      zip64.writeUInt16LE(16, 2);
      zip64.writeBigUInt64LE(BigInt(data.length), 4);
      zip64.writeBigUInt64LE(BigInt(data.length), 12);
    }
    const pad = (64 - ((offset + 30 + nameBuf.length + zip64.length + 4) % 64)) % 64;
    const padding = Buffer.alloc(4 + pad);
    padding.write("FB", 0, "latin1");
    padding.writeUInt16LE(pad, 2);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(big ? 45 : 20, 4);
    local.writeUInt16LE(0x800, 6);  // names are UTF-8
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(big ? MAX : data.length, 18);
    local.writeUInt32LE(big ? MAX : data.length, 22);
    local.writeUInt16LE(nameBuf.length, 26);
    local.writeUInt16LE(zip64.length + padding.length, 28);
    emit(Buffer.concat([local, nameBuf, zip64, padding]));
    emit(data);
    const ext = Buffer.alloc(big ? 28 : 0);
    if (big) {  // central ZIP64 extra: uncompressed, compressed size, local header offset
      ext.writeUInt16LE(1, 0);
      ext.writeUInt16LE(24, 2);
      ext.writeBigUInt64LE(BigInt(data.length), 4);
      ext.writeBigUInt64LE(BigInt(data.length), 12);
      ext.writeBigUInt64LE(BigInt(localOffset), 20);
    }
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt16LE(big ? 45 : 20, 4);
    c.writeUInt16LE(big ? 45 : 20, 6);
    c.writeUInt16LE(0x800, 8);
    c.writeUInt32LE(crc, 16);
    c.writeUInt32LE(big ? MAX : data.length, 20);
    c.writeUInt32LE(big ? MAX : data.length, 24);
    c.writeUInt16LE(nameBuf.length, 28);
    c.writeUInt16LE(ext.length, 30);
    c.writeUInt32LE(big ? MAX : localOffset, 42);
    central.push(Buffer.concat([c, nameBuf, ext]));
  }
  const cd = Buffer.concat(central), cdOffset = offset;
  emit(cd);
  const zip64 = zip64All || cdOffset >= MAX || cd.length >= MAX || entries.length >= 0xffff;
  if (zip64) {
    const rec = Buffer.alloc(56), loc = Buffer.alloc(20), at = offset;
    rec.writeUInt32LE(0x06064b50, 0);
    rec.writeBigUInt64LE(44n, 4);  // the record's size after this field
    rec.writeUInt16LE(45, 12);
    rec.writeUInt16LE(45, 14);
    rec.writeBigUInt64LE(BigInt(entries.length), 24);
    rec.writeBigUInt64LE(BigInt(entries.length), 32);
    rec.writeBigUInt64LE(BigInt(cd.length), 40);
    rec.writeBigUInt64LE(BigInt(cdOffset), 48);
    loc.writeUInt32LE(0x07064b50, 0);
    loc.writeBigUInt64LE(BigInt(at), 8);
    loc.writeUInt32LE(1, 16);
    emit(Buffer.concat([rec, loc]));
  }
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(zip64 ? 0xffff : entries.length, 8);
  end.writeUInt16LE(zip64 ? 0xffff : entries.length, 10);
  end.writeUInt32LE(zip64 ? MAX : cd.length, 12);
  end.writeUInt32LE(zip64 ? MAX : cdOffset, 16);
  emit(end);
}

// ---------------------------------------------------------------- pickle (the subset torch.save emits)

interface Global { global: string }
interface TensorRef { tensor: true; dtype: string; storageKey: string; offset: number; shape: number[]; stride: number[] }
type Value = null | boolean | number | string | Value[] | { tuple: Value[] } | Map<Value, Value> | Global | TensorRef | StorageRef;
interface StorageRef { storage: true; dtype: string; key: string }

const STORAGES: Record<string, string> = { HalfStorage: "F16", FloatStorage: "F32", BFloat16Storage: "BF16", DoubleStorage: "F64" };
const ALLOWED_GLOBALS = new Set(["torch._utils._rebuild_tensor_v2", "collections.OrderedDict", ...Object.keys(STORAGES).map((s) => `torch.${s}`)]);

function unpickle(file: string, b: Buffer): Value {
  const stack: Value[] = [], marks: number[] = [], memo = new Map<number, Value>();
  let p = 0;
  const need = (n: number) => { if (p + n > b.length) throw bad(file, "data.pkl is truncated"); };
  const popMark = (): Value[] => {
    const m = marks.pop();
    if (m === undefined) throw bad(file, "data.pkl: a pickle MARK is missing");
    return stack.splice(m);
  };
  const pop = (): Value => {
    if (stack.length === 0) throw bad(file, "data.pkl: the pickle stack is empty");
    return stack.pop()!;
  };
  const str = (n: number) => { need(n); const s = b.toString("utf8", p, p + n); p += n; return s; };
  const line = () => { const e = b.indexOf(0x0a, p); if (e < 0) throw bad(file, "data.pkl is truncated"); const s = b.toString("latin1", p, e); p = e + 1; return s; };
  const setItems = (d: Value, items: Value[]) => {
    if (!(d instanceof Map)) throw bad(file, "data.pkl: SETITEMS on something not a dict");
    if (items.length % 2) throw bad(file, "data.pkl: SETITEMS with a key and no value");
    for (let i = 0; i + 1 < items.length; i += 2) d.set(items[i], items[i + 1]);
  };
  const top = (): Value => {
    if (stack.length === 0) throw bad(file, "data.pkl: the pickle stack is empty");
    return stack[stack.length - 1];
  };
  const get = (i: number): Value => {
    if (!memo.has(i)) throw bad(file, `data.pkl: memo slot ${i} read before it was written`);
    return memo.get(i)!;
  };
  const global = (name: string): Global => {
    if (!ALLOWED_GLOBALS.has(name)) throw bad(file, `data.pkl refers to ${name}, which a lens file has no reason to hold (refused: unpickling it could run code)`);
    return { global: name };
  };
  for (;;) {
    // a lens pickle holds a few objects per layer: bound what a hostile one can make us allocate
    if (stack.length > 1 << 20 || memo.size > 1 << 20 || marks.length > 1 << 20) throw bad(file, "data.pkl builds an implausible number of objects for a lens");
    need(1);
    const op = b[p++];
    switch (op) {
      case 0x80: need(1); p++; break;                                        // PROTO
      case 0x95: need(8); p += 8; break;                                     // FRAME
      case 0x7d: stack.push(new Map()); break;                               // EMPTY_DICT
      case 0x5d: stack.push([]); break;                                      // EMPTY_LIST
      case 0x29: stack.push({ tuple: [] }); break;                           // EMPTY_TUPLE
      case 0x28: marks.push(stack.length); break;                            // MARK
      case 0x71: need(1); memo.set(b[p++], top()); break;                     // BINPUT
      case 0x72: need(4); memo.set(b.readUInt32LE(p), top()); p += 4; break;  // LONG_BINPUT
      case 0x94: memo.set(memo.size, top()); break;                           // MEMOIZE
      case 0x68: need(1); stack.push(get(b[p++])); break;                     // BINGET
      case 0x6a: need(4); stack.push(get(b.readUInt32LE(p))); p += 4; break;  // LONG_BINGET
      case 0x4a: need(4); stack.push(b.readInt32LE(p)); p += 4; break;       // BININT
      case 0x4b: need(1); stack.push(b[p++]); break;                         // BININT1
      case 0x4d: need(2); stack.push(b.readUInt16LE(p)); p += 2; break;      // BININT2
      case 0x8a: {                                                           // LONG1
        need(1);
        const n = b[p++];
        need(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[p + i]);
        if (n > 0 && b[p + n - 1] & 0x80) v -= 1n << BigInt(8 * n);
        p += n;
        stack.push(Number(v));
        break;
      }
      case 0x47: need(8); stack.push(b.readDoubleBE(p)); p += 8; break;      // BINFLOAT
      case 0x58: need(4); { const n = b.readUInt32LE(p); p += 4; stack.push(str(n)); } break;  // BINUNICODE
      case 0x8c: need(1); { const n = b[p++]; stack.push(str(n)); } break;   // SHORT_BINUNICODE
      case 0x4e: stack.push(null); break;                                    // NONE
      case 0x88: stack.push(true); break;                                    // NEWTRUE
      case 0x89: stack.push(false); break;                                   // NEWFALSE
      case 0x63: { const mod = line(), name = line(); stack.push(global(`${mod}.${name}`)); break; }  // GLOBAL
      case 0x93: { const name = pop(), mod = pop(); stack.push(global(`${String(mod)}.${String(name)}`)); break; }  // STACK_GLOBAL
      case 0x74: stack.push({ tuple: popMark() }); break;                    // TUPLE
      case 0x85: stack.push({ tuple: [pop()] }); break;                      // TUPLE1
      case 0x86: { const b2 = pop(), a = pop(); stack.push({ tuple: [a, b2] }); break; }  // TUPLE2
      case 0x87: { const c = pop(), b2 = pop(), a = pop(); stack.push({ tuple: [a, b2, c] }); break; }  // TUPLE3
      case 0x73: { const v = pop(), k = pop(); setItems(top(), [k, v]); break; }  // SETITEM
      case 0x75: { const items = popMark(); setItems(top(), items); break; }      // SETITEMS
      case 0x61: { const v = pop(), l = top(); if (!Array.isArray(l)) throw bad(file, "data.pkl: APPEND to a non-list"); l.push(v); break; }
      case 0x65: {                                                           // APPENDS (a loop: a spread of many items would overflow the call stack)
        const items = popMark(), l = top();
        if (!Array.isArray(l)) throw bad(file, "data.pkl: APPENDS to a non-list");
        for (const v of items) l.push(v);
        break;
      }
      case 0x51: {                                                           // BINPERSID: ('storage', type, key, location, numel)
        const pid = pop() as { tuple?: Value[] };
        const t = pid?.tuple;
        const type = t?.[1] as Global | undefined;
        if (!t || t[0] !== "storage" || !STORAGES[type?.global?.slice(6) ?? ""] || typeof t[2] !== "string") throw bad(file, "data.pkl: a persistent id that is not a torch storage");
        stack.push({ storage: true, dtype: STORAGES[type!.global.slice(6)], key: t[2] });
        break;
      }
      case 0x52: {                                                           // REDUCE
        const args = pop() as { tuple?: Value[] }, fn = pop() as Global;
        if (fn?.global === "collections.OrderedDict") { stack.push(new Map()); break; }
        if (fn?.global !== "torch._utils._rebuild_tensor_v2" || !args?.tuple) throw bad(file, "data.pkl: an object this reader does not rebuild");
        // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
        const [storage, offset, size, stride] = args.tuple as [StorageRef, number, { tuple: number[] }, { tuple: number[] }];
        const ints = (t: { tuple?: unknown[] } | undefined) => Array.isArray(t?.tuple) && t.tuple.every((v) => Number.isSafeInteger(v) && (v as number) >= 0);
        if (args.tuple.length < 4 || !storage?.storage || !Number.isSafeInteger(offset) || offset < 0 || !ints(size) || !ints(stride)) throw bad(file, "data.pkl: a malformed tensor");
        stack.push({ tensor: true, dtype: storage.dtype, storageKey: storage.key, offset, shape: size.tuple, stride: stride.tuple });
        break;
      }
      case 0x62: pop(); break;                                               // BUILD (an OrderedDict's state: none here)
      case 0x2e: return pop();                                               // STOP
      default: throw bad(file, `data.pkl uses pickle opcode 0x${op.toString(16)}, which a torch.save lens does not (refused)`);
    }
  }
}

// ---------------------------------------------------------------- the lens dict

function checkLens(file: string, data: LensData): LensData {
  const d = data.dModel;
  if (!Number.isInteger(d) || d < 1) throw bad(file, `d_model ${d} is not a positive integer`);
  if (!Number.isInteger(data.nPrompts) || data.nPrompts < 0) throw bad(file, `n_prompts ${data.nPrompts} is not a count`);
  if (data.J.size === 0) throw bad(file, "the lens holds no matrix");
  for (const [l, m] of data.J) {
    if (!Number.isInteger(l) || l < 0) throw bad(file, `layer ${l} is not a layer index`);
    if (m.length !== d * d) throw bad(file, `J[${l}] holds ${m.length} values, not d_model² = ${d * d}`);
    for (let i = 0; i < m.length; i++) if (!Number.isFinite(m[i])) throw bad(file, `J[${l}] holds a non-finite value at ${i}`);
  }
  const keys = [...data.J.keys()].sort((a, b) => a - b);
  if (JSON.stringify(keys) !== JSON.stringify([...data.sourceLayers].sort((a, b) => a - b))) {
    throw bad(file, `source_layers [${data.sourceLayers.join(", ")}] do not match the layers of J [${keys.join(", ")}]`);
  }
  return data;
}

const DTYPES: Record<string, { dtype: LensDtype; size: number }> = {
  F16: { dtype: "f16", size: 2 }, BF16: { dtype: "bf16", size: 2 }, F32: { dtype: "f32", size: 4 }, F64: { dtype: "f64", size: 8 },
};

let halfTable: Float32Array | undefined;

/** Raw little-endian values → F32 (f16 and bf16 exactly, f64 rounded). Typed views, not per-value reads: a 70B lens has 5·10⁹ values. */
function decode(raw: Buffer, dtype: LensDtype, n: number): Float32Array {
  const size = dtype === "f64" ? 8 : dtype === "f32" ? 4 : 2;
  // an aligned copy when the buffer is not (a typed view needs its element alignment)
  const bytes = raw.byteOffset % size === 0 ? raw : Buffer.from(raw);
  if (dtype === "f32") return new Float32Array(bytes.buffer, bytes.byteOffset, n).slice();
  if (dtype === "f64") return Float32Array.from(new Float64Array(bytes.buffer, bytes.byteOffset, n));
  const h = new Uint16Array(bytes.buffer, bytes.byteOffset, n), out = new Float32Array(n);
  if (dtype === "bf16") {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) bits[i] = h[i] << 16;
  } else {
    halfTable ??= Float32Array.from({ length: 65536 }, (_, i) => halfToFloat(i));
    for (let i = 0; i < n; i++) out[i] = halfTable[h[i]];
  }
  return out;
}

/**
 * Reads a tensor's d × d values from its storage entry, at the view's storage offset (torch.save
 * keeps a view's whole storage: a slice of a larger tensor starts past element 0). Only
 * row-major contiguous views are read; any other stride is refused rather than misread.
 */
function tensorValues(r: Reader, entries: Map<string, ZipEntry>, prefix: string, t: TensorRef, d: number, what: string): Float32Array {
  if (t.shape.length !== 2 || t.shape[0] !== d || t.shape[1] !== d) throw bad(r.file, `${what} has shape [${t.shape.join(", ")}], not [d_model, d_model] = [${d}, ${d}]`);
  if (t.stride[0] !== d || t.stride[1] !== 1) {
    throw bad(r.file, `${what} is not a contiguous row-major tensor (strides [${t.stride.join(", ")}], expected [${d}, 1]); save J.contiguous() instead`);
  }
  const type = DTYPES[t.dtype];
  if (!type) throw bad(r.file, `${what} has an unsupported storage type`);
  const e = entries.get(`${prefix}data/${t.storageKey}`);
  if (!e) throw bad(r.file, `${what}'s storage data/${t.storageKey} is missing from the archive`);
  entryData(r, e);
  const n = d * d;
  if ((t.offset + n) * type.size > e.size) throw bad(r.file, `${what} (offset ${t.offset}, ${n} values) runs past its storage of ${e.size} bytes`);
  return decode(entryBytes(r, e, t.offset * type.size, n * type.size), type.dtype, n);
}

/** The layers to read: all, or the requested ones (each must be in the file). */
function pick(file: string, available: number[], layers: number[] | undefined): number[] {
  if (layers === undefined) return available;
  for (const l of layers) if (!available.includes(l)) throw bad(file, `layer ${l} was asked for but the lens has layers [${available.join(", ")}]`);
  return [...new Set(layers)].sort((a, b) => a - b);
}

/** The file's source_layers must be exactly the layers of J (in any order), each once. */
function checkSourceLayers(file: string, listed: number[], keys: number[]): void {
  const a = [...listed].sort((x, y) => x - y), b = [...keys].sort((x, y) => x - y);
  if (a.length !== b.length || a.some((v, i) => v !== b[i])) throw bad(file, `source_layers [${listed.join(", ")}] do not match the layers of J [${b.join(", ")}]`);
}

function layerKey(file: string, k: Value): number {
  // the public package writes int keys; a str key of digits is accepted (some converters write them)
  const layer = typeof k === "string" && /^\d+$/.test(k) ? Number(k) : k;
  if (typeof layer !== "number" || !Number.isSafeInteger(layer) || layer < 0) throw bad(file, `J has a key ${JSON.stringify(k)} that is not a layer index (a non-negative integer)`);
  return layer;
}

function readTorch(r: Reader, layers: number[] | undefined): LensData {
  const entries = readZip(r);
  const pkl = [...entries.keys()].find((k) => k === "data.pkl" || /^[^/]+\/data\.pkl$/.test(k));
  if (!pkl) throw bad(r.file, "a zip archive without data.pkl: not a torch.save file");
  const prefix = pkl.slice(0, pkl.length - "data.pkl".length);
  const e = entryData(r, entries.get(pkl)!);
  if (e.size > 16 << 20) throw bad(r.file, `data.pkl is ${e.size} bytes: implausible for a lens`);
  const root = unpickle(r.file, entryBytes(r, e));
  if (!(root instanceof Map)) throw bad(r.file, "the pickled object is not a dict");
  if (!root.has("J")) throw bad(r.file, root.has("jacobian_sum") ? "a fit checkpoint (jacobian_sum), not a lens: finish or resume the fit" : "no 'J' key: not a Jacobian lens");
  const J0 = root.get("J");
  if (!(J0 instanceof Map)) throw bad(r.file, "'J' is not a dict of layer → matrix");
  const d = root.get("d_model");
  if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 1) throw bad(r.file, "'d_model' is missing or not a positive integer");
  const refs = new Map<number, TensorRef>();
  for (const [k, t] of J0) {
    const layer = layerKey(r.file, k);
    if (refs.has(layer)) throw bad(r.file, `J has layer ${layer} twice`);
    if (!(t as TensorRef)?.tensor) throw bad(r.file, `J[${layer}] is not a tensor`);
    refs.set(layer, t as TensorRef);
  }
  const sl = root.get("source_layers");
  // older fits (and the minimal re-implementations) write no source_layers: J's keys are the list
  if (sl !== undefined && (!Array.isArray(sl) || !sl.every((v) => typeof v === "number"))) throw bad(r.file, "'source_layers' is not a list of layer indices");
  checkSourceLayers(r.file, Array.isArray(sl) ? (sl as number[]) : [...refs.keys()], [...refs.keys()]);
  const n = root.get("n_prompts");
  if (n !== undefined && (typeof n !== "number" || !Number.isSafeInteger(n) || n < 0)) throw bad(r.file, "'n_prompts' is not a count");
  const J = new Map<number, Float32Array>();
  const wanted = pick(r.file, [...refs.keys()].sort((a, b) => a - b), layers);
  for (const l of wanted) J.set(l, tensorValues(r, entries, prefix, refs.get(l)!, d, `J[${l}]`));
  const meta = root.get("metadata");
  const metadata: LensData["metadata"] = {};
  if (meta instanceof Map) for (const [k, v] of meta) if (typeof k === "string" && (v === null || ["string", "number", "boolean"].includes(typeof v))) metadata[k] = v as string | number | boolean | null;
  const dtype = DTYPES[refs.get(wanted[0])?.dtype ?? ""]?.dtype;
  return checkLens(r.file, { J, dModel: d, nPrompts: (n as number | undefined) ?? 0, sourceLayers: wanted, dtype, metadata });
}

/** The pickle of the published dict, with tensors stored as data/<index> (protocol 2, as torch.save writes). */
function pickleLens(data: LensData, storage: "HalfStorage" | "FloatStorage"): Buffer {
  const parts: Buffer[] = [];
  const op = (...bytes: number[]) => parts.push(Buffer.from(bytes));
  const int = (v: number) => {
    if (v >= 0 && v < 256) op(0x4b, v);
    else if (v >= 0 && v < 65536) { const b = Buffer.alloc(3); b[0] = 0x4d; b.writeUInt16LE(v, 1); parts.push(b); }
    else if (v >= -(2 ** 31) && v < 2 ** 31) { const b = Buffer.alloc(5); b[0] = 0x4a; b.writeInt32LE(v, 1); parts.push(b); }
    else { const b = Buffer.alloc(10); b[0] = 0x8a; b[1] = 8; b.writeBigInt64LE(BigInt(v), 2); parts.push(b); }  // LONG1, 8 bytes
  };
  const text = (s: string) => { const u = Buffer.from(s, "utf8"), h = Buffer.alloc(5); h[0] = 0x58; h.writeUInt32LE(u.length, 1); parts.push(h, u); };
  const global = (mod: string, name: string) => parts.push(Buffer.from(`c${mod}\n${name}\n`, "latin1"));
  const d = data.dModel, layers = [...data.J.keys()].sort((a, b) => a - b);
  op(0x80, 2, 0x7d, 0x28);  // PROTO 2, {, MARK
  text("J");
  op(0x7d, 0x28);
  layers.forEach((layer, i) => {
    int(layer);
    global("torch._utils", "_rebuild_tensor_v2");
    op(0x28);  // MARK: the arguments
    op(0x28); text("storage"); global("torch", storage); text(String(i)); text("cpu"); int(d * d); op(0x74, 0x51);  // persistent id
    int(0);
    int(d); int(d); op(0x86);  // size
    int(d); int(1); op(0x86);  // stride
    op(0x89);                  // requires_grad False
    global("collections", "OrderedDict"); op(0x29, 0x52);  // backward hooks: OrderedDict()
    op(0x74, 0x52);            // TUPLE, REDUCE
  });
  op(0x75);  // SETITEMS of J
  text("n_prompts"); int(data.nPrompts);
  text("source_layers"); op(0x5d, 0x28); for (const l of [...data.sourceLayers].sort((a, b) => a - b)) int(l); op(0x65);
  text("d_model"); int(d);
  const meta = Object.entries(data.metadata ?? {});
  if (meta.length) {
    text("metadata");
    op(0x7d, 0x28);
    for (const [k, v] of meta) {
      text(k);
      if (v === null) op(0x4e);
      else if (typeof v === "boolean") op(v ? 0x88 : 0x89);
      else if (typeof v === "number" && Number.isSafeInteger(v)) int(v);
      else if (typeof v === "number") { const b = Buffer.alloc(9); b[0] = 0x47; b.writeDoubleBE(v, 1); parts.push(b); }
      else text(String(v));
    }
    op(0x75);
  }
  op(0x75, 0x2e);  // SETITEMS, STOP
  return Buffer.concat(parts);
}

/** A matrix's bytes, little-endian (the platforms Node runs on are). */
function matrixBytes(m: Float32Array, dtype: "f16" | "f32"): Buffer {
  if (dtype === "f32") return Buffer.from(m.buffer, m.byteOffset, m.byteLength);
  const h = new Uint16Array(m.length);
  for (let i = 0; i < m.length; i++) h[i] = floatToHalf(m[i]);
  return Buffer.from(h.buffer);
}

// ---------------------------------------------------------------- safetensors

interface SafeTensorInfo { dtype: string; shape: number[]; data_offsets: [number, number] }

function readSafetensors(r: Reader, layers: number[] | undefined): LensData {
  const n = Number(r.read(0, 8).readBigUInt64LE(0));
  if (n < 2 || n > 100 << 20 || 8 + n > r.size || r.read(8, 1)[0] !== 0x7b) throw bad(r.file, "neither a zip (torch.save) nor a safetensors file");
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(r.read(8, n).toString("utf8"));
  } catch {
    throw bad(r.file, "the safetensors header is not JSON");
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) throw bad(r.file, "the safetensors header is not a JSON object");
  const meta = (header.__metadata__ ?? {}) as Record<string, unknown>;
  if (typeof meta !== "object" || Object.values(meta).some((v) => typeof v !== "string")) throw bad(r.file, "__metadata__ is not a map of strings");
  const str = meta as Record<string, string>;
  const infos = new Map<number, SafeTensorInfo>();
  for (const [name, t] of Object.entries(header)) {
    const m = /^J\.(\d+)$/.exec(name);
    if (!m) continue;  // other tensors are not the lens's: ignored
    const info = t as SafeTensorInfo;
    const o = info?.data_offsets;
    if (typeof info?.dtype !== "string" || !Array.isArray(info.shape) || !Array.isArray(o) || o.length !== 2 || !o.every((v) => Number.isSafeInteger(v) && v >= 0) || o[1] < o[0]) {
      throw bad(r.file, `the safetensors entry ${name} is malformed`);
    }
    infos.set(Number(m[1]), info);
  }
  if (infos.size === 0) throw bad(r.file, "a safetensors file with no J.<layer> tensor: not a lens");
  const first = infos.values().next().value!;
  const d = str.d_model !== undefined ? Number(str.d_model) : first.shape[0];
  if (!Number.isSafeInteger(d) || d < 1) throw bad(r.file, `d_model ${JSON.stringify(str.d_model)} is not a positive integer`);
  let listed = [...infos.keys()];
  if (str.source_layers !== undefined) {
    try { listed = JSON.parse(str.source_layers); } catch { throw bad(r.file, "source_layers in the metadata is not a JSON list"); }
    if (!Array.isArray(listed) || !listed.every((v) => Number.isSafeInteger(v))) throw bad(r.file, "source_layers in the metadata is not a list of layer indices");
  }
  checkSourceLayers(r.file, listed, [...infos.keys()]);
  const nPrompts = str.n_prompts !== undefined ? Number(str.n_prompts) : 0;
  if (!Number.isSafeInteger(nPrompts) || nPrompts < 0) throw bad(r.file, `n_prompts ${JSON.stringify(str.n_prompts)} is not a count`);
  const wanted = pick(r.file, [...infos.keys()].sort((a, b) => a - b), layers);
  const J = new Map<number, Float32Array>();
  let dtype: LensDtype | undefined;
  for (const l of wanted) {
    const info = infos.get(l)!, name = `J.${l}`, type = DTYPES[info.dtype];
    if (!type) throw bad(r.file, `${name} has dtype ${info.dtype} (F16, BF16, F32 or F64 expected)`);
    if (info.shape.length !== 2 || info.shape[0] !== d || info.shape[1] !== d) throw bad(r.file, `${name} has shape [${info.shape.join(", ")}], not [${d}, ${d}]`);
    const [a, b] = info.data_offsets;
    if (b - a !== d * d * type.size) throw bad(r.file, `${name}'s data is ${b - a} bytes, not ${d * d * type.size}`);
    J.set(l, decode(r.read(8 + n + a, b - a), type.dtype, d * d));
    dtype ??= type.dtype;
  }
  const { d_model: _d, n_prompts: _n, source_layers: _s, format: _f, ...rest } = str;
  return checkLens(r.file, { J, dModel: d, nPrompts, sourceLayers: wanted, dtype, metadata: rest });
}

function writeSafetensors(put: (b: Uint8Array) => void, data: LensData, dtype: "f16" | "f32"): void {
  const layers = [...data.J.keys()].sort((a, b) => a - b), d = data.dModel, size = dtype === "f16" ? 2 : 4;
  const header: Record<string, unknown> = {
    // the scalars as strings (safetensors metadata holds only strings); source_layers as JSON
    __metadata__: { ...Object.fromEntries(Object.entries(data.metadata ?? {}).map(([k, v]) => [k, String(v)])),
      format: "jacobian-lens", d_model: String(d), n_prompts: String(data.nPrompts), source_layers: JSON.stringify(layers) },
  };
  layers.forEach((l, i) => { header[`J.${l}`] = { dtype: dtype.toUpperCase(), shape: [d, d], data_offsets: [i * d * d * size, (i + 1) * d * d * size] }; });
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (Buffer.byteLength(json) % 8)) % 8);  // the data 8-byte aligned
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  put(len);
  put(Buffer.from(json, "utf8"));
  for (const l of layers) put(matrixBytes(data.J.get(l)!, dtype));  // one matrix in memory at a time
}

// ---------------------------------------------------------------- API

export interface ReadLensOptions {
  /** Read only these layers (a 70B lens is ~10 GB as f16, twice that as the F32 arrays). */
  layers?: number[];
}

/**
 * Reads a lens file by its content: a zip (torch.save, the published artifact) or safetensors.
 * Every value is checked (d × d, finite, source_layers = J's layers); the matrices come back as
 * F32 whatever the stored type (`dtype` says which it was).
 */
export async function readLensFile(file: string, options: ReadLensOptions = {}): Promise<LensData> {
  const layers = options.layers;
  if (layers !== undefined && (!Array.isArray(layers) || !layers.every((l) => Number.isSafeInteger(l) && l >= 0))) {
    throw new LljError(`readLensFile: layers must be a list of non-negative integers, not ${JSON.stringify(layers)}`, { code: "INVALID_ARGUMENT" });
  }
  return withFile(file, (r) => {
    if (r.size < 8) throw bad(file, `${r.size} bytes: too short to be a lens file`);
    try {
      return r.read(0, 4).readUInt32LE(0) === 0x04034b50 ? readTorch(r, layers) : readSafetensors(r, layers);
    } catch (e) {
      // a check this reader lacks must still end as a refusal naming the file, not a crash
      if (e instanceof LljError) throw e;
      throw new LljError(`lens file ${file}: malformed (${(e as Error)?.message ?? String(e)})`, { code: "INVALID_ARGUMENT", cause: e });
    }
  });
}

export interface WriteLensOptions {
  /** "torch" (the published artifact; default, or "safetensors" when the name ends so). */
  format?: LensFormat;
  /** Storage type: f16 (as published) or f32; default the data's own dtype when it is one of them, else f16. */
  dtype?: "f16" | "f32";
  /** Write ZIP64 records even when nothing needs them (what torch writes past 4 GiB); for tests. */
  zip64?: boolean;
}

/**
 * Writes a lens: "torch" is the published artifact, loadable by torch.load(...,
 * weights_only=True), anthropics/jacobian-lens and TransformerLens; "safetensors" the same
 * matrices for tools without pickle. Written to a temporary file renamed into place, one matrix
 * converted at a time.
 */
export async function writeLensFile(file: string, data: LensData, options: WriteLensOptions = {}): Promise<void> {
  const format = options.format ?? (file.endsWith(".safetensors") ? "safetensors" : "torch");
  const dtype = options.dtype ?? (data.dtype === "f32" || data.dtype === "f16" ? data.dtype : "f16");
  if (format !== "torch" && format !== "safetensors") throw new LljError(`writeLensFile: format must be "torch" or "safetensors", not ${JSON.stringify(format)}`, { code: "INVALID_ARGUMENT" });
  if (dtype !== "f16" && dtype !== "f32") throw new LljError(`writeLensFile: dtype must be "f16" or "f32", not ${JSON.stringify(dtype)}`, { code: "INVALID_ARGUMENT" });
  if (!(data?.J instanceof Map)) throw new LljError("writeLensFile: data.J must be a Map of layer → Float32Array", { code: "INVALID_ARGUMENT" });
  for (const [l, m] of data.J) if (!(m instanceof Float32Array)) throw bad(file, `J[${l}] is not a Float32Array`);
  for (const [k, v] of Object.entries(data.metadata ?? {})) {
    if (!(v === null || typeof v === "string" || typeof v === "boolean" || (typeof v === "number" && Number.isFinite(v)))) throw bad(file, `metadata.${k} is not a string, finite number, boolean or null`);
  }
  checkLens(file, data);
  if (dtype === "f16") {
    for (const [l, m] of data.J) for (let i = 0; i < m.length; i++) if (Math.abs(m[i]) >= 65520) throw bad(file, `J[${l}][${i}] = ${m[i]} overflows f16 (write it with dtype "f32")`);
  }
  atomically(file, (put) => {
    if (format === "safetensors") return writeSafetensors(put, data, dtype);
    const layers = [...data.J.keys()].sort((a, b) => a - b);
    // torch names the archive after the file (its stem); any name loads, "archive" for odd ones
    const stem = path.basename(file).replace(/\.[^.]*$/, "");
    const root = /^[A-Za-z0-9_.-]{1,64}$/.test(stem) ? stem : "archive";
    const serial = Array.from(randomBytes(40), (b) => String(b % 10)).join("");
    writeZip(put, [
      { name: `${root}/data.pkl`, data: pickleLens(data, dtype === "f16" ? "HalfStorage" : "FloatStorage") },
      { name: `${root}/.format_version`, data: Buffer.from("1") },
      { name: `${root}/.storage_alignment`, data: Buffer.from("64") },
      { name: `${root}/byteorder`, data: Buffer.from("little") },
      ...layers.map((l, i) => ({ name: `${root}/data/${i}`, data: () => matrixBytes(data.J.get(l)!, dtype) })),
      { name: `${root}/version`, data: Buffer.from("3\n") },
      { name: `${root}/.data/serialization_id`, data: Buffer.from(serial) },
    ], options.zip64 === true);
  });
}
