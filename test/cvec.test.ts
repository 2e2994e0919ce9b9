// Control vectors: the file layout llama.cpp reads, its loading by llama.cpp's own loader,
// the layer-index convention (checked against our graph's injection), scale 0, refusals.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadModel, LljError, readControlVector, writeControlVector, type Model, type SteeringOperator } from "../src/index.js";
import { getAddon, getBuildRecord } from "../src/native.js";
import { nativeModelOf } from "../src/model.js";
import { STORIES, relErr, norm, randn, finalNormAt } from "./helpers.js";
import { runChild } from "./child.js";
import { readGgufHeader } from "../src/gguf-header.js";

let model: Model;
let op: SteeringOperator;
let dir: string;
let file: string;
beforeAll(async () => {
  model = await loadModel({ modelPath: STORIES, gpu: false });
  op = await model.steeringOperator({ concept: "Tom had a pet dog. The dog" });
  dir = mkdtempSync(path.join(os.tmpdir(), "llj-cvec-"));
  file = path.join(dir, "dog.gguf");
  await op.exportControlVector(file);
});
afterAll(async () => {
  await model.dispose();
  rmSync(dir, { recursive: true, force: true });
});

const PROMPTS = ["Once upon a time,", "One day, a little boy"];

test("the exported file has llama.cpp's control-vector layout", async () => {
  const raw = await getAddon().readControlVector({ path: file });
  const L = model.hparams.nLayer, d = model.hparams.nEmbd;
  expect(raw.architecture).toBe("controlvector");
  expect(raw.modelHint).toBe("llama");
  expect(raw.layerCount).toBe(L - 1);
  expect(raw.tensors.map((t) => t.name)).toEqual([...Array(L - 1).keys()].map((i) => `direction.${i + 1}`));
  for (const t of raw.tensors) {
    expect(t.type).toBe("f32");
    expect(t.dims).toEqual([d]);
  }
  const cv = await op.controlVector();
  // only the layer the operator adds to carries the direction
  expect(cv.layer).toBe(op.injectLayer);
  for (const t of raw.tensors) {
    if (t.name === `direction.${op.injectLayer}`) expect(relErr(t.data as Float32Array, cv.vector)).toBe(0);
    else expect(norm(t.data as Float32Array)).toBe(0);
  }
  expect(norm(cv.vector)).toBeCloseTo(cv.norm, 4);
  const parsed = await readControlVector(file, model.hparams);
  expect(parsed.layers).toEqual([op.injectLayer]);
  expect(parsed.data).toHaveLength(d * (L - 1));
});

test("llama.cpp's own loader (common_control_vector_load) reads it", async () => {
  const lib = path.join(getBuildRecord().libDir, "libllama-common.so");
  const r = getAddon().commonControlVectorLoad({ libraryPath: lib, path: file, strength: 2 });
  if (getBuildRecord().custom && r === null) return;  // a user's build without common/: nothing to compare with
  expect(r).not.toBeNull();
  const ours = await readControlVector(file, model.hparams);
  expect(r?.nEmbd).toBe(model.hparams.nEmbd);
  // its buffer stops at the highest direction; ours covers every layer (zeros above)
  expect(r?.data.length).toBe(model.hparams.nEmbd * (model.hparams.nLayer - 1));
  expect(relErr(r?.data ?? new Float32Array(), ours.data.map((x) => 2 * x))).toBe(0);
});

test("scale 0 gives exactly the unsteered greedy continuation; a non-zero scale changes it", async () => {
  for (const prompt of PROMPTS) {
    const plain = await model.generate(prompt, { maxTokens: 24, stopAtEog: false, trackTokens: [5, 50, 500] });
    const zero = await model.generate(prompt, { maxTokens: 24, stopAtEog: false, trackTokens: [5, 50, 500], controlVector: { path: file, scale: 0 } });
    expect(zero.tokens).toEqual(plain.tokens);
    expect(zero.steps.map((s) => s.trackedLogProbs)).toEqual(plain.steps.map((s) => s.trackedLogProbs));  // bit for bit: x + 0 = x
    const steered = await model.generate(prompt, { maxTokens: 24, stopAtEog: false, controlVector: { path: file, scale: 1 } });
    expect(steered.tokens).not.toEqual(plain.tokens);
  }
});

