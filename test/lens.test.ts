// The Jacobian lens: the fitted J_l against the explicit average of ordinary Jacobians
// assembled from jacobian({ tap, fromLayer }) of each prefix (causality: h_final at position t
// of a prompt is h_final at the last position of its first t + 1 tokens), and the readout
// against its definition W_U norm(J_l h_l).
import { loadModel, syntheticModel, fitLens, readCorpus, Lens, TINY_LLAMA, type Model } from "../src/index.js";
import { STORIES, relErr, randn } from "./helpers.js";
import { writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const PROMPTS = [
  "Once upon a time, there was a little girl named Lily. She loved to play",
  "One day, a big dog came to the park and saw a red ball under the tree.",
];

/** (1/|V|) Σ_{s∈V} Σ_{t∈V, t≥s} ∂h_final[t]/∂h_l[s] averaged over prompts, from prefix Jacobians. */
async function explicitLens(model: Model, prompts: string[], layers: number[], minPosition: number, mode: "ordinary" | "relevance" | "detached") {
  const d = model.hparams.nEmbd, L = model.hparams.nLayer;
  const mean = new Map(layers.map((l) => [l, new Float64Array(d * d)] as const));
  for (const p of prompts) {
    const tokens = model.tokenize(p), n = tokens.length, nv = n - 1 - minPosition;
    for (let t = minPosition; t < n - 1; t++) {
      const lin = await model.linearize(tokens.slice(0, t + 1), { mode });
      for (const l of layers) {
        const J = await lin.jacobian({ tap: "residual", layer: L - 1, fromLayer: l + 1 });  // blocks s = 0..t
        const acc = mean.get(l)!;
        for (let s = minPosition; s <= t; s++) for (let i = 0; i < d * d; i++) acc[i] += J.data[s * d * d + i] / nv / prompts.length;
      }
      await lin.dispose();
    }
  }
  return mean;
}

describe("stories260K", () => {
  let model: Model;
  beforeAll(async () => { model = await loadModel({ modelPath: STORIES, gpu: false }); });
  afterAll(async () => { await model.dispose(); });

  const modes = { jlens: "ordinary", rlens: "relevance", detached: "detached" } as const;
  test.each(["jlens", "rlens", "detached"] as const)("the %s lens equals the explicit average of Jacobians, to F32 rounding", async (estimator) => {
    const minPosition = 4, layers = [0, 2, 3];
    const lens = await fitLens({ model, corpus: PROMPTS, sourceLayers: layers, minPosition, estimator, earlyStop: false });
    expect(lens.nPrompts).toBe(2);
    expect(lens.sourceLayers).toEqual(layers);
    const explicit = await explicitLens(model, PROMPTS, layers, minPosition, modes[estimator]);
    for (const l of layers) expect(relErr(lens.matrix(l), explicit.get(l)!)).toBeLessThan(1e-5);
  });

  test("the jlens and detached estimators give different lenses", async () => {
    const a = await fitLens({ model, corpus: PROMPTS, sourceLayers: [3], minPosition: 4 });
    const b = await fitLens({ model, corpus: PROMPTS, sourceLayers: [3], minPosition: 4, estimator: "detached" });
    expect(relErr(a.matrix(3), b.matrix(3))).toBeGreaterThan(1e-2);
  });

  test("readout is W_U norm(J_l h_l) (softcap aside), and the last layer reads the model's own logits", async () => {
    const lens = await fitLens({ model, corpus: PROMPTS, minPosition: 4, earlyStop: false });
    const lin = await model.linearize(PROMPTS[0]);
    try {
      const d = lin.nEmbd, n = lin.nTokens, L = model.hparams.nLayer;
      const top = await lens.readout(lin, { layer: L - 1, top: 3 });
      expect(top[0].id).toBe(lin.predictedToken);
      expect(top[0].score).toBeCloseTo(lin.logits[lin.predictedToken], 4);
      const h = lin.layerInputs[2].slice((n - 1) * d);  // block 1's output at the last position
      const scores = await lin.vocabulary.lmHeadScores(lin.finalNorm(lens.transport(h, 1)), 1);
      const best = Array.from(scores.keys()).sort((x, y) => scores[y] - scores[x]).slice(0, 5);
      expect((await lens.readout(lin, { layer: 1, top: 5 })).map((t) => t.id)).toEqual(best);
      // J-lens vectors: ⟨v_t, h⟩ = W_U[t]·(J_l h), without the norm
      const v = await lens.vectors(lin.vocabulary, [best[0], best[1]], 1);
      const rows = await lin.vocabulary.lmHeadRows(Int32Array.from([best[0]]));
      const Jh = lens.transport(h, 1);
      let direct = 0, viaVector = 0;
      for (let k = 0; k < d; k++) { direct += rows[k] * Jh[k]; viaVector += v[k] * h[k]; }
      expect(viaVector).toBeCloseTo(direct, 3);
      await expect(lens.readout(lin, { layer: L })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    } finally {
      await lin.dispose();
    }
  });

  test("early stop, short prompts skipped, progress reported; bad options refused", async () => {
    const seen: number[] = [];
    const corpus = [...PROMPTS, "Hi.", ...PROMPTS, ...PROMPTS];
    const lens = await fitLens({ model, corpus, sourceLayers: [3], minPosition: 4, earlyStop: { minPrompts: 3, tolerance: 0.5 },
      onProgress: (p) => seen.push(p.prompts) });
    // the repeated prompts move the mean little: it stops at the first prompt past minPrompts whose change is < 0.5
    expect(lens.nPrompts).toBeGreaterThanOrEqual(3);
    expect(lens.nPrompts).toBeLessThan(6);
    expect(seen[seen.length - 1]).toBe(lens.nPrompts);
    await expect(fitLens({ model, corpus: ["Hi."], minPosition: 4 })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringMatching(/too short/) });
    await expect(fitLens({ model, corpus: PROMPTS, sourceLayers: [4] })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    await expect(fitLens({ model, corpus: [] })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    const ac = new AbortController();
    ac.abort();
    await expect(fitLens({ model, corpus: PROMPTS, signal: ac.signal })).rejects.toMatchObject({ code: "ABORTED" });
  });
});

describe("saving, loading, checkpoints", () => {
  let model: Model;
  beforeAll(async () => { model = await loadModel({ modelPath: STORIES, gpu: false }); });
  afterAll(async () => { await model.dispose(); });

  test("a fitted lens saves as the published artifact and loads back (f16 rounding), with its provenance", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "llj-lens-"));
    const lens = await fitLens({ model, corpus: PROMPTS, sourceLayers: [1, 3], minPosition: 4, estimator: "rlens" });
    await lens.save(path.join(dir, "lens.pt"));
    await lens.save(path.join(dir, "lens.safetensors"), { dtype: "f32" });
    const a = await Lens.load(path.join(dir, "lens.pt")), b = await Lens.load(path.join(dir, "lens.safetensors"));
    for (const l of [1, 3]) {
      expect(relErr(a.matrix(l), lens.matrix(l))).toBeLessThan(1e-3);
      expect(b.matrix(l)).toEqual(lens.matrix(l));
    }
    expect(a.estimator).toBe("rlens");
    expect(a.nPrompts).toBe(2);
    expect(String(a.metadata.architecture)).toBe("llama");
    expect(() => a.checkModel(model)).not.toThrow();
    const other = { hparams: { ...model.hparams, nEmbd: 32 } };
    expect(() => a.checkModel(other)).toThrow(/d = 64.*d = 32|another model/);
  });

  test("an interrupted fit resumes from its checkpoint to the uninterrupted result", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "llj-ckpt-"));
    const corpus = [...PROMPTS, "The little cat sat on the warm mat and looked at the birds outside the window.", ...PROMPTS.map((p) => p + " Then")];
    const opts = { model, corpus, sourceLayers: [2], minPosition: 4, earlyStop: false as const };
    const whole = await fitLens(opts);
    const checkpoint = path.join(dir, "fit.ckpt.safetensors");
    const ac = new AbortController();
    await expect(fitLens({ ...opts, checkpoint, checkpointEvery: 1, signal: ac.signal,
      onProgress: (p) => { if (p.prompts === 3) ac.abort(); } })).rejects.toMatchObject({ code: "ABORTED" });
    const seen: number[] = [];
    const resumed = await fitLens({ ...opts, checkpoint, onProgress: (p) => seen.push(p.prompts) });
    expect(seen[0]).toBe(4);  // prompts 1–3 came from the checkpoint
    expect(resumed.nPrompts).toBe(whole.nPrompts);
    expect(relErr(resumed.matrix(2), whole.matrix(2))).toBeLessThan(1e-6);
    // another fit's checkpoint is refused, not mixed in
    await expect(fitLens({ ...opts, minPosition: 3, checkpoint })).rejects.toThrow(/another fit/);
  });
});

