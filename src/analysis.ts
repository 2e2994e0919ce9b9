// Analyses of the linear system, built only on the operator's products (jvp, vjp, the
// Jacobian assembled from them) and the model's vocabulary matrices: the SVD of the detached
// Jacobian, singular vectors decoded into tokens, exact token attribution.
import { getAddon, type NativeLinearization } from "./native.js";
import { LljError } from "./errors.js";

export interface SvdOptions {
  /** Input position i for J_i (negative counts from the end; default -1, the last), or "all" for [J_1 … J_n]. */
  token?: number | "all";
  /** Singular triplets to return (default 8). */
  k?: number;
  /**
   * "exact": the Jacobian from d VJPs, then a dense SVD (all singular values);
   * "randomized": a range finder driven only by batched JVP/VJP products, never forming J
   * (O(k) products; for long prompts and large models); "auto" (default): exact for d ≤ 256.
   */
  method?: "exact" | "randomized" | "auto";
  /** Randomized route: extra sketch columns (default 10) and power iterations (default 3). */
  oversampling?: number;
  powerIterations?: number;
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
   * (the (k+1)-th singular value of the sketch); 0 for the exact route.
   */
  residualEstimate: number;
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

/** What the analyses need from a Linearization (kept narrow so that they stay operator-based). */
export interface LinearSystem {
  readonly nTokens: number;
  readonly nEmbd: number;
  readonly output: Float32Array;
  readonly biasTerm: Float32Array | null;
  jacobian(): Promise<{ data: Float32Array; block(i: number): Float32Array }>;
  reconstruction(): Promise<{ contributions: Float32Array; contributionNorms: number[] }>;
  jvp(tangents: Float32Array): Promise<Float32Array>;
  vjp(cotangents: Float32Array): Promise<Float32Array>;
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

/**
 * Singular triplets of J_i (or of [J_1 … J_n]) by the exact route: the Jacobian assembled
 * from VJPs, then a one-sided Jacobi SVD (native). Signs are chosen so that each left
 * singular vector points along the output y (u·y ≥ 0), as in the reference work.
 */
export async function svd(system: LinearSystem, options: SvdOptions = {}): Promise<SingularTriplets> {
  const n = system.nTokens, d = system.nEmbd;
  const k = options.k ?? 8;
  if (!Number.isInteger(k) || k < 1) throw new LljError("k must be a positive integer");
  const tokenOpt = options.token ?? -1;
  let token: number | "all" = "all";
  if (tokenOpt !== "all") {
    if (!Number.isInteger(tokenOpt) || tokenOpt >= n || tokenOpt < -n) throw new LljError(`token must be a position in [-${n}, ${n}) or "all"`);
    token = tokenOpt < 0 ? n + tokenOpt : tokenOpt;
  }
  const method = options.method ?? "auto";
  if (!["exact", "randomized", "auto"].includes(method)) throw new LljError(`method must be "exact", "randomized" or "auto"`);
  if (method === "randomized" || (method === "auto" && d > 256)) return randomizedSvd(system, token, k, options);
  const J = await system.jacobian();
  let matrix: Float32Array;
  let cols: number;
  if (token === "all") {
    cols = n * d;  // row k of [J_1 … J_n] is the concatenation of row k of each block
    matrix = new Float32Array(d * cols);
    for (let i = 0; i < n; i++) {
      const b = J.block(i);
      for (let r = 0; r < d; r++) matrix.set(b.subarray(r * d, (r + 1) * d), r * cols + i * d);
    }
  } else {
    cols = d;
    matrix = J.block(token).slice();
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
  return { token, values: r.s.slice(0, kk), u, v, vWidth: cols, allValues: r.s, method: "exact", residualEstimate: 0 };
}

/** Rows [B × w] → an orthonormal basis of their span, as rows (the left factor of a native SVD of the transpose). */
async function orthonormalRows(rows: Float32Array, batch: number, width: number): Promise<Float32Array> {
  const t = new Float32Array(width * batch);  // [width × B]: columns are the rows
  for (let b = 0; b < batch; b++) for (let c = 0; c < width; c++) t[c * batch + b] = rows[b * width + c];
  const r = await getAddon().svd(t, width, batch);
  const out = new Float32Array(batch * width);
  for (let b = 0; b < batch; b++) for (let c = 0; c < width; c++) out[b * width + c] = r.u[c * r.rank + b];
  return out;
}

/**
 * Halko–Martinsson–Tropp range finder with power iterations, through the operator only:
 * Y = J Ω (JVPs), Y ← J Jᵀ Y (VJPs then JVPs), Q = orth(Y), B = Qᵀ J (VJPs), B = Ũ Σ Vᵀ,
 * U = Q Ũ. For J_i the tangents live at position i; for "all" on every position.
 */
async function randomizedSvd(system: LinearSystem, token: number | "all", k: number, options: SvdOptions): Promise<SingularTriplets> {
  const n = system.nTokens, d = system.nEmbd;
  const cols = token === "all" ? n * d : d;
  const l = Math.min(k + (options.oversampling ?? 10), cols, d);
  const q = options.powerIterations ?? 3;
  // tangents for a batch of input-space vectors [B × cols] → [B, n, d]
  const asTangents = (x: Float32Array, batch: number) => {
    if (token === "all") return x;
    const t = new Float32Array(batch * n * d);
    for (let b = 0; b < batch; b++) t.set(x.subarray(b * d, (b + 1) * d), (b * n + token) * d);
    return t;
  };
  // VJP result [B, n, d] → input-space rows [B × cols]
  const fromCotangents = (g: Float32Array, batch: number) => {
    if (token === "all") return g;
    const out = new Float32Array(batch * d);
    for (let b = 0; b < batch; b++) out.set(g.subarray((b * n + token) * d, (b * n + token + 1) * d), b * d);
    return out;
  };
  const omega = new Float32Array(l * cols);
  for (let i = 0; i < omega.length; i++) omega[i] = Math.sqrt(-2 * Math.log(1 - Math.random())) * Math.cos(2 * Math.PI * Math.random());
  let Y = await system.jvp(asTangents(omega, l));          // [l × d]: rows J ω_j
  for (let it = 0; it < q; it++) {
    const Qy = await orthonormalRows(Y, l, d);
    const Z = await orthonormalRows(fromCotangents(await system.vjp(Qy), l), l, cols);  // rows Jᵀ q_j
    Y = await system.jvp(asTangents(Z, l));
  }
  const Q = await orthonormalRows(Y, l, d);               // [l × d]
  const Bt = fromCotangents(await system.vjp(Q), l);      // rows Jᵀ q_j: B = Qᵀ J has these as rows
  const small = await getAddon().svd(Bt, l, cols);        // B = Ũ Σ Vᵀ with Ũ [l × l], V [cols × l]
  const kk = Math.min(k, small.rank);
  const u = new Float32Array(kk * d), v = new Float32Array(kk * cols);
  for (let j = 0; j < kk; j++) {
    for (let a = 0; a < l; a++) {
      const coef = small.u[a * small.rank + j];
      for (let r = 0; r < d; r++) u[j * d + r] += coef * Q[a * d + r];
    }
    let dotY = 0;
    for (let r = 0; r < d; r++) dotY += u[j * d + r] * system.output[r];
    const sign = dotY < 0 ? -1 : 1;
    for (let r = 0; r < d; r++) u[j * d + r] *= sign;
    for (let c = 0; c < cols; c++) v[j * cols + c] = sign * small.v[c * small.rank + j];
  }
  return { token, values: small.s.slice(0, kk), u, v, vWidth: cols, allValues: small.s, method: "randomized",
    residualEstimate: kk < small.rank ? small.s[kk] : 0 };
}

/**
 * Tokens vectors [B × d] point to: output-space vectors by the top of W_U·u, input-space
 * vectors by cosine similarity to each input embedding.
 */
export async function decodeVectors(native: NativeLinearization, vectors: Float32Array, d: number, top: number,
  pieces: (ids: number[]) => string[], space: "output" | "input"): Promise<DecodedToken[][]> {
  const batch = vectors.length / d;
  return topTokens(await native.vocabProducts(vectors, batch, space === "input" ? "embedding" : "lmHead"), batch, top, pieces);
}

/** Exact per-position contributions to one token's logit: row·(Σ J_i x_i + c) + bias = logit. */
export async function attribution(system: LinearSystem, native: NativeLinearization, token: number, tokenText: string): Promise<Attribution> {
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
  jvp(t: Float32Array, tap: { fromLayer: number; tap: "residual" | "attn" | "mlp"; layer: number }): Promise<Float32Array>;
  vjp(u: Float32Array, tap: { fromLayer: number; tap: "residual" | "attn" | "mlp"; layer: number }): Promise<Float32Array>;
  jacobian(tap: { fromLayer: number; tap: "residual" | "attn" | "mlp"; layer: number }): Promise<{ data: Float32Array; block(i: number): Float32Array }>;
  /** The primal input of the pass: the embeddings (fromLayer 0) or the stream entering fromLayer. */
  inputOf(fromLayer: number): Float32Array;
  outputNorm(): { weight: Float32Array; eps: number };
}

/**
 * The linear system of one layer quantity: its value y_q at the last position and the map
 * D·J_q with D = diag(g·r(y_q)) when passed through the final norm (identity otherwise).
 */
export async function layerSystem(op: TapOperator, q: LayerQuantity): Promise<LinearSystem> {
  const n = op.nTokens, d = op.nEmbd;
  const tap = { fromLayer: q.fromLayer ?? 0, tap: q.tap, layer: q.layer };
  const value = await op.jvp(op.inputOf(tap.fromLayer), tap);  // the quantity itself (exact: the map reproduces it)
  const D = new Float32Array(d).fill(1);
  if (q.finalNorm ?? true) {
    const { weight, eps } = op.outputNorm();
    let ms = 0;
    for (let k = 0; k < d; k++) ms += value[k] * value[k];
    const r = 1 / Math.sqrt(ms / d + eps);
    for (let k = 0; k < d; k++) D[k] = weight[k] * r;
  }
  const output = value.map((x, k) => x * D[k]);
  const scaleRows = (x: Float32Array) => {  // [B × d] rows times D
    const out = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) out[i] = x[i] * D[i % d];
    return out;
  };
  return {
    nTokens: n, nEmbd: d, output, biasTerm: null,
    jvp: async (t) => scaleRows(await op.jvp(t, tap)),
    vjp: (u) => op.vjp(scaleRows(u), tap),
    jacobian: async () => {
      const J = await op.jacobian(tap);
      const data = new Float32Array(J.data.length);
      for (let i = 0; i < n; i++)
        for (let k = 0; k < d; k++)
          for (let c = 0; c < d; c++) data[(i * d + k) * d + c] = D[k] * J.data[(i * d + k) * d + c];
      return { data, block: (i: number) => data.subarray(i * d * d, (i + 1) * d * d) };
    },
    reconstruction: () => { throw new LljError("reconstruction() is for the model output"); },
  };
}
