// A bounded walk over a GGUF header (magic, counts, metadata, tensor infos) before any other
// reader sees the file: every count and length is checked against the bytes left, so a
// hostile header (an array length of 2^64 − 1, 2^32 − 1 dimensions, a string longer than the
// file) is refused by name instead of exhausting V8's heap in a reader that trusts it.
import { open } from "node:fs/promises";
import { LljError } from "./errors.js";

export interface GgufHeaderTensor {
  name: string;
  dims: number[];
  type: number;
  /** Byte offset of the tensor's type field in the file (tests patch it). */
  typeOffset: number;
  /** Offset of its data relative to the data section. */
  dataOffset: number;
}

export interface GgufHeader {
  version: number;
  nKv: number;
  keys: Array<{ key: string; type: number; valueOffset: number }>;
  tensors: GgufHeaderTensor[];
  /** Where the header ends. */
  end: number;
}

// sizes of the fixed-width GGUF value types (gguf_type); 8 = string, 9 = array
const FIXED: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
const MAX_DIMS = 4;  // GGML_MAX_DIMS
const MAX_NAME = 1 << 16;

class Reader {
  #buf = Buffer.alloc(0);
  #start = 0;  // file offset of #buf[0]
  pos = 0;
  constructor(private readonly fh: Awaited<ReturnType<typeof open>>, readonly size: number, private readonly file: string) {}

  left(): number {
    return this.size - this.pos;
  }

  fail(what: string): never {
    throw new LljError(`${this.file}: invalid GGUF header: ${what}`, { code: "INVALID_MODEL" });
  }

  async #ensure(n: number, what: string): Promise<void> {
    if (n > this.left()) this.fail(`${what} needs ${n} bytes at offset ${this.pos}, but the file ends after ${this.left()} (truncated?)`);
    if (this.pos >= this.#start && this.pos + n <= this.#start + this.#buf.length) return;
    const len = Math.min(Math.max(n, 1 << 20), this.left());
    const buf = Buffer.alloc(len);
    const { bytesRead } = await this.fh.read(buf, 0, len, this.pos);
    if (bytesRead < n) this.fail(`${what}: short read at offset ${this.pos}`);
    this.#buf = buf.subarray(0, bytesRead);
    this.#start = this.pos;
  }

  async u32(what: string): Promise<number> {
    await this.#ensure(4, what);
    const v = this.#buf.readUInt32LE(this.pos - this.#start);
    this.pos += 4;
    return v;
  }

  async u64(what: string): Promise<bigint> {
    await this.#ensure(8, what);
    const v = this.#buf.readBigUInt64LE(this.pos - this.#start);
    this.pos += 8;
    return v;
  }

  /** A count that must fit in the bytes left at `minSize` bytes per item. */
  async count(what: string, minSize: number): Promise<number> {
    const n = await this.u64(what);
    if (n * BigInt(minSize) > BigInt(this.left())) this.fail(`${what} is ${n}, more than the ${this.left()} bytes left in the file can hold (is the file truncated or corrupt?)`);
    return Number(n);
  }

  async string(what: string, maxLength = Infinity): Promise<string> {
    const n = await this.count(`the length of ${what}`, 1);
    if (n > maxLength) this.fail(`${what} is ${n} bytes long (at most ${maxLength})`);
    await this.#ensure(n, what);
    const s = this.#buf.toString("utf8", this.pos - this.#start, this.pos - this.#start + n);
    this.pos += n;
    return s;
  }

  skip(n: number, what: string): void {
    if (n > this.left()) this.fail(`${what} runs past the end of the file`);
    this.pos += n;
  }
}

