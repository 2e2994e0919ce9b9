// Analyses on the linear system: SVD of the detached Jacobian, decoding, exact attribution.
import { loadModel, syntheticModel, TINY_LLAMA, type Model, type Linearization } from "../src/index.js";
import { STORIES, relErr, dot, readF32Tensor } from "./helpers.js";
import { getAddon } from "../src/native.js";
import { initBackends } from "../src/backends.js";

let model: Model;
let lin: Linearization;
beforeAll(async () => {
  model = await loadModel({ modelPath: STORIES, gpu: false });
  lin = await model.linearize("Once upon a time, there was a little");
});
afterAll(() => model.dispose());

/** U diag(s) Vᵀ for k triplets: u [k × m], v [k × n] row-major. */
function compose(u: Float32Array, s: Float32Array, v: Float32Array, m: number, n: number): Float64Array {
  const out = new Float64Array(m * n);
  for (let j = 0; j < s.length; j++)
    for (let r = 0; r < m; r++) {
      const a = s[j] * u[j * m + r];
      for (let c = 0; c < n; c++) out[r * n + c] += a * v[j * n + c];
    }
  return out;
}

/** The columns of a row-major [rows × k] matrix as rows [k × rows]. */
function transposeCols(x: Float32Array, rows: number, k: number): Float32Array {
  const out = new Float32Array(rows * k);
  for (let r = 0; r < rows; r++) for (let j = 0; j < k; j++) out[j * rows + r] = x[r * k + j];
  return out;
}

function maxOrthogonalityError(x: Float32Array, k: number, len: number): number {
  let worst = 0;
  for (let a = 0; a < k; a++)
    for (let b = 0; b < k; b++) {
      const g = dot(x.subarray(a * len, (a + 1) * len), x.subarray(b * len, (b + 1) * len));
      worst = Math.max(worst, Math.abs(g - (a === b ? 1 : 0)));
    }
  return worst;
}

test("exact SVD of J_i: U Σ Vᵀ = J_i, orthonormal U and V, descending values, u pointing along y", async () => {
  const d = lin.nEmbd;
  const J = await lin.jacobian();
  for (const i of [0, 4, lin.nTokens - 1]) {
    const s = await lin.svd({ token: i, k: d });
    expect(s.values).toHaveLength(d);
    for (let j = 1; j < d; j++) expect(s.values[j]).toBeLessThanOrEqual(s.values[j - 1]);
    expect(relErr(compose(s.u, s.values, s.v, d, d), J.block(i))).toBeLessThan(1e-5);
    expect(maxOrthogonalityError(s.u, d, d)).toBeLessThan(1e-5);
    expect(maxOrthogonalityError(s.v, d, d)).toBeLessThan(1e-5);
    for (let j = 0; j < d; j++) expect(dot(s.u.subarray(j * d, (j + 1) * d), lin.output)).toBeGreaterThanOrEqual(0);
  }
});

test("the LAPACK (dgesdd) and Jacobi routes of the exact SVD agree; dgesdd is used wherever OpenBLAS is", async () => {
  const n = lin.nTokens, d = lin.nEmbd;
  const J = await lin.jacobian();
  const stacked = new Float32Array(d * n * d);
  for (let i = 0; i < n; i++) for (let r = 0; r < d; r++) stacked.set(J.block(i).subarray(r * d, (r + 1) * d), r * n * d + i * d);
  for (const [a, cols] of [[J.block(n - 1).slice(), d], [stacked, n * d]] as const) {
    const [fast, jacobi] = [await getAddon().svd({ a, m: d, n: cols }), await getAddon().svd({ a, m: d, n: cols, lapack: false })];
    expect(jacobi.routine).toBe("jacobi");
    if (initBackends(false).blas) expect(fast.routine).toBe("dgesdd");
    expect(relErr(fast.s, jacobi.s)).toBeLessThan(1e-6);
    for (const x of [fast, jacobi]) expect(relErr(compose(transposeCols(x.u, d, d), x.s, transposeCols(x.v, cols, d), d, cols), a)).toBeLessThan(1e-5);
  }
});

