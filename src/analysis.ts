// Analyses of the linear system, built only on the operator's products (jvp, vjp, the
// Jacobian assembled from them) and the model's vocabulary matrices: the SVD of the detached
// Jacobian, singular vectors decoded into tokens, exact token attribution.
import { getAddon, type NativeLinearization, type OutputNorm } from "./native.js";
import { LljError } from "./errors.js";
import type { Jacobian } from "./linearization.js";

export interface SvdOptions {
  /**
   * Input position i for J_i (negative counts from the end; default -1, the last), "all" for
   * [J_1 … J_n], or "each" for the top-k of every J_i in one sweep (an `EachTokenTriplets`).
   */
  token?: number | "all" | "each";
  /** Seed of the randomized route's start blocks (default 0): the same seed gives the same result. */
  seed?: number;
  /** token "each", randomized route: memory one batched pass's tangents may use (default 256 MiB); more tokens per pass read the weights fewer times. */
  batchMemoryBytes?: number;
  /** Singular triplets to return (default 8). */
  k?: number;
  /**
   * "exact": the Jacobian from d VJPs, then a dense SVD (all singular values);
   * "randomized": a range finder driven only by batched JVP/VJP products, never forming J
   * (O(k) products; for long prompts and large models); "auto" (default): exact for d ≤ 256.
   */
  method?: "exact" | "randomized" | "auto";
  /** Randomized route: block size k + oversampling (default 10). */
  oversampling?: number;
  /** Randomized route: at most this many Krylov blocks, each one batch of VJPs and one of JVPs (default 16). */
  maxIterations?: number;
  /**
   * Randomized route: stop once every returned triplet has ‖J v_j − σ_j u_j‖ ≤ tolerance·σ_j
   * (default 1e-4). Then each σ_j lies within tolerance·σ_j of a true singular value.
   */
  tolerance?: number;
  /** Randomized route: called after each Krylov block with blocks done / maxIterations. */
  onProgress?: (progress: number) => void;
  /** Stops the products (the call then rejects with ABORTED). */
  signal?: AbortSignal;
}

export interface SingularTriplets {
  /** The position decomposed, or "all". */
  token: number | "all";
  /** Singular values, descending [k]. */
  values: Float32Array;
  /** Left singular vectors (output space), row-major [k × d]: u_j = u.subarray(j·d, (j+1)·d). */
  u: Float32Array;
  /** Right singular vectors (input space), row-major [k × c] with c = d (one token) or n·d ("all"). */
  v: Float32Array;
  /** Width of a right singular vector. */
  vWidth: number;
  /** The exact route: all singular values; the randomized route: those of the sketch. */
  allValues: Float32Array;
  method: "exact" | "randomized";
  /**
   * Randomized route: an estimate of the spectral-norm error of the rank-k approximation
   * (the (k+1)-th Ritz value); 0 for the exact route.
   */
  residualEstimate: number;
  /** ‖J v_j − σ_j u_j‖ per triplet, computed from the products (0 for the exact route). */
  residuals: Float32Array;
  /** Randomized route: Krylov blocks used (0 for the exact route). */
  iterations: number;
  /** Whether every residual met the tolerance (always true for the exact route). */
  converged: boolean;
}

/** `svd({ token: "each" })`: the top-k triplets of every J_i, one entry per input position. */
export interface EachTokenTriplets {
  token: "each";
  /** positions[i] decomposes J_i (its `token` is i). */
  positions: SingularTriplets[];
  method: "exact" | "randomized";
  /** Whether every position's triplets met the tolerance. */
  converged: boolean;
}

export interface DecodedToken {
  id: number;
  text: string;
  score: number;
}

export interface Attribution {
  token: number;
  tokenText: string;
  /** The logit before any final softcap: row·y + outputBias. */
  logit: number;
  /** row·J_i x_i for each input position: sums with `biasContribution` and `outputBias` to `logit` exactly. */
  contributions: number[];
  /** row·c for affine models (0 otherwise). */
  biasContribution: number;
  /** The LM head's own bias for that token (qwen2's output.bias), else 0. */
  outputBias: number;
  /** ‖J_i x_i‖ / Σ_j ‖J_j x_j‖: each position's share of the output's magnitude. */
  normShares: number[];
}

/** The vocabulary products of a linearization (native, tracked by the Linearization). */
export type VocabAccess = Pick<NativeLinearization, "vocabProducts" | "lmHeadRows">;

