// Lens files: the published torch.save artifact (a fixture written by real PyTorch,
// test/fixtures/make-lens-fixture.py) and safetensors, read and written without Python.
import { readFileSync, writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
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
  expect([...lens.J.keys()].sort()).toEqual([1, 3]);
  expect(expected.offset_of_3).toBe(64);  // J[3] is a view at offset 64 into a larger storage
  for (const l of [1, 3]) expect(Array.from(lens.J.get(l)!)).toEqual(expected[String(l)]);
  const j1 = lens.J.get(1)!;
  expect(j1[0]).toBeCloseTo(5.96e-8, 9);  // subnormal half
  expect(Object.is(j1[1], -0)).toBe(true);
  expect(j1[2]).toBe(1);                    // 1 + 2^-11 rounded to even
  expect(j1[3]).toBe(65504);
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
    expect(readFileSync(f16).length).toBeLessThan(readFileSync(f32).length);
  });

  test("refuses inconsistent lenses before writing anything", async () => {
    const file = path.join(dir, `bad.${format}`);
    await expect(writeLensFile(file, { ...lens, sourceLayers: [0] }, { format })).rejects.toThrow(/source_layers/);
    await expect(writeLensFile(file, { ...lens, J: new Map([[0, randn(3)]]), sourceLayers: [0] }, { format })).rejects.toThrow(/d_model² = 256/);
    const nan = randn(d * d);
    nan[7] = NaN;
    await expect(writeLensFile(file, { ...lens, J: new Map([[0, nan]]), sourceLayers: [0] }, { format })).rejects.toThrow(/non-finite/);
    await expect(readLensFile(file)).rejects.toThrow(/cannot open/);
  });
});

test("malformed files are refused with the reason, never a crash or a hang", async () => {
  const good = readFileSync(FIXTURE);
  const write = (name: string, b: Buffer) => { const f = path.join(dir, name); writeFileSync(f, b); return f; };
  await expect(readLensFile(write("trunc.pt", good.subarray(0, good.length - 30)))).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
  await expect(readLensFile(write("half.pt", good.subarray(0, 600)))).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
  await expect(readLensFile(write("junk.bin", Buffer.from("not a lens at all, just text")))).rejects.toThrow(/neither a zip|safetensors/);
  // a pickle referring to os.system: refused, nothing run
  const evil = Buffer.from(good);
  const at = evil.indexOf("torch._utils");
  evil.write("os\nsystem\n\0\0\0\0\0\0\0\0\0", at, "latin1");
  await expect(readLensFile(write("evil.pt", evil))).rejects.toThrow(/refused|opcode/);
  // a compressed entry: method 8 in the central directory
  const comp = Buffer.from(good);
  const cd = comp.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
  comp.writeUInt16LE(8, cd + 10);
  await expect(readLensFile(write("deflate.pt", comp))).rejects.toThrow(/compressed/);
  // an unknown opcode
  const op = Buffer.from(good);
  const pkl = op.indexOf(Buffer.from([0x80, 0x02]));
  op[pkl + 2] = 0x01;
  await expect(readLensFile(write("opcode.pt", op))).rejects.toThrow(/opcode 0x1/);
});
