// An independent float64 forward of a llama-architecture GGUF with F32 weights (the trained
// stories260K): RMSNorm, rope (normal mode), causal GQA softmax attention, SwiGLU FFN, the
// final norm. Written from the architecture's definition, not from our graphs, so that
// finite differences of it in double are the reference for the ordinary Jacobian.
import { readF32Tensor, matVec } from "./helpers.js";

/**
 * The primal values the relevance rules (RelP, the R-lens) hold fixed: every norm's 1/rms, and
 * each MLP's gate activation G = silu(g), its up projection u and φ = G/g.
 */
export interface Relevance64 {
  rAttn: number[][]; rFfn: number[][]; rOut: number[];
  G: Float64Array[][]; u: Float64Array[][]; phi: Float64Array[][];
}

export interface Llama64 {
  d: number;
  /**
   * Input embeddings [n × d] → final-norm output [n × d]. With `record`, fills it with the
   * relevance rules' fixed values; with `relevance`, computes the function whose derivative
   * is the RelP map at the recorded point: norms with r fixed, attention as is, each MLP as
   * ½(G₀ ⊙ u(m) + u₀ ⊙ φ₀ ⊙ g(m)) (the half rule over the identity rule; its value at the
   * recorded point is the network's).
   */
  forward(x: Float64Array, n: number, options?: { record?: Relevance64; relevance?: Relevance64 }): Float64Array;
}

export function emptyRelevance64(): Relevance64 {
  return { rAttn: [], rFfn: [], rOut: [], G: [], u: [], phi: [] };
}

interface Hparams { nLayer: number; nHead: number; nHeadKv: number; headDim: number; nFf: number; normEps: number; ropeBase: number }

export async function llama64(file: string, hp: Hparams): Promise<Llama64> {
  const t = async (name: string) => (await readF32Tensor(file, name)).data;
  const layers: Array<Record<string, Float32Array>> = [];
  for (let l = 0; l < hp.nLayer; l++) {
    const b = `blk.${l}.`;
    layers.push({
      attnNorm: await t(b + "attn_norm.weight"), wq: await t(b + "attn_q.weight"), wk: await t(b + "attn_k.weight"),
      wv: await t(b + "attn_v.weight"), wo: await t(b + "attn_output.weight"), ffnNorm: await t(b + "ffn_norm.weight"),
      gate: await t(b + "ffn_gate.weight"), up: await t(b + "ffn_up.weight"), down: await t(b + "ffn_down.weight"),
    });
  }
  const outNorm = await t("output_norm.weight");
  const d = outNorm.length, { nHead: H, nHeadKv: Hkv, headDim: hd, nFf: ff, normEps: eps } = hp;

  const inverseRms = (x: Float64Array): number => {
    let ss = 0;
    for (const v of x) ss += v * v;
    return 1 / Math.sqrt(ss / x.length + eps);
  };
  const scaled = (x: Float64Array, r: number, w: Float32Array): Float64Array => x.map((v, i) => v * r * w[i]);
  const rope = (v: Float64Array, pos: number): void => {  // every head's pairs (2i, 2i + 1)
    for (let h = 0; h < v.length / hd; h++) {
      for (let i = 0; i < hd / 2; i++) {
        const th = pos * Math.pow(hp.ropeBase, (-2 * i) / hd), c = Math.cos(th), s = Math.sin(th);
        const a = v[h * hd + 2 * i], b = v[h * hd + 2 * i + 1];
        v[h * hd + 2 * i] = a * c - b * s;
        v[h * hd + 2 * i + 1] = a * s + b * c;
      }
    }
  };

  return {
    d,
    forward(x: Float64Array, n: number, options = {}): Float64Array {
      const { record, relevance } = options as { record?: Relevance64; relevance?: Relevance64 };
      // a norm's 1/rms: recorded, or held at the recorded value under the relevance rules
      const coefficient = (h: Float64Array, list: keyof Pick<Relevance64, "rAttn" | "rFfn">, l: number, i: number): number => {
        if (relevance) return relevance[list][l][i];
        const r = inverseRms(h);
        if (record) (record[list][l] ??= [])[i] = r;
        return r;
      };
      const h = Array.from({ length: n }, (_, i) => x.slice(i * d, (i + 1) * d));
      for (const [l, L] of layers.entries()) {
        const q: Float64Array[] = [], k: Float64Array[] = [], v: Float64Array[] = [];
        for (let i = 0; i < n; i++) {
          const a = scaled(h[i], coefficient(h[i], "rAttn", l, i), L.attnNorm);
          q.push(matVec(L.wq, H * hd, d, a));
          k.push(matVec(L.wk, Hkv * hd, d, a));
          v.push(matVec(L.wv, Hkv * hd, d, a));
          rope(q[i], i);
          rope(k[i], i);
        }
        for (let i = 0; i < n; i++) {
          const o = new Float64Array(H * hd);
          for (let head = 0; head < H; head++) {
            const kv = Math.floor(head / (H / Hkv));
            const s = new Float64Array(i + 1);
            let max = -Infinity;
            for (let j = 0; j <= i; j++) {
              let dot = 0;
              for (let c = 0; c < hd; c++) dot += q[i][head * hd + c] * k[j][kv * hd + c];
              s[j] = dot / Math.sqrt(hd);
              max = Math.max(max, s[j]);
            }
            let z = 0;
            for (let j = 0; j <= i; j++) z += (s[j] = Math.exp(s[j] - max));
            for (let j = 0; j <= i; j++) for (let c = 0; c < hd; c++) o[head * hd + c] += (s[j] / z) * v[j][kv * hd + c];
          }
          const attn = matVec(L.wo, d, H * hd, o);
          h[i] = h[i].map((val, c) => val + attn[c]);
        }
        for (let i = 0; i < n; i++) {
          const m = scaled(h[i], coefficient(h[i], "rFfn", l, i), L.ffnNorm);
          const g = matVec(L.gate, ff, d, m), u = matVec(L.up, ff, d, m);
          const G = g.map((z) => z / (1 + Math.exp(-z)));
          if (record) {
            (record.G[l] ??= [])[i] = G;
            (record.u[l] ??= [])[i] = u;
            (record.phi[l] ??= [])[i] = G.map((a, c) => a / g[c]);
          }
          const act = relevance
            ? u.map((uc, c) => 0.5 * (relevance.G[l][i][c] * uc + relevance.u[l][i][c] * relevance.phi[l][i][c] * g[c]))
            : G.map((a, c) => a * u[c]);
          const y = matVec(L.down, d, ff, act);
          h[i] = h[i].map((val, c) => val + y[c]);
        }
      }
      const out = new Float64Array(n * d);
      for (let i = 0; i < n; i++) {
        const r = relevance ? relevance.rOut[i] : inverseRms(h[i]);
        if (record) record.rOut[i] = r;
        out.set(scaled(h[i], r, outNorm), i * d);
      }
      return out;
    },
  };
}