test("SVD of the stacked Jacobian [J_1 … J_n]", async () => {
  const n = lin.nTokens, d = lin.nEmbd;
  const s = await lin.svd({ token: "all", k: d });
  expect(s.vWidth).toBe(n * d);
  const J = await lin.jacobian();
  const stacked = new Float32Array(d * n * d);
  for (let i = 0; i < n; i++) for (let r = 0; r < d; r++) stacked.set(J.block(i).subarray(r * d, (r + 1) * d), r * n * d + i * d);
  expect(relErr(compose(s.u, s.values, s.v, d, n * d), stacked)).toBeLessThan(1e-5);
  expect(maxOrthogonalityError(s.v, d, n * d)).toBeLessThan(1e-5);
  // ‖[J_1 … J_n]‖₂ ≥ ‖J_i‖₂ for every block
  const last = await lin.svd({ k: 1 });
  expect(s.values[0]).toBeGreaterThanOrEqual(last.values[0] * (1 - 1e-6));
});

test("the predicted token is among the decoded tokens of the last position's leading left singular vector", async () => {
  expect(model.tokenPieces([lin.predictedToken])[0]).toBe(" g");
  const s = await lin.svd({ k: 3 });
  const [top] = await lin.decode(s.u.subarray(0, lin.nEmbd), { space: "output", top: 5 });
  expect(top.map((t) => t.id)).toContain(lin.predictedToken);
  // and the right singular vector decodes, by embedding similarity, to the last input token
  const [right] = await lin.decode(s.v.subarray(0, lin.nEmbd), { space: "input", top: 3 });
  expect(right[0].text).toBe(" little");
  for (let j = 1; j < right.length; j++) expect(right[j].score).toBeLessThanOrEqual(right[j - 1].score);
});

test("attribution: per-position contributions sum exactly to the logit", async () => {
  for (const token of [lin.predictedToken, model.tokenize("dog", { addSpecial: false })[0]]) {
    const a = await lin.attribution({ token });
    const sum = a.contributions.reduce((x, y) => x + y, 0) + a.biasContribution + a.outputBias;
    expect(Math.abs(sum - lin.logits[token])).toBeLessThan(1e-5 * Math.abs(lin.logits[token]) + 1e-6);
    expect(Math.abs(a.logit - lin.logits[token])).toBeLessThan(1e-5 * Math.abs(lin.logits[token]) + 1e-6);
    expect(a.contributions).toHaveLength(lin.nTokens);
    expect(a.normShares.reduce((x, y) => x + y, 0)).toBeCloseTo(1, 6);
  }
});

test("attribution of an affine model includes the bias term", async () => {
  const file = await syntheticModel({ ...TINY_LLAMA, biases: true, scales: true, ropeFreqs: true, seed: 3 }, "F32");
  const m = await loadModel({ modelPath: file, gpu: false });
  try {
    const l = await m.linearize("Once upon a time");
    const a = await l.attribution();
    // the bias term's share is the LM-head row of the token times c (read from the file's output.weight)
    const W = await readF32Tensor(file, "output.weight"), d = l.nEmbd, t = l.predictedToken;
    expect(l.biasTerm).not.toBeNull();
    const expected = dot(W.data.subarray(t * d, (t + 1) * d), l.biasTerm as Float32Array);
    expect(Math.abs(expected)).toBeGreaterThan(1e-3);
    expect(Math.abs(a.biasContribution - expected)).toBeLessThan(1e-4 * Math.abs(expected) + 1e-5);
    const sum = a.contributions.reduce((x, y) => x + y, 0) + a.biasContribution + a.outputBias;
    expect(Math.abs(sum - l.logits[l.predictedToken])).toBeLessThan(1e-5 * Math.abs(l.logits[l.predictedToken]) + 1e-5);
  } finally {
    await m.dispose();
  }
});

