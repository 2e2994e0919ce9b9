// Exact token attribution of one logit: the LM head row of the token times each J_i x_i of
// the reconstruction. They sum, with the bias terms, to the logit before any final softcap.
import type { Vocabulary } from "../vocabulary.js";
import type { Reconstruction } from "./reconstruction.js";

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

/** `rec` is the reconstruction of the model output's operator (y and its contributions). */
export async function attribution(rec: Reconstruction, vocab: Vocabulary, token: number): Promise<Attribution> {
  const d = rec.output.length, n = rec.contributionNorms.length;
  const rowAndBias = await vocab.lmHeadRows(Int32Array.from([token]));
  const row = rowAndBias.subarray(0, d), outputBias = rowAndBias[d];
  const contributions: number[] = [];
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let k = 0; k < d; k++) s += row[k] * rec.contributions[i * d + k];
    contributions.push(s);
  }
  let biasContribution = 0, logit = outputBias;
  if (rec.biasTerm) for (let k = 0; k < d; k++) biasContribution += row[k] * rec.biasTerm[k];
  for (let k = 0; k < d; k++) logit += row[k] * rec.output[k];
  const total = rec.contributionNorms.reduce((a, b) => a + b, 0);
  return { token, tokenText: vocab.pieces([token])[0], logit, contributions, biasContribution, outputBias,
    normShares: rec.contributionNorms.map((x) => x / total) };
}
