// Interventions with Jacobian-lens directions (src/lens-interventions.ts): each edit against
// its definition computed here in float64 (the package's steering_hooks / ablation_hooks /
// swap_hooks), the segmented graph against the whole one bit for bit, and steering on the
// first forward against llama.cpp's own control vector of the same vector.
import { loadModel, fitLens, LensIntervention, LljError, type Lens, type Linearization, type Model } from "../src/index.js";
import type { InterventionState } from "../src/lens-interventions.js";
import { writeControlVector } from "../src/cvec.js";
import { STORIES, relErr } from "./helpers.js";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const CORPUS = [
  "Once upon a time, there was a little girl named Lily. She loved to play",
  "One day, a big dog came to the park and saw a red ball under the tree.",
];
const PROMPT = "Tom and his mom went to the shop to buy some milk and bread";

let model: Model, lens: Lens, lin: Linearization;
let cat: number, dog: number, ball: number;  // three tokens (named for what they stand in for)
beforeAll(async () => {
  model = await loadModel({ modelPath: STORIES, gpu: false });
  lens = await fitLens({ model, corpus: CORPUS, minPosition: 4, earlyStop: false });
  lin = await model.linearize(PROMPT);
  // single-token words of its 512-token vocabulary (" mom" is "▁" + "mom")
  [cat, dog, ball] = [" mom", " happy", " big"].map((w) => model.tokenize(w, { addSpecial: false }).at(-1)!);
});
afterAll(async () => {
  await lin.dispose();
  await model.dispose();
});

const d = () => model.hparams.nEmbd;
/** The stream after block l, [n × d] (what the edit sees on the first forward). */
const streamAfter = (l: number) => lin.layerInputs[l + 1].slice();
const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => { let s = 0; for (let i = 0; i < a.length; i++) s += a[i] * b[i]; return s; };
const unitOf = (v: ArrayLike<number>) => { const n = Math.sqrt(dot(v, v)); return Array.from(v, (x) => x / n); };
const row = (h: Float32Array, p: number) => h.subarray(p * d(), (p + 1) * d());
const fresh = (iv: LensIntervention): InterventionState => iv.newState();

test("ablation: each token's lens direction is projected out in turn, h − (h·v̂)v̂, and nothing else moves", async () => {
  const l = 2, n = lin.nTokens;
  const iv = await lens.ablation(lin.vocabulary, { tokens: [cat, dog], layers: [l] });
  const v = await lens.vectors(lin.vocabulary, [cat, dog], l);
  const [u1, u2] = [unitOf(v.subarray(0, d())), unitOf(v.subarray(d()))];
  const h = streamAfter(l), edited = h.slice();
  iv.apply(l, edited, n, fresh(iv));
  for (let p = 0; p < n; p++) {
    let x = Array.from(row(h, p));
    for (const u of [u1, u2]) { const a = dot(x, u); x = x.map((xi, i) => xi - a * u[i]); }
    expect(relErr(row(edited, p), x)).toBeLessThan(1e-6);
    expect(Math.abs(dot(row(edited, p), u2))).toBeLessThan(1e-5 * Math.sqrt(dot(row(h, p), row(h, p))));  // the last one is gone exactly
  }
  // positions: only the listed prompt positions (negative from the end) are edited
  const some = await lens.ablation(lin.vocabulary, { tokens: [cat], layers: [l], positions: [1, -1] });
  const e2 = h.slice();
  some.apply(l, e2, n, fresh(some));
  for (let p = 0; p < n; p++) {
    const changed = relErr(row(e2, p), row(h, p)) > 0;
    expect(changed).toBe(p === 1 || p === n - 1);
  }
});

