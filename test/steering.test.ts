// The steering operator (src/steering.ts), step by step against an explicit computation from
// the concept's layer-l Jacobian, and its effect on generation (measured; numbers in the README).
import { loadModel, LljError, defaultSteeringLayer, defaultInjectLayer, type Model, type SteeringOperator, type Generation } from "../src/index.js";
import { getAddon } from "../src/native.js";
import { nativeModelOf } from "../src/model.js";
import { STORIES, relErr, norm, finalNormAt } from "./helpers.js";

let model: Model;
let op: SteeringOperator;
const CONCEPT = "Tom had a pet dog. The dog";
beforeAll(async () => {
  model = await loadModel({ modelPath: STORIES, gpu: false });
  op = await model.steeringOperator({ concept: CONCEPT });
});
afterAll(() => model.dispose());

/** J·x for a row-major [d × d] block. */
function apply(J: Float32Array, x: Float32Array, d: number): Float64Array {
  const y = new Float64Array(d);
  for (let r = 0; r < d; r++) {
    let s = 0;
    for (let c = 0; c < d; c++) s += J[r * d + c] * x[c];
    y[r] = s;
  }
  return y;
}

test("the default layer is the reference's lsplit = ⌊2L/3⌋ blocks (24 of 36), the vector added to the stream entering that block", () => {
  expect(op.layer).toBe(2);  // stories260K: 5 layers
  expect(op.injectLayer).toBe(1);
  expect(op.finalNorm).toBe(true);
  expect(defaultSteeringLayer(5)).toBe(2);
  expect(defaultSteeringLayer(36)).toBe(23);
  expect(defaultSteeringLayer(32)).toBe(20);
  expect(defaultSteeringLayer(28)).toBe(17);  // ⌊18.67⌋ − 1, not round
  expect(defaultSteeringLayer(2)).toBe(0);
  expect(defaultSteeringLayer(1)).toBe(0);
  expect(defaultInjectLayer(11)).toBe(10);
  expect(defaultInjectLayer(0)).toBe(0);
  expect(op.lambda).toBe(1);
  expect(op.conceptTokens).toEqual(model.tokenize(CONCEPT));
});

test("each step against the explicit Jacobian: s_k = N J_{k mod n_c} e_k, S_k = Σ s_j, injection λ/2 · S_k/‖S_k‖", async () => {
  const d = model.hparams.nEmbd, nc = op.nConcept;
  const J = await op.concept.jacobian({ tap: "residual", layer: op.layer });
  const N = finalNormAt(op.concept, op.layer, model.hparams.normEps);
  expect(J.nTokens).toBe(nc);
  // a text longer than the concept, so that k mod n_c wraps
  const text = await model.linearize("Once upon a time, there was a little girl named Lily. She loved to play");
  const n = text.nTokens, e = text.inputEmbeddings;
  expect(n).toBeGreaterThan(nc + 2);
  const lambda = 0.8;
  const v = await op.vectors(e, lambda);
  const sum = new Float64Array(d);
  for (let k = 0; k < n; k++) {
    const s = apply(J.block(k % nc), e.subarray(k * d, (k + 1) * d), d).map((x, c) => x * N[c]);
    expect(relErr(v.steering.subarray(k * d, (k + 1) * d), s)).toBeLessThan(1e-5);
    for (let c = 0; c < d; c++) sum[c] += s[c];
    expect(relErr(v.sums.subarray(k * d, (k + 1) * d), sum)).toBeLessThan(1e-5);
    const inj = v.injection.subarray(k * d, (k + 1) * d), ns = norm(sum);
    expect(norm(inj)).toBeCloseTo(lambda / 2, 6);
    expect(relErr(inj, Array.from(sum, (x) => (lambda / 2) * x / ns))).toBeLessThan(1e-5);
  }
  // the concept's own embeddings at positions 0 … n_c − 1: S is N Σ J_i x_i, the concept's N h^(l) (exact reconstruction)
  const own = await op.vectors(op.concept.inputEmbeddings);
  const h = op.concept.layerInputs[op.layer + 1].subarray((nc - 1) * d, nc * d);
  expect(relErr(own.sums.subarray((nc - 1) * d, nc * d), Array.from(h, (x, c) => x * N[c]))).toBeLessThan(1e-5);
  // without the final norm the operator is the bare layer-l Jacobian
  {
    await using bare = await model.steeringOperator({ concept: CONCEPT, finalNorm: false });
    const b = await bare.vectors(e.subarray(0, d).slice(), lambda);
    expect(relErr(b.steering, apply(J.block(0), e.subarray(0, d), d))).toBeLessThan(1e-5);
  }
  // extending position by position gives the same vectors as one call
  const seq = op.sequence(lambda);
  for (let k = 0; k < n; k++) await seq.extend(e.slice(k * d, (k + 1) * d));
  expect(seq.length).toBe(n);
  expect(relErr(seq.injection(), v.injection)).toBeLessThan(1e-6);
  // and generation adds exactly these, scaled by ‖h_k‖, after injectLayer: its first step is that forward's argmax
  const session = new (getAddon().NativeSession)({ model: nativeModelOf(model), engine: "graph", nCtx: n, threads: 2 });
  try {
    const out = await session.forward({ tokens: Int32Array.from(text.tokens ?? []), inject: v.injection, layer: op.injectLayer, normScaled: true });
    let top = 0;
    for (let i = 1; i < out.logits.length; i++) if (out.logits[i] > out.logits[top]) top = i;
    const g = await model.generate(text.tokens ?? [], { maxTokens: 1, steering: { operator: op, lambda }, stopAtEog: false });
    expect(g.tokens).toEqual([top]);
  } finally {
    session.dispose();
    await text.dispose();
  }
});

