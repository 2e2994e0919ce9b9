// The reconstruction invariant as an analysis: Σ_i J_i x_i (+ c) against the operator's own
// output, each J_i x_i from a JVP of x restricted to position i, so the contributions are
// exact per-token attributions.
import { errors, type LinearOperator } from "../operator.js";

export interface Reconstruction {
  /** Σ_i J_i x_i (+ c) [d]. */
  reconstructed: Float32Array;
  /** The operator's output (the model's y for the output map) [d]. */
  output: Float32Array;
  relativeError: number;
  maxAbsError: number;
  /** J_i x_i per input position, row-major [n × d]. */
  contributions: Float32Array;
  /** ‖J_i x_i‖ per position. */
  contributionNorms: number[];
  /** The bias term c for affine maps, else null. */
  biasTerm: Float32Array | null;
}

/** Positions per batched JVP: the tangents stay small, and each batch skips the positions before it. */
const POSITIONS_PER_PASS = 32;

export async function reconstruct(op: LinearOperator, onProgress?: (p: number) => void): Promise<Reconstruction> {
  const n = op.nTokens, d = op.nEmbd, x = op.input;
  // Each batch's JVPs run on positions [i0, n) only (causality): about half the work of one
  // batch over all positions.
  const contributions = new Float32Array(n * d);
  for (let i0 = 0; i0 < n; i0 += POSITIONS_PER_PASS) {
    const B = Math.min(POSITIONS_PER_PASS, n - i0), m = n - i0;  // tangents on positions [i0, n)
    const tangents = new Float32Array(B * m * d);
    for (let b = 0; b < B; b++) tangents.set(x.subarray((i0 + b) * d, (i0 + b + 1) * d), (b * m + b) * d);
    contributions.set(await op.jvp(tangents, { firstPosition: i0 }), i0 * d);
    onProgress?.((i0 + B) / n);
  }
  const reconstructed = new Float32Array(d);
  const norms: number[] = [];
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let k = 0; k < d; k++) {
      const v = contributions[i * d + k];
      reconstructed[k] += v;
      s += v * v;
    }
    norms.push(Math.sqrt(s));
  }
  if (op.biasTerm) for (let k = 0; k < d; k++) reconstructed[k] += op.biasTerm[k];
  return { reconstructed, output: op.output, ...errors(reconstructed, op.output), contributions, contributionNorms: norms, biasTerm: op.biasTerm };
}
