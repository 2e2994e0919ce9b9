// The model's vocabulary matrices as a linearization holds them: the LM head W_U (output
// space) and the input embeddings (input space). Decoding a vector into tokens is a product
// with one of them, then a top-k.

export interface DecodedToken {
  id: number;
  text: string;
  score: number;
}

export interface Vocabulary {
  /** Number of tokens V. */
  readonly size: number;
  /** The text of each token on its own. */
  pieces(ids: number[]): string[];
  /** W_U v for each row of vectors [B × d] → [B × V] (what the logits would be for y = v). */
  lmHeadScores(vectors: Float32Array, batch: number): Promise<Float32Array>;
  /** Cosine of each row of vectors [B × d] with every token's input embedding → [B × V]. */
  embeddingCosines(vectors: Float32Array, batch: number): Promise<Float32Array>;
  /** For each token its LM head row and then its output bias (0 without one): [T × (d + 1)], logit_t = row·y + bias. */
  lmHeadRows(tokens: Int32Array): Promise<Float32Array>;
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
 * Tokens vectors [B × d] point to: output-space vectors by the top of W_U·u, input-space
 * vectors by cosine similarity to each input embedding.
 */
export async function decode(vocab: Vocabulary, vectors: Float32Array, d: number, space: "output" | "input", top: number): Promise<DecodedToken[][]> {
  const batch = vectors.length / d;
  const scores = space === "input" ? await vocab.embeddingCosines(vectors, batch) : await vocab.lmHeadScores(vectors, batch);
  return topTokens(scores, batch, top, (ids) => vocab.pieces(ids));
}