test("bad analysis input is refused", async () => {
  await expect(lin.svd({ token: 99 })).rejects.toThrow(/token must be a position/);
  await expect(lin.svd({ k: 0 })).rejects.toThrow(/k must be a positive integer/);
  await expect(lin.decode(new Float32Array(65), { space: "output" })).rejects.toThrow(/B·d values/);
  await expect(lin.attribution({ token: 512 })).rejects.toThrow(/token must be an id/);
  await expect(lin.svd({ method: "randomized", tolerance: 0 })).rejects.toThrow(/tolerance must be positive/);
  await expect(lin.svd({ method: "randomized", maxIterations: 0 })).rejects.toThrow(/maxIterations/);
});

test("randomized top-k (matrix-free, JVP/VJP only) matches the exact SVD on stories260K", async () => {
  const d = lin.nEmbd;
  for (const token of [-1, "all"] as const) {
    const [exact, rand] = [await lin.svd({ token, k: 6, method: "exact" }), await lin.svd({ token, k: 6, method: "randomized" })];
    expect(rand.method).toBe("randomized");
    for (let j = 0; j < 6; j++) expect(Math.abs(rand.values[j] - exact.values[j]) / exact.values[j]).toBeLessThan(1e-3);
    // well-separated leading vectors agree up to rounding (same sign convention)
    for (let j = 0; j < 3; j++) expect(dot(rand.u.subarray(j * d, (j + 1) * d), exact.u.subarray(j * d, (j + 1) * d))).toBeGreaterThan(0.999);
    expect(rand.residualEstimate).toBeGreaterThan(0);
    expect(rand.residualEstimate).toBeLessThanOrEqual(rand.values[5] * (1 + 1e-3));
    // the reported residuals are the true ones: ‖J v_j − σ_j u_j‖ measured with a fresh JVP
    expect(rand.converged).toBe(true);
    const n = lin.nTokens;
    for (let j = 0; j < 6; j++) {
      const vj = rand.v.subarray(j * rand.vWidth, (j + 1) * rand.vWidth);
      const tangent = token === "all" ? vj.slice() : new Float32Array(n * d);
      if (token !== "all") tangent.set(vj, (n - 1) * d);
      const jv = await lin.jvp(tangent);
      const res = Math.sqrt(jv.reduce((acc, x, r) => acc + (x - rand.values[j] * rand.u[j * d + r]) ** 2, 0));
      expect(res).toBeLessThanOrEqual(1e-4 * rand.values[j]);
      expect(Math.abs(res - rand.residuals[j])).toBeLessThanOrEqual(1e-5 * rand.values[j]);
    }
    expect(maxOrthogonalityError(rand.v, 6, rand.vWidth)).toBeLessThan(1e-4);
  }
});