/** What the analyses need from a Linearization (kept narrow so that they stay operator-based). */
export interface LinearSystem {
  readonly nTokens: number;
  readonly nEmbd: number;
  readonly output: Float32Array;
  readonly biasTerm: Float32Array | null;
  jacobian(): Promise<Jacobian>;
  /** J_i alone [d × d] row-major (from the full Jacobian when it is already there). */
  jacobianBlock(i: number): Promise<Float32Array>;
  reconstruction(): Promise<{ contributions: Float32Array; contributionNorms: number[] }>;
  /** L v for tangents on positions [firstPosition, n) (default 0), [B, n − firstPosition, d] → [B, d]. */
  jvp(tangents: Float32Array, firstPosition?: number): Promise<Float32Array>;
  /** Lᵀ u on positions [firstPosition, n) (default 0): [B, n − firstPosition, d]. */
  vjp(cotangents: Float32Array, firstPosition?: number): Promise<Float32Array>;
}

/** Top-k of each row of a [B × V] score matrix. */
export function topTokens(scores: Float32Array, batch: number, top: number, pieces: (ids: number[]) => string[]): DecodedToken[][] {
  const V = scores.length / batch;
  const out: DecodedToken[][] = [];
  for (let b = 0; b < batch; b++) {
    const row = scores.subarray(b * V, (b + 1) * V);
    const best: number[] = [];
    for (let t = 0; t < V; t++) {
      if (best.length < top || row[t] > row[best[best.length - 1]]) {
        best.push(t);
        best.sort((x, y) => row[y] - row[x]);
        if (best.length > top) best.pop();
      }
    }
    const texts = pieces(best);
    out.push(best.map((id, j) => ({ id, text: texts[j], score: row[id] })));
  }
  return out;
}

/** The options every SVD route shares, checked once. */
function kAndMethod(options: SvdOptions): { k: number; method: "exact" | "randomized" | "auto" } {
  const k = options.k ?? 8;
  if (!Number.isInteger(k) || k < 1) throw new LljError("k must be a positive integer");
  const method = options.method ?? "auto";
  if (!["exact", "randomized", "auto"].includes(method)) throw new LljError(`method must be "exact", "randomized" or "auto"`);
  return { k, method };
}

/**
 * Singular triplets of J_i (or of [J_1 … J_n]) by the exact route: the Jacobian assembled
 * from VJPs, then a one-sided Jacobi SVD (native). Signs are chosen so that each left
 * singular vector points along the output y (u·y ≥ 0), as in the reference work.
 */
