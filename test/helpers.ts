// Shared test helpers: where the test data lives, and reading raw F32 tensors from a GGUF
// in JS (independently of llama.cpp) to check what llama.cpp computes.
import { existsSync, openSync, readSync, closeSync } from "node:fs";
import path from "node:path";
import { readGgufFileInfo } from "node-llama-cpp";
import { packageRoot, getAddon } from "../src/native.js";
import { initBackends } from "../src/backends.js";
import { gaussians, uniformStream } from "../src/random.js";
import type { Linearization, LayerTap } from "../src/index.js";

/** The trained TinyStories model (models/README.md), read from ../shared/models. */
export const STORIES = process.env.LLJ_TEST_STORIES ?? path.resolve(packageRoot, "..", "shared", "models", "stories260K.gguf");
if (!existsSync(STORIES)) throw new Error(`test model not found at ${STORIES} (set LLJ_TEST_STORIES)`);

/** Reads an F32 tensor's data straight from the file: [ne1 rows × ne0 columns] row-major. */
export async function readF32Tensor(file: string, name: string): Promise<{ data: Float32Array; shape: number[] }> {
  const info = await readGgufFileInfo(file, { readTensorInfo: true });
  const t = (info.fullTensorInfo ?? []).find((x) => x.name === name);
  if (!t) throw new Error(`no tensor ${name} in ${file}`);
  if (Number(t.ggmlType) !== 0) throw new Error(`tensor ${name} is not F32`);
  const shape = t.dimensions.map(Number);
  const n = shape.reduce((a, b) => a * b, 1);
  const buf = Buffer.alloc(n * 4);
  const fd = openSync(file, "r");
  try {
    readSync(fd, buf, 0, buf.length, Number(t.fileOffset));
  } finally {
    closeSync(fd);
  }
  return { data: new Float32Array(buf.buffer, buf.byteOffset, n).slice(), shape };
}

/** y = W x for W stored as [rows × cols] row-major (GGUF [cols, rows]). */
export function matVec(w: Float32Array, rows: number, cols: number, x: ArrayLike<number>): Float64Array {
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0; c < cols; c++) s += w[r * cols + c] * x[c];
    y[r] = s;
  }
  return y;
}

export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num) / Math.sqrt(den);
}

export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

export const PROMPT = "Once upon a time, there was a little";

/**
 * Standard normals from one seeded stream per test file (each file runs in its own module
 * registry): every run draws the same numbers, so a failure reproduces.
 */
const testStream = uniformStream(20261202);
export function randn(n: number): Float32Array {
  return gaussians(n, testStream);
}
export const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => { let s = 0; for (let i = 0; i < a.length; i++) s += a[i] * b[i]; return s; };
export const norm = (a: ArrayLike<number>) => Math.sqrt(dot(a, a));

/** ⟨L v, u⟩ against ⟨v, Lᵀ u⟩ for fresh random u, v; returns the error relative to ‖Lv‖‖u‖. */
export async function adjointError(lin: Linearization, allPositions = false, zeroPrefix = 0): Promise<number> {
  const n = lin.nTokens, d = lin.nEmbd;
  const v = randn(n * d), u = randn((allPositions ? n : 1) * d);
  v.fill(0, 0, zeroPrefix * d);  // a zero prefix lets the JVP skip those positions (causality)
  const lv = await lin.jvp(v, { allPositions });
  const ltu = await lin.vjp(u, { allPositions });
  return Math.abs(dot(lv, u) - dot(v, ltu)) / (norm(lv) * norm(u));
}

/**
 * Passes restricted to positions [p0, n) (causality) against full passes: the relative
 * difference of the VJP there, and of the JVP of tangents that are zero before p0 — rounding
 * only when the restricted passes are exact.
 */
export async function truncatedPassError(lin: Linearization, allPositions: boolean, p0: number, tap: LayerTap = {}): Promise<number> {
  const n = lin.nTokens, d = lin.nEmbd, m = n - p0, B = 3;
  const suffix = (x: Float32Array) => {  // [B, n, d] → its positions [p0, n), [B, m, d]
    const out = new Float32Array(B * m * d);
    for (let b = 0; b < B; b++) out.set(x.subarray((b * n + p0) * d, (b + 1) * n * d), b * m * d);
    return out;
  };
  const u = randn(B * (allPositions ? n : 1) * d);
  const fullVjp = await lin.vjp(u, { allPositions, ...tap });
  const partVjp = await lin.vjp(allPositions ? suffix(u) : u, { allPositions, ...tap, firstPosition: p0 });
  expect(partVjp).toHaveLength(B * m * d);
  const v = randn(B * n * d);
  for (let b = 0; b < B; b++) v.fill(0, b * n * d, (b * n + p0) * d);
  const fullJvp = await lin.jvp(v, { allPositions, ...tap });
  const partJvp = await lin.jvp(suffix(v), { allPositions, ...tap, firstPosition: p0 });
  expect(partJvp).toHaveLength(B * (allPositions ? m : 1) * d);
  return Math.max(relErr(partVjp, suffix(fullVjp)), relErr(partJvp, allPositions ? suffix(fullJvp) : fullJvp));
}

/**
 * A header-only GGUF of some other architecture (d = 16, one token_embd tensor): enough for
 * llj-gguf to read and refuse, not a model llama.cpp could run.
 */
export async function writeArchitectureStub(file: string, architecture: string, layers: number): Promise<string> {
  initBackends(false);
  await getAddon().writeGguf({ path: file,
    kv: [
      { key: "general.architecture", type: "str", value: architecture },
      { key: `${architecture}.embedding_length`, type: "u32", value: 16 },
      { key: `${architecture}.block_count`, type: "u32", value: layers },
    ],
    tensors: [{ name: "token_embd.weight", shape: [16, 8], init: { kind: "normal", a: 0, b: 1, seed: 1 } }],
  });
  return file;
}

/**
 * The detached final norm at the concept's layer-l state, N = diag(w · r_l), from the model's
 * own outputs: w by least squares from y = w ⊙ r h at the final layer over every position (the
 * final norm's definition), r_l = 1/rms of the layer-l stream at the last position.
 */
export function finalNormAt(lin: { hidden: Float32Array; finalResidual: Float32Array; layerInputs: Float32Array[]; nTokens: number; nEmbd: number }, layer: number, eps: number): Float64Array {
  const d = lin.nEmbd, n = lin.nTokens;
  const rms = (v: Float32Array, k: number) => {
    let s = 0;
    for (let c = 0; c < d; c++) s += v[k * d + c] ** 2;
    return 1 / Math.sqrt(s / d + eps);
  };
  const w = new Float64Array(d);
  for (let c = 0; c < d; c++) {
    let num = 0, den = 0;
    for (let k = 0; k < n; k++) {
      const x = rms(lin.finalResidual, k) * lin.finalResidual[k * d + c];
      num += lin.hidden[k * d + c] * x;
      den += x * x;
    }
    w[c] = num / den;
  }
  const h = layer + 1 < lin.layerInputs.length ? lin.layerInputs[layer + 1] : lin.finalResidual;
  const r = rms(h, n - 1);
  return w.map((x) => x * r);
}