async function skipValue(r: Reader, type: number, key: string, depth: number): Promise<void> {
  if (FIXED[type] !== undefined) return r.skip(FIXED[type], `the value of ${key}`);
  if (type === 8) {
    await r.string(`the value of ${key}`);
    return;
  }
  if (type !== 9) r.fail(`metadata key ${key} has an unknown value type ${type}`);
  if (depth > 2) r.fail(`metadata key ${key} nests arrays too deeply`);
  const elem = await r.u32(`the element type of ${key}`);
  if (elem !== 8 && elem !== 9 && FIXED[elem] === undefined) r.fail(`metadata key ${key} is an array of unknown type ${elem}`);
  const n = await r.count(`the array length of ${key}`, FIXED[elem] ?? (elem === 8 ? 8 : 12));
  if (FIXED[elem] !== undefined) return r.skip(n * FIXED[elem], `the array ${key}`);
  for (let i = 0; i < n; i++) await skipValue(r, elem, key, depth + 1);
}

/** Walks a GGUF header with every count bounded by the file size; INVALID_MODEL naming what is wrong. */
export async function readGgufHeader(file: string, size: number): Promise<GgufHeader> {
  const fh = await open(file, "r");
  try {
    const r = new Reader(fh, size, file);
    if (size < 4) r.fail("the file is shorter than the GGUF magic");
    const magic = await r.u32("the magic");
    if (magic !== 0x46554747) throw new LljError(`not a GGUF file: ${file} (bad magic)`, { code: "INVALID_MODEL" });
    const version = await r.u32("the version");
    if (version !== 2 && version !== 3) r.fail(`GGUF version ${version} (llama.cpp reads versions 2 and 3)`);
    const nTensors = await r.count("the tensor count", 8 + 4 + 8 + 4 + 8);
    const nKv = await r.count("the metadata key count", 8 + 4 + 1);
    const keys: GgufHeader["keys"] = [];
    for (let i = 0; i < nKv; i++) {
      const key = await r.string(`metadata key #${i}`, MAX_NAME);
      // llama.cpp looks keys and tensors up by C string: a NUL byte makes two names one
      if (key.includes("\0")) r.fail(`metadata key #${i} (${JSON.stringify(key)}) contains a NUL byte`);
      const type = await r.u32(`the type of ${key}`);
      keys.push({ key, type, valueOffset: r.pos });
      await skipValue(r, type, key, 0);
    }
    const tensors: GgufHeaderTensor[] = [];
    for (let i = 0; i < nTensors; i++) {
      const name = await r.string(`the name of tensor #${i}`, MAX_NAME);
      if (name.includes("\0")) r.fail(`the name of tensor #${i} (${JSON.stringify(name)}) contains a NUL byte`);
      const label = name === "" ? `tensor #${i} (empty name)` : `tensor ${name}`;
      const nDims = await r.u32(`the dimension count of ${label}`);
      if (nDims < 1 || nDims > MAX_DIMS) r.fail(`${label} has ${nDims} dimensions (ggml allows 1 to ${MAX_DIMS})`);
      const dims: number[] = [];
      for (let k = 0; k < nDims; k++) {
        const dim = await r.u64(`dimension ${k} of ${label}`);
        if (dim < 1n || dim > BigInt(Number.MAX_SAFE_INTEGER)) r.fail(`dimension ${k} of ${label} is ${dim}`);
        dims.push(Number(dim));
      }
      // ggml's reader skips its own overflow check when the wrapped count comes out ≤ 0 (found by the fuzzer)
      const count = dims.reduce((a, x) => a * BigInt(x), 1n);
      if (count >= 2n ** 63n) r.fail(`${label} has ${count} elements (shape [${dims.join(", ")}]), more than ggml can count`);
      const typeOffset = r.pos;
      const type = await r.u32(`the type of ${label}`);
      const dataOffset = await r.u64(`the data offset of ${label}`);
      if (dataOffset > BigInt(size)) r.fail(`${label} starts at byte ${dataOffset} of its data, beyond the file's ${size} bytes (is the file truncated?)`);
      tensors.push({ name, dims, type, typeOffset, dataOffset: Number(dataOffset) });
    }
    return { version, nKv, keys, tensors, end: r.pos };
  } finally {
    await fh.close();
  }
}
