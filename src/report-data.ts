// The numbers the HTML report draws beyond the terminal summary, computed from a live
// linearization. Kept apart from the CLI so that any caller can fill an AnalysisSummary.
import type { Model } from "./model.js";
import type { Linearization, NonlinearReconstruction, Reconstruction } from "./linearization.js";
import type { SingularTriplets } from "./analysis.js";
import type { AnalysisSummary } from "./report.js";

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
