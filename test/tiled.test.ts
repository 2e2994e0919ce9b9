// The tiled dequantize-and-multiply kernel (native/engine/tiled.cpp): exact products on quantized
// weights without an F32 copy of the weight (issue #10, item 1).
import { loadModel, syntheticModel, TINY_LLAMA, type QuantType, type SyntheticSpec } from "../src/index.js";
import { getAddon } from "../src/native.js";
import { initBackends } from "../src/backends.js";
import { relErr, randn, PROMPT } from "./helpers.js";

describe("tiled kernel on every ggml weight type", () => {
  beforeAll(() => { initBackends(false); });

  test("covers every type with a to_float, and the self-test can make data of each", () => {
    const types = getAddon().tiledTypes();
    const names = types.map((t) => t.name);
    for (const t of ["f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_K", "q3_K", "q4_K", "q5_K", "q6_K",
      "iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s", "iq1_s", "iq1_m", "iq4_nl", "iq4_xs", "tq1_0", "tq2_0", "mxfp4"]) {
      expect(names).toContain(t);
    }
    expect(types.filter((t) => !t.quantizable).map((t) => t.name)).toEqual([]);
  });

  // 70 rows (not a multiple of the 4-row register block nor of the 64-row tile), columns
  // 512 + one block (a partial chunk), 7 and 131 right-hand columns (column remainders, and
  // more than one 64-column pass over a tile), 1 and 2 threads.
  const types = (() => { initBackends(false); return getAddon().tiledTypes().map((t) => t.name); })();
  test.each(types)("%s: tiles equal ggml's to_float bit for bit; products equal cast + mul_mat to F32 rounding", async (type) => {
    for (const [n, threads] of [[7, 2], [131, 1]]) {
      const r = await getAddon().tiledSelfTest({ type, rows: 70, n, threads });
      expect(r.eligible).toBe(true);
      expect(r.tileMismatchRows).toBe(0);
      expect(r.randomBitsMismatchRows).toBe(0);
      expect(r.forwardMismatches).toBe(0);    // W·I through the kernel is W
      expect(r.transposeMismatches).toBe(0);  // Wᵀ·I is Wᵀ
      expect(r.castMismatches).toBe(0);       // and ggml_cast (today's route) agrees
      expect(r.forwardRelError).toBeLessThan(1e-6);
      expect(r.transposeRelError).toBeLessThan(1e-6);
    }
  });

  test("refuses a type without to_float or that the self-test cannot make", async () => {
    expect(() => getAddon().tiledSelfTest({ type: "f32", rows: 4, n: 4, threads: 1 })).toThrow(/not a type of the tiled kernel/);
  });
});

describe("tiled kernel in the linearization: same system as the cast + mul_mat route", () => {
  const spec: SyntheticSpec = { ...TINY_LLAMA, seed: 5 };
  const weightTypes: QuantType[] = ["Q4_K_M", "Q8_0", "Q4_0", "Q6_K", "Q5_0", "F16"];
  test.each(weightTypes)("%s: primal, JVP and VJP (all positions and one position) agree", async (type) => {
    const model = await loadModel({ modelPath: await syntheticModel(spec, type), gpu: false });
    try {
      const tiled = await model.linearize(PROMPT, { threads: 2 });
      const old = await model.linearize(PROMPT, { threads: 2, tiled: false });
      expect(tiled.tiled).toBe(true);
      expect(old.tiled).toBe(false);
      expect(relErr(tiled.hidden, old.hidden)).toBeLessThan(1e-6);
      for (const l of [0, tiled.layerInputs.length - 1]) expect(relErr(tiled.layerInputs[l], old.layerInputs[l])).toBeLessThan(1e-6);
      expect(relErr(tiled.logits, old.logits)).toBeLessThan(1e-6);
      const n = tiled.nTokens, d = tiled.nEmbd;
      const v = randn(3 * n * d), u = randn(5 * d), uAll = randn(2 * n * d);
      expect(relErr(await tiled.jvp(v, { allPositions: true }), await old.jvp(v, { allPositions: true }))).toBeLessThan(1e-6);
      expect(relErr(await tiled.vjp(u), await old.vjp(u))).toBeLessThan(1e-6);
      expect(relErr(await tiled.vjp(uAll, { allPositions: true }), await old.vjp(uAll, { allPositions: true }))).toBeLessThan(1e-6);
      expect(relErr(await tiled.vjp(u, { firstPosition: n - 1 }), await old.vjp(u, { firstPosition: n - 1 }))).toBeLessThan(1e-6);
      expect((await tiled.reconstruction()).relativeError).toBeLessThan(2e-6);
      await tiled.dispose();
      await old.dispose();
    } finally {
      await model.dispose();
    }
  });

  test("F32 weights keep the existing route", async () => {
    const model = await loadModel({ modelPath: await syntheticModel(spec, "F32"), gpu: false });
    try {
      const lin = await model.linearize(PROMPT, { threads: 2 });
      expect(lin.tiled).toBe(false);
      await lin.dispose();
    } finally {
      await model.dispose();
    }
  });
});
