// The CLI as a user runs it: output for a real model, one-line errors with exit code 1.
import { spawnSync } from "node:child_process";
import path from "node:path";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { packageRoot } from "../src/native.js";
import { syntheticModel, loadModel, TINY_LLAMA, LljError } from "../src/index.js";
import { STORIES, relErr, matVec, writeArchitectureStub } from "./helpers.js";

const cli = path.join(packageRoot, "dist", "src", "cli.js");
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", env: { ...process.env, NODE_OPTIONS: "" } });

test("info prints the architecture and sizes of stories260K", () => {
  const r = run("info", STORIES, "--gpu", "false");
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/architecture\s+llama/);
  expect(r.stdout).toContain("5 layers, d=64, 8 heads, 4 KV heads");
  expect(r.stdout).toContain("vocab 512");
  expect(r.stdout).toMatch(/tensors\s+48: f32 ×48/);
  expect(r.stdout).toMatch(/devices\s+.*CPU \[cpu\]/);
});

test("`npx llj-gguf` runs as the README says (the bin is executable after every build)", () => {
  const r = spawnSync("npx", ["--no-install", "llj-gguf", "info", STORIES, "--gpu", "false"],
    { cwd: packageRoot, encoding: "utf8", env: { ...process.env, NODE_OPTIONS: "" } });
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/architecture\s+llama/);
});

test("info --json and --tensors", () => {
  const j = JSON.parse(run("info", STORIES, "--json").stdout);
  expect(j.hparams).toMatchObject({ nLayer: 5, nEmbd: 64, nHead: 8, nHeadKv: 4, nVocab: 512 });
  expect(j.tensors).toHaveLength(48);
  const t = run("info", STORIES, "--tensors");
  expect(t.stdout).toMatch(/blk\.4\.ffn_down\.weight\s+f32\s+\[172, 64\]\s+CPU/);
});

test.each([
  [["info", "/no/such/model.gguf"], /model file not found/],
  [["info", path.join(packageRoot, "package.json")], /not a GGUF file/],
  [["info"], /Not enough non-option arguments: got 0, need at least 1/],
  [["frobnicate"], /^llj-gguf: Unknown argument: frobnicate$/m],
])("%j fails with one line and exit code 1", (args, message) => {
  const r = run(...args);
  expect(r.status).toBe(1);
  expect(r.stderr).toMatch(message);
  expect(r.stderr.trim().split("\n").length).toBeLessThanOrEqual(1);
  expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
});

// Model URIs go through node-llama-cpp's resolver. Model hubs cannot be reached from the test
// machines, and these repositories do not exist: either way the answer is one NETWORK line.
test.each([
  ["info", "hf:llj-gguf-test/no-such-repo:Q4_K_M"],
  ["analyze", "hf:llj-gguf-test/no-such-repo/missing.gguf"],
  ["steer", "https://huggingface.co/llj-gguf-test/no-such-repo/resolve/main/missing.gguf"],
])("%s %s (offline, or no such model) fails with one line naming the URI", (command, uri) => {
  const extra = command === "analyze" ? ["Once"] : command === "steer" ? ["--concept", "A dog", "--prompt", "Once"] : [];
  const r = spawnSync(process.execPath, [cli, command, uri, ...extra, "--gpu", "false"],
    { encoding: "utf8", env: { ...process.env, NODE_OPTIONS: "", LLJ_GGUF_CONNECT_TIMEOUT: "5" }, timeout: 60_000 });
  expect(r.status).toBe(1);
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
  expect(r.stderr).toContain(`llj-gguf: cannot download ${uri}: `);
  expect(r.stderr).toMatch(/check the (URI and the )?network connection.*or pass a local \.gguf path/);
});

test("the API resolves URIs the same way: NETWORK, naming the URI", async () => {
  const e = await loadModel({ modelPath: "hf:llj-gguf-test/no-such-repo:Q4_K_M", gpu: false }).then(() => null, (x: unknown) => x);
  expect(e).toBeInstanceOf(LljError);
  expect((e as LljError).code).toBe("NETWORK");
  expect((e as LljError).message).toMatch(/^cannot download hf:llj-gguf-test\/no-such-repo:Q4_K_M: /);
});

