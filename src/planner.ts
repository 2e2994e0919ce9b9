// The memory plan of a linearization and its analyses, made before anything is allocated
// (issue #10 item 3). Each part is an estimate from the model's shapes, counted the way the
// engine allocates it (native/engine/linearization.cpp, native/engine/runner.cpp); the batch width is what
// the budget leaves after the fixed parts, and a job whose fixed parts alone exceed the
// budget is refused with the numbers. Time estimates are not made yet.
import { freemem } from "node:os";
import { LljError } from "./errors.js";
import type { HyperParameters } from "./gguf.js";

export interface PlanPart {
  name: string;
  bytes: number;
  /** What it is, in a few words. */
  why: string;
}

export interface MemoryPlan {
  /** The budget the plan fits into (bytes): memoryBudget, or 80% of the free memory. */
  budget: number;
  budgetSource: "memoryBudget" | "free memory";
  /** Allocated once per linearization, whatever the batch. */
  fixed: PlanPart[];
  /** One batch column: its activations through one layer (the scheduler reuses buffers across layers). */
  columnBytes: number;
  /** The batch width B the budget leaves (1 … d), and the batch buffers it takes. */
  batch: number;
  batchBytes: number;
  /** The analysis route: the full Jacobian (n·d² floats, then exact SVDs), or matrix-free products. */
  route: "full Jacobian" | "matrix-free";
  /** Parts of the route (the Jacobian and its SVD work; nothing for matrix-free beyond the batch). */
  routeParts: PlanPart[];
  /** The model file, mapped: file-backed pages, evictable, not counted against the budget. */
  mappedBytes: number;
  /** fixed + batch + route parts: the most this job allocates. */
  peakBytes: number;
  /** Why the batch and the route are what they are. */
  reasons: string[];
}

export interface PlanJob {
  nTokens: number;
  mode: "detached" | "ordinary" | "relevance";
  precision: "exact" | "fast";
  /** The analysis wants the full Jacobian (e.g. an exact SVD of every J_i); dropped for matrix-free when it does not fit. */
  wantsJacobian: boolean;
  /** false: the linearization serves single products only (the ordinary contrast's J·x): no SVD parts. Default true. */
  analyses?: boolean;
  memoryBudget?: number;
}

export interface PlanModel {
  hparams: HyperParameters;
  sizeBytes: number;
  tensors: readonly { name: string; type: string; shape: number[] }[];
}

const F32 = 4;

/** The F32 size of the largest layer's weights (what exact mode dequantizes a layer at a time). */
function layerF32Bytes(model: PlanModel): { bytes: number; quantized: boolean } {
  const per = new Map<number, number>();
  let quantized = false;
  for (const t of model.tensors) {
    const m = /^blk\.(\d+)\./.exec(t.name);
    if (!m || t.shape.length < 2) continue;
    if (t.type.toLowerCase() !== "f32") quantized = true;
    per.set(Number(m[1]), (per.get(Number(m[1])) ?? 0) + F32 * t.shape.reduce((a, b) => a * b, 1));
  }
  return { bytes: Math.max(0, ...per.values()), quantized };
}

/** Bytes of one batch column, as native/engine/linearization.cpp sizes it. */
export function columnBytes(h: HyperParameters, n: number, ordinary: boolean): number {
  return F32 * n * (8 * h.nEmbd + 4 * h.nFf + 4 * h.headDim * h.nHead + (ordinary ? 6 * n * h.nHead : 0));
}

