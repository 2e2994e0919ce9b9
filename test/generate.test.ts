// Generation: llama.cpp's own greedy continuation, our graph's, sampling, streaming, abort,
// and the residual injection hook of our graph (native/engine/session.cpp).
import { loadModel, LljError, type Model } from "../src/index.js";
import { getAddon } from "../src/native.js";
import { nativeModelOf } from "../src/model.js";
import { STORIES, PROMPT, readF32Tensor, relErr, randn, norm } from "./helpers.js";

let model: Model;
beforeAll(async () => {
  model = await loadModel({ modelPath: STORIES, gpu: false });
});
afterAll(() => model.dispose());

const PROMPTS = ["Once upon a time,", "One day, a little boy", "The girl was sad because"];

/** llama.cpp's greedy continuation the slow way: a full forward per token, argmax of its logits. */
async function referenceGreedy(prompt: string, n: number): Promise<number[]> {
  const tokens = model.tokenize(prompt), out: number[] = [];
  for (let i = 0; i < n; i++) {
    const f = await model.referenceForward(tokens, { layerInputs: false });
    out.push(f.topToken);
    tokens.push(f.topToken);
  }
  return out;
}

const codeOf = (p: Promise<unknown>) => p.then(() => "resolved", (e: unknown) => (e instanceof LljError ? e.code : `not an LljError: ${String(e)}`));

describe("unsteered generation", () => {
  test.each(PROMPTS)("reproduces llama.cpp's greedy continuation token for token: %j", async (prompt) => {
    const ref = await referenceGreedy(prompt, 24);
    const g = await model.generate(prompt, { maxTokens: 24, stopAtEog: false });
    expect(g.engine).toBe("llama");
    expect(g.tokens).toEqual(ref);
    expect(g.text).toBe(model.detokenize(ref));
    // our own primal graph (recomputed per token) continues the same way
    const ours = await model.generate(prompt, { maxTokens: 24, stopAtEog: false, engine: "graph" });
    expect(ours.tokens).toEqual(ref);
  });

  test("the continuation of the design notes' prompt is the coherent story", async () => {
    const g = await model.generate("Once upon a time,", { maxTokens: 12 });
    expect(g.text).toMatch(/^ ?there was a little girl named Lily/);
    expect(g.stopReason).toBe("maxTokens");
    expect(g.promptTokens).toEqual(model.tokenize("Once upon a time,"));
  });

  test("streams: onToken and the async iterator see the same tokens, in order, with their log-probabilities", async () => {
    const seen: number[] = [];
    const g = await model.generate(PROMPT, { maxTokens: 10, onToken: (t) => seen.push(t.token) });
    expect(seen).toEqual(g.tokens);
    expect(g.steps.map((s) => s.index)).toEqual([...Array(10).keys()]);
    const streamed: number[] = [];
    const it = model.generateStream(PROMPT, { maxTokens: 10 });
    let r = await it.next();
    while (!r.done) {
      streamed.push(r.value.token);
      expect(r.value.text).toBe(model.tokenPieces([r.value.token])[0]);
      r = await it.next();
    }
    expect(streamed).toEqual(g.tokens);
    expect(r.value.tokens).toEqual(g.tokens);
    // greedy picks the argmax, so its log-probability is the largest of all tokens' at that step
    const all = [...Array(model.hparams.nVocab).keys()];
    const tracked = await model.generate(PROMPT, { maxTokens: 3, trackTokens: all });
    for (const s of tracked.steps) {
      expect(Math.max(...(s.trackedLogProbs ?? []))).toBeCloseTo(s.logProb, 6);
      expect(s.trackedLogProbs?.reduce((a, v) => a + Math.exp(v), 0)).toBeCloseTo(1, 5);
    }
  });

  test("a stream left with break frees its hold on the model", async () => {
    const m = await loadModel({ modelPath: STORIES, gpu: false });
    let n = 0;
    for await (const t of m.generateStream(PROMPT, { maxTokens: 50 })) {
      expect(t.index).toBe(n);
      if (++n === 3) break;
    }
    await expect(Promise.race([m.dispose().then(() => "disposed"), new Promise((r) => setTimeout(() => r("hung"), 5000))])).resolves.toBe("disposed");
    await expect(codeOf(m.generate(PROMPT, { maxTokens: 2 }))).resolves.toBe("DISPOSED");
  });
});

describe("sampling", () => {
  test("the same seed gives the same continuation; other seeds other ones; topK 1 is greedy", async () => {
    const sampled = (seed: number) => model.generate(PROMPT, { maxTokens: 20, sampling: { temperature: 1, seed } });
    const a = await sampled(7), b = await sampled(7);
    expect(b.tokens).toEqual(a.tokens);
    const others: string[] = [];
    for (const seed of [1, 2, 3, 4]) others.push((await sampled(seed)).tokens.join(","));  // one at a time: parallel contexts fight over the cores
    expect(new Set([a.tokens.join(","), ...others]).size).toBeGreaterThan(1);
    const greedy = await model.generate(PROMPT, { maxTokens: 20 });
    expect((await model.generate(PROMPT, { maxTokens: 20, sampling: { topK: 1, seed: 3 } })).tokens).toEqual(greedy.tokens);
    expect((await model.generate(PROMPT, { maxTokens: 20, sampling: { topP: 1e-6, seed: 3 } })).tokens).toEqual(greedy.tokens);
  });

  test("top-k sampling only draws among the k most likely tokens", async () => {
    const all = [...Array(model.hparams.nVocab).keys()];
    for (const seed of [1, 2, 3]) {
      const g = await model.generate(PROMPT, { maxTokens: 8, sampling: { temperature: 2, topK: 3, seed }, trackTokens: all });
      for (const s of g.steps) {
        const lp = s.trackedLogProbs ?? [];
        const rank = lp.filter((v) => v > lp[s.token]).length;
        expect(rank).toBeLessThan(3);
      }
    }
  });
});