test("--debug adds the stack trace to the one-line error", () => {
  const r = run("info", "/no/such/model.gguf", "--debug");
  expect(r.status).toBe(1);
  expect(r.stderr.split("\n")[0]).toMatch(/^llj-gguf: .*model file not found/);
  expect(r.stderr).toMatch(/\n\s+at /);
});

test("a GPU that is not there is an error, not a crash", () => {
  const r = run("info", STORIES, "--gpu", "cuda");
  if (r.status === 0) expect(r.stdout).toMatch(/GPU backend\s+CUDA/);
  else expect(r.stderr).toMatch(/gpu: "cuda" was requested but no cuda device could be used/);
});

test("demo --synthetic runs on a generated model without any download", async () => {
  const { mkdtempSync } = await import("node:fs");
  const os = await import("node:os");
  const r = run("demo", "--synthetic", "--report", path.join(mkdtempSync(path.join(os.tmpdir(), "llj-demo-")), "synthetic.html"));
  expect(r.status).toBe(0);
  expect(r.stdout).toContain("2 layers, d=256, 4 heads, 2 KV heads");
  expect(r.stdout).toMatch(/next token\s+".*" \(id \d+\)/);
  expect(Number(/detached\s+‖[^=]+= ([0-9.e+-]+)/.exec(r.stdout)![1])).toBeLessThan(1e-5);
});

test("analyze prints the prediction, the exact reconstruction, the contrast and a token table", () => {
  const r = run("analyze", STORIES, "Once upon a time, there was a little", "--gpu", "false");
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/predicted\s+" g" \(id 298/);
  const detached = Number(/detached\s+‖[^=]+= ([0-9.e+-]+)/.exec(r.stdout)![1]);
  const ordinary = Number(/non-detached\s+‖[^=]+= ([0-9.e+-]+)/.exec(r.stdout)![1]);
  expect(detached).toBeLessThan(1e-5);
  expect(ordinary).toBeGreaterThan(100 * detached);
  const rows = r.stdout.split("\n").filter((l) => /^\s+\d+\s+".*"\s+[0-9.]+\s/.test(l));
  expect(rows).toHaveLength(10);
  expect(rows[9]).toContain('" little"');
  // the logit column sums (no bias: a linear model) to the predicted logit
  const logits = rows.map((l) => Number(/\s(-?\d+\.\d{3})\s+█/.exec(l)![1]));
  expect(Math.abs(logits.reduce((a, b) => a + b, 0) - 16.951)).toBeLessThan(0.01);
  expect(r.stdout).toMatch(/σ1 =\s+[0-9.]+\s+u → " g"/);
  expect(r.stdout).toMatch(/v → " little"/);
  expect(r.stdout).toContain("the linear system reproduces the output");
});

test("analyze --precision fast says what its larger reconstruction error means", async () => {
  const q8 = await syntheticModel(TINY_LLAMA, "Q8_0");
  const r = run("analyze", q8, "Once upon a time", "--precision", "fast", "--gpu", "false");
  expect(r.status).toBe(0);
  expect(Number(/detached\s+‖[^=]+= ([0-9.e+-]+)/.exec(r.stdout)![1])).toBeGreaterThan(1e-4);
  expect(r.stdout).toContain("quantized kernels round the activations too: --precision exact gives the exact system");
  expect(r.stdout).not.toContain("the linear system reproduces the output");
});

test("analyze --layers adds the emergence table", () => {
  const r = run("analyze", STORIES, "Once upon a time, there was a little", "--layers");
  expect(r.status).toBe(0);
  const rows = r.stdout.split("\n").filter((l) => /^\s+layer\s+\d+\s+σ1 =/.test(l));
  expect(rows).toHaveLength(5);
  expect(rows[0]).toContain('" little"');
  expect(rows[4]).toContain('" g"');
});

