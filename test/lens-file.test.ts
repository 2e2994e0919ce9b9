// Lens files: the published torch.save artifact (a fixture written by real PyTorch,
// test/fixtures/make-lens-fixture.py) and safetensors, read and written without Python.
import { readFileSync, writeFileSync, mkdtempSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import { readLensFile, writeLensFile, halfToFloat, floatToHalf, type LensData } from "../src/lens-file.js";
import { packageRoot } from "../src/native.js";
import { randn } from "./helpers.js";

const FIXTURE = path.join(packageRoot, "test", "fixtures", "lens-torch.pt");
const dir = mkdtempSync(path.join(tmpdir(), "llj-lens-"));

test("a lens written by torch.save reads back every value exactly, the view's storage offset included", async () => {
  const expected = JSON.parse(readFileSync(FIXTURE.replace(/\.pt$/, ".json"), "utf8"));
  const lens = await readLensFile(FIXTURE);
  expect(lens.dModel).toBe(8);
  expect(lens.nPrompts).toBe(7);
  expect(lens.sourceLayers).toEqual([1, 3]);
  expect(lens.dtype).toBe("f16");
  expect([...lens.J.keys()].sort()).toEqual([1, 3]);
  expect(expected.offset_of_3).toBe(64);  // J[3] is a view at offset 64 into a larger storage
  for (const l of [1, 3]) expect(Array.from(lens.J.get(l)!)).toEqual(expected[String(l)]);
  const j1 = lens.J.get(1)!;
  expect(j1[0]).toBeCloseTo(5.96e-8, 9);  // subnormal half
  expect(Object.is(j1[1], -0)).toBe(true);
  expect(j1[2]).toBe(1);                    // 1 + 2^-11 rounded to even
  expect(j1[3]).toBe(65504);
});

test("a transposed view (strides [1, d]) is refused, never read as row-major", async () => {
  await expect(readLensFile(FIXTURE.replace(/\.pt$/, "-strided.pt"))).rejects.toThrow(/J\[0\] is not a contiguous row-major tensor \(strides \[1, 8\]/);
});

test("layers: only the asked-for matrices are read", async () => {
  const expected = JSON.parse(readFileSync(FIXTURE.replace(/\.pt$/, ".json"), "utf8"));
  const lens = await readLensFile(FIXTURE, { layers: [3] });
  expect([...lens.J.keys()]).toEqual([3]);
  expect(lens.sourceLayers).toEqual([3]);
  expect(Array.from(lens.J.get(3)!)).toEqual(expected["3"]);
  await expect(readLensFile(FIXTURE, { layers: [2] })).rejects.toThrow(/layer 2 was asked for but the lens has layers \[1, 3\]/);
  await expect(readLensFile(FIXTURE, { layers: [-1] })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
});

test("f16 conversion: every half round-trips, and floats round to nearest even", () => {
  const wrong: number[] = [];
  for (let h = 0; h < 65536; h++) {
    const x = halfToFloat(h);
    const ok = Number.isNaN(x) ? (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0 && Number.isNaN(halfToFloat(floatToHalf(x))) : floatToHalf(x) === h;
    if (!ok) wrong.push(h);
  }
  expect(wrong).toEqual([]);
  expect(floatToHalf(1 + 2 ** -11)).toBe(0x3c00);          // tie → even
  expect(floatToHalf(1 + 3 * 2 ** -11)).toBe(0x3c02);      // tie → even (up)
  expect(floatToHalf(65520)).toBe(0x7c00);                 // overflow → infinity
  expect(floatToHalf(2 ** -25)).toBe(0);                   // half of the smallest subnormal: tie → 0
  expect(floatToHalf(3 * 2 ** -26)).toBe(1);               // above the tie → the smallest subnormal
});

describe.each(["torch", "safetensors"] as const)("%s", (format) => {
  const d = 16;
  const lens: LensData = {
    J: new Map([[0, randn(d * d)], [5, randn(d * d)]]), dModel: d, nPrompts: 123, sourceLayers: [0, 5],
    metadata: { estimator: "jlens", architecture: "llama", minPosition: 16 },
  };
  test("round-trips in f32 exactly and in f16 to half rounding", async () => {
    const f32 = path.join(dir, `l32.${format}`), f16 = path.join(dir, `l16.${format}`);
    await writeLensFile(f32, lens, { format, dtype: "f32" });
    await writeLensFile(f16, lens, { format });
    const a = await readLensFile(f32), b = await readLensFile(f16);
    for (const r of [a, b]) {
      expect(r.dModel).toBe(d);
      expect(r.nPrompts).toBe(123);
      expect(r.sourceLayers).toEqual([0, 5]);
      expect(r.metadata?.estimator).toBe("jlens");
      expect(String(r.metadata?.minPosition)).toBe("16");
    }
    for (const l of [0, 5]) {
      expect(a.J.get(l)).toEqual(lens.J.get(l));
      const want = lens.J.get(l)!.map((v) => halfToFloat(floatToHalf(v)));
      expect(b.J.get(l)).toEqual(want);
    }
    expect(a.dtype).toBe("f32");
    expect(b.dtype).toBe("f16");
    expect(readFileSync(f16).length).toBeLessThan(readFileSync(f32).length);
    // rewriting what was read keeps its storage type
    const again = path.join(dir, `again.${format}`);
    await writeLensFile(again, a, { format });
    expect((await readLensFile(again)).dtype).toBe("f32");
  });

  test("refuses values that overflow f16, and leaves nothing behind when it refuses", async () => {
    const sub = mkdtempSync(path.join(dir, "atomic-"));
    const big = randn(d * d);
    big[3] = 70000;
    await expect(writeLensFile(path.join(sub, "x"), { ...lens, J: new Map([[0, big]]), sourceLayers: [0] }, { format })).rejects.toThrow(/overflows f16/);
    expect(readdirSync(sub)).toEqual([]);
    await writeLensFile(path.join(sub, "x"), { ...lens, J: new Map([[0, big]]), sourceLayers: [0] }, { format, dtype: "f32" });
    expect(readdirSync(sub)).toEqual(["x"]);
  });

  test("refuses inconsistent lenses before writing anything", async () => {
    const file = path.join(dir, `bad.${format}`);
    await expect(writeLensFile(file, { ...lens, sourceLayers: [0] }, { format })).rejects.toThrow(/source_layers/);
    await expect(writeLensFile(file, { ...lens, J: new Map([[0, randn(3)]]), sourceLayers: [0] }, { format })).rejects.toThrow(/d_model² = 256/);
    const nan = randn(d * d);
    nan[7] = NaN;
    await expect(writeLensFile(file, { ...lens, J: new Map([[0, nan]]), sourceLayers: [0] }, { format })).rejects.toThrow(/non-finite/);
    await expect(readLensFile(file)).rejects.toThrow(/cannot open/);
    await expect(readLensFile(dir)).rejects.toThrow(/not a regular file/);
    await expect(writeLensFile(file, { ...lens, metadata: { nested: { a: 1 } as never } }, { format })).rejects.toThrow(/metadata\.nested is not a string/);
    await expect(writeLensFile(path.join(dir, "no-such-dir", "x.pt"), lens, { format })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringMatching(/cannot write the lens file/) });
    await expect(writeLensFile(file, lens, { format, dtype: "bf16" as never })).rejects.toThrow(/dtype must be "f16" or "f32"/);
  });
});

test("ZIP64 records (what torch writes past 4 GiB) are written and read", async () => {
  const d = 12, lens: LensData = { J: new Map([[2, randn(d * d)], [7, randn(d * d)]]), dModel: d, nPrompts: 3, sourceLayers: [2, 7] };
  const file = path.join(dir, "zip64.pt");
  await writeLensFile(file, lens, { dtype: "f32", zip64: true });
  const raw = readFileSync(file);
  expect(raw.includes(Buffer.from([0x50, 0x4b, 0x06, 0x06]))).toBe(true);  // the ZIP64 end of central directory
  const back = await readLensFile(file);
  for (const l of [2, 7]) expect(back.J.get(l)).toEqual(lens.J.get(l));
});

test("the archive holds what torch.save writes, each entry stored and 64-byte aligned", async () => {
  const d = 4, file = path.join(dir, "layout.pt");
  await writeLensFile(file, { J: new Map([[0, randn(d * d)]]), dModel: d, nPrompts: 1, sourceLayers: [0] });
  const raw = readFileSync(file), names: string[] = [];
  for (let p = 0; raw.readUInt32LE(p) === 0x04034b50;) {
    const size = raw.readUInt32LE(p + 18), nameLen = raw.readUInt16LE(p + 26), extraLen = raw.readUInt16LE(p + 28);
    expect(raw.readUInt16LE(p + 8)).toBe(0);  // stored
    const data = p + 30 + nameLen + extraLen;
    expect(data % 64).toBe(0);
    names.push(raw.toString("utf8", p + 30, p + 30 + nameLen));
    p = data + size;
  }
  expect(names).toEqual(["layout/data.pkl", "layout/.format_version", "layout/.storage_alignment", "layout/byteorder", "layout/data/0", "layout/version", "layout/.data/serialization_id"]);
});

/** The fixture with its data.pkl changed by `edit` and its CRC made right again (so the edit, not the CRC, is what is refused). */
function editPickle(edit: (pkl: Buffer) => void): Buffer {
  const b = Buffer.from(readFileSync(FIXTURE));
  const cd = b.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));  // data.pkl is the first entry
  const start = 30 + b.readUInt16LE(26) + b.readUInt16LE(28), size = b.readUInt32LE(cd + 24);
  const pkl = b.subarray(start, start + size);
  edit(pkl);
  b.writeUInt32LE(zlib.crc32(pkl), cd + 16);
  return b;
}

test("malformed files are refused with the reason, never a crash or a hang", async () => {
  const good = readFileSync(FIXTURE);
  const write = (name: string, b: Buffer) => { const f = path.join(dir, name); writeFileSync(f, b); return f; };
  await expect(readLensFile(write("trunc.pt", good.subarray(0, good.length - 30)))).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
  await expect(readLensFile(write("half.pt", good.subarray(0, 600)))).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
  await expect(readLensFile(write("junk.bin", Buffer.from("not a lens at all, just text")))).rejects.toThrow(/neither a zip|safetensors/);
  // a pickle referring to os.system: refused, nothing run
  const evil = editPickle((pkl) => pkl.write("os\nsystem\n\0\0\0\0\0\0\0\0\0", pkl.indexOf("torch._utils"), "latin1"));
  await expect(readLensFile(write("evil.pt", evil))).rejects.toThrow(/refers to os\.system.*refused/);
  // a changed byte with the CRC left as it was
  const flipped = Buffer.from(good);
  flipped[flipped.indexOf("n_prompts")] ^= 1;
  await expect(readLensFile(write("crc.pt", flipped))).rejects.toThrow(/data\.pkl is corrupt \(its CRC-32/);
  // a compressed entry: method 8 in the central directory
  const comp = Buffer.from(good);
  const cd = comp.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
  comp.writeUInt16LE(8, cd + 10);
  await expect(readLensFile(write("deflate.pt", comp))).rejects.toThrow(/compressed/);
  // an unknown opcode
  const op = editPickle((pkl) => { pkl[2] = 0x01; });
  await expect(readLensFile(write("opcode.pt", op))).rejects.toThrow(/opcode 0x1,/);
});

test("malformed safetensors are refused with the reason", async () => {
  const write = (name: string, header: unknown, body = Buffer.alloc(0)) => {
    const json = Buffer.from(typeof header === "string" ? header : JSON.stringify(header)), len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    const f = path.join(dir, name);
    writeFileSync(f, Buffer.concat([len, json, body]));
    return f;
  };
  await expect(readLensFile(write("h1.safetensors", "{not json"))).rejects.toThrow(/not JSON/);
  await expect(readLensFile(write("h2.safetensors", { "J.0": "x" }))).rejects.toThrow(/J\.0 is malformed/);
  await expect(readLensFile(write("h3.safetensors", { other: { dtype: "F32", shape: [1], data_offsets: [0, 4] } }, Buffer.alloc(4)))).rejects.toThrow(/no J\.<layer>/);
  await expect(readLensFile(write("h4.safetensors", { "J.0": { dtype: "F32", shape: [2, 2], data_offsets: [0, 16] } }, Buffer.alloc(8)))).rejects.toThrow(/truncated/);
  await expect(readLensFile(write("h5.safetensors", { "J.0": { dtype: "I32", shape: [2, 2], data_offsets: [0, 16] } }, Buffer.alloc(16)))).rejects.toThrow(/dtype I32/);
  await expect(readLensFile(write("h6.safetensors", { __metadata__: { source_layers: "[1]" }, "J.0": { dtype: "F32", shape: [2, 2], data_offsets: [0, 16] } }, Buffer.alloc(16)))).rejects.toThrow(/source_layers \[1\] do not match/);
  const inf = Buffer.alloc(16);
  inf.writeFloatLE(Infinity, 4);
  await expect(readLensFile(write("h7.safetensors", { "J.0": { dtype: "F32", shape: [2, 2], data_offsets: [0, 16] } }, inf))).rejects.toThrow(/non-finite value at 1/);
});

test("corrupted bytes anywhere give a refusal or a valid lens, never a crash or a hang", async () => {
  const good = readFileSync(FIXTURE);
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const f = path.join(dir, "fuzz.pt");
  const outcomes = { refused: 0, read: 0 };
  for (let trial = 0; trial < 400; trial++) {
    const flips = 1 + Math.floor(rand() * 4);
    let b: Buffer;
    if (trial % 2 === 0) {
      // inside data.pkl with its CRC made right: what the pickle reader itself must withstand
      b = editPickle((pkl) => { for (let k = 0; k < flips; k++) pkl[Math.floor(rand() * pkl.length)] = Math.floor(rand() * 256); });
    } else {
      // anywhere in the zip's headers: the local headers (first ~400 bytes) and the central directory (last ~800)
      b = Buffer.from(good);
      for (let k = 0; k < flips; k++) b[rand() < 0.5 ? Math.floor(rand() * 400) : b.length - 1 - Math.floor(rand() * 800)] = Math.floor(rand() * 256);
    }
    writeFileSync(f, trial % 10 === 9 ? b.subarray(0, Math.floor(rand() * b.length)) : b);
    try {
      const lens = await readLensFile(f);
      expect(lens.J.size).toBeGreaterThan(0);
      outcomes.read++;
    } catch (e) {
      expect(e).toMatchObject({ name: "LljError", code: "INVALID_ARGUMENT" });
      expect((e as Error).message).toContain(f);
      outcomes.refused++;
    }
  }
  expect(outcomes.refused).toBeGreaterThan(100);
});
