// The analysis of one prompt as one plain object: what the CLI prints, `--json` writes and the
// HTML report draws (src/html-report.ts reads only this, so a saved summary redraws the same
// report). Any caller can make one: `summarize(model, prompt)`.
import type { Model } from "../model.js";
import type { Linearization, NonlinearReconstruction } from "../linearization.js";
import type { Reconstruction } from "./reconstruction.js";
import type { SingularTriplets } from "./svd.js";

export interface AnalysisSummary {
  prompt: string;
  tokens: number[];
  tokenTexts: string[];
  predictedToken: number;
  predictedTokenText: string;
  predictedLogit: number;
  precision: string;
  affine: boolean;
  detached: { relativeError: number; maxAbsError: number };
  nonDetached: { relativeError: number; maxAbsError: number; method: "ordinary" | "difference"; epsilon: number | null };
  biasTermRelativeNorm: number | null;
  contributionNorms: number[];
  /** W_U[predicted]·J_i x_i per position (sums with the bias terms to the predicted logit). */
  logitContributions: number[];
  logitBiasContribution: number;
  /** Leading singular triplets of the last position's J_i, decoded. */
  singular: { values: number[]; u: string[][]; v: string[][] } | null;
  singularNote?: string;
  /**
   * With --layers: per layer, σ1 of the last token's residual-stream Jacobian and its top
   * decoded tokens; `values` holds its leading singular values (σ1 first).
   */
  emergence?: Array<{ layer: number; value: number; values?: number[]; tokens: string[] }>;
  seconds: number;
  // What the HTML report draws (src/html-report.ts reads only this summary, so a saved --json makes the same report).
  /** The model the prompt ran through. */
  model?: { path: string; architecture: string; description: string; nEmbd: number; nLayer: number; nVocab: number };
  /** The most likely next tokens, softmax of the logits. */
  topPredictions?: Array<{ id: number; text: string; logit: number; probability: number }>;
  /** y, the detached Σ J_i x_i (+ c) and the ordinary f′(x)·x, each [d] (the paper's Fig. 2). */
  reconstruction?: { output: number[]; detached: number[]; nonDetached: number[] };
  /**
   * Singular values of J_i per position: all of them on the exact route (d ≤ 256, every
   * position when the prompt is short), else the last token's converged top-k.
   */
  spectra?: { method: "exact" | "randomized"; rows: Array<{ position: number; values: number[] }> };
  /** Per position i (same positions as `spectra`): σ1 of J_i, its left vector through the LM head, its right vector's nearest embeddings. */
  positions?: Array<{ position: number; sigma1: number; u: string[]; v: string[] }>;
  /** J_last [d × d] row-major (∂y_k/∂x_{n,c} at k·d + c), for d ≤ 128. */
  jacobianLast?: { d: number; data: number[] } | null;
}

/** Per-position spectra and decoded vectors use the exact route; beyond these sizes only the last token is shown. */
export const PER_POSITION_MAX_EMBD = 256;
export const PER_POSITION_MAX_TOKENS = 128;
/** Beyond d = 256, every position's top-3 comes from the one-sweep matrix-free SVD, for prompts up to this length. */
export const SWEEP_MAX_TOKENS = 64;
/** J_last is drawn cell by cell (d² marks): only for small d. */
export const JACOBIAN_HEATMAP_MAX_EMBD = 128;
const TOP_PREDICTIONS = 10;
const DECODE_TOP = 5;

export type ReportFields = Required<Pick<AnalysisSummary, "model" | "topPredictions" | "reconstruction" | "spectra" | "positions" | "jacobianLast">>;

function topPredictions(model: Model, logits: Float32Array): ReportFields["topPredictions"] {
  let max = -Infinity;
  for (const l of logits) max = Math.max(max, l);
  let z = 0;
  for (const l of logits) z += Math.exp(l - max);
  const order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]).slice(0, TOP_PREDICTIONS);
  const texts = model.tokenPieces(order);
  return order.map((id, j) => ({ id, text: texts[j], logit: logits[id], probability: Math.exp(logits[id] - max) / z }));
}

