// The linearization engine against the four invariants of docs/math.md §4: faithfulness to llama.cpp's
// own forward, exact reconstruction, the adjoint identity, linearity and batching.
import { loadModel, syntheticModel, TINY_LLAMA, LljError, type Model, type Linearization } from "../src/index.js";
import { STORIES, relErr, randn, adjointError, truncatedPassError, PROMPT } from "./helpers.js";

/** A prompt of exactly n tokens (BOS + story text). */
function promptOf(model: Model, n: number): number[] {
  const text = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun with her dog. " +
    "One day, she saw a big red ball in the park. She ran to the ball and kicked it very high. The dog ran after it and " +
    "they played all day long until the sun went down and it was time to go home for dinner with mom and dad.";
  const tokens = model.tokenize(text);
  if (tokens.length < n) throw new Error(`story too short for ${n} tokens`);
  return tokens.slice(0, n);
}

describe("stories260K (F32, trained)", () => {
  let model: Model;
  let lin: Linearization;
  beforeAll(async () => {
    model = await loadModel({ modelPath: STORIES, gpu: false });
    lin = await model.linearize(PROMPT);
  });
  afterAll(() => model.dispose());

  test("faithfulness: the primal pass reproduces llama.cpp's forward, per layer and at the output", async () => {
    const ref = await model.referenceForward(PROMPT);
    expect(relErr(lin.hidden, ref.hidden)).toBeLessThan(1e-5);
    expect(relErr(lin.output, ref.lastHidden)).toBeLessThan(1e-5);
    expect(relErr(lin.logits, ref.logits)).toBeLessThan(1e-5);
    expect(lin.predictedToken).toBe(ref.topToken);
    expect(lin.layerInputs).toHaveLength(5);
    lin.layerInputs.forEach((h, l) => expect(relErr(h, ref.layerInputs![l])).toBeLessThan(1e-5));
    expect(Array.from(lin.inputEmbeddings)).toEqual(Array.from(ref.layerInputs![0]));
  });

  test.each([1, 8, 64])("reconstruction: Σ J_i x_i = y on a %i-token prompt", async (n) => {
    const l = await model.linearize(promptOf(model, n));
    try {
      const progress: number[] = [];
      const r = await l.reconstruction({ onProgress: (p) => progress.push(p) });
      expect(progress).toEqual(n === 64 ? [0.5, 1] : [1]);  // batches of 32 positions
      expect(r.relativeError).toBeLessThan(1e-5);
      expect(r.contributionNorms).toHaveLength(n);
      expect(l.affine).toBe(false);
      expect(r.biasTerm).toBeNull();
    } finally {
      await l.dispose();
    }
  });

  test("the Jacobian from VJPs reconstructs y, equals the JVP contributions, and the JVP-built columns", async () => {
    const n = lin.nTokens, d = lin.nEmbd;
    const J = await lin.jacobian();
    expect(J.data).toHaveLength(n * d * d);
    const sum = new Float64Array(d);
    const perToken = new Float32Array(n * d);
    for (let i = 0; i < n; i++) {
      const b = J.block(i);
      for (let k = 0; k < d; k++) {
        let s = 0;
        for (let c = 0; c < d; c++) s += b[k * d + c] * lin.inputEmbeddings[i * d + c];
        perToken[i * d + k] = s;
        sum[k] += s;
      }
    }
    expect(relErr(sum, lin.output)).toBeLessThan(1e-5);
    const r = await lin.reconstruction();
    expect(relErr(perToken, r.contributions)).toBeLessThan(1e-5);
    // Forward mode: the d unit tangents at position i give the columns of J_i.
    const i = 3;
    const eye = new Float32Array(d * n * d);
    for (let c = 0; c < d; c++) eye[(c * n + i) * d + c] = 1;
    const cols = await lin.jvp(eye); // [d(c), d(k)]
    const fromJvp = new Float32Array(d * d);
    for (let c = 0; c < d; c++) for (let k = 0; k < d; k++) fromJvp[k * d + c] = cols[c * d + k];
    expect(relErr(fromJvp, J.block(i))).toBeLessThan(1e-5);
  });

  test("adjoint: ⟨Lv, u⟩ = ⟨v, Lᵀu⟩ for random u, v (last position and all positions)", async () => {
    for (let t = 0; t < 3; t++) expect(await adjointError(lin)).toBeLessThan(1e-5);
    expect(await adjointError(lin, true)).toBeLessThan(1e-5);
  });

  test("linearity and batching", async () => {
    const n = lin.nTokens, d = lin.nEmbd;
    const v = randn(n * d), w = randn(n * d);
    const [a, b] = [0.7, -1.9];
    const comb = v.map((x, i) => a * x + b * w[i]);
    const [lv, lw, lc] = [await lin.jvp(v), await lin.jvp(w), await lin.jvp(comb)];
    expect(relErr(lc, lv.map((x, i) => a * x + b * lw[i]))).toBeLessThan(1e-5);
    // A batch equals the single calls, for both products.
    const batch = new Float32Array(3 * n * d);
    batch.set(v, 0); batch.set(w, n * d); batch.set(comb, 2 * n * d);
    const lb = await lin.jvp(batch);
    expect(relErr(lb.subarray(0, d), lv)).toBeLessThan(1e-6);
    expect(relErr(lb.subarray(d, 2 * d), lw)).toBeLessThan(1e-6);
    const us = randn(4 * d);
    const vb = await lin.vjp(us);
    for (let k = 0; k < 4; k++) expect(relErr(vb.subarray(k * n * d, (k + 1) * n * d), await lin.vjp(us.slice(k * d, (k + 1) * d)))).toBeLessThan(1e-6);
  });

  test("a small memory budget splits the passes and changes nothing", async () => {
    const small = await model.linearize(PROMPT, { batchMemoryBytes: 1 });
    try {
      expect(small.maxBatch).toBe(1);
      expect(lin.maxBatch).toBeGreaterThan(8);
      const [a, b] = [await small.jacobian(), await lin.jacobian()];
      expect(relErr(a.data, b.data)).toBeLessThan(1e-6);
    } finally {
      await small.dispose();
    }
  });

  test("the OpenBLAS path (when built) and ggml's own matmul give the same Jacobian", async () => {
    const plain = await model.linearize(PROMPT, { blas: false });
    try {
      expect(plain.blas).toBe(false);
      expect(lin.blas).toBe(model.backends.blas);
      const [a, b] = [await plain.jacobian(), await lin.jacobian()];
      expect(relErr(a.data, b.data)).toBeLessThan(1e-5);
    } finally {
      await plain.dispose();
    }
  });

  test("contrast: the ordinary Jacobian does not reconstruct y; the detached one does", async () => {
    const detached = (await lin.reconstruction()).relativeError;
    const ordinary = await lin.nonlinearReconstruction();
    expect(ordinary.relativeError).toBeGreaterThan(100 * detached);
    expect(ordinary.relativeError).toBeGreaterThan(1e-2);
  });

  test("linearizing around given embeddings", async () => {
    const again = await model.linearize({ embeddings: lin.inputEmbeddings });
    try {
      expect(again.tokens).toBeNull();
      expect(relErr(again.output, lin.output)).toBeLessThan(1e-6);
      const x2 = lin.inputEmbeddings.map((x, i) => x + 0.3 * Math.sin(i));
      const moved = await model.linearize({ embeddings: x2 });
      expect(relErr(moved.output, lin.output)).toBeGreaterThan(1e-3);
      expect((await moved.reconstruction()).relativeError).toBeLessThan(1e-5);
      await moved.dispose();
    } finally {
      await again.dispose();
    }
  });

  test("JVPs and VJPs restricted to positions [p, n) equal the full passes there (causality), at the output and at layer taps", async () => {
    const l = await model.linearize(promptOf(model, 64));
    try {
      for (const p0 of [1, 31, 63]) {
        expect(await truncatedPassError(l, false, p0)).toBeLessThan(1e-6);
        expect(await truncatedPassError(l, true, p0)).toBeLessThan(1e-6);
        expect(await truncatedPassError(l, false, p0, { tap: "mlp", layer: 2 })).toBeLessThan(1e-6);
        expect(await truncatedPassError(l, true, p0, { fromLayer: 1, tap: "residual", layer: 3 })).toBeLessThan(1e-6);
      }
      // J_last from one-position VJPs is the last block of the full Jacobian
      const d = l.nEmbd, eye = new Float32Array(d * d);
      for (let k = 0; k < d; k++) eye[k * d + k] = 1;
      const rows = await l.vjp(eye, { firstPosition: l.nTokens - 1 });
      const full = await l.jacobian();
      expect(relErr(rows, full.block(l.nTokens - 1))).toBeLessThan(1e-6);
      // ...and the Jacobian asked from a position holds exactly the later blocks
      const tail = await l.jacobian({ firstPosition: 40 });
      expect(tail.firstPosition).toBe(40);
      expect(tail.data).toHaveLength(24 * d * d);
      for (const i of [40, 52, 63]) expect(relErr(tail.block(i), full.block(i))).toBeLessThan(1e-6);
      expect(() => tail.block(39)).toThrow(/blocks of positions \[40, 64\)/);
      await expect(l.vjp(new Float32Array(d), { firstPosition: 64 })).rejects.toThrow(/firstPosition must be an integer in \[0, 64\)/);
      await expect(l.vjp(new Float32Array(d), { firstPosition: 1.5 })).rejects.toThrow(/firstPosition/);
      await expect(l.jvp(new Float32Array(2 * d), { firstPosition: 63 })).resolves.toHaveLength(2 * d);
      await expect(l.jvp(new Float32Array(3 * d), { firstPosition: 62 })).rejects.toThrow(/tangents must be a Float32Array of B·n·d values \(n·d = 2·64/);
    } finally {
      await l.dispose();
    }
  });

  test("bad input is refused with a clear message", async () => {
    const n = lin.nTokens, d = lin.nEmbd;
    await expect(lin.jvp(new Float32Array(n * d - 1))).rejects.toThrow(/tangents must be a Float32Array of B·n·d values/);
    await expect(lin.jvp(new Float64Array(n * d) as unknown as Float32Array)).rejects.toThrow(/Float32Array/);
    await expect(lin.vjp(new Float32Array(d + 1))).rejects.toThrow(/cotangents/);
    const nan = new Float32Array(n * d); nan[5] = NaN;
    await expect(lin.jvp(nan)).rejects.toThrow(/non-finite value at index 5/);
    await expect(model.linearize("")).rejects.toThrow(/empty/);
    await expect(model.linearize(new Array(2049).fill(1))).rejects.toThrow(/more than the model's context/);
    await expect(model.linearize({ embeddings: new Float32Array(65) })).rejects.toThrow(/n·d values/);
    await expect(model.linearize(PROMPT, { precision: "float8" as never })).rejects.toThrow(/precision/);
    const pre = new AbortController();
    pre.abort();
    await expect(lin.jacobian({ signal: pre.signal })).rejects.toThrow(/abort/i);
    // Mid-run: one column per pass, aborted at the first progress report.
    const slow = await model.linearize(promptOf(model, 64), { batchMemoryBytes: 1 });
    const ac = new AbortController();
    let reports = 0;
    await expect(slow.jacobian({ signal: ac.signal, onProgress: () => { reports++; ac.abort(); } })).rejects.toThrow(/abort/i);
    expect(reports).toBeLessThan(64);
    await slow.dispose();
    const gone = await model.linearize("Once");
    await gone.dispose();
    await expect(gone.jvp(new Float32Array(2 * d))).rejects.toThrow(/disposed/);
  });
});

test("an abort after the primal graph, while its record (the attention probabilities) is copied, stops within half a second", async () => {
  // 1861 tokens of stories260K: 550 MB of probabilities copied after the last layer (0.3–1.4 s)
  const prompt = Array(60).fill("Once upon a time, there was a little girl named Lily who loved to play in the park with her dog.").join(" ");
  const ac = new AbortController();
  let abortedAt = 0;
  await using m = await loadModel({ modelPath: STORIES, gpu: false });
  const e = await m.linearize(prompt, { signal: ac.signal, onProgress: (p) => {
    if (p === 1 && !abortedAt) { abortedAt = Date.now(); ac.abort(); }
  } }).then(() => null, (x: unknown) => x);
  const latency = Date.now() - abortedAt;
  expect(abortedAt).toBeGreaterThan(0);
  expect((e as LljError).code).toBe("ABORTED");
  expect(latency).toBeLessThan(500);
}, 120_000);

test("linearize reports the primal pass's progress per layer and stops mid-pass on abort", async () => {
  // The d=512 model of the analysis suite: a 256-token primal pass takes tens of ms per layer.
  const m = await loadModel({ modelPath: await syntheticModel({ ...TINY_LLAMA, seed: 21, nEmbd: 512, nLayer: 8, nHead: 8, nHeadKv: 4, nFf: 1536 }, "F32"), gpu: false });
  try {
    const tokens = Array.from({ length: 256 }, (_, i) => 1 + ((i * 37) % 200));
    const progress: number[] = [];
    const l = await m.linearize(tokens, { onProgress: (p) => progress.push(p) });
    await l.dispose();
    expect(progress.length).toBeGreaterThan(1);
    for (let i = 1; i < progress.length; i++) expect(progress[i]).toBeGreaterThan(progress[i - 1]);
    expect(progress[progress.length - 1]).toBe(1);
    expect(progress.every((p) => p > 0 && p <= 1 && Number.isInteger(p * 8))).toBe(true);

    // Aborted at the first layer's report: the pass stops before the last layer.
    const ac = new AbortController();
    const seen: number[] = [];
    await expect(m.linearize(tokens, { signal: ac.signal, onProgress: (p) => { seen.push(p); ac.abort(); } })).rejects.toThrow(/abort/i);
    expect(seen.length).toBeGreaterThan(0);
    expect(Math.max(...seen)).toBeLessThan(1);
    // the model stays usable
    const again = await m.linearize(tokens.slice(0, 4));
    expect((await again.reconstruction()).relativeError).toBeLessThan(1e-5);
    await again.dispose();
  } finally {
    await m.dispose();
  }
}, 300_000);