test("swap: the two lens coordinates c = V⁺h exchange (α = 1), the part of h orthogonal to span{v_s, v_t} stays; α scales the update", async () => {
  const l = 1, n = lin.nTokens;
  const v = await lens.vectors(lin.vocabulary, [cat, dog], l);
  const vs = Array.from(v.subarray(0, d())), vt = Array.from(v.subarray(d()));
  // V⁺h by least squares, solved here by the 2×2 normal equations
  const coords = (x: ArrayLike<number>) => {
    const a = dot(vs, vs), b = dot(vs, vt), c = dot(vt, vt), r1 = dot(vs, x), r2 = dot(vt, x), det = a * c - b * b;
    return [(c * r1 - b * r2) / det, (a * r2 - b * r1) / det];
  };
  const h = streamAfter(l);
  for (const alpha of [1, 2]) {
    const iv = await lens.swap(lin.vocabulary, { source: cat, target: dog, layers: [l], alpha });
    const e = h.slice();
    iv.apply(l, e, n, fresh(iv));
    for (let p = 0; p < n; p++) {
      const [cs, ct] = coords(row(h, p)), [es, et] = coords(row(e, p));
      const scale = Math.abs(cs) + Math.abs(ct);
      expect(Math.abs(es - (cs + alpha * (ct - cs))) / scale).toBeLessThan(1e-5);
      expect(Math.abs(et - (ct + alpha * (cs - ct))) / scale).toBeLessThan(1e-5);
      // the residual after projecting on span{v_s, v_t} is unchanged
      const rest = (x: ArrayLike<number>, [a, b]: number[]) => Array.from(x, (xi, i) => xi - a * vs[i] - b * vt[i]);
      expect(relErr(rest(row(e, p), [es, et]), rest(row(h, p), [cs, ct]))).toBeLessThan(1e-5);
    }
  }
});

test("steering: h + α·median‖h‖·v̂ on the first forward (torch.median's lower middle), each new token's own norm after it", async () => {
  const l = 2, n = lin.nTokens, alpha = 3;
  const iv = await lens.steering(lin.vocabulary, { token: ball, layers: [l], alpha });
  const u = unitOf(await lens.vectors(lin.vocabulary, [ball], l));
  const h = streamAfter(l);
  const norms = Array.from({ length: n }, (_, p) => Math.sqrt(dot(row(h, p), row(h, p)))).sort((a, b) => a - b);
  const median = norms[Math.floor((n - 1) / 2)];
  // a sequence one token longer: the prompt is n − 1 tokens, the last position is generated
  const state = fresh(iv), first = h.slice(0, (n - 1) * d());
  iv.apply(l, first, n - 1, state);
  const promptNorms = Array.from({ length: n - 1 }, (_, p) => Math.sqrt(dot(row(h, p), row(h, p)))).sort((a, b) => a - b);
  const m1 = promptNorms[Math.floor((n - 2) / 2)];
  for (let p = 0; p < n - 1; p++) expect(relErr(Array.from(row(first, p), (x, i) => x - h[p * d() + i]), u.map((x) => alpha * m1 * x))).toBeLessThan(1e-5);
  const second = h.slice();
  iv.apply(l, second, n - 1, state);
  for (let p = 0; p < n - 1; p++) expect(Array.from(row(second, p))).toEqual(Array.from(row(first, p)));  // the same scale as first given
  const own = Math.sqrt(dot(row(h, n - 1), row(h, n - 1)));
  expect(relErr(Array.from(row(second, n - 1), (x, i) => x - h[(n - 1) * d() + i]), u.map((x) => alpha * own * x))).toBeLessThan(1e-5);
  // the whole prompt in one forward: the median over all its positions
  const whole = h.slice();
  iv.apply(l, whole, n, fresh(iv));
  expect(relErr(Array.from(row(whole, 0), (x, i) => x - h[i]), u.map((x) => alpha * median * x))).toBeLessThan(1e-5);
});