test("llama.cpp adds direction.<l> where our graph adds a vector after layer l", async () => {
  // a random direction at each layer in turn: llama.cpp's decode with the control vector
  // against our graph with the same vector injected after that layer, at every position
  const tokens = Int32Array.from(model.tokenize("Once upon a time, there was a little"));
  const n = tokens.length, d = model.hparams.nEmbd, L = model.hparams.nLayer;
  for (let layer = 1; layer < L; layer++) {
    const v = randn(d).map((x) => x * 0.5);
    const f = path.join(dir, `random-${layer}.gguf`);
    await writeControlVector(f, { architecture: model.architecture, hparams: model.hparams, layer, vector: v });
    const llama = new (getAddon().NativeSession)({ model: nativeModelOf(model), engine: "llama", nCtx: n, threads: 2 });
    const graph = new (getAddon().NativeSession)({ model: nativeModelOf(model), engine: "graph", nCtx: n, threads: 2 });
    try {
      llama.setControlVector({ data: (await readControlVector(f, model.hparams)).data, ilStart: 1, ilEnd: L - 1 });
      const withCvec = await llama.decode({ tokens });
      const inject = new Float32Array(n * d);
      for (let k = 0; k < n; k++) inject.set(v, k * d);
      const ours = await graph.forward({ tokens, inject, layer, normScaled: false });
      expect(relErr(withCvec, ours.logits)).toBeLessThan(1e-5);
      // and not after a neighbouring layer
      const off = await graph.forward({ tokens, inject, layer: layer === 1 ? 2 : layer - 1, normScaled: false });
      expect(relErr(withCvec, off.logits)).toBeGreaterThan(1e-3);
    } finally {
      llama.dispose();
      graph.dispose();
    }
  }
});

