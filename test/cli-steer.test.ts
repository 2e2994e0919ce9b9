// `llj-gguf steer` as a user runs it: both continuations, the log-probability table, the
// exported control vector, JSON, one-line errors, Ctrl-C.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { packageRoot } from "../src/native.js";
import { STORIES } from "./helpers.js";

const cli = path.join(packageRoot, "dist", "src", "cli.js");
const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", env: { ...process.env, NODE_OPTIONS: "" } });
const dir = mkdtempSync(path.join(os.tmpdir(), "llj-steer-cli-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("steer prints the unsteered and steered continuations side by side, the log-probability shift, and exports a control vector", () => {
  const cvec = path.join(dir, "dog.gguf");
  const r = run("steer", STORIES, "--gpu", "false", "--concept", "Tom had a pet dog. The dog", "--prompt", "Once upon a time,", "--tokens", "16", "--export-cvec", cvec);
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/its Jacobian at layer 2, added after layer 1, λ = 1/);
  expect(r.stdout).toMatch(/unsteered \(llama\.cpp\)\s+│ steered \(λ = 1, our graph\)/);
  expect(r.stdout).toMatch(/^there was a little girl named Lily.*│ there was a little girl named Lily/m);
  expect(r.stdout).toMatch(/\(any of them\)\s+-?\d+\.\d{3}\s+-?\d+\.\d{3}\s+[+-]\d+\.\d{3}\s+-?\d+\.\d{3}/);
  expect(r.stdout).toContain(`control vector ${cvec}: direction.1`);
  expect(existsSync(cvec)).toBe(true);
});

test("steer --help has examples", () => {
  const r = run("steer", "--help");
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/Examples:\n\s+llj-gguf steer/);
  expect(r.stdout).toContain("--export-cvec");
});

test("steer --json: the continuations, the concept's top tokens and their mean log-probabilities", () => {
  const r = run("steer", STORIES, "--gpu", "false", "--concept", "He liked to eat the red", "--prompt", "One day, a little boy", "--tokens", "12", "--json", "--lambda", "0");
  expect(r.status).toBe(0);
  const j = JSON.parse(r.stdout);
  expect(j.layer).toBe(2);
  expect(j.injectLayer).toBe(1);
  expect(j.lambda).toBe(0);
  expect(j.topTokens).toHaveLength(5);
  expect(j.unsteered.tokens).toHaveLength(12);
  // λ = 0: the same continuation through our graph as through llama.cpp
  expect(j.steered.tokens).toEqual(j.unsteered.tokens);
  expect(j.steered.meanLogProbs.set).toBeCloseTo(j.unsteered.meanLogProbs.set, 4);
});

test.each([
  [["--tokens", "0"], /maxTokens must be an integer/],
  [["--layer", "7"], /layer must be an integer in \[0, 5\)/],
  [["--export-cvec", "/no/such/dir/x.gguf"], /x\.gguf/],
])("steer %j fails with one line and exit 1", (extra, message) => {
  const r = run("steer", STORIES, "--gpu", "false", "--concept", "A dog", "--prompt", "Once", ...extra);
  expect(r.status).toBe(1);
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
  expect(r.stderr).toMatch(message);
});

test("Ctrl-C stops steer within a second: one line, exit 130", async () => {
  // 1500 steered tokens recomputed in full each: minutes of work uninterrupted
  const child = spawn(process.execPath, [cli, "steer", STORIES, "--gpu", "false", "--concept", "A dog", "--prompt", "Once upon a time,", "--tokens", "1500", "--ignore-eos"],
    { env: { ...process.env, NODE_OPTIONS: "" }, stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (b) => (stderr += b));
  const done = new Promise<{ status: number | null; signal: string | null }>((r) => child.on("close", (status, signal) => r({ status, signal })));
  await new Promise((r) => setTimeout(r, 3000));
  const t0 = Date.now();
  child.kill("SIGINT");
  const killer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  const r = await done;
  clearTimeout(killer);
  expect({ ...r, stderr: stderr.trim() }).toEqual({ status: 130, signal: null, stderr: "llj-gguf: interrupted (Ctrl-C)" });
  expect(Date.now() - t0).toBeLessThan(1000);
});