/**
 * The report's fields. `last` is the last token's SVD the summary already has (reused, not
 * recomputed). For d ≤ 256 and short prompts every J_i is decomposed from one cached
 * Jacobian (d VJPs), so all positions cost little more than the last one; beyond, the
 * all-token sweep gives every J_i's converged top-k.
 */
export async function reportFields(model: Model, lin: Linearization, rec: Reconstruction, nonlin: NonlinearReconstruction,
  last: SingularTriplets): Promise<ReportFields> {
  const n = lin.nTokens, d = lin.nEmbd;
  const perPosition = last.method === "exact" && d <= PER_POSITION_MAX_EMBD && n <= PER_POSITION_MAX_TOKENS;
  const svds: SingularTriplets[] = [];
  if (perPosition) {
    await lin.cachedJacobian();
    for (let i = 0; i < n - 1; i++) svds.push(await lin.svd({ token: i, k: 1 }));
  } else if (n > 1 && n <= SWEEP_MAX_TOKENS) {
    // every J_i's top-k: from one Jacobian on short prompts, else the one batched sweep
    const sweep = await lin.svd({ token: "each", k: last.values.length });
    svds.push(...sweep.positions.slice(0, n - 1));
  }
  svds.push(last);
  const u1 = new Float32Array(svds.length * d), v1 = new Float32Array(svds.length * d);
  svds.forEach((s, r) => {
    u1.set(s.u.subarray(0, d), r * d);
    v1.set(s.v.subarray(0, d), r * d);
  });
  const texts = (rows: { text: string }[][]) => rows.map((row) => row.map((t) => t.text));
  const uTokens = texts(await lin.decode(u1, { space: "output", top: DECODE_TOP }));
  const vTokens = texts(await lin.decode(v1, { space: "input", top: DECODE_TOP }));
  const position = (s: SingularTriplets) => (s.token === "all" ? n - 1 : s.token);
  let jacobianLast: ReportFields["jacobianLast"] = null;
  if (d <= JACOBIAN_HEATMAP_MAX_EMBD) {
    const J = perPosition ? await lin.cachedJacobian() : await lin.jacobian({ firstPosition: n - 1 });
    jacobianLast = { d, data: Array.from(J.block(n - 1)) };
  }
  const h = model.hparams;
  return {
    model: { path: model.path, architecture: model.architecture, description: model.description, nEmbd: d, nLayer: h.nLayer, nVocab: h.nVocab },
    topPredictions: topPredictions(model, lin.logits),
    reconstruction: { output: Array.from(lin.output), detached: Array.from(rec.reconstructed), nonDetached: Array.from(nonlin.reconstructed) },
    spectra: {
      method: last.method,
      // The randomized route's converged top-k only: the rest of its sketch is not accurate.
      rows: svds.map((s) => ({ position: position(s), values: Array.from(s.method === "exact" ? s.allValues : s.values) })),
    },
    positions: svds.map((s, r) => ({ position: position(s), sigma1: s.values[0], u: uTokens[r], v: vTokens[r] })),
    jacobianLast,
  };
}

/** What the arrays of a summary are, for callers that export them (--json FILE, --npy DIR). */
export interface AnalysisArrays {
  lin: Linearization;
  svd: SingularTriplets;
  contributions: Float32Array;
  attribution: number[];
}

export interface SummarizeOptions {
  precision?: "exact" | "fast";
  /** Bytes the analysis may allocate (linearize's memoryBudget; model.plan shows the plan). */
  memoryBudget?: number;
  /** Add the layer-emergence table (one SVD per layer). */
  layers?: boolean;
  /** Called as each stage starts (name) and with its progress in [0, 1] where it has one. */
  onStage?: (stage: string, progress?: number) => void;
  /** Called with the live linearization's arrays before it is disposed. */
  exportArrays?: (a: AnalysisArrays, summary: AnalysisSummary) => Promise<void>;
  signal?: AbortSignal;
}