test("analyze --json: the values, against the model and an explicit Jacobian", async () => {
  const j = JSON.parse(run("analyze", STORIES, "One day", "--json").stdout);
  const model = await loadModel({ modelPath: STORIES, gpu: false });
  try {
    expect(j.tokens).toEqual(model.tokenize("One day"));
    expect(j.detached.relativeError).toBeLessThan(1e-5);
    expect(j.biasTermRelativeNorm).toBeNull();
    // llama.cpp's own forward predicts the same token, and the contributions sum to its logit
    const ref = await model.referenceForward("One day");
    expect(j.predictedToken).toBe(ref.topToken);
    expect(j.predictedLogit).toBeCloseTo(ref.logits[ref.topToken], 3);
    expect(j.logitContributions.reduce((a: number, b: number) => a + b, 0)).toBeCloseTo(ref.logits[ref.topToken], 3);
    // ‖J_i x_i‖ and σ1..σ3 of J_last from the explicit Jacobian (singular values as eigenvalues of JᵀJ, in double)
    await using lin = await model.linearize("One day");
    const J = await lin.jacobian(), d = lin.nEmbd, n = lin.nTokens;
    for (let i = 0; i < n; i++) {
      const y = matVec(J.block(i), d, d, lin.inputEmbeddings.subarray(i * d, (i + 1) * d));
      expect(j.contributionNorms[i]).toBeCloseTo(Math.hypot(...y), 4);
    }
    const B = J.block(n - 1), G = new Float64Array(d * d);
    for (let a = 0; a < d; a++) for (let b = 0; b < d; b++) {
      let acc = 0;
      for (let k = 0; k < d; k++) acc += B[k * d + a] * B[k * d + b];
      G[a * d + b] = acc;
    }
    expect(j.singular.values).toHaveLength(3);
    const sigma = topEigenvalues(G, d, 3).map(Math.sqrt);
    j.singular.values.forEach((v: number, k: number) => expect(Math.abs(v - sigma[k]) / sigma[0]).toBeLessThan(1e-5));
  } finally {
    await model.dispose();
  }
});

/** The k largest eigenvalues of a symmetric d × d matrix, by deflated power iteration in double. */
function topEigenvalues(G: Float64Array, d: number, k: number): number[] {
  const A = Float64Array.from(G), out: number[] = [];
  for (let e = 0; e < k; e++) {
    let v = new Float64Array(d).map((_, i) => Math.sin(i + 1 + e));
    let lambda = 0;
    for (let it = 0; it < 5000; it++) {
      const w = new Float64Array(d);
      for (let a = 0; a < d; a++) for (let b = 0; b < d; b++) w[a] += A[a * d + b] * v[b];
      const nw = Math.hypot(...w);
      v = w.map((x) => x / nw);
      if (Math.abs(nw - lambda) < 1e-13 * nw) break;
      lambda = nw;
    }
    out.push(lambda);
    for (let a = 0; a < d; a++) for (let b = 0; b < d; b++) A[a * d + b] -= lambda * v[a] * v[b];
  }
  return out;
}

test("analyze with an empty prompt fails cleanly", () => {
  const r = run("analyze", STORIES, "");
  expect(r.status).toBe(1);
  expect(r.stderr).toMatch(/the prompt is empty/);
  expect(r.stderr).not.toMatch(/\n\s+at /);
});

test("info lists tensors llama.cpp loads but never applies", async () => {
  const { syntheticModel, TINY_LLAMA } = await import("../src/index.js");
  const file = await syntheticModel({ ...TINY_LLAMA, nLayer: 1, seed: 31, inputScales: true }, "F32");
  const r = run("info", file);
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/ignored\s+7 tensors llama\.cpp loads but never applies: blk\.0\.attn_k\.input_scale/);
});

