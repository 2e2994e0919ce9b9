// The foundation on the trained stories260K model: metadata, tokenizer, llama.cpp's
// reference forward, and the model's lifecycle.
import { loadModel, type Model } from "../src/index.js";
import { STORIES, readF32Tensor, matVec, relErr, argmax } from "./helpers.js";

let model: Model;
beforeAll(async () => {
  const progress: number[] = [];
  model = await loadModel({ modelPath: STORIES, gpu: false, onLoadProgress: (p) => progress.push(p) });
  expect(progress.length).toBeGreaterThan(0);
  expect(progress[progress.length - 1]).toBeCloseTo(1);
});
afterAll(async () => {
  await model.dispose();
});

test("architecture and hyper-parameters come from the GGUF metadata", () => {
  expect(model.architecture).toBe("llama");
  expect(model.hparams).toMatchObject({
    nLayer: 5, nEmbd: 64, nHead: 8, nHeadKv: 4, headDim: 8, nFf: 172, nVocab: 512, contextLength: 2048, tiedEmbeddings: false,
  });
  expect(model.hparams.normEps).toBeCloseTo(1e-5, 9);
  expect(model.hparams.rope).toMatchObject({ dimensionCount: 8, freqBase: 10000, scalingType: "none", hasFreqFactors: false });
  expect(model.metadata["general.architecture"]).toBe("llama");
});

test("the tensor list names every weight with its type, shape and device", () => {
  expect(model.tensors).toHaveLength(3 + 5 * 9);
  const q = model.tensors.find((t) => t.name === "blk.0.attn_q.weight");
  expect(q).toMatchObject({ type: "f32", shape: [64, 64], device: "CPU" });
  const k = model.tensors.find((t) => t.name === "blk.4.attn_k.weight");
  expect(k?.shape).toEqual([64, 32]); // 4 KV heads × head dim 8
  expect(model.tensors.find((t) => t.name === "blk.2.ffn_down.weight")?.shape).toEqual([172, 64]);
});

test("tokenize and detokenize round-trip", () => {
  const tokens = model.tokenize("Once upon a time, there was a cat.");
  expect(tokens[0]).toBe(1); // BOS
  // SentencePiece adds a leading space to the first word; llama.cpp keeps it.
  expect(model.detokenize(tokens, { removeSpecial: true })).toBe(" Once upon a time, there was a cat.");
  expect(model.tokenPieces(tokens.slice(1, 3))).toEqual([" Once", " upon"]);
  expect(() => model.detokenize([512])).toThrow(/outside the vocabulary/);
});

test("the reference forward continues the story and its logits are the LM head of the last hidden state", async () => {
  const f = await model.referenceForward("Once upon a time,");
  expect(f.nTokens).toBe(6);
  expect(f.hidden).toHaveLength(6 * 64);
  expect(f.topTokenText).toBe(" there");
  expect(Array.from(f.lastHidden)).toEqual(Array.from(f.hidden.subarray(5 * 64, 6 * 64)));
  // Independent check: logits = W_out · (last row of the all-positions hidden state), with
  // W_out read from the file in JS.
  const out = await readF32Tensor(STORIES, "output.weight");
  const logits = matVec(out.data, 512, 64, f.hidden.subarray(5 * 64));
  expect(relErr(f.logits, logits)).toBeLessThan(1e-5);
  expect(argmax(logits)).toBe(f.topToken);
});

test("positions are causal: a prefix gives the same hidden states", async () => {
  const tokens = model.tokenize("Once upon a time, there was a little");
  const full = await model.referenceForward(tokens);
  const prefix = await model.referenceForward(tokens.slice(0, 4));
  expect(relErr(prefix.hidden, full.hidden.subarray(0, 4 * 64))).toBeLessThan(1e-5);
});

test("per-layer inputs: layer 0 is the token embeddings, and each layer's input differs", async () => {
  const f = await model.referenceForward("Once upon a time,");
  expect(f.layerInputs).not.toBeNull();
  expect(f.layerInputs).toHaveLength(5);
  const emb = await readF32Tensor(STORIES, "token_embd.weight");
  const expected = new Float32Array(6 * 64);
  f.tokens.forEach((t, i) => expected.set(emb.data.subarray(t * 64, (t + 1) * 64), i * 64));
  expect(Array.from(f.layerInputs![0])).toEqual(Array.from(expected));
  for (let l = 1; l < 5; l++) {
    expect(f.layerInputs![l]).toHaveLength(6 * 64);
    expect(relErr(f.layerInputs![l], f.layerInputs![l - 1])).toBeGreaterThan(1e-3);
  }
  const without = await model.referenceForward("Once upon a time,", { layerInputs: false });
  expect(without.layerInputs).toBeNull();
  expect(Array.from(without.hidden)).toEqual(Array.from(f.hidden));
});

test("greedy decoding of 20 tokens through the API tells a TinyStories story", async () => {
  const tokens = model.tokenize("Once upon a time,");
  for (let i = 0; i < 20; i++) tokens.push((await model.referenceForward(tokens, { layerInputs: false })).topToken);
  const text = model.detokenize(tokens, { removeSpecial: true }).trim();
  expect(text.startsWith("Once upon a time, there was a little girl named Lily.")).toBe(true);
  // Readable English: every word is alphabetic (with punctuation), none is a fragment soup.
  const words = text.split(/\s+/).filter(Boolean);
  expect(words.length).toBeGreaterThanOrEqual(15);
  for (const w of words) expect(w).toMatch(/^[A-Za-z']+[.,!?]?$/);
});

test("concurrent forwards agree, and dispose waits for them", async () => {
  const other = await loadModel({ modelPath: STORIES, gpu: false });
  const runs = [other.referenceForward("One day"), other.referenceForward("One day"), other.referenceForward("The cat")];
  const disposed = other.dispose();
  const [a, b, c] = await Promise.all(runs);
  await disposed;
  expect(Array.from(a.hidden)).toEqual(Array.from(b.hidden));
  expect(c.tokens).not.toEqual(a.tokens);
  expect(other.disposed).toBe(true);
  await expect(other.referenceForward("One day")).rejects.toThrow(/disposed/);
  expect(() => other.tokenize("x")).toThrow(/disposed/);
  await other.dispose(); // twice is fine
});

test("await using disposes the model", async () => {
  let seen: Model | undefined;
  {
    await using m = await loadModel({ modelPath: STORIES, gpu: false });
    seen = m;
    expect(m.disposed).toBe(false);
  }
  expect(seen.disposed).toBe(true);
});