test("every token's SVD in one sweep equals the per-token SVDs; seeded, reproducible bit for bit", async () => {
  const n = lin.nTokens, d = lin.nEmbd;
  const exact = await lin.svd({ token: "each", k: 4, method: "exact" });
  expect(exact.positions).toHaveLength(n);
  const progress: number[] = [];
  // A small batch budget forces several chunks of tokens per pass (each skipping its prefix).
  const sweep = await lin.svd({ token: "each", k: 4, method: "randomized", seed: 5, oversampling: 2, batchMemoryBytes: 3 * 6 * n * d * 4, onProgress: (p) => progress.push(p) });
  expect(sweep).toMatchObject({ token: "each", method: "randomized", converged: true });
  expect(progress[progress.length - 1]).toBe(1);
  const iterations = new Set<number>();
  for (let i = 0; i < n; i++) {
    const [e, r] = [exact.positions[i], sweep.positions[i]];
    expect([e.token, r.token]).toEqual([i, i]);
    const one = await lin.svd({ token: i, k: 4, method: "randomized", seed: 5, oversampling: 2 });
    expect(one.iterations).toBe(r.iterations);  // same start block, same Krylov space: the same run, batched or not
    iterations.add(r.iterations);
    for (let j = 0; j < 4; j++) {
      expect(Math.abs(r.values[j] - e.values[j]) / e.values[j]).toBeLessThan(1e-4);
      expect(Math.abs(r.values[j] - one.values[j]) / one.values[j]).toBeLessThan(1e-5);
      expect(r.residuals[j]).toBeLessThanOrEqual(1e-4 * r.values[j]);
    }
    // the leading left vector is J_i's (checked with a fresh JVP at position i): J_i v₁ = σ₁ u₁
    const tangent = new Float32Array(n * d);
    tangent.set(r.v.subarray(0, d), i * d);
    const jv = await lin.jvp(tangent);
    expect(relErr(jv, r.u.subarray(0, d).map((x) => x * r.values[0]))).toBeLessThan(1e-3);
  }
  expect(iterations.size).toBeGreaterThan(1);  // tokens left the batch at different passes
  // the same seed gives the same result bit for bit; another seed converges to the same values
  const again = await lin.svd({ token: "each", k: 4, method: "randomized", seed: 5, oversampling: 2, batchMemoryBytes: 3 * 6 * n * d * 4 });
  for (let i = 0; i < n; i++) {
    expect(Array.from(again.positions[i].values)).toEqual(Array.from(sweep.positions[i].values));
    expect(Array.from(again.positions[i].u)).toEqual(Array.from(sweep.positions[i].u));
  }
  const other = await lin.svd({ token: "each", k: 4, method: "randomized", seed: 6 });
  expect(Array.from(other.positions[n - 1].u)).not.toEqual(Array.from(sweep.positions[n - 1].u));
  for (let i = 0; i < n; i++) expect(relErr(other.positions[i].values, exact.positions[i].values)).toBeLessThan(1e-4);
  await expect(lin.svd({ token: "each", method: "randomized", batchMemoryBytes: 0 })).rejects.toThrow(/batchMemoryBytes/);
  await expect(lin.svd({ token: -1, method: "randomized", seed: -1 })).rejects.toThrow(/seed/);
});

test("randomized top-k matches the exact SVD on a d=512 synthetic model", async () => {
  const m = await loadModel({ modelPath: await syntheticModel({ ...TINY_LLAMA, seed: 21, nEmbd: 512, nLayer: 8, nHead: 8, nHeadKv: 4, nFf: 1536 }, "F32"), gpu: false });
  try {
    const l = await m.linearize("Once upon a time, there was a little girl");
    expect((await l.svd({ k: 4 })).method).toBe("randomized"); // auto: d > 256
    const exact = await l.svd({ k: 4, method: "exact" });
    // a random network's spectrum is flat (σ1/σ4 ≈ 1.07); the defaults iterate until the residuals certify it
    const progress: number[] = [];
    const rand = await l.svd({ k: 4, method: "randomized", onProgress: (p) => progress.push(p) });
    expect(rand.converged).toBe(true);
    expect(progress).toHaveLength(rand.iterations);  // one report per Krylov block, the last at 1
    expect(progress[progress.length - 1]).toBe(1);
    for (let j = 0; j < 4; j++) {
      expect(Math.abs(rand.values[j] - exact.values[j]) / exact.values[j]).toBeLessThan(1e-3);
      expect(rand.residuals[j]).toBeLessThanOrEqual(1e-4 * rand.values[j]);
    }
  } finally {
    await m.dispose();
  }
}, 300_000);