describe("abort and errors", () => {
  test("an AbortSignal stops the generation between tokens (llama and graph engines)", async () => {
    for (const engine of ["llama", "graph"] as const) {
      const ac = new AbortController();
      const seen: number[] = [];
      const p = model.generate(PROMPT, { maxTokens: 100, engine, signal: ac.signal, onToken: (t) => {
        seen.push(t.token);
        if (seen.length === 3) ac.abort();
      } });
      await expect(codeOf(p)).resolves.toBe("ABORTED");
      expect(seen).toHaveLength(3);
    }
    const pre = new AbortController();
    pre.abort();
    await expect(codeOf(model.generate(PROMPT, { signal: pre.signal }))).resolves.toBe("ABORTED");
  });

  test("an abort mid-forward of our graph rejects within a second", async () => {
    // a long steering-free graph run: every token recomputes the whole sequence
    const ac = new AbortController();
    const t0 = Date.now();
    const p = model.generate(PROMPT, { maxTokens: 400, engine: "graph", signal: ac.signal, stopAtEog: false });
    setTimeout(() => ac.abort(), 300);
    await expect(codeOf(p)).resolves.toBe("ABORTED");
    expect(Date.now() - t0).toBeLessThan(1300);
  });

  test("options are checked before anything runs", async () => {
    const bad: Array<[object, RegExp]> = [
      [{ maxTokens: 0 }, /maxTokens/],
      [{ maxTokens: 2.5 }, /maxTokens/],
      [{ maxTokens: 100000 }, /maxTokens/],
      [{ sampling: { temperature: 0 } }, /temperature/],
      [{ sampling: { topP: 1.5 } }, /topP/],
      [{ sampling: { topK: 0 } }, /topK/],
      [{ sampling: { seed: -1 } }, /seed/],
      [{ engine: "gpu" }, /engine/],
      [{ trackTokens: [model.hparams.nVocab] }, /outside the vocabulary/],
      [{ steering: { lambda: 1 } }, /SteeringOperator/],
      [{ controlVector: { path: "" } }, /controlVector.path/],
      [{ controlVector: { path: "x.gguf" }, engine: "graph" }, /llama/],
      [{ onToken: 3 }, /onToken/],
    ];
    for (const [options, message] of bad) {
      const e = await model.generate(PROMPT, options).then(() => null, (x: unknown) => x);
      expect(e).toBeInstanceOf(LljError);
      expect((e as LljError).code).toBe("INVALID_ARGUMENT");
      expect((e as LljError).message).toMatch(message);
    }
    const thrower = await model.generate(PROMPT, { maxTokens: 5, onToken: () => { throw new Error("boom"); } }).catch((x: unknown) => x);
    expect(thrower).toBeInstanceOf(LljError);
    expect((thrower as LljError).message).toMatch(/onToken threw: boom/);
  });
});

describe("the residual injection of our graph", () => {
  test("after the last layer, h_k + v_k‖h_k‖ goes through the final norm: checked against the linearization's residual", async () => {
    const lin = await model.linearize(PROMPT);
    const n = lin.nTokens, d = lin.nEmbd, L = model.hparams.nLayer;
    const session = new (getAddon().NativeSession)({ model: nativeModelOf(model), engine: "graph", nCtx: n, threads: 2 });
    try {
      const tokens = Int32Array.from(lin.tokens ?? []);
      // the embeddings are the primal pass's own
      expect(relErr(await session.embed({ tokens }), lin.inputEmbeddings)).toBe(0);
      const v = randn(n * d).map((x) => x * 0.05);
      const out = await session.forward({ tokens, inject: v, layer: L - 1, normScaled: true });
      const h = lin.finalResidual.slice((n - 1) * d), vl = v.slice((n - 1) * d);
      const hn = norm(h);
      const steered = h.map((x, c) => x + vl[c] * hn);
      const w = (await readF32Tensor(STORIES, "output_norm.weight")).data;
      const r = 1 / Math.sqrt(steered.reduce((a, x) => a + x * x, 0) / d + model.hparams.normEps);
      expect(relErr(out.hidden, steered.map((x, c) => x * r * w[c]))).toBeLessThan(1e-6);
      // no injection: the primal pass itself (our linearization's output and logits)
      const plain = await session.forward({ tokens, inject: null, layer: -1, normScaled: false });
      expect(relErr(plain.hidden, lin.output)).toBeLessThan(1e-6);
      expect(relErr(plain.logits, lin.logits)).toBeLessThan(1e-6);
      // an injection at an earlier position reaches the last one through attention
      const early = new Float32Array(n * d);
      early.set(randn(d), 2 * d);
      expect(relErr((await session.forward({ tokens, inject: early, layer: 1, normScaled: true })).hidden, lin.output)).toBeGreaterThan(1e-3);
    } finally {
      session.dispose();
      await lin.dispose();
    }
  });
});