/**
 * Linearizes `prompt` and runs the paper's analyses on it: the prediction, the detached and
 * the ordinary reconstruction, exact token attribution, the last token's singular vectors
 * decoded, every position's σ1 and (with `layers`) the emergence table.
 */
export async function summarize(model: Model, prompt: string, options: SummarizeOptions = {}): Promise<AnalysisSummary> {
  const t0 = performance.now();
  const stage = (name: string) => (p?: number) => options.onStage?.(name, p);
  const lin = await model.linearize(prompt, { precision: options.precision ?? "exact", memoryBudget: options.memoryBudget, onProgress: stage("primal pass"), signal: options.signal });
  try {
    const rec = await lin.reconstruction({ onProgress: stage("per-token contributions"), signal: options.signal });
    stage("non-detached contrast (the ordinary Jacobian)")();
    const nonlin = await lin.nonlinearReconstruction({ signal: options.signal });
    let yy = 0, cc = 0;
    for (let k = 0; k < lin.nEmbd; k++) {
      yy += lin.output[k] ** 2;
      cc += (lin.biasTerm?.[k] ?? 0) ** 2;
    }
    const attribution = await lin.attribution();
    // Exact SVD for small d; the matrix-free randomized route (O(k) products) beyond.
    stage("singular vectors")();
    const s = await lin.svd({ k: 3, onProgress: stage("singular vectors"), signal: options.signal });
    const pick = (rows: { text: string }[][]) => rows.map((r) => r.map((t) => t.text));
    const singular: AnalysisSummary["singular"] = {
      values: Array.from(s.values),
      u: pick(await lin.decode(s.u, { space: "output", top: 6 })),
      v: pick(await lin.decode(s.v, { space: "input", top: 6 })),
    };
    const worst = Math.max(...Array.from(s.residuals, (r, j) => (s.values[j] > 0 ? r / s.values[j] : 0)));
    const singularNote = s.method !== "randomized" ? undefined
      : `matrix-free top-k, ${s.iterations} Krylov blocks, max ‖Jv − σu‖/σ ${worst.toExponential(1)}` +
        (s.converged ? "" : " — NOT converged: raise maxIterations or oversampling before trusting these vectors");
    if (options.layers) stage("emergence (one SVD per layer)")();
    const emergence = options.layers
      ? (await lin.emergence({ k: 4, top: 6, onProgress: stage("emergence (one SVD per layer)"), signal: options.signal })).map((r) => ({ layer: r.layer, value: r.values[0], values: r.values, tokens: r.tokens[0].map((t) => t.text) }))
      : undefined;
    stage("report figures")();
    const figures = await reportFields(model, lin, rec, nonlin, s);
    const summary: AnalysisSummary = {
      prompt,
      tokens: lin.tokens ?? [],
      tokenTexts: model.tokenPieces(lin.tokens ?? []),
      predictedToken: lin.predictedToken,
      predictedTokenText: model.tokenPieces([lin.predictedToken])[0],
      predictedLogit: lin.logits[lin.predictedToken],
      precision: lin.precision,
      affine: lin.affine,
      detached: { relativeError: rec.relativeError, maxAbsError: rec.maxAbsError },
      nonDetached: { relativeError: nonlin.relativeError, maxAbsError: nonlin.maxAbsError, method: nonlin.method, epsilon: nonlin.epsilon },
      biasTermRelativeNorm: lin.biasTerm ? Math.sqrt(cc / yy) : null,
      contributionNorms: rec.contributionNorms,
      logitContributions: attribution.contributions,
      logitBiasContribution: attribution.biasContribution,
      singular,
      singularNote,
      emergence,
      seconds: (performance.now() - t0) / 1000,
      ...figures,
    };
    await options.exportArrays?.({ lin, svd: s, contributions: rec.contributions, attribution: attribution.contributions }, summary);
    return summary;
  } finally {
    await lin.dispose();
  }
}