test("λ = 0 gives exactly the unsteered greedy continuation", async () => {
  for (const prompt of ["Once upon a time,", "One day, a little boy", "The girl was sad because"]) {
    const plain = await model.generate(prompt, { maxTokens: 24, stopAtEog: false });
    const zero = await model.generate(prompt, { maxTokens: 24, stopAtEog: false, steering: { operator: op, lambda: 0 } });
    expect(zero.engine).toBe("graph");
    expect(zero.lambda).toBe(0);
    expect(zero.tokens).toEqual(plain.tokens);
    // and a non-zero λ does steer
    const steered = await model.generate(prompt, { maxTokens: 24, stopAtEog: false, steering: op });
    expect(steered.tokens).not.toEqual(plain.tokens);
  }
});

test("the concept's top decoded tokens are those of the leading singular vector of its layer-l Jacobian", async () => {
  const top = await op.topTokens(5);
  expect(top).toHaveLength(5);
  const s = await op.concept.layerSvd({ layer: op.layer, tap: "residual" }, { k: 1 });
  const direct = (await op.concept.decode(s.u, { space: "output", top: 5 }))[0];
  expect(top.map((t) => t.id)).toEqual(direct.map((t) => t.id));
});

/** Mean over the continuation's steps of log Σ_{t ∈ ids} p(t), from the log-probabilities of every token (trackTokens: all). */
function conceptLogProb(g: Generation, ids: number[]): number {
  let total = 0;
  for (const s of g.steps) {
    const lp = ids.map((t) => (s.trackedLogProbs ?? [])[t]);
    const m = Math.max(...lp);
    total += m + Math.log(lp.reduce((a, v) => a + Math.exp(v - m), 0));
  }
  return total / g.steps.length;
}

test("steering towards a concept raises the log-probability of its top decoded tokens along the continuation, on average", async () => {
  const concepts = ["Tom had a pet dog. The dog", "She went to the park to play on the", "The sun was hot. They went to the beach and swam in the",
    "He liked to eat the red", "The cat saw a little bird in the", "Lily wanted a new toy. Her mom gave her a"];
  const prompts = ["Once upon a time,", "One day, a little boy", "The girl was sad because"];
  const seeds = [1, 2, 3];
  // one thread: the machine's cores are shared, and ggml's threads spin on each other
  const common = { maxTokens: 24, trackTokens: [...Array(model.hparams.nVocab).keys()], stopAtEog: false, threads: 1 };
  const plain = new Map<string, Generation>();
  for (const prompt of prompts) for (const seed of seeds) plain.set(`${prompt}/${seed}`, await model.generate(prompt, { ...common, sampling: { temperature: 0.8, seed } }));
  const shifts: number[] = [];
  for (const concept of concepts) {
    await using c = await model.steeringOperator({ concept, lambda: 1 });
    const ids = (await c.topTokens(5)).map((t) => t.id);
    let shift = 0;
    for (const prompt of prompts) {
      for (const seed of seeds) {
        const steered = await model.generate(prompt, { ...common, sampling: { temperature: 0.8, seed }, steering: c });
        shift += (conceptLogProb(steered, ids) - conceptLogProb(plain.get(`${prompt}/${seed}`) as Generation, ids)) / (prompts.length * seeds.length);
      }
    }
    shifts.push(shift);
  }
  const mean = shifts.reduce((a, b) => a + b, 0) / shifts.length;
  console.log(`steering (λ = 1, operator layer 2, added after layer 1, 24 tokens, temperature 0.8, seeds 1-3): concept log-probability shift per concept ${shifts.map((s) => s.toFixed(3)).join(" ")}, mean ${mean.toFixed(3)}`);
  expect(mean).toBeGreaterThan(0.2);
  expect(shifts.filter((s) => s > 0).length).toBeGreaterThanOrEqual(4);
});

test("operator options and lifetime", async () => {
  const bad: Array<[object, RegExp]> = [
    [{ concept: null }, /concept/],
    [{ concept: "x", layer: 5 }, /layer/],
    [{ concept: "x", layer: 1.5 }, /layer/],
    [{ concept: "x", injectLayer: 5 }, /injectLayer/],
    [{ concept: "x", finalNorm: "yes" }, /finalNorm/],
    [{ concept: "x", lambda: Number.NaN }, /lambda/],
    [{ concept: "" }, /empty/],
  ];
  for (const [o, message] of bad) {
    const e = await model.steeringOperator(o as never).then(() => null, (x: unknown) => x);
    expect(e).toBeInstanceOf(LljError);
    expect((e as LljError).message).toMatch(message);
  }
  const other = await loadModel({ modelPath: STORIES, gpu: false });
  try {
    await expect(other.generate("Once", { steering: op })).rejects.toThrow(/another model/);
  } finally {
    await other.dispose();
  }
  const gone = await model.steeringOperator({ concept: "A dog" });
  await gone.dispose();
  const e = await model.generate("Once", { steering: gone }).catch((x: unknown) => x);
  expect((e as LljError).code).toBe("DISPOSED");
});