test("a synthetic llama: the fitted lens equals the explicit average of ordinary Jacobians", async () => {
  const model = await loadModel({ modelPath: await syntheticModel({ ...TINY_LLAMA, nLayer: 3, seed: 91 }, "Q8_0"), gpu: false });
  try {
    const corpus = ["Once upon a time, there was a little girl named Lily.", "The dog ran after the ball and they played all day long."];
    const lens = await fitLens({ model, corpus, sourceLayers: [0, 1], minPosition: 6, earlyStop: false });
    const explicit = await explicitLens(model, corpus, [0, 1], 6, "ordinary");
    for (const l of [0, 1]) expect(relErr(lens.matrix(l), explicit.get(l)!)).toBeLessThan(1e-5);
  } finally {
    await model.dispose();
  }
});

test.each(["jlens", "rlens"] as const)("a mixture-of-experts model (qwen3moe): the %s lens equals the explicit average of Jacobians", async (estimator) => {
  const model = await loadModel({ modelPath: await syntheticModel({ ...TINY_LLAMA, architecture: "qwen3moe", seed: 73, experts: { count: 8, used: 2 } }, "F32"), gpu: false });
  try {
    const corpus = ["Once upon a time, there was a little girl named Lily."];
    const lens = await fitLens({ model, corpus, sourceLayers: [0], minPosition: 8, estimator, earlyStop: false });
    const explicit = await explicitLens(model, corpus, [0], 8, estimator === "jlens" ? "ordinary" : "relevance");
    expect(relErr(lens.matrix(0), explicit.get(0)!)).toBeLessThan(1e-5);
  } finally {
    await model.dispose();
  }
});

test("corpus files: text lines and JSONL", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "llj-corpus-"));
  writeFileSync(path.join(dir, "c.txt"), "first prompt\n\nsecond prompt\n");
  writeFileSync(path.join(dir, "c.jsonl"), '{"text": "a"}\n"b"\n');
  expect(readCorpus(path.join(dir, "c.txt"))).toEqual(["first prompt", "second prompt"]);
  expect(readCorpus(path.join(dir, "c.jsonl"))).toEqual(["a", "b"]);
  writeFileSync(path.join(dir, "bad.jsonl"), '{"text": 1}\n');
  expect(() => readCorpus(path.join(dir, "bad.jsonl"))).toThrow(/line 1/);
  expect(() => readCorpus(path.join(dir, "missing.txt"))).toThrow(/cannot read the corpus/);
  expect(() => new Lens(new Map([[0, randn(3)]]), { dModel: 2, nPrompts: 1 })).toThrow(/d² = 4/);
});
