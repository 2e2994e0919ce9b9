// File classes written by llama.cpp's own test generator that once failed: all-sliding-window
// gemma3/olmo2 files (fewer layers than the SWA period) and qwen3 files carrying the
// reranker head. Each is generated here and must linearize exactly (the four invariants,
// against llama.cpp's own forward).
import { loadModel, syntheticModel, TINY_LLAMA, type SyntheticSpec } from "../src/index.js";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { packageRoot } from "../src/native.js";
import { relErr, randn, adjointError } from "./helpers.js";

const STORY = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun with her dog. " +
  "One day, she saw a big red ball in the park.";

// No sliding_window_pattern key: llama.cpp's default period (gemma3 6, olmo2 4) exceeds the
// layer count, so every layer is sliding-window and the global mask is read by no layer.
const cases: Array<[string, SyntheticSpec]> = [
  ["gemma3, 2 layers < period 6: every layer sliding-window",
    { ...TINY_LLAMA, architecture: "gemma3", seed: 152, nLayer: 2, slidingWindow: 8, ropeFreqBase: 1e6, ropeFreqBaseSwa: 1e4 }],
  ["olmo2, 3 layers < period 4: every layer sliding-window", { ...TINY_LLAMA, architecture: "olmo2", seed: 155, nLayer: 3, slidingWindow: 8 }],
  ["qwen3 with the reranker head cls.output.weight", { ...TINY_LLAMA, architecture: "qwen3", seed: 141, rerankHead: true }],
];

test.each(cases)("%s: faithful, exact, adjoint, linear", async (name, spec) => {
  const model = await loadModel({ modelPath: await syntheticModel(spec), gpu: false });
  try {
    expect(model.linearizability).toMatchObject({ ok: true });
    if (spec.rerankHead) expect(model.linearizability.ignoredTensors).toContain("cls.output.weight");
    const tokens = model.tokenize(STORY).slice(0, 32);  // longer than the window of 8
    expect(tokens.length).toBe(32);
    const lin = await model.linearize(tokens);
    if (spec.rerankHead) expect(lin.ignoredTensors).toContain("cls.output.weight");
    const ref = await model.referenceForward(tokens);
    expect(relErr(lin.hidden, ref.hidden)).toBeLessThan(1e-5);
    lin.layerInputs.forEach((h, l) => expect(relErr(h, ref.layerInputs![l])).toBeLessThan(1e-5));
    expect(lin.predictedToken).toBe(ref.topToken);
    expect((await lin.reconstruction()).relativeError).toBeLessThan(1e-5);
    expect(await adjointError(lin)).toBeLessThan(1e-5);
    const n = lin.nTokens, d = lin.nEmbd, v = randn(n * d), w = randn(n * d);
    const both = new Float32Array(2 * n * d);
    both.set(v);
    both.set(w, n * d);
    const [lv, lw, lb, lc] = [await lin.jvp(v), await lin.jvp(w), await lin.jvp(both), await lin.jvp(v.map((x, i) => 2 * x - 3 * w[i]))];
    expect(relErr(lb, Float32Array.from([...lv, ...lw]))).toBeLessThan(1e-6);
    expect(relErr(lc, lv.map((x, i) => 2 * x - 3 * lw[i]))).toBeLessThan(1e-5);
    await lin.dispose();
  } finally {
    await model.dispose();
  }
});

test("info lists the reranker head as a tensor llama.cpp loads but never applies", async () => {
  const file = await syntheticModel(cases[2][1]);
  const r = spawnSync(process.execPath, [path.join(packageRoot, "dist", "src", "cli.js"), "info", file, "--gpu", "false"],
    { encoding: "utf8", env: { ...process.env, NODE_OPTIONS: "" } });
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/ignored\s+1 tensors llama\.cpp loads but never applies: cls\.output\.weight/);
  expect(r.stdout).toMatch(/exact, linear/);
});