test("a wrong layer count, a wrong width, layer 0 or not a control vector is refused by name", async () => {
  const refused = async (f: string, message: RegExp) => {
    const e = await model.generate("Once", { maxTokens: 2, controlVector: { path: f } }).then(() => null, (x: unknown) => x);
    expect(e).toBeInstanceOf(LljError);
    expect((e as LljError).code).toBe("INVALID_ARGUMENT");
    expect((e as LljError).message).toContain(f);
    expect((e as LljError).message).toMatch(message);
    expect((e as LljError).message.split("\n")).toHaveLength(1);
  };
  const d = model.hparams.nEmbd;
  const deeper = path.join(dir, "deeper.gguf");  // made for a model with 9 layers
  await writeControlVector(deeper, { architecture: "llama", hparams: { ...model.hparams, nLayer: 9 }, layer: 3, vector: randn(d) });
  await refused(deeper, /layer_count is 8, but this model has 5 layers and takes 4 directions/);
  const wide = path.join(dir, "wide.gguf");  // made for d = 128
  await writeControlVector(wide, { architecture: "llama", hparams: { ...model.hparams, nEmbd: 128 }, layer: 2, vector: randn(128) });
  await refused(wide, /direction.1 has 128 values, but the model's n_embd is 64/);
  const beyond = path.join(dir, "beyond.gguf");
  await getAddon().writeGguf({ path: beyond, kv: [{ key: "general.architecture", type: "str", value: "controlvector" }, { key: "controlvector.layer_count", type: "i32", value: 4 }],
    tensors: [{ name: "direction.5", shape: [d], init: { kind: "constant", a: 1 } }] });
  await refused(beyond, /direction.5: a direction acts on layers 1 to 4/);
  const zero = path.join(dir, "zero.gguf");
  await getAddon().writeGguf({ path: zero, kv: [{ key: "general.architecture", type: "str", value: "controlvector" }, { key: "controlvector.layer_count", type: "i32", value: 4 }],
    tensors: [{ name: "direction.0", shape: [d], init: { kind: "constant", a: 1 } }] });
  await refused(zero, /never steers layer 0/);
  const matrix = path.join(dir, "matrix.gguf");
  await getAddon().writeGguf({ path: matrix, kv: [{ key: "general.architecture", type: "str", value: "controlvector" }, { key: "controlvector.layer_count", type: "i32", value: 4 }],
    tensors: [{ name: "direction.1", shape: [d, 2], init: { kind: "constant", a: 1 } }] });
  await refused(matrix, /shape \[64, 2\], not \[n_embd\]/);
  await refused(STORIES, /general.architecture is "llama", not "controlvector"/);
  await refused(path.join(dir, "missing.gguf"), /cannot read it \(ENOENT\)/);
  const junk = path.join(dir, "junk.gguf");
  writeFileSync(junk, "not a gguf at all");
  await refused(junk, /not a GGUF file/);
  // a header whose last tensor claims 2^38 values (1 TiB): ggml's reader allocates the data
  // before reading it and aborts the process when that fails (found by scripts/fuzz.mjs), so
  // it is refused before that read; run in a child, where the abort would show as a signal
  const huge = path.join(dir, "huge.gguf");
  await writeControlVector(huge, { architecture: "llama", hparams: model.hparams, layer: 2, vector: randn(d) });
  const bytes = readFileSync(huge), header = await readGgufHeader(huge, bytes.length);
  bytes.writeBigUInt64LE(2n ** 38n, header.tensors[header.tensors.length - 1].typeOffset - 8);
  writeFileSync(huge, bytes);
  const child = await runChild(`await outcome("huge", lib.readControlVector(${JSON.stringify(huge)}, { nLayer: 5, nEmbd: 64 }));`);
  expect([child.signal, child.status]).toEqual([null, 0]);
  expect(child.reports[0]).toMatchObject({ outcome: "rejected", code: "INVALID_ARGUMENT", message: expect.stringMatching(/tensor direction\.4 ends at byte \d+, beyond the file's \d+ \(is the file truncated\?\)/) });
  // writing: layer 0 and a wrong width are refused too
  await expect(writeControlVector(path.join(dir, "l0.gguf"), { architecture: "llama", hparams: model.hparams, layer: 0, vector: randn(d) })).rejects.toThrow(/layers 1 to 4/);
  await expect(writeControlVector(path.join(dir, "w.gguf"), { architecture: "llama", hparams: model.hparams, layer: 1, vector: randn(d + 1) })).rejects.toThrow(/n_embd = 64/);
  const l0 = await model.steeringOperator({ concept: "A dog", layer: 0 });
  await expect(l0.exportControlVector(path.join(dir, "op0.gguf"))).rejects.toThrow(/cannot act on layer 0/);
  await l0.dispose();
});

test("the mean steering vector is the other fixed direction; both are unit vectors before scaling", async () => {
  const s = await op.direction("singular"), m = await op.direction("mean");
  expect(norm(s)).toBeCloseTo(1, 5);
  expect(norm(m)).toBeCloseTo(1, 5);
  // the mean of the concept's own s_i = N J_i x_i is N h^(l)_last / n_c (exact reconstruction)
  const d = model.hparams.nEmbd, nc = op.nConcept;
  const N = finalNormAt(op.concept, op.layer, model.hparams.normEps);
  const h = op.concept.layerInputs[op.layer + 1].slice((nc - 1) * d, nc * d).map((x, c) => x * N[c]);
  expect(relErr(m, h.map((x) => x / norm(h)))).toBeLessThan(1e-5);
  // the singular direction points along the concept's state
  let dot = 0;
  for (let c = 0; c < d; c++) dot += s[c] * h[c];
  expect(dot).toBeGreaterThan(0);
  const f = path.join(dir, "mean.gguf");
  await op.exportControlVector(f, { direction: "mean" });
  expect((await readControlVector(f, model.hparams)).layers).toEqual([op.injectLayer]);
});