export async function svd(system: LinearSystem, options: SvdOptions = {}): Promise<SingularTriplets> {
  const n = system.nTokens, d = system.nEmbd;
  const { k, method } = kAndMethod(options);
  const tokenOpt = options.token ?? -1;
  if (tokenOpt === "each") throw new LljError('token "each" is answered by svdEachToken');
  let token: number | "all" = "all";
  if (tokenOpt !== "all") {
    if (!Number.isInteger(tokenOpt) || tokenOpt >= n || tokenOpt < -n) throw new LljError(`token must be a position in [-${n}, ${n}) or "all"`);
    token = tokenOpt < 0 ? n + tokenOpt : tokenOpt;
  }
  if (method === "randomized" || (method === "auto" && d > 256)) return randomizedSvd(system, token, k, options);
  let matrix: Float32Array;
  let cols: number;
  if (token === "all") {
    const J = await system.jacobian();
    cols = n * d;  // row k of [J_1 … J_n] is the concatenation of row k of each block
    matrix = new Float32Array(d * cols);
    for (let i = 0; i < n; i++) {
      const b = J.block(i);
      for (let r = 0; r < d; r++) matrix.set(b.subarray(r * d, (r + 1) * d), r * cols + i * d);
    }
  } else {
    cols = d;
    matrix = (await system.jacobianBlock(token)).slice();
  }
  const r = await getAddon().svd(matrix, d, cols);
  const rank = r.rank;
  const kk = Math.min(k, rank);
  const u = new Float32Array(kk * d), v = new Float32Array(kk * cols);
  for (let j = 0; j < kk; j++) {
    let dot = 0;
    for (let row = 0; row < d; row++) dot += r.u[row * rank + j] * system.output[row];
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
export async function svdEachToken(system: LinearSystem, options: SvdOptions = {}): Promise<EachTokenTriplets> {
  const n = system.nTokens, d = system.nEmbd;
  const { k, method } = kAndMethod(options);
  // "auto": the full Jacobian (d VJPs) unless the sweep is clearly cheaper — it costs about
  // 2·n·(k + oversampling) vectors per Krylov pass, ~8 passes — or the Jacobian (n·d² floats)
  // would pass 1 GiB. Short prompts therefore take the exact route even at large d.
  const block = k + (options.oversampling ?? 10);
  const exactCheaper = d <= 256 || (d <= 16 * n * block && n * d * d * 4 <= 2 ** 30);
  let positions: SingularTriplets[];
  if (method === "randomized" || (method === "auto" && !exactCheaper)) {
    const budget = options.batchMemoryBytes ?? 256 * 2 ** 20;
    if (!(Number.isFinite(budget) && budget > 0)) throw new LljError("batchMemoryBytes must be a positive number of bytes");
    positions = await eachTokenRandomizedSvd(system, k, options, budget);
  } else {
    await system.jacobian();  // once, for every block
    positions = [];
    for (let i = 0; i < n; i++) {
      positions.push(await svd(system, { ...options, token: i, method: "exact", onProgress: undefined }));
      options.onProgress?.((i + 1) / n);
    }
  }
  return { token: "each", positions, method: positions[0].method, converged: positions.every((p) => p.converged) };
}

/** Each row of [B × d] minus its mean (LayerNorm's centering). */
function centerRows(x: Float32Array, d: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let b = 0; b < x.length / d; b++) {
    let mean = 0;
    for (let k = 0; k < d; k++) mean += x[b * d + k];
    mean /= d;
    for (let k = 0; k < d; k++) out[b * d + k] = x[b * d + k] - mean;
  }
  return out;
}

/** The Jacobian view of blocks [p, n) stored i-major. */
export function jacobianOf(data: Float32Array, n: number, d: number, p = 0): Jacobian {
  return {
    nTokens: n, nEmbd: d, firstPosition: p, data,
    block: (i: number) => {
      if (!Number.isInteger(i) || i < p || i >= n) throw new LljError(`this Jacobian holds the blocks of positions [${p}, ${n})`);
      return data.subarray((i - p) * d * d, (i - p + 1) * d * d);
    },
  };
}

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
async function randomizedSvd(system: LinearSystem, token: number | "all", k: number, options: SvdOptions): Promise<SingularTriplets> {
  const n = system.nTokens, d = system.nEmbd;
  const cols = token === "all" ? n * d : d;
  // J for a batch of input-space rows [B × cols] → output-space rows [B × d]. For J_i the
  // tangents sit at position i, the first of the positions [i, n) the pass covers.
  const forward = async (x: Float32Array, batch: number) => {
    if (token === "all") return system.jvp(x);
    const m = n - token, t = new Float32Array(batch * m * d);
    for (let b = 0; b < batch; b++) t.set(x.subarray(b * d, (b + 1) * d), b * m * d);
    return system.jvp(t, token);
  };
  // Jᵀ for a batch of output-space rows [B × d] → input-space rows [B × cols]. For J_i only
  // positions [i, n) take part (causality), and position i comes first in the result.
  const transposed = async (rows: Float32Array, batch: number) => {
    if (token === "all") return system.vjp(rows);
    const g = await system.vjp(rows, token), m = n - token;
    const out = new Float32Array(batch * d);
    for (let b = 0; b < batch; b++) out.set(g.subarray(b * m * d, (b * m + 1) * d), b * d);
    return out;
  };
  const one = async (rows: Array<Float32Array | null>, f: (x: Float32Array, b: number) => Promise<Float32Array>, width: number) =>
    [rows[0] && await f(rows[0], rows[0].length / width)];
  const [result] = await blockLanczos(system, [token === "all" ? 0 : token], cols, k, options, {
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
async function eachTokenRandomizedSvd(system: LinearSystem, k: number, options: SvdOptions, batchBytes: number): Promise<SingularTriplets[]> {
  const n = system.nTokens, d = system.nEmbd;
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
      const g = await system.vjp(concat(chunk.map((t) => rows[t]!)), p0);  // [B, m, d]
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
      const y = await system.jvp(tangents, p0);  // [B, d]
      r = 0;
      for (const t of chunk) {
        const b = x[t]!.length / d;
        out[t] = y.slice(r * d, (r + b) * d);
        r += b;
      }
    }
    return out;
  };
  return blockLanczos(system, tokens, d, k, options, { transposed, forward });
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

/** Standard normals from a seeded generator (mulberry32 + Box–Muller): the same seed, the same start block. */
export function seededGaussian(count: number, seed: number): Float32Array {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
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
 * starts from the Gaussian block of seed (options.seed ?? 0) + t, so the per-token and the
 * all-token routes start alike.
 */
async function blockLanczos(system: LinearSystem, runs: number[], cols: number, k: number, options: SvdOptions, products: BatchedProducts): Promise<SingularTriplets[]> {
  const d = system.nEmbd;
  const addon = getAddon();
  const oversampling = options.oversampling ?? 10;
  const maxIterations = options.maxIterations ?? 16;
  const tolerance = options.tolerance ?? 1e-4;
  const seed = options.seed ?? 0;
  if (!Number.isInteger(oversampling) || oversampling < 0) throw new LljError("oversampling must be a non-negative integer");
  if (!Number.isInteger(maxIterations) || maxIterations < 1) throw new LljError("maxIterations must be a positive integer");
  if (!(tolerance > 0)) throw new LljError("tolerance must be positive");
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new LljError("seed must be an integer in [0, 2^32)");
  const kk = Math.min(k, d, cols);
  const l = Math.min(kk + oversampling, d, cols);
  const state: KrylovRun[] = [];
  for (const t of runs) {
    state.push({ block: await addon.orthonormalizeAgainst(null, seededGaussian(l * d, (seed + t) >>> 0), d),
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
      const cNew = await addon.gemm(s.Q, Zb, m, d, b, true);  // [m × b]
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
      const eig = await addon.svd(Float32Array.from(s.H), m, m);  // H is symmetric positive semidefinite: its SVD is its eigendecomposition
      s.rank = eig.rank;
      s.lambda = eig.s;
      const kNow = Math.min(kk, s.rank);
      const S = new Float32Array(kNow * m);  // top eigenvectors as rows [kNow × m]
      for (let j = 0; j < kNow; j++) for (let i = 0; i < m; i++) S[j * m + i] = eig.u[i * s.rank + j];
      s.U = await addon.gemm(S, s.Q, kNow, m, d, false);
      const AU = await addon.gemm(S, s.Z, kNow, m, d, false);
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
      const next = await addon.orthonormalizeAgainst(s.Q, Zb, d);
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
      for (let i = 0; i < d; i++) dotY += s.U[j * d + i] * system.output[i];
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

/**
 * Tokens vectors [B × d] point to: output-space vectors by the top of W_U·u, input-space
 * vectors by cosine similarity to each input embedding.
 */
export async function decodeVectors(native: VocabAccess, vectors: Float32Array, d: number, top: number,
  pieces: (ids: number[]) => string[], space: "output" | "input"): Promise<DecodedToken[][]> {
  const batch = vectors.length / d;
  return topTokens(await native.vocabProducts(vectors, batch, space === "input" ? "embedding" : "lmHead"), batch, top, pieces);
}

/** Exact per-position contributions to one token's logit: row·(Σ J_i x_i + c) + bias = logit. */
export async function attribution(system: LinearSystem, native: VocabAccess, token: number, tokenText: string): Promise<Attribution> {
  const d = system.nEmbd, n = system.nTokens;
  const rowAndBias = await native.lmHeadRows(Int32Array.from([token]));
  const row = rowAndBias.subarray(0, d), outputBias = rowAndBias[d];
  const rec = await system.reconstruction();
  const contributions: number[] = [];
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let k = 0; k < d; k++) s += row[k] * rec.contributions[i * d + k];
    contributions.push(s);
  }
  let biasContribution = 0, logit = outputBias;
  if (system.biasTerm) for (let k = 0; k < d; k++) biasContribution += row[k] * system.biasTerm[k];
  for (let k = 0; k < d; k++) logit += row[k] * system.output[k];
  const total = rec.contributionNorms.reduce((a, b) => a + b, 0);
  return { token, tokenText, logit, contributions, biasContribution, outputBias, normShares: rec.contributionNorms.map((x) => x / total) };
}

/** A layer quantity to analyse: a tap, optionally passed through the (detached) final norm. */
export interface LayerQuantity {
  layer: number;
  tap: "residual" | "attn" | "mlp";
  /** Pass it through the final norm with its 1/rms frozen at this quantity's own value (default true). */
  finalNorm?: boolean;
  /** Start from the residual stream entering this layer instead of the input embeddings ("layerwise" / "to end"). */
  fromLayer?: number;
}

export interface EmergenceRow {
  layer: number;
  /** Leading singular values of the last token's Jacobian of the residual stream after this layer. */
  values: number[];
  /** Top tokens of each leading left singular vector, through the final norm and the LM head. */
  tokens: DecodedToken[][];
}

/** The operator a LayerQuantity defines, as the analyses see it (JVP/VJP only; J from VJPs). */
export interface TapOperator {
  nTokens: number;
  nEmbd: number;
  jvp(t: Float32Array, tap: { fromLayer: number; tap: "residual" | "attn" | "mlp"; layer: number; affine?: boolean }, firstPosition?: number): Promise<Float32Array>;
  vjp(u: Float32Array, tap: { fromLayer: number; tap: "residual" | "attn" | "mlp"; layer: number }, firstPosition?: number): Promise<Float32Array>;
  jacobian(tap: { fromLayer: number; tap: "residual" | "attn" | "mlp"; layer: number }, firstPosition?: number): Promise<Jacobian>;
  /** The primal input of the pass: the embeddings (fromLayer 0) or the stream entering fromLayer. */
  inputOf(fromLayer: number): Float32Array;
  outputNorm(): OutputNorm;
}

/**
 * The linear system of one layer quantity: its value y_q at the last position and the map
 * D·J_q with D = diag(g·r(y_q)) when passed through the final norm (identity otherwise).
 */
export async function layerSystem(op: TapOperator, q: LayerQuantity): Promise<LinearSystem> {
  const n = op.nTokens, d = op.nEmbd;
  const tap = { fromLayer: q.fromLayer ?? 0, tap: q.tap, layer: q.layer };
  // the quantity itself: the affine map (biases included) at the primal input reproduces it
  const value = await op.jvp(op.inputOf(tap.fromLayer), { ...tap, affine: true });
  // Through the detached final norm: rows times D = w·r, after centering for LayerNorm (its
  // centering P = I − 11ᵀ/d is symmetric, so the transposed map is P(D·u)).
  const D = new Float32Array(d).fill(1);
  let center = false;
  let output = value;
  if (q.finalNorm ?? true) {
    const norm = op.outputNorm();
    center = norm.layerNorm;
    const x = center ? centerRows(value, d) : value;
    let ms = 0;
    for (let k = 0; k < d; k++) ms += x[k] * x[k];
    const r = 1 / Math.sqrt(ms / d + norm.eps);
    for (let k = 0; k < d; k++) D[k] = norm.weight[k] * r;
    output = x.map((v, k) => v * D[k] + (norm.bias?.[k] ?? 0));
  }
  const scaleRows = (x: Float32Array) => {  // [B × d] rows times D
    const out = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) out[i] = x[i] * D[i % d];
    return out;
  };
  const forward = (x: Float32Array) => scaleRows(center ? centerRows(x, d) : x);
  const transposed = (u: Float32Array) => (center ? centerRows(scaleRows(u), d) : scaleRows(u));
  // every column of every block through the norm's linear part
  const throughNorm = (J: Jacobian) => {
    const data = new Float32Array(J.data.length), column = new Float32Array(d);
    for (let i = 0; i < J.data.length / (d * d); i++)
      for (let c = 0; c < d; c++) {
        for (let k = 0; k < d; k++) column[k] = J.data[(i * d + k) * d + c];
        const out = forward(column);
        for (let k = 0; k < d; k++) data[(i * d + k) * d + c] = out[k];
      }
    return jacobianOf(data, n, d, J.firstPosition);
  };
  return {
    nTokens: n, nEmbd: d, output, biasTerm: null,
    jvp: async (t, firstPosition) => forward(await op.jvp(t, tap, firstPosition)),
    vjp: (u, firstPosition) => op.vjp(transposed(u), tap, firstPosition),
    jacobianBlock: async (i) => throughNorm(await op.jacobian(tap, i)).block(i),
    jacobian: async () => throughNorm(await op.jacobian(tap)),
    reconstruction: () => { throw new LljError("reconstruction() is for the model output"); },
  };
}
