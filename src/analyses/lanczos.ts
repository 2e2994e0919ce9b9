// The matrix-free route to the top singular triplets: block Lanczos on J Jᵀ driven only by
// the operator's batched products, for one Jacobian or for every position's J_i in one sweep.
import { getAddon } from "../native.js";
import type { LinearOperator } from "../operator.js";
import type { SvdChoice } from "../validate.js";
import { seededGaussian } from "../random.js";
import type { SingularTriplets } from "./triplets.js";

/** Rows stacked: [a; b]. */
function stack(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/**
 * Matrix-free top-k: block Lanczos on J Jᵀ in the output space (d-wide vectors only, so
 * the stacked [J_1 … J_n] costs no input-space basis), with full reorthogonalization.
 * Each block q costs one batch of VJPs (Jᵀ q) and one of JVPs (J Jᵀ q); the Rayleigh–Ritz
 * step on the Krylov basis Q gives J Jᵀ ≈ Q H Qᵀ, H = S Λ Sᵀ, u_j = Q s_j, σ_j = √λ_j, and
 * the residual ‖J Jᵀ u_j − λ_j u_j‖ / σ_j = ‖J v_j − σ_j u_j‖ for v_j = Jᵀ u_j / σ_j comes
 * from the stored products, so convergence is checked, not assumed. For J_i the tangents
 * live at position i; for "all" on every position.
 */
export async function randomizedSvd(op: LinearOperator, token: number | "all", options: SvdChoice): Promise<SingularTriplets> {
  const n = op.nTokens, d = op.nEmbd;
  const cols = token === "all" ? n * d : d;
  // J for a batch of input-space rows [B × cols] → output-space rows [B × d]. For J_i the
  // tangents sit at position i, the first of the positions [i, n) the pass covers.
  const forward = async (x: Float32Array, batch: number) => {
    if (token === "all") return op.jvp(x);
    const m = n - token, t = new Float32Array(batch * m * d);
    for (let b = 0; b < batch; b++) t.set(x.subarray(b * d, (b + 1) * d), b * m * d);
    return op.jvp(t, { firstPosition: token });
  };
  // Jᵀ for a batch of output-space rows [B × d] → input-space rows [B × cols]. For J_i only
  // positions [i, n) take part (causality), and position i comes first in the result.
  const transposed = async (rows: Float32Array, batch: number) => {
    if (token === "all") return op.vjp(rows);
    const g = await op.vjp(rows, { firstPosition: token }), m = n - token;
    const out = new Float32Array(batch * d);
    for (let b = 0; b < batch; b++) out.set(g.subarray(b * m * d, (b * m + 1) * d), b * d);
    return out;
  };
  const one = async (rows: Array<Float32Array | null>, f: (x: Float32Array, b: number) => Promise<Float32Array>, width: number) =>
    [rows[0] && await f(rows[0], rows[0].length / width)];
  const [result] = await blockLanczos(op, [token === "all" ? 0 : token], cols, options, {
    transposed: (rows) => one(rows, transposed, d),
    forward: (x) => one(x, forward, cols),
  });
  return { ...result, token };
}

/**
 * The top-k of every J_i in one sweep: each pass carries the Krylov blocks of every token not
 * yet converged (token i's vectors on positions [i, n)), so each weight is read once per pass
 * for all of them. One VJP of cotangents on the last position gives Jᵢᵀ u at every position at
 * once; a JVP of tangents placed at position i gives Jᵢ w. Tokens converge and leave the
 * batch independently; the batch is cut into chunks of tokens that keep the tangents under
 * `batchBytes` (positions before the chunk's first token are skipped).
 */
export async function eachTokenRandomizedSvd(op: LinearOperator, options: SvdChoice): Promise<SingularTriplets[]> {
  const n = op.nTokens, d = op.nEmbd, batchBytes = options.batchMemoryBytes;
  const tokens = Array.from({ length: n }, (_, i) => i);
  // Cuts the rows (per token) into chunks whose [B, n − p0, d] tangents stay under the budget.
  const chunks = (rows: Array<Float32Array | null>) => {
    const out: number[][] = [];
    let cur: number[] = [], rowsInCur = 0;
    for (let t = 0; t < n; t++) {
      const r = rows[t];
      if (!r) continue;
      const p0 = cur.length ? cur[0] : t;
      if (cur.length && (rowsInCur + r.length / d) * (n - p0) * d * 4 > batchBytes) {
        out.push(cur);
        cur = [];
        rowsInCur = 0;
      }
      cur.push(t);
      rowsInCur += r.length / d;
    }
    if (cur.length) out.push(cur);
    return out;
  };
  const transposed = async (rows: Array<Float32Array | null>) => {
    const out: Array<Float32Array | null> = rows.map(() => null);
    for (const chunk of chunks(rows)) {
      const p0 = chunk[0], m = n - p0;
      const g = await op.vjp(concat(chunk.map((t) => rows[t]!)), { firstPosition: p0 });  // [B, m, d]
      let r = 0;
      for (const t of chunk) {
        const b = rows[t]!.length / d, o = new Float32Array(b * d);
        for (let j = 0; j < b; j++, r++) o.set(g.subarray((r * m + t - p0) * d, (r * m + t - p0 + 1) * d), j * d);
        out[t] = o;
      }
    }
    return out;
  };
  const forward = async (x: Array<Float32Array | null>) => {
    const out: Array<Float32Array | null> = x.map(() => null);
    for (const chunk of chunks(x)) {
      const p0 = chunk[0], m = n - p0;
      const total = chunk.reduce((a, t) => a + x[t]!.length / d, 0);
      const tangents = new Float32Array(total * m * d);
      let r = 0;
      for (const t of chunk) for (let j = 0; j < x[t]!.length / d; j++, r++) tangents.set(x[t]!.subarray(j * d, (j + 1) * d), (r * m + t - p0) * d);
      const y = await op.jvp(tangents, { firstPosition: p0 });  // [B, d]
      r = 0;
      for (const t of chunk) {
        const b = x[t]!.length / d;
        out[t] = y.slice(r * d, (r + b) * d);
        r += b;
      }
    }
    return out;
  };
  return blockLanczos(op, tokens, d, options, { transposed, forward });
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Products for several Krylov runs at once: entry t of the arrays is run t's block, or null when it has left. */
interface BatchedProducts {
  /** Jᵀ for each run's output-space rows [b × d] → its input-space rows [b × cols]. */
  transposed(rows: Array<Float32Array | null>): Promise<Array<Float32Array | null>>;
  /** J for each run's input-space rows [b × cols] → output-space rows [b × d]. */
  forward(x: Array<Float32Array | null>): Promise<Array<Float32Array | null>>;
}

/** One Krylov run's state: basis Q [m × d], Z = J Jᵀ Q, H = Qᵀ J Jᵀ Q [m × m] and its Ritz pairs. */
interface KrylovRun {
  block: Float32Array | null;
  Q: Float32Array; Z: Float32Array; H: Float64Array; m: number; iterations: number;
  lambda: Float32Array; rank: number; U: Float32Array; residuals: Float32Array; converged: boolean;
}

/**
 * Block Lanczos on J Jᵀ for several operators J (indexed by the entries of `runs`: token
 * positions, or one entry), each pass batching the blocks of the runs still going. Run t
 * starts from the Gaussian block of seed options.seed + t, so the per-token and the
 * all-token routes start alike.
 */
async function blockLanczos(op: LinearOperator, runs: number[], cols: number, options: SvdChoice, products: BatchedProducts): Promise<SingularTriplets[]> {
  const d = op.nEmbd;
  const addon = getAddon();
  const { k, oversampling, maxIterations, tolerance, seed } = options;
  const kk = Math.min(k, d, cols);
  const l = Math.min(kk + oversampling, d, cols);
  const state: KrylovRun[] = [];
  for (const t of runs) {
    state.push({ block: await addon.orthonormalizeAgainst({ basis: null, block: seededGaussian(l * d, (seed + t) >>> 0), width: d }),
      Q: new Float32Array(0), Z: new Float32Array(0), H: new Float64Array(0), m: 0, iterations: 0,
      lambda: new Float32Array(0), rank: 0, U: new Float32Array(0), residuals: new Float32Array(0), converged: false });
  }
  for (let pass = 1; state.some((s) => s.block); pass++) {
    const blocks = state.map((s) => s.block);
    const Zs = await products.forward(await products.transposed(blocks));  // J Jᵀ q for every run still going
    for (let r = 0; r < state.length; r++) {
      const s = state[r], block = s.block, Zb = Zs[r];
      if (!block || !Zb) continue;
      const b = block.length / d;
      s.Q = stack(s.Q, block);
      s.Z = stack(s.Z, Zb);
      const m0 = s.m, m = (s.m += b);
      s.iterations++;
      // H grows by the new block's columns Qᵀ Z_b (and rows, by symmetry)
      const cNew = await addon.gemm({ a: s.Q, b: Zb, p: m, q: d, w: b, transposeB: true });  // [m × b]
      const grown = new Float64Array(m * m);
      for (let i = 0; i < m0; i++) grown.set(s.H.subarray(i * m0, (i + 1) * m0), i * m);
      for (let i = 0; i < m; i++) {
        for (let c = 0; c < b; c++) {
          const x = i >= m0 ? 0.5 * (cNew[i * b + c] + cNew[(m0 + c) * b + (i - m0)]) : cNew[i * b + c];
          grown[i * m + m0 + c] = x;
          grown[(m0 + c) * m + i] = x;
        }
      }
      s.H = grown;
      const eig = await addon.svd({ a: Float32Array.from(s.H), m, n: m });  // H is symmetric positive semidefinite: its SVD is its eigendecomposition
      s.rank = eig.rank;
      s.lambda = eig.s;
      const kNow = Math.min(kk, s.rank);
      const S = new Float32Array(kNow * m);  // top eigenvectors as rows [kNow × m]
      for (let j = 0; j < kNow; j++) for (let i = 0; i < m; i++) S[j * m + i] = eig.u[i * s.rank + j];
      s.U = await addon.gemm({ a: S, b: s.Q, p: kNow, q: m, w: d, transposeB: false });
      const AU = await addon.gemm({ a: S, b: s.Z, p: kNow, q: m, w: d, transposeB: false });
      s.residuals = new Float32Array(kNow);
      for (let j = 0; j < kNow; j++) {
        let r2 = 0;
        for (let c = 0; c < d; c++) r2 += (AU[j * d + c] - s.lambda[j] * s.U[j * d + c]) ** 2;
        const sigma = Math.sqrt(s.lambda[j]);
        s.residuals[j] = sigma > 0 ? Math.sqrt(r2) / sigma : 0;
      }
      s.converged = s.residuals.every((x, j) => x <= tolerance * Math.sqrt(s.lambda[j]));
      s.block = null;
      if (s.converged || s.iterations >= maxIterations || m >= d) continue;
      // the next Krylov block: J Jᵀ q_b, orthogonalized against the whole basis
      const next = await addon.orthonormalizeAgainst({ basis: s.Q, block: Zb, width: d });
      if (next.length === 0) s.converged = true;  // an invariant subspace: the Ritz pairs are exact
      else s.block = next.subarray(0, Math.min(next.length, (d - m) * d));
    }
    const going = state.filter((s) => s.block).length;
    options.onProgress?.(going === 0 ? 1 : Math.min(pass / maxIterations, 1));
  }
  // v_j = Jᵀ u_j / σ_j (one last batched pass); the sign makes u_j point along y
  const kOut = state.map((s) => Math.min(kk, s.rank));
  const Vts = await products.transposed(state.map((s, r) => (kOut[r] > 0 ? s.U.subarray(0, kOut[r] * d) : null)));
  return state.map((s, r) => {
    const kr = kOut[r], Vt = Vts[r] ?? new Float32Array(0);
    const values = new Float32Array(kr);
    for (let j = 0; j < kr; j++) values[j] = Math.sqrt(Math.max(0, s.lambda[j]));
    const u = new Float32Array(kr * d), v = new Float32Array(kr * cols);
    for (let j = 0; j < kr; j++) {
      let dotY = 0, vn = 0;
      for (let i = 0; i < d; i++) dotY += s.U[j * d + i] * op.output[i];
      for (let c = 0; c < cols; c++) vn += Vt[j * cols + c] ** 2;
      const sign = dotY < 0 ? -1 : 1, scale = vn > 0 ? sign / Math.sqrt(vn) : 0;
      for (let i = 0; i < d; i++) u[j * d + i] = sign * s.U[j * d + i];
      for (let c = 0; c < cols; c++) v[j * cols + c] = scale * Vt[j * cols + c];
    }
    const allValues = s.lambda.map((x) => Math.sqrt(Math.max(0, x)));
    return { token: runs[r], values, u, v, vWidth: cols, allValues, method: "randomized" as const,
      residualEstimate: kr < s.rank ? allValues[kr] : 0, residuals: s.residuals.slice(0, kr), iterations: s.iterations, converged: s.converged };
  });
}