test("analyze --json FILE and --npy DIR write everything, and it loads back", async () => {
  const { mkdtempSync, readFileSync } = await import("node:fs");
  const os = await import("node:os");
  const { readNpy, loadModel } = await import("../src/index.js");
  const dir = mkdtempSync(path.join(os.tmpdir(), "llj-npy-"));
  const r = run("analyze", STORIES, "Once upon a time", "--npy", path.join(dir, "arrays"), "--json", path.join(dir, "a.json"));
  expect(r.status).toBe(0);
  const manifest = JSON.parse(readFileSync(path.join(dir, "arrays", "manifest.json"), "utf8"));
  const json = JSON.parse(readFileSync(path.join(dir, "a.json"), "utf8"));
  expect(manifest.summary.tokens).toEqual(json.tokens);
  const n = json.tokens.length, d = 64;
  const J = readNpy(path.join(dir, "arrays", "jacobian.npy"));
  const x = readNpy(path.join(dir, "arrays", "embeddings.npy"));
  const y = readNpy(path.join(dir, "arrays", "output.npy"));
  expect(J.shape).toEqual([n, d, d]);
  expect(x.shape).toEqual([n, d]);
  expect(Array.from(readNpy(path.join(dir, "arrays", "tokens.npy")).data)).toEqual(json.tokens);
  // Σ_i J_i x_i = y from the files alone
  const sum = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let k = 0; k < d; k++) for (let c = 0; c < d; c++) sum[k] += J.data[(i * d + k) * d + c] * x.data[i * d + c];
  expect(relErr(sum, y.data)).toBeLessThan(1e-5);
  // the same numbers as the API
  const model = await loadModel({ modelPath: STORIES, gpu: false });
  try {
    const lin = await model.linearize("Once upon a time");
    expect(relErr(y.data, lin.output)).toBeLessThan(1e-6);
    expect(relErr(Float32Array.from(json.arrays.singularValues), (await lin.svd({ k: 3 })).values)).toBeLessThan(1e-5);
    expect(relErr(readNpy(path.join(dir, "arrays", "u.npy")).data, Float32Array.from(json.arrays.u))).toBeLessThan(1e-6);
  } finally {
    await model.dispose();
  }
});

test("info on an architecture llj-gguf does not linearize says so, and why, up front", async () => {
  const { mkdtempSync } = await import("node:fs");
  const os = await import("node:os");
  const f = await writeArchitectureStub(path.join(mkdtempSync(path.join(os.tmpdir(), "llj-arch-")), "rwkv.gguf"), "rwkv6", 2);
  const r = run("info", f);
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/architecture\s+rwkv6/);
  expect(r.stdout).toMatch(/linearization not supported: its layers carry a recurrent state/);
  expect(r.stdout).toContain("2 layers, d=16");
  // analyzing it is one line naming the architecture, why, and what is supported
  const a = run("analyze", f, "Once", "--gpu", "false");
  expect(a.status).toBe(1);
  expect(a.stderr.trim().split("\n")).toHaveLength(1);
  expect(a.stderr).toMatch(/^llj-gguf: .*rwkv6.*recurrent state.*\(supported: llama, .*gemma3.*\)/);
});

test("--help lists every command, and each command's help has an example", () => {
  const top = run("--help");
  expect(top.status).toBe(0);
  for (const c of ["info <model>", "analyze <model> <prompt>", "report <summary>", "demo"]) expect(top.stdout).toContain(`llj-gguf ${c}`);
  expect(top.stdout).toMatch(/Examples:\n\s+llj-gguf demo/);
  for (const c of ["info", "analyze", "report", "demo"]) {
    const r = run(c, "--help");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`Examples:\\n\\s+llj-gguf ${c}`));
  }
});

test("analyze --json with no file prints only the summary on stdout, even with --report (its path goes to stderr)", async () => {
  const { mkdtempSync, existsSync } = await import("node:fs");
  const os = await import("node:os");
  const report = path.join(mkdtempSync(path.join(os.tmpdir(), "llj-json-")), "r.html");
  const r = run("analyze", STORIES, "Once upon a time, there was a little", "--json", "--report", report, "--gpu", "false");
  expect(r.status).toBe(0);
  const j = JSON.parse(r.stdout);
  expect(j.predictedTokenText).toBe(" g");
  expect(j.topPredictions[0].text).toBe(" g");
  expect(j.reconstruction.output).toHaveLength(64);
  expect(j.positions).toHaveLength(10);
  expect(r.stderr).toBe(`report        ${report}\n`);
  expect(existsSync(report)).toBe(true);
});

test("--quiet: no tables, only the paths of the files written", async () => {
  const { mkdtempSync } = await import("node:fs");
  const os = await import("node:os");
  const dir = mkdtempSync(path.join(os.tmpdir(), "llj-quiet-"));
  const r = run("analyze", STORIES, "One day", "--quiet", "--report", path.join(dir, "r.html"), "--json", path.join(dir, "s.json"));
  expect(r.status).toBe(0);
  expect(r.stderr).toBe("");
  expect(r.stdout).toBe(`${path.join(dir, "s.json")}\n${path.join(dir, "r.html")}\n`);
});

