// Synthetic test models: deterministic, loadable by llama.cpp with a real tokenizer, and
// quantized copies that are the same network at lower precision.
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadModel, syntheticModel, writeSyntheticModel, TINY_LLAMA, type SyntheticSpec, type Model } from "../src/index.js";
import { readF32Tensor, matVec, relErr, argmax } from "./helpers.js";

const tmp = mkdtempSync(path.join(os.tmpdir(), "llj-synth-"));
const sha = (f: string) => createHash("sha256").update(readFileSync(f)).digest("hex");
const PROMPT = "Once upon a time, there was a little";

test("the generator is deterministic per seed", async () => {
  const small: SyntheticSpec = { ...TINY_LLAMA, nLayer: 1, seed: 11 };
  const a = await writeSyntheticModel(path.join(tmp, "a.gguf"), small);
  const b = await writeSyntheticModel(path.join(tmp, "b.gguf"), small);
  const c = await writeSyntheticModel(path.join(tmp, "c.gguf"), { ...small, seed: 12 });
  expect(sha(a)).toBe(sha(b));
  expect(sha(c)).not.toBe(sha(a));
  // Same seed, same weights, tensor by tensor; another seed, other weights.
  const qa = await readF32Tensor(a, "blk.0.attn_q.weight");
  const qc = await readF32Tensor(c, "blk.0.attn_q.weight");
  expect(relErr(qa.data, qc.data)).toBeGreaterThan(0.5);
});

describe("the default synthetic llama (F32, GQA, untied LM head)", () => {
  let model: Model;
  let file: string;
  beforeAll(async () => {
    file = await syntheticModel(TINY_LLAMA, "F32");
    model = await loadModel({ modelPath: file, gpu: false });
  });
  afterAll(() => model.dispose());

  test("llama.cpp reads the hyper-parameters the spec asked for", () => {
    expect(model.architecture).toBe("llama");
    expect(model.hparams).toMatchObject({ nEmbd: 256, nLayer: 2, nHead: 4, nHeadKv: 2, headDim: 64, nFf: 512,
      nVocab: 32000, contextLength: 512, tiedEmbeddings: false });
    expect(model.tensors.every((t) => t.type === "f32")).toBe(true);
    expect(model.tensors.find((t) => t.name === "blk.1.attn_k.weight")?.shape).toEqual([256, 128]);
  });

  test("it has the real llama SentencePiece tokenizer", () => {
    const tokens = model.tokenize("Hello world");
    expect(tokens).toEqual([1, 15043, 3186]);
    expect(model.detokenize(tokens, { removeSpecial: true }).trim()).toBe("Hello world");
  });

  test("llama.cpp's forward is consistent with the weights in the file", async () => {
    const f = await model.referenceForward(PROMPT);
    const emb = await readF32Tensor(file, "token_embd.weight");
    f.tokens.forEach((t, i) => {
      expect(Array.from(f.layerInputs![0].subarray(i * 256, (i + 1) * 256))).toEqual(Array.from(emb.data.subarray(t * 256, (t + 1) * 256)));
    });
    const out = await readF32Tensor(file, "output.weight");
    expect(relErr(f.logits, matVec(out.data, 32000, 256, f.lastHidden))).toBeLessThan(1e-5);
    for (const x of f.hidden) expect(Number.isFinite(x)).toBe(true);
  });

  test.each([
    ["Q8_0", "q8_0", 0.05],
    ["Q4_0", "q4_0", 0.4],
    ["Q4_K_M", "q4_K", 0.4],
    ["Q6_K", "q6_K", 0.1],
  ] as const)("the %s copy holds %s weights and computes nearly the same network", async (type, ggmlType, tol) => {
    const q = await loadModel({ modelPath: await syntheticModel(TINY_LLAMA, type), gpu: false });
    try {
      const mats = q.tensors.filter((t) => t.shape.length === 2);
      expect(mats.filter((t) => t.type === ggmlType).length).toBeGreaterThanOrEqual(mats.length - 3);
      expect(q.tensors.filter((t) => t.shape.length === 1).every((t) => t.type === "f32")).toBe(true);
      const [fq, ff] = [await q.referenceForward(PROMPT), await model.referenceForward(PROMPT)];
      const err = relErr(fq.hidden, ff.hidden);
      expect(err).toBeGreaterThan(1e-4); // really quantized
      expect(err).toBeLessThan(tol); // the same network
    } finally {
      await q.dispose();
    }
  });
});

test("a tied LM head reuses token_embd", async () => {
  const spec: SyntheticSpec = { ...TINY_LLAMA, tiedEmbeddings: true, nLayer: 1, nHeadKv: 4, seed: 5 };
  const file = await syntheticModel(spec, "F32");
  const model = await loadModel({ modelPath: file, gpu: false });
  try {
    expect(model.hparams.tiedEmbeddings).toBe(true);
    expect(model.tensors.some((t) => t.name === "output.weight")).toBe(false);
    const f = await model.referenceForward(PROMPT);
    const emb = await readF32Tensor(file, "token_embd.weight");
    const logits = matVec(emb.data, 32000, 256, f.lastHidden);
    expect(relErr(f.logits, logits)).toBeLessThan(1e-5);
    expect(argmax(logits)).toBe(f.topToken);
  } finally {
    await model.dispose();
  }
});