export function planMemory(model: PlanModel, job: PlanJob): MemoryPlan {
  const h = model.hparams, n = job.nTokens, d = h.nEmbd, L = h.nLayer, H = h.nHead;
  const ordinary = job.mode !== "detached";
  const budgetSource = job.memoryBudget === undefined ? "free memory" : "memoryBudget";
  const budget = job.memoryBudget ?? Math.floor(0.8 * freemem());
  const fixed: PlanPart[] = [];
  // the frozen record: probabilities n²·H, 1/rms and gates n·(n_ff + 4) per layer (4 bytes each)
  fixed.push({ name: "frozen coefficients", bytes: F32 * L * (n * n * H + n * (h.nFf + 4)), why: "attention probabilities, 1/rms, gates of every layer" });
  if (ordinary) {
    fixed.push({ name: "derivative record", bytes: F32 * L * n * (6 * d + h.headDim * (H + 2 * h.nHeadKv) + h.nFf),
      why: "what the derivative terms read: normed inputs, Q, K, V, act′" });
  }
  // every layer's input, in the native record and in the Linearization's typed arrays
  fixed.push({ name: "layer inputs", bytes: 2 * F32 * (L + 2) * n * d, why: "the residual stream entering each layer (native and JS copies)" });
  const w = layerF32Bytes(model);
  if (job.precision === "exact" && w.quantized) {
    fixed.push({ name: "dequantized weights", bytes: 2 * w.bytes, why: "two layers' weights in F32 at a time (exact products)" });
  }
  fixed.push({ name: "LM head and logits", bytes: F32 * (2 * h.nVocab + d * Math.min(h.nVocab, 4096)), why: "logits and a block of LM-head rows" });
  // products come back as typed arrays; V8 frees them at its next collection, not at once
  fixed.push({ name: "JS heap headroom", bytes: 32 * 2 ** 20, why: "results awaiting V8's next collection" });
  if (job.mode === "detached") {
    // nonlinearReconstruction's ordinary linearization of the same prompt, and its one JVP column
    const o = planMemory(model, { ...job, mode: "ordinary", wantsJacobian: false, analyses: false, memoryBudget: Number.MAX_SAFE_INTEGER });
    fixed.push({ name: "ordinary contrast", bytes: o.fixed.filter((p) => p.name !== "JS heap headroom").reduce((a, p) => a + p.bytes, 0) + o.columnBytes,
      why: "nonlinearReconstruction's ordinary linearization, one column" });
  }
  const fixedBytes = fixed.reduce((a, p) => a + p.bytes, 0);
  const col = columnBytes(h, n, ordinary);
  const reasons: string[] = [];
  const jacobianParts: PlanPart[] = [
    { name: "Jacobian", bytes: 2 * F32 * n * d * d, why: "n·d² floats, native and JS copies" },
    { name: "SVD work", bytes: 3 * 8 * d * d, why: "one d×d block in double, its factors and workspace" },
  ];
  const jacobianBytes = jacobianParts.reduce((a, p) => a + p.bytes, 0);
  const fmt = formatBytes;
  if (fixedBytes + col > budget) {
    throw new LljError(`the job does not fit the memory budget: ${fmt(budget)} (${budgetSource}) against ${fmt(fixedBytes)} of fixed parts ` +
      `(${fixed.map((p) => `${p.name} ${fmt(p.bytes)}`).join(", ")}) plus ${fmt(col)} for one batch column at n = ${n}: ` +
      "raise memoryBudget, or shorten the prompt", { code: "OUT_OF_MEMORY" });
  }
  // matrix-free: every token's Krylov basis and its stored products (16 blocks of k + 10, k ≤ 8)
  const analyses = job.analyses ?? true;
  const krylov: PlanPart = { name: "Krylov bases", bytes: analyses ? 2 * F32 * n * 16 * 18 * d : 0, why: "every position's block Lanczos basis and products (k ≤ 8)" };
  let route: MemoryPlan["route"] = "matrix-free", routeParts: PlanPart[] = analyses ? [krylov] : [];
  if (fixedBytes + col + krylov.bytes > budget) {
    throw new LljError(`the job does not fit the memory budget: ${fmt(budget)} (${budgetSource}) against ${fmt(fixedBytes)} of fixed parts, ` +
      `${fmt(krylov.bytes)} of Krylov bases and ${fmt(col)} for one batch column at n = ${n}: raise memoryBudget, or shorten the prompt`, { code: "OUT_OF_MEMORY" });
  }
  if (job.wantsJacobian && analyses) {
    if (fixedBytes + col + jacobianBytes <= budget) {
      route = "full Jacobian";
      routeParts = jacobianParts;
      reasons.push(`the full Jacobian (${fmt(jacobianBytes)} with its SVD work) fits`);
    } else {
      reasons.push(`the full Jacobian (${fmt(jacobianBytes)}) does not fit beside the fixed parts: matrix-free products instead`);
    }
  }
  const left = budget - fixedBytes - routeParts.reduce((a, p) => a + p.bytes, 0);
  const batch = Math.max(1, Math.min(d, Math.floor(left / col)));
  reasons.push(batch === d ? `B = d = ${d}: every column of a pass in one batch` : `B = ${batch}: ${fmt(left)} left for batches of ${fmt(col)} per column`);
  const batchBytes = batch * col;
  return {
    budget, budgetSource, fixed, columnBytes: col, batch, batchBytes, route, routeParts, mappedBytes: model.sizeBytes,
    peakBytes: fixedBytes + batchBytes + routeParts.reduce((a, p) => a + p.bytes, 0), reasons,
  };
}

export function formatBytes(b: number): string {
  if (b >= 2 ** 30) return `${(b / 2 ** 30).toFixed(2)} GiB`;
  if (b >= 2 ** 20) return `${(b / 2 ** 20).toFixed(1)} MiB`;
  return `${(b / 2 ** 10).toFixed(1)} KiB`;
}

/** The plan as text lines (the CLI's --plan). */
export function formatPlan(p: MemoryPlan): string[] {
  const row = (name: string, bytes: number, why: string) => `  ${name.padEnd(22)} ${formatBytes(bytes).padStart(11)}  ${why}`;
  return [
    `memory budget          ${formatBytes(p.budget)} (${p.budgetSource})`,
    ...p.fixed.map((x) => row(x.name, x.bytes, x.why)),
    row(`batch (B = ${p.batch})`, p.batchBytes, `${formatBytes(p.columnBytes)} per column`),
    ...p.routeParts.map((x) => row(x.name, x.bytes, x.why)),
    row("peak", p.peakBytes, "what this job allocates"),
    row("model file (mapped)", p.mappedBytes, "file-backed pages, evictable; not counted"),
    `route                  ${p.route}`,
    ...p.reasons.map((r) => `  ${r}`),
  ];
}
