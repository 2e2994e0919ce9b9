// The SVD of the detached Jacobian, by the exact route (J from d VJPs, then a dense SVD in
// double) or the matrix-free one (analyses/lanczos.ts), over any linear operator.
import { getAddon } from "../native.js";
import { jacobianBlock, type LinearOperator } from "../operator.js";
import * as check from "../validate.js";
import type { SvdChoice } from "../validate.js";
import { randomizedSvd, eachTokenRandomizedSvd } from "./lanczos.js";
import type { SvdOptions, SingularTriplets, EachTokenTriplets } from "./triplets.js";

export type { SvdOptions, SingularTriplets, EachTokenTriplets };

/**
 * Top-k singular triplets of the operator's J_i (one position; default the last), of
 * [J_1 … J_n] ("all"), or of every J_i ("each"). Signs make each left vector point along the
 * operator's output (u·y ≥ 0), as in the reference work.
 */
export async function svd(op: LinearOperator, options: SvdOptions & { token: "each" }): Promise<EachTokenTriplets>;
export async function svd(op: LinearOperator, options?: SvdOptions): Promise<SingularTriplets>;
export async function svd(op: LinearOperator, options: SvdOptions = {}): Promise<SingularTriplets | EachTokenTriplets> {
  const choice = check.svdOptions(check.options("svd options", options) as Record<string, unknown>, op.nTokens);
  return choice.token === "each" ? svdEachToken(op, choice) : svdOne(op, choice.token, choice);
}

async function svdOne(op: LinearOperator, token: number | "all", choice: SvdChoice): Promise<SingularTriplets> {
  const n = op.nTokens, d = op.nEmbd;
  // "auto": exact for d ≤ 256, unless [J_1 … J_n] is asked and the memory plan has no room for it
  if (choice.method === "randomized" || (choice.method === "auto" && (d > 256 || (token === "all" && op.jacobianFits === false)))) {
    return randomizedSvd(op, token, choice);
  }
  let matrix: Float32Array;
  let cols: number;
  if (token === "all") {
    const J = await op.jacobian();
    cols = n * d;  // row k of [J_1 … J_n] is the concatenation of row k of each block
    matrix = new Float32Array(d * cols);
    for (let i = 0; i < n; i++) {
      const b = J.block(i);
      for (let r = 0; r < d; r++) matrix.set(b.subarray(r * d, (r + 1) * d), r * cols + i * d);
    }
  } else {
    cols = d;
    matrix = (await jacobianBlock(op, token)).slice();
  }
  const r = await getAddon().svd({ a: matrix, m: d, n: cols });
  const rank = r.rank;
  const kk = Math.min(choice.k, rank);
  const u = new Float32Array(kk * d), v = new Float32Array(kk * cols);
  for (let j = 0; j < kk; j++) {
    let dot = 0;
    for (let row = 0; row < d; row++) dot += r.u[row * rank + j] * op.output[row];
    const sign = dot < 0 ? -1 : 1;
    for (let row = 0; row < d; row++) u[j * d + row] = sign * r.u[row * rank + j];
    for (let c = 0; c < cols; c++) v[j * cols + c] = sign * r.v[c * rank + j];
  }
  return { token, values: r.s.slice(0, kk), u, v, vWidth: cols, allValues: r.s, method: "exact", residualEstimate: 0,
    residuals: new Float32Array(kk), iterations: 0, converged: true };
}

/**
 * The top-k of every J_i: exact (one dense SVD per block of the full Jacobian), or the
 * batched block Lanczos of all positions in one sweep; "auto" picks the cheaper.
 */
async function svdEachToken(op: LinearOperator, choice: SvdChoice): Promise<EachTokenTriplets> {
  const n = op.nTokens, d = op.nEmbd;
  // "auto": the full Jacobian (d VJPs) unless the sweep is clearly cheaper — it costs about
  // 2·n·(k + oversampling) vectors per Krylov pass, ~8 passes — or the Jacobian (n·d² floats)
  // would pass 1 GiB. Short prompts therefore take the exact route even at large d.
  const block = choice.k + choice.oversampling;
  const exactCheaper = op.jacobianFits !== false && (d <= 256 || (d <= 16 * n * block && n * d * d * 4 <= 2 ** 30));
  let positions: SingularTriplets[];
  if (choice.method === "randomized" || (choice.method === "auto" && !exactCheaper)) {
    positions = await eachTokenRandomizedSvd(op, choice);
  } else {
    const J = await op.jacobian();  // once, for every block
    const full: LinearOperator = { ...op, jacobian: async () => J };
    positions = [];
    for (let i = 0; i < n; i++) {
      positions.push(await svdOne(full, i, { ...choice, method: "exact" }));
      choice.onProgress?.((i + 1) / n);
    }
  }
  return { token: "each", positions, method: positions[0].method, converged: positions.every((p) => p.converged) };
}