describe("layer taps", () => {
  const last = (a: Float32Array, d: number) => a.subarray(a.length - d);

  test("the residual tap after layer l reconstructs the residual stream there; layerwise and to-end maps too", async () => {
    const d = lin.nEmbd, L = lin.layerInputs.length;
    for (let l = 0; l < L - 1; l++) {
      expect(relErr(await lin.jvp(lin.inputEmbeddings, { tap: "residual", layer: l }), last(lin.layerInputs[l + 1], d))).toBeLessThan(1e-5);
      // layerwise: block l on its own input
      expect(relErr(await lin.jvp(lin.layerInputs[l], { fromLayer: l, tap: "residual", layer: l }), last(lin.layerInputs[l + 1], d))).toBeLessThan(1e-5);
      // to end: from the stream after layer l to the output
      expect(relErr(await lin.jvp(lin.layerInputs[l + 1], { fromLayer: l + 1 }), lin.output)).toBeLessThan(1e-5);
    }
    expect(relErr(await lin.jvp(lin.inputEmbeddings, { tap: "residual", layer: L - 1 }), last(lin.finalResidual, d))).toBeLessThan(1e-5);
  });

  test("attention + MLP + residual-in add up to the layer output; adjoint holds at every tap", async () => {
    const n = lin.nTokens, d = lin.nEmbd;
    const v = new Float32Array(n * d).map((_, i) => Math.sin(i * 0.37));
    const u = new Float32Array(d).map((_, i) => Math.cos(i * 0.91));
    for (let l = 0; l < lin.layerInputs.length; l++) {
      const [a, m, out] = [await lin.jvp(v, { tap: "attn", layer: l }), await lin.jvp(v, { tap: "mlp", layer: l }), await lin.jvp(v, { tap: "residual", layer: l })];
      const prev = l === 0 ? last(v, d) : await lin.jvp(v, { tap: "residual", layer: l - 1 });
      expect(relErr(a.map((x, k) => x + m[k] + prev[k]), out)).toBeLessThan(1e-5);
      for (const tap of ["attn", "mlp", "residual"] as const) {
        const [lv, ltu] = [await lin.jvp(v, { tap, layer: l }), await lin.vjp(u, { tap, layer: l })];
        expect(Math.abs(dot(lv, u) - dot(v, ltu))).toBeLessThan(1e-5 * Math.sqrt(dot(lv, lv) * dot(u, u)));
      }
    }
  });

  test("the last layer's residual through the final norm is the full Jacobian", async () => {
    const L = lin.layerInputs.length, d = lin.nEmbd;
    const full = await lin.svd({ k: d, method: "exact" });
    const lastLayer = await lin.layerSvd({ layer: L - 1, tap: "residual" }, { k: d, method: "exact" });
    expect(relErr(lastLayer.values, full.values)).toBeLessThan(1e-5);
  });

  test("emergence: the predicted token surfaces at the top layer", async () => {
    const rows = await lin.emergence({ k: 1, top: 5 });
    expect(rows.map((r) => r.layer)).toEqual([0, 1, 2, 3, 4]);
    expect(rows[4].tokens[0].map((t) => t.id)).toContain(lin.predictedToken);
    expect(rows[0].tokens[0][0].text).toBe(" little");
    // progress per layer, and an abort stops it
    const seen: number[] = [];
    const again = await lin.emergence({ k: 1, top: 5, onProgress: (p) => seen.push(p) });
    expect(seen).toEqual([0.2, 0.4, 0.6, 0.8, 1]);
    expect(again.map((r) => r.values[0])).toEqual(rows.map((r) => r.values[0]));
    const ac = new AbortController();
    const e = await lin.emergence({ k: 1, signal: ac.signal, onProgress: () => ac.abort() }).then(() => null, (x: unknown) => x);
    expect((e as { code?: string }).code).toBe("ABORTED");
  });

  test("bad taps are refused", async () => {
    const d = lin.nEmbd;
    await expect(lin.jvp(lin.inputEmbeddings, { tap: "mlp", layer: 9 })).rejects.toThrow(/layer must be an integer in \[0, 5\), not 9/);
    await expect(lin.vjp(new Float32Array(d), { fromLayer: 7 })).rejects.toThrow(/fromLayer must be an integer in \[0, 5\), not 7/);
    await expect(lin.jvp(lin.inputEmbeddings, { tap: "nope" as never, layer: 1 })).rejects.toThrow(/tap must be/);
  });
});
