// `npx llj-gguf demo`: the trained stories260K shipped in the package, analysed with no
// download, its report written where it says.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { packageRoot } from "../src/native.js";
import { STORIES } from "./helpers.js";

const SHA256 = "270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d";  // models/README.md
const shipped = path.join(packageRoot, "models", "stories260K.gguf");
const sha256 = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");

test("the shipped demo model is the shared stories260K, byte for byte, with its licence beside it", () => {
  expect(sha256(shipped)).toBe(SHA256);
  expect(sha256(STORIES)).toBe(SHA256);
  expect(readFileSync(path.join(packageRoot, "models", "LICENSE"), "utf8")).toMatch(/MIT License[\s\S]*Copyright \(c\) 2023 Andrej Karpathy/);
  expect(readFileSync(path.join(packageRoot, "models", "README.md"), "utf8")).toContain(SHA256);
  const pkg = JSON.parse(readFileSync(path.join(packageRoot, "package.json"), "utf8")) as { files: string[] };
  expect(pkg.files).toContain("models");
});

test("`npx llj-gguf demo` analyses the real model: \" g\", σ1's left vector, the emergence table, the report path", () => {
  const report = path.join(mkdtempSync(path.join(os.tmpdir(), "llj-demo-")), "demo.html");
  const r = spawnSync("npx", ["--no-install", "llj-gguf", "demo", "--gpu", "false", "--report", report],
    { cwd: packageRoot, encoding: "utf8", env: { ...process.env, NODE_OPTIONS: "" } });
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
  expect(r.stdout).toContain("stories260K");
  expect(r.stdout).toMatch(/prompt\s+"Once upon a time, there was a little" \(10 tokens\)/);
  expect(r.stdout).toMatch(/predicted\s+" g" \(id 298/);
  expect(r.stdout).toMatch(/σ1 =\s+[0-9.]+\s+u → " g"/);
  expect(r.stdout).toContain("the linear system reproduces the output");
  const layers = r.stdout.split("\n").filter((l) => /^\s+layer\s+\d+\s+σ1 =/.test(l));
  expect(layers).toHaveLength(5);
  expect(layers[4]).toMatch(/σ1 =\s+[0-9.]+\s+" g"/);
  expect(r.stdout).toContain(`report        ${report}`);
  const html = readFileSync(report, "utf8");
  expect(html).toContain('<span class="pred">␣g</span>');
  expect(html).toContain('data-chart="emergence"');
});

test("demo writes llj-gguf-demo.html in the working directory by default, and --quiet prints only its path", () => {
  const cwd = mkdtempSync(path.join(os.tmpdir(), "llj-demo-"));
  const r = spawnSync(process.execPath, [path.join(packageRoot, "dist", "src", "cli.js"), "demo", "--quiet"],
    { cwd, encoding: "utf8", env: { ...process.env, NODE_OPTIONS: "" } });
  expect(r.status).toBe(0);
  expect(r.stderr).toBe("");
  expect(r.stdout).toBe(`${path.join(cwd, "llj-gguf-demo.html")}\n`);
  expect(existsSync(path.join(cwd, "llj-gguf-demo.html"))).toBe(true);
});
