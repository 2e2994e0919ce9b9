// The bottom layer: a linear operator given by its two products, as JAX's jvp / vjp give
// one (docs/math.md). Every analysis is written against this interface only, so it serves the
// map to y, any layer tap, and whatever later modes (ordinary Jacobians) produce alike.
import type { OutputNorm } from "./native.js";
import { LljError } from "./errors.js";

/** Which positions a pass covers: [firstPosition, n). Exact by causality (docs/math.md §3). */
export interface PositionRange {
  firstPosition?: number;
  /** Stops this product (it then rejects with ABORTED); default the signal the operator was made with. */
  signal?: AbortSignal;
}

/**
 * The map x ↦ y_q of one prompt, linear in the tangents: x lives on n positions of width d,
 * the result is read at the last position, width d.
 */
export interface LinearOperator {
  readonly nTokens: number;
  readonly nEmbd: number;
  /** The quantity's own value at the last position [d] (the primal; y for the model output). */
  readonly output: Float32Array;
  /** The constant c of an affine map (y = L x + c), or null when the map is linear. */
  readonly biasTerm: Float32Array | null;
  /** L v: tangents [B, n − p, d] on positions [p, n) → [B, d]. */
  jvp(tangents: Float32Array, range?: PositionRange): Promise<Float32Array>;
  /** Lᵀ u: cotangents [B, d] → [B, n − p, d] on positions [p, n). */
  vjp(cotangents: Float32Array, range?: PositionRange): Promise<Float32Array>;
  /** The blocks J_i for i ≥ p, assembled from d VJPs. */
  jacobian(range?: PositionRange): Promise<Jacobian>;
  /** The primal input x [n × d] the operator is linearized at (its reconstruction's x). */
  readonly input: Float32Array;
  /** false when the memory plan (linearize's memoryBudget) has no room for the full Jacobian: "auto" analyses go matrix-free. */
  readonly jacobianFits?: boolean;
}

export interface Jacobian {
  nTokens: number;
  nEmbd: number;
  /** The first position with a block (0 unless the Jacobian was asked from a firstPosition). */
  firstPosition: number;
  /** Blocks J_i for i in [firstPosition, n), i-major: J_i[k][c] = ∂y_k/∂x_{i,c} at offset (i − firstPosition)·d·d + k·d + c. */
  data: Float32Array;
  /** J_i as a row-major [d × d] view (i ≥ firstPosition). */
  block(i: number): Float32Array;
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

/** J_i alone [d × d], from the operator's Jacobian on positions [i, n) (one pass of d VJPs at most). */
export async function jacobianBlock(op: LinearOperator, i: number): Promise<Float32Array> {
  return (await op.jacobian({ firstPosition: i })).block(i);
}

/**
 * ‖a − y‖ / ‖y‖ and max |a − y|. When y = 0 the relative error is defined as 0 if a = 0 too
 * and Infinity otherwise (never NaN): an all-zero output is reproduced or it is not.
 */
export function errors(a: Float32Array, y: Float32Array): { relativeError: number; maxAbsError: number } {
  let num = 0, den = 0, max = 0;
  for (let k = 0; k < y.length; k++) {
    const e = a[k] - y[k];
    num += e * e;
    den += y[k] * y[k];
    max = Math.max(max, Math.abs(e));
  }
  const relativeError = den > 0 ? Math.sqrt(num / den) : num > 0 ? Infinity : 0;
  return { relativeError, maxAbsError: max };
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

/**
 * The composition N ∘ op with N the detached final norm, its 1/rms frozen at the quantity's
 * own value: N(x) = D·x (RMSNorm) or D·P x (LayerNorm, P = I − 11ᵀ/d), D = diag(w·r). P is
 * symmetric, so Nᵀ u = P(D u). The composed operator's output is N applied to op's output
 * (plus the norm's bias), as the model's own final norm would give at that value.
 */
export function throughFinalNorm(op: LinearOperator, norm: OutputNorm, ordinary = false): LinearOperator {
  const d = op.nEmbd, n = op.nTokens;
  const center = norm.layerNorm;
  const x = center ? centerRows(op.output, d) : op.output;
  let ms = 0;
  for (let k = 0; k < d; k++) ms += x[k] * x[k];
  const r = 1 / Math.sqrt(ms / d + norm.eps);
  const D = new Float32Array(d);
  for (let k = 0; k < d; k++) D[k] = norm.weight[k] * r;
  const scaleRows = (v: Float32Array) => {  // [B × d] rows times D
    const out = new Float32Array(v.length);
    for (let i = 0; i < v.length; i++) out[i] = v[i] * D[i % d];
    return out;
  };
  // ordinary: the norm's own derivative, v - n̂·mean(n̂·v) with n̂ = x·r (symmetric), before D
  const nhat = x.map((v) => v * r);
  const project = (v: Float32Array) => {
    if (!ordinary) return v;
    const out = new Float32Array(v.length);
    for (let i = 0; i < v.length; i += d) {
      let m = 0;
      for (let k = 0; k < d; k++) m += nhat[k] * v[i + k];
      m /= d;
      for (let k = 0; k < d; k++) out[i + k] = v[i + k] - nhat[k] * m;
    }
    return out;
  };
  const forward = (v: Float32Array) => scaleRows(project(center ? centerRows(v, d) : v));
  const transposed = (u: Float32Array) => { const t = project(scaleRows(u)); return center ? centerRows(t, d) : t; };
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
    nTokens: n, nEmbd: d, input: op.input,
    output: x.map((v, k) => v * D[k] + (norm.bias?.[k] ?? 0)),
    // the bias terms of op pass through N's linear part; the norm's own bias is a constant too
    biasTerm: op.biasTerm || norm.bias ? forward(op.biasTerm ?? new Float32Array(d)).map((v, k) => v + (norm.bias?.[k] ?? 0)) : null,
    jvp: async (t, range) => forward(await op.jvp(t, range)),
    vjp: (u, range) => op.vjp(transposed(u), range),
    jacobian: async (range) => throughNorm(await op.jacobian(range)),
  };
}
