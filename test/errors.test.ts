// Bad input never crashes the process: each case rejects with an error that names the
// problem, and the process goes on to load and run a good model afterwards.
import { mkdtempSync, writeFileSync, readFileSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadModel, LljError, supportedArchitectures, architectureRegistry } from "../src/index.js";
import { STORIES, writeArchitectureStub } from "./helpers.js";

const tmp = mkdtempSync(path.join(os.tmpdir(), "llj-errors-"));

test("a missing file", async () => {
  await expect(loadModel({ modelPath: path.join(tmp, "nope.gguf"), gpu: false })).rejects.toThrow(/model file not found: .*nope\.gguf/);
});

test("a directory", async () => {
  await expect(loadModel({ modelPath: tmp, gpu: false })).rejects.toThrow(/not a file/);
});

test("a file that is not GGUF", async () => {
  const f = path.join(tmp, "text.gguf");
  writeFileSync(f, "this is not a model\n".repeat(100));
  const err = await loadModel({ modelPath: f, gpu: false }).catch((e) => e);
  expect(err).toBeInstanceOf(LljError);
  expect(err.message).toMatch(/not a GGUF file/);
});

test("a GGUF truncated inside its tensor data", async () => {
  const f = path.join(tmp, "truncated.gguf");
  const full = readFileSync(STORIES);
  writeFileSync(f, full.subarray(0, Math.floor(full.length * 0.6)));
  await expect(loadModel({ modelPath: f, gpu: false })).rejects.toThrow(/truncated|out of bounds|not within the file bounds|could not load/);
});

test("a GGUF truncated inside its header", async () => {
  const f = path.join(tmp, "header.gguf");
  writeFileSync(f, readFileSync(STORIES).subarray(0, 3000));
  await expect(loadModel({ modelPath: f, gpu: false })).rejects.toThrow(/cannot read the GGUF header|truncated/);
});

test("a GGUF of an unsupported architecture", async () => {
  const f = await writeArchitectureStub(path.join(tmp, "mamba.gguf"), "mamba", 1);
  expect(statSync(f).size).toBeGreaterThan(16 * 8 * 4);
  const err = await loadModel({ modelPath: f, gpu: false }).catch((e) => e);
  expect(err.message).toMatch(/architecture "mamba" .* is not supported by llj-gguf: its layers carry a recurrent state/);
  expect(err.message).toContain(`(supported: ${supportedArchitectures().join(", ")})`);
  expect(err.code).toBe("UNSUPPORTED");
  const bloom = await loadModel({ modelPath: await writeArchitectureStub(path.join(tmp, "bloom.gguf"), "bloom", 1), gpu: false }).catch((e) => e);
  expect(bloom.message).toMatch(/its graph in the LayerNorm and non-gated MLP family is not written yet \(gpt2's, .* and mpt's are/);
});

test("the native registry: every supported name in exactly one family, refusals by pattern", () => {
  const r = architectureRegistry();
  expect(r.families.flatMap((f) => f.names)).toEqual(r.supported);
  expect(new Set(r.supported).size).toBe(r.supported.length);
  expect(r.families.map((f) => f.family)).toEqual(["llama", "qwen", "gemma", "olmo2", "phi3", "gpt2"]);
  expect(r.supported).toEqual(expect.arrayContaining(["llama", "qwen3moe", "gemma3", "falcon", "mpt"]));
  for (const { pattern } of r.refused) for (const name of r.supported) expect(new RegExp(`^(?:${pattern})$`).test(name)).toBe(false);
});

test("bad options", async () => {
  await expect(loadModel({ modelPath: STORIES, gpu: false, gpuLayers: -1 })).rejects.toThrow(/gpuLayers/);
  await expect(loadModel({ modelPath: "" })).rejects.toThrow(/modelPath/);
  await expect(loadModel({ modelPath: STORIES, gpu: "tpu" as never })).rejects.toThrow(/gpu must be|already initialized/);
});

test("an aborted load rejects", async () => {
  const ac = new AbortController();
  ac.abort();
  await expect(loadModel({ modelPath: STORIES, gpu: false, signal: ac.signal })).rejects.toThrow(/abort/i);
  const ac2 = new AbortController();
  const p = loadModel({ modelPath: STORIES, gpu: false, signal: ac2.signal, onLoadProgress: () => ac2.abort() });
  await expect(p).rejects.toThrow(/abort/i);
});

test("bad prompts are refused before llama.cpp sees them, and the process survives", async () => {
  const model = await loadModel({ modelPath: STORIES, gpu: false });
  try {
    await expect(model.referenceForward("")).rejects.toThrow(/empty/);
    await expect(model.referenceForward([])).rejects.toThrow(/empty/);
    await expect(model.referenceForward([1, 99999])).rejects.toThrow(/token id 99999 at position 1 is outside the vocabulary \[0, 512\)/);
    await expect(model.referenceForward([1, -3])).rejects.toThrow(/outside the vocabulary/);
    await expect(model.referenceForward([1, 2.5])).rejects.toThrow(/not an integer/);
    await expect(model.referenceForward(new Array(2049).fill(1))).rejects.toThrow(/2049 tokens, more than the model's context of 2048/);
    // Still healthy.
    const f = await model.referenceForward("Once upon a time,");
    expect(f.topTokenText).toBe(" there");
  } finally {
    await model.dispose();
  }
});

const failure = (p: Promise<unknown>): Promise<LljError> => p.then(() => { throw new Error("resolved"); }, (x: unknown) => x as LljError);

test("native refusals are LljErrors with a code and a clean message, also from another realm (jest's vm)", async () => {
  const model = await loadModel({ modelPath: STORIES, gpu: false });
  try {
    const lin = await model.linearize("Once upon a time");
    const nan = new Float32Array(lin.nTokens * lin.nEmbd).fill(NaN);
    const e = await failure(lin.jvp(nan));
    expect(e).toBeInstanceOf(LljError);
    expect(e.code).toBe("INVALID_ARGUMENT");
    expect(e.message).toMatch(/^tangents holds a non-finite value at index 0/);
    const c = await failure(model.linearize("Once upon a time", { contextSize: 2 }));
    expect([c.code, c.message]).toEqual(["INVALID_ARGUMENT", "contextSize is smaller than the prompt"]);
    await lin.dispose();
    const d = await failure(lin.vjp(new Float32Array(lin.nEmbd)));
    expect([d.code, d.message]).toEqual(["DISPOSED", "the linearization has been disposed"]);
  } finally {
    await model.dispose();
  }
});