test("analyze prints every input position's own J_i: σ1 and decoded u1/v1, the SVDs of the API", async () => {
  const prompt = "Once upon a time, there was a little";
  const r = run("analyze", STORIES, prompt, "--gpu", "false");
  expect(r.status).toBe(0);
  const lines = r.stdout.split("\n");
  const head = lines.findIndex((l) => l.startsWith("every input position i"));
  expect(head).toBeGreaterThan(0);
  const model = await loadModel({ modelPath: STORIES, gpu: false });
  try {
    const lin = await model.linearize(prompt);
    const each = await lin.svd({ token: "each", k: 1 });
    expect(each.positions).toHaveLength(lin.nTokens);
    for (let i = 0; i < lin.nTokens; i++) {
      const row = lines[head + 1 + i];
      expect(row).toMatch(new RegExp(`^\\s+${i}\\s`));
      expect(row).toContain(`σ1 = ${each.positions[i].values[0].toFixed(3)}`);
      const u1 = (await lin.decode(each.positions[i].u.slice(0, lin.nEmbd), { space: "output", top: 1 }))[0][0].text;
      expect(row).toContain(`u → ${JSON.stringify(u1)}`);
    }
  } finally {
    await model.dispose();
  }
});

test("lens fit writes the published artifact; lens show reads a prompt through it, layer by position; lens intervene edits in its directions", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "llj-cli-lens-"));
  const corpus = path.join(dir, "corpus.txt"), out = path.join(dir, "lens.pt");
  writeFileSync(corpus, "Once upon a time, there was a little girl named Lily. She loved to play outside.\n" +
    "One day, a big dog came to the park and saw a red ball under the tree near the pond.\nHi.\n");
  const f = run("lens", "fit", STORIES, "--corpus", corpus, "-o", out, "--min-position", "4", "--layers", "1-3", "--gpu", "false");
  expect(f.stderr).toBe("");
  expect(f.status).toBe(0);
  expect(f.stdout).toMatch(/jlens lens of layers 1, 2, 3 on 2 prompts \(1 too short\)/);
  const s = run("lens", "show", STORIES, "Once upon a time, there was a little girl named", "--lens", out, "--json", "--positions", "2", "--gpu", "false");
  expect(s.status).toBe(0);
  const r = JSON.parse(s.stdout);
  expect(r.readout.map((x: { layer: number }) => x.layer)).toEqual([1, 1, 2, 2, 3, 3, 4, 4]);
  expect(r.estimator).toBe("jlens");
  const bad = run("lens", "show", STORIES, "x", "--lens", out, "--layers", "0", "--gpu", "false");
  expect(bad.status).toBe(1);
  expect(bad.stderr).toMatch(/layer 0 is not in the lens/);
  // lens intervene: α = 0 leaves the continuation; projecting a token's direction out lowers its log-probability (measured −10.0 → −13.2)
  const prompt = "Tom and his mom went to the";
  const zero = run("lens", "intervene", STORIES, prompt, "--lens", out, "--layers", "1-3", "--steer", "mom", "--alpha", "0", "--gpu", "false");
  expect(zero.status).toBe(0);
  const line = (o: string, k: string) => o.split("\n").find((x) => x.startsWith(k))!.slice(14);
  expect(line(zero.stdout, "edited")).toBe(line(zero.stdout, "plain"));
  const ab = run("lens", "intervene", STORIES, prompt, "--lens", out, "--layers", "1-3", "--ablate", "id:357", "--gpu", "false");
  expect(ab.status).toBe(0);
  const [before, after] = /at the first step: (-?[\d.]+) → (-?[\d.]+)/.exec(ab.stdout)!.slice(1).map(Number);
  expect(after).toBeLessThan(before - 1);
  const multi = run("lens", "intervene", STORIES, prompt, "--lens", out, "--layers", "1", "--ablate", "grandmother", "--gpu", "false");
  expect(multi.status).toBe(1);
  expect(multi.stderr).toMatch(/"grandmother" is \d+ tokens .*one token, or id:N/);
  const none = run("lens", "intervene", STORIES, prompt, "--lens", out, "--layers", "1", "--gpu", "false");
  expect(none.stderr).toMatch(/give one of --steer/);
  const noCorpus = run("lens", "fit", STORIES, "--corpus", path.join(dir, "none.txt"), "-o", out, "--gpu", "false");
  expect(noCorpus.stderr).toMatch(/cannot read the corpus/);
});
