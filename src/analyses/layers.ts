// Concept emergence across depth: per layer, the leading singular vectors of the last token's
// Jacobian of the residual stream after it (through the detached final norm), decoded
// through the LM head.
import type { LinearOperator } from "../operator.js";
import { decode, type DecodedToken, type Vocabulary } from "../vocabulary.js";
import { svd, type SvdOptions } from "./svd.js";

export interface EmergenceRow {
  layer: number;
  /** Leading singular values of the last token's Jacobian of the residual stream after this layer. */
  values: number[];
  /** Top tokens of each leading left singular vector, through the final norm and the LM head. */
  tokens: DecodedToken[][];
}

export async function emergence(operatorAt: (layer: number) => Promise<LinearOperator>, vocab: Vocabulary, layers: number[],
  options: { k: number; top: number; method?: SvdOptions["method"]; seed?: number; onProgress?: (progress: number) => void }): Promise<EmergenceRow[]> {
  const rows: EmergenceRow[] = [];
  for (const layer of layers) {
    const op = await operatorAt(layer);
    const s = await svd(op, { k: options.k, method: options.method, seed: options.seed });
    rows.push({ layer, values: Array.from(s.values), tokens: await decode(vocab, s.u, op.nEmbd, "output", options.top) });
    options.onProgress?.(rows.length / layers.length);
  }
  return rows;
}
