// The ordinary linearization (mode "ordinary"): the true derivative of the network at the
// prompt, from the same primal record plus each coefficient's own derivative term
// (docs/math.md §5). Checked against finite differences of an independent float64 forward
// (stories260K), against finite differences of our own F32 primal on every dense
// architecture, and by the adjoint and linearity invariants.
import { loadModel, syntheticModel, type Linearization, type Model } from "../src/index.js";
import { STORIES, PROMPT, randn, relErr, dot, norm, adjointError } from "./helpers.js";
import { llama64, emptyRelevance64 } from "./reference64.js";
import { VARIANTS, STORY } from "./variants.js";

/** Central difference of the real F32 forward (our primal pass) along t, every position. */
async function primalDifference(model: Model, lin: Linearization, t: Float32Array, eps: number): Promise<Float64Array> {
  const x = lin.inputEmbeddings;
  const plus = await model.linearize({ embeddings: x.map((v, i) => v + eps * t[i]) });
  const minus = await model.linearize({ embeddings: x.map((v, i) => v - eps * t[i]) });
  const fd = Float64Array.from(plus.hidden, (v, i) => (v - minus.hidden[i]) / (2 * eps));
  await plus.dispose();
  await minus.dispose();
  return fd;
}

describe("stories260K: the ordinary Jacobian is the derivative of the network", () => {
  let model: Model;
  let lin: Linearization, det: Linearization;
  beforeAll(async () => {
    model = await loadModel({ modelPath: STORIES, gpu: false });
    lin = await model.linearize(PROMPT, { mode: "ordinary" });
    det = await model.linearize(PROMPT);
  });
  afterAll(async () => {
    await lin.dispose();
    await det.dispose();
    await model.dispose();
  });

  test("the primal record is the detached one's: same output, same logits", () => {
    expect(lin.mode).toBe("ordinary");
    expect(det.mode).toBe("detached");
    expect(lin.hidden).toEqual(det.hidden);
    expect(lin.logits).toEqual(det.logits);
  });

  test("jvp equals central finite differences of an independent float64 forward", async () => {
    const hp = model.hparams;
    const ref = await llama64(STORIES, { ...hp, ropeBase: hp.rope.freqBase });
    const n = lin.nTokens, d = lin.nEmbd, x = Float64Array.from(lin.inputEmbeddings);
    // the reference is the network: its output matches our F32 primal pass to rounding
    expect(relErr(lin.hidden, ref.forward(x, n))).toBeLessThan(1e-5);
    const t = randn(n * d);
    const h = 1e-4;  // in double: truncation ~h², rounding ~1e-16/h, both far below F32 rounding
    const fp = ref.forward(x.map((v, i) => v + h * t[i]), n), fm = ref.forward(x.map((v, i) => v - h * t[i]), n);
    const fd = fp.map((v, i) => (v - fm[i]) / (2 * h));
    const jt = await lin.jvp(t, { allPositions: true });
    const err = relErr(jt, fd);
    expect(err).toBeLessThan(1e-5);  // measured 1.2e-6
    // the detached map is another operator: it misses the coefficients' derivatives
    expect(relErr(await det.jvp(t, { allPositions: true }), fd)).toBeGreaterThan(0.1);
    // the VJP is the same derivative: ⟨u, J t⟩ = ⟨Jᵀu, t⟩ against the reference's J t
    const u = randn(n * d);
    const jtu = await lin.vjp(u, { allPositions: true });
    expect(Math.abs(dot(jtu, t) - dot(u, fd)) / (norm(u) * norm(fd))).toBeLessThan(1e-5);
  });

  test("relevance mode is the RelP map: differences of the float64 forward with the rules' values held", async () => {
    const hp = model.hparams;
    const ref = await llama64(STORIES, { ...hp, ropeBase: hp.rope.freqBase });
    const rel = await model.linearize(PROMPT, { mode: "relevance" });
    try {
      expect(rel.mode).toBe("relevance");
      const n = rel.nTokens, d = rel.nEmbd, x = Float64Array.from(rel.inputEmbeddings);
      const held = emptyRelevance64();
      const y = ref.forward(x, n, { record: held });
      // at the recorded point the rule-modified function is the network itself
      expect(relErr(ref.forward(x, n, { relevance: held }), y)).toBeLessThan(1e-12);
      const t = randn(n * d), h = 1e-4;
      const fp = ref.forward(x.map((v, i) => v + h * t[i]), n, { relevance: held });
      const fm = ref.forward(x.map((v, i) => v - h * t[i]), n, { relevance: held });
      const fd = fp.map((v, i) => (v - fm[i]) / (2 * h));
      const jt = await rel.jvp(t, { allPositions: true });
      expect(relErr(jt, fd)).toBeLessThan(1e-5);
      // between the detached map and the derivative, and different from both
      expect(relErr(jt, await lin.jvp(t, { allPositions: true }))).toBeGreaterThan(1e-2);
      expect(relErr(jt, await det.jvp(t, { allPositions: true }))).toBeGreaterThan(1e-2);
      expect(await adjointError(rel, true)).toBeLessThan(1e-5);
      expect(await adjointError(rel)).toBeLessThan(1e-5);
    } finally {
      await rel.dispose();
    }
  });

  test("linear: J(a s + b t) = a J s + b J t", async () => {
    const n = lin.nTokens, d = lin.nEmbd, s = randn(n * d), t = randn(n * d);
    const js = await lin.jvp(s, { allPositions: true }), jt = await lin.jvp(t, { allPositions: true });
    const jc = await lin.jvp(s.map((v, i) => 2 * v - 0.5 * t[i]), { allPositions: true });
    expect(relErr(jc, js.map((v, i) => 2 * v - 0.5 * jt[i]))).toBeLessThan(1e-5);
  });

  test("the adjoint holds on every position and on the last one; the Jacobian's blocks are the VJP's", async () => {
    expect(await adjointError(lin)).toBeLessThan(1e-5);
    expect(await adjointError(lin, true)).toBeLessThan(1e-5);
    expect(await adjointError(lin, false, 3)).toBeLessThan(1e-5);  // a zero prefix: the pass still reads every key
    const n = lin.nTokens, d = lin.nEmbd;
    const J = await lin.jacobian();
    const t = randn(n * d);
    const jt = await lin.jvp(t);
    const viaBlocks = new Float64Array(d);
    for (let i = 0; i < n; i++) for (let r = 0; r < d; r++) for (let c = 0; c < d; c++) viaBlocks[r] += J.data[(i * d + r) * d + c] * t[i * d + c];
    expect(relErr(jt, viaBlocks)).toBeLessThan(1e-5);
  });

  test("passes restricted to positions [p, n) equal the full passes there (every key still read)", async () => {
    const n = lin.nTokens, d = lin.nEmbd, p = 3, m = n - p;
    const t = randn(n * d);
    t.fill(0, 0, p * d);
    const full = await lin.jvp(t, { allPositions: true });
    const part = await lin.jvp(t.slice(p * d), { allPositions: true, firstPosition: p });
    expect(relErr(part, full.slice(p * d))).toBeLessThan(1e-6);
    const u = randn(m * d), uFull = new Float32Array(n * d);
    uFull.set(u, p * d);
    const vFull = await lin.vjp(uFull, { allPositions: true });
    const vPart = await lin.vjp(u, { allPositions: true, firstPosition: p });
    expect(vPart).toHaveLength(m * d);
    expect(relErr(vPart, vFull.slice(p * d))).toBeLessThan(1e-6);
  });

  test("a layer tap composes: J(out ← layer l) · J(layer l ← input) = J(out ← input)", async () => {
    const n = lin.nTokens, d = lin.nEmbd, t = randn(n * d);
    const mid = await lin.jvp(t, { allPositions: true, tap: "residual", layer: 1 });
    const top = await lin.jvp(mid, { allPositions: true, fromLayer: 2 });
    expect(relErr(top, await lin.jvp(t, { allPositions: true }))).toBeLessThan(1e-5);
    const op = await lin.operator({ tap: "residual", layer: 1, finalNorm: false });
    expect(relErr(op.output, lin.layerInputs[2].slice((n - 1) * d))).toBeLessThan(1e-6);  // the tapped value itself
    // through the final norm, the top layer's stream is the output map: the norm's own derivative included
    const viaTop = await lin.operator({ tap: "residual", layer: model.hparams.nLayer - 1 });
    expect(relErr(await viaTop.jvp(t), await lin.jvp(t))).toBeLessThan(1e-5);
    expect(relErr(await viaTop.vjp(t.slice(0, d)), await lin.vjp(t.slice(0, d)))).toBeLessThan(1e-5);
  });

  test("the contrast of a detached linearization is the ordinary J·x; the central difference agrees", async () => {
    const jx = await lin.jvp(lin.inputEmbeddings);
    const viaDetached = await det.nonlinearReconstruction();
    expect(viaDetached.method).toBe("ordinary");
    expect(viaDetached.epsilon).toBeNull();
    expect(relErr(viaDetached.reconstructed, jx)).toBeLessThan(1e-6);
    expect((await lin.nonlinearReconstruction()).reconstructed).toEqual(jx);
    const difference = await det.nonlinearReconstruction({ method: "difference" });
    expect(difference.method).toBe("difference");
    expect(relErr(difference.reconstructed, jx)).toBeLessThan(1e-3);  // O(ε²) and F32 rounding over ε
    expect(viaDetached.relativeError).toBeGreaterThan(1e-2);           // it does not reproduce y
    expect((await det.nonlinearReconstruction({ epsilon: 1e-3 })).method).toBe("difference");
    await expect(det.nonlinearReconstruction({ method: "ordinary", epsilon: 1e-3 })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
  });

  test("reconstruction is J·x (not y); attribution is refused as not exact", async () => {
    const r = await lin.reconstruction();
    expect(r.biasTerm).toBeNull();
    expect(r.relativeError).toBeGreaterThan(1e-3);
    const jx = await lin.jvp(lin.inputEmbeddings);
    expect(relErr(r.reconstructed, jx)).toBeLessThan(1e-5);
    await expect(lin.attribution()).rejects.toMatchObject({ code: "UNSUPPORTED" });
  });
});

describe("every dense architecture: ordinary jvp against finite differences of the primal", () => {
  const dense = VARIANTS.filter(([, spec]) => !spec.experts);
  test.each(dense)("%s", async (_name, spec) => {
    const model = await loadModel({ modelPath: await syntheticModel(spec, "F32"), gpu: false });
    try {
      const prompt = model.tokenize(STORY).slice(0, spec.slidingWindow ? 24 : 8);  // past the window
      const lin = await model.linearize(prompt, { mode: "ordinary" });
      const det = await model.linearize(prompt);
      const n = lin.nTokens, d = lin.nEmbd, t = randn(n * d);
      const jt = await lin.jvp(t, { allPositions: true });
      // F32 differences: rounding/h against h² truncation. ggml's CPU GELU is an fp16 table
      // (docs/llama-cpp.md), a staircase under small steps: larger h there.
      const gelu = ["gpt2", "starcoder", "starcoder2", "phi2", "gptneox", "falcon", "mpt", "gemma2", "gemma3"].includes(spec.architecture);
      const fd = await primalDifference(model, lin, t, gelu ? 3e-2 : 3e-3);
      const err = relErr(jt, fd), detErr = relErr(await det.jvp(t, { allPositions: true }), fd);
      // measured: 3.5–9.7e-5 (silu), 4.6–5.3e-3 (GELU: the table's noise, falling as 1/h), 1.0e-2 (gemma)
      expect(err).toBeLessThan(gelu ? 2e-2 : 2e-3);
      expect(err).toBeLessThan(detErr / 10);  // a missing derivative term would show here
      expect(await adjointError(lin, true)).toBeLessThan(1e-5);
      const rel = await model.linearize(prompt, { mode: "relevance" });
      expect(await adjointError(rel, true)).toBeLessThan(1e-5);
      await rel.dispose();
      await lin.dispose();
      await det.dispose();
    } finally {
      await model.dispose();
    }
  });
});

/** Each position's chosen experts as a sorted set, per layer (the top-k's own order may differ at a near tie). */
function choices(lin: Linearization): string[] {
  const k = lin.experts![0].length / lin.nTokens;
  return lin.experts!.map((ids) => Array.from({ length: lin.nTokens }, (_, i) => Array.from(ids.subarray(i * k, (i + 1) * k)).sort((a, b) => a - b).join(",")).join(";"));
}

describe("routed experts: the ordinary Jacobian holds the chosen experts, differentiates the routing weights", () => {
  const moe = VARIANTS.filter(([, spec]) => spec.experts);
  test("every moe variant is covered", () => expect(moe.length).toBeGreaterThanOrEqual(2));
  test.each(moe)("%s", async (_name, spec) => {
    const model = await loadModel({ modelPath: await syntheticModel(spec, "F32"), gpu: false });
    try {
      const prompt = model.tokenize(STORY).slice(0, 8);
      const lin = await model.linearize(prompt, { mode: "ordinary" });
      const det = await model.linearize(prompt);
      const rel = await model.linearize(prompt, { mode: "relevance" });
      try {
        expect(lin.experts).toHaveLength(model.hparams.nLayer);
        expect(lin.experts).toEqual(det.experts);  // the same primal, the same choice
        expect(lin.hidden).toEqual(det.hidden);
        const n = lin.nTokens, d = lin.nEmbd, t = randn(n * d);
        const jt = await lin.jvp(t, { allPositions: true });
        // The step keeps every position's top-k choice: a derivative holds the chosen experts,
        // and a difference across a flip would measure a jump, not J t. Checked, not assumed.
        const eps = 3e-3, x = lin.inputEmbeddings;
        const plus = await model.linearize({ embeddings: x.map((v, i) => v + eps * t[i]) });
        const minus = await model.linearize({ embeddings: x.map((v, i) => v - eps * t[i]) });
        const fd = Float64Array.from(plus.hidden, (v, i) => (v - minus.hidden[i]) / (2 * eps));
        expect(choices(plus)).toEqual(choices(lin));
        expect(choices(minus)).toEqual(choices(lin));
        await plus.dispose();
        await minus.dispose();
        const err = relErr(jt, fd), detErr = relErr(await det.jvp(t, { allPositions: true }), fd);
        // measured 5.1e-5 (llama MoE), 5.6e-5 (qwen3moe), as the dense SiLU models above; without the
        // routing weights' term 0.29 and 0.28, the detached map 0.71 and 0.70
        expect(err).toBeLessThan(5e-4);
        expect(err).toBeLessThan(detErr / 10);  // a missing derivative term (the routing weights' included) would show here
        expect(await adjointError(lin)).toBeLessThan(1e-5);
        expect(await adjointError(lin, true)).toBeLessThan(1e-5);
        // a layer tap composes (passes that skip a layer's router, or stop before one)
        for (const m of [lin, det]) {
          const mid = await m.jvp(t, { allPositions: true, tap: "residual", layer: 0 });
          expect(relErr(await m.jvp(mid, { allPositions: true, fromLayer: 1 }), await m.jvp(t, { allPositions: true }))).toBeLessThan(1e-5);
        }
        // relevance: the RelP rules, routing weights detached (docs/math.md §5)
        expect(await adjointError(rel)).toBeLessThan(1e-5);
        expect(await adjointError(rel, true)).toBeLessThan(1e-5);
        const rt = await rel.jvp(t, { allPositions: true });
        expect(relErr(rt, jt)).toBeGreaterThan(1e-2);
        expect(relErr(rt, await det.jvp(t, { allPositions: true }))).toBeGreaterThan(1e-2);
        // the contrast is the ordinary J·x, as on dense models; the central difference agrees
        const contrast = await det.nonlinearReconstruction();
        expect(contrast.method).toBe("ordinary");
        expect(relErr(contrast.reconstructed, await lin.jvp(lin.inputEmbeddings))).toBeLessThan(1e-6);
        expect(relErr((await det.nonlinearReconstruction({ method: "difference" })).reconstructed, contrast.reconstructed)).toBeLessThan(1e-2);
      } finally {
        await rel.dispose();
        await lin.dispose();
        await det.dispose();
      }
    } finally {
      await model.dispose();
    }
  });
});