test("in generation: α = 0 runs the graph in segments and gives the unedited graph bit for bit; steering's first token equals llama.cpp with the same control vector", async () => {
  const opts = { maxTokens: 6, stopAtEog: false, engine: "graph" as const };
  const plain = await model.generate(PROMPT, opts);
  for (const iv of [await lens.steering(lin.vocabulary, { token: ball, layers: [1, 3], alpha: 0 }),
    await lens.swap(lin.vocabulary, { source: cat, target: dog, layers: [2], alpha: 0 })]) {
    const g = await model.generate(PROMPT, { ...opts, intervention: iv });
    expect(g.engine).toBe("graph");
    expect(g.tokens).toEqual(plain.tokens);
    expect(g.steps.map((s) => s.logProb)).toEqual(plain.steps.map((s) => s.logProb));
  }
  // on the prompt's forward, steering adds one vector s·v̂ at every position: llama.cpp's control vector
  const l = 2, alpha = 2, h = streamAfter(l), n = lin.nTokens;
  const norms = Array.from({ length: n }, (_, p) => Math.sqrt(dot(row(h, p), row(h, p)))).sort((a, b) => a - b);
  const vector = Float32Array.from(unitOf(await lens.vectors(lin.vocabulary, [ball], l)), (x) => alpha * norms[Math.floor((n - 1) / 2)] * x);
  const dir = mkdtempSync(path.join(tmpdir(), "llj-lens-cvec-"));
  try {
    const file = await writeControlVector(path.join(dir, "ball.gguf"), { architecture: model.architecture, hparams: model.hparams, layer: l, vector });
    const track = Array.from({ length: 50 }, (_, i) => i * 7);
    const steered = await model.generate(PROMPT, { maxTokens: 1, intervention: await lens.steering(lin.vocabulary, { token: ball, layers: [l], alpha }), trackTokens: track });
    const llama = await model.generate(PROMPT, { maxTokens: 1, controlVector: { path: file }, trackTokens: track });
    const unsteered = await model.generate(PROMPT, { maxTokens: 1, trackTokens: track });
    const gap = relErr(steered.steps[0].trackedLogProbs!, llama.steps[0].trackedLogProbs!);
    const effect = relErr(unsteered.steps[0].trackedLogProbs!, llama.steps[0].trackedLogProbs!);
    console.log(`lens steering vs llama.cpp's control vector: log-probabilities agree to ${gap.toExponential(2)} (the edit moves them by ${effect.toExponential(2)})`);
    expect(gap).toBeLessThan(1e-4);
    expect(effect).toBeGreaterThan(1e3 * gap);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("refused: a layer the lens lacks, a swap of one token or of parallel directions, a direction of zero, the llama engine, two edits at once", async () => {
  const vocab = lin.vocabulary;
  await expect(lens.ablation(vocab, { tokens: [cat], layers: [4] })).rejects.toThrow(/not a source layer/);
  await expect(lens.swap(vocab, { source: cat, target: cat, layers: [1] })).rejects.toThrow(/same token/);
  await expect(lens.steering(vocab, { token: -1, layers: [1] })).rejects.toThrow(LljError);
  await expect(lens.ablation(vocab, { tokens: [cat], layers: [1], positions: [] })).rejects.toThrow(/positions/);
  // a rank-one lens maps every token onto one direction: a swap there is refused; a zero lens has no direction
  const D = d(), J1 = new Float32Array(D * D), J0 = new Float32Array(D * D);
  for (let r = 0; r < D; r++) for (let c = 0; c < D; c++) J1[r * D + c] = Math.sin(r + 1) * Math.cos(c + 2);
  const { Lens } = await import("../src/index.js");
  const flat = new Lens(new Map([[1, J1], [2, J0]]), { dModel: D, nPrompts: 1 });
  await expect(flat.swap(vocab, { source: cat, target: dog, layers: [1] })).rejects.toThrow(/near-parallel/);
  await expect(flat.ablation(vocab, { tokens: [cat], layers: [2] })).rejects.toThrow(/no direction/);
  const iv = await lens.ablation(vocab, { tokens: [cat], layers: [1] });
  await expect(model.generate(PROMPT, { maxTokens: 1, intervention: iv, engine: "llama" })).rejects.toThrow(/graph/);
  await expect(model.generate(PROMPT, { maxTokens: 1, intervention: iv, controlVector: { path: "x.gguf" } })).rejects.toThrow(/give one/);
  await expect(model.generate(PROMPT, { maxTokens: 1, intervention: { layers: [1] } as unknown as LensIntervention })).rejects.toThrow(/LensIntervention/);
  const far = await lens.ablation(vocab, { tokens: [cat], layers: [1], positions: [40] });
  await expect(model.generate(PROMPT, { maxTokens: 1, intervention: far })).rejects.toThrow(/outside the prompt/);
});
