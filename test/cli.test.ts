// The CLI as a user runs it: output for a real model, one-line errors with exit code 1.
import { spawnSync } from "node:child_process";
import path from "node:path";
import { packageRoot } from "../src/native.js";
import { STORIES } from "./helpers.js";

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
  [["info"], /Not enough non-option arguments|model/],
  [["frobnicate"], /Unknown argument|Unknown command/i],
])("%j fails with one line and exit code 1", (args, message) => {
  const r = run(...args);
  expect(r.status).toBe(1);
  expect(r.stderr).toMatch(message);
  expect(r.stderr.trim().split("\n").length).toBeLessThanOrEqual(1);
  expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
});

test("a GPU that is not there is an error, not a crash", () => {
  const r = run("info", STORIES, "--gpu", "cuda");
  if (r.status === 0) expect(r.stdout).toMatch(/GPU backend\s+CUDA/);
  else expect(r.stderr).toMatch(/gpu: "cuda" was requested but no cuda device could be used/);
});

test("demo runs on a generated model without any download", () => {
  const r = run("demo");
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
});

test("analyze --layers adds the emergence table", () => {
  const r = run("analyze", STORIES, "Once upon a time, there was a little", "--layers");
  expect(r.status).toBe(0);
  const rows = r.stdout.split("\n").filter((l) => /^\s+layer\s+\d+\s+σ1 =/.test(l));
  expect(rows).toHaveLength(5);
  expect(rows[0]).toContain('" little"');
  expect(rows[4]).toContain('" g"');
});

test("analyze --json", () => {
  const j = JSON.parse(run("analyze", STORIES, "One day", "--json").stdout);
  expect(j.tokens).toHaveLength(3);
  expect(j.detached.relativeError).toBeLessThan(1e-5);
  expect(j.contributionNorms).toHaveLength(3);
  expect(j.biasTermRelativeNorm).toBeNull();
  expect(j.logitContributions).toHaveLength(3);
  expect(j.singular.values).toHaveLength(3);
});

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
