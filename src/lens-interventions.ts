// Interventions with Jacobian-lens directions, as the public J-lens package defines them
// (TransformerLens's JacobianLens.steering_hooks / ablation_hooks / swap_hooks): edits of the
// residual stream after block l (resid_post), where v_t = J_lᵀ W_U[:, t] is token t's lens
// direction at layer l.
//
//   steer:   h ← h + α · median_p ‖h_p‖ · v̂_t           (α default 4, the package's)
//   ablate:  h ← h − (h·v̂) v̂ for each token's v̂, in order  (project out)
//   swap:    c = V⁺h with V = [v_s, v_t]; h ← h + α V (σ(c) − c), σ exchanging the two
//            coordinates; the part of h orthogonal to span{v_s, v_t} is untouched
//
// They run in generation on the graph engine (model.generate(prompt, { intervention })): the
// network runs in segments, and the stream is edited on the host between them (in double,
// written back in F32). Under generation the package's hooks act as in a KV-cached forward:
// each forward edits the positions it processes, so the steering median runs over the edited
// prompt positions on the first forward and is each new token's own norm after it; a
// recomputed position keeps the scale it was first given.
import { invalid, LljError } from "./errors.js";
import * as check from "./validate.js";
import type { Lens } from "./lens.js";
import type { Vocabulary } from "./vocabulary.js";

/** Which positions an intervention edits: the prompt's (all, or a list; negative counts from the prompt's end) and each generated token. */
export interface InterventionPositions {
  /** Prompt positions (default all). */
  positions?: readonly number[];
  /** Edit each generated token too (default true). */
  generated?: boolean;
}

interface CommonOptions extends InterventionPositions {
  /** Source layers of the lens whose output (resid_post) is edited. */
  layers: readonly number[];
}

export interface LensSteeringOptions extends CommonOptions {
  token: number;
  /** Strength in units of the stream's median norm (default 4, the package's). */
  alpha?: number;
}
export interface LensAblationOptions extends CommonOptions {
  tokens: readonly number[];
}
export interface LensSwapOptions extends CommonOptions {
  source: number;
  target: number;
  /** Swap strength (default 1; 2 is the paper's "double-strength" swap). */
  alpha?: number;
}

type Edit =
  | { kind: "steer"; unit: Float64Array; alpha: number }
  | { kind: "ablate"; units: Float64Array[] }
  // swap as one rank-1 update: V(σ(c) − c) = (v_s − v_t)(c_t − c_s), c_t − c_s = (p_t − p_s)·h
  | { kind: "swap"; u: Float64Array; w: Float64Array };

/** The package's thresholds on |cos(v_s, v_t)|: above the first a swap is refused, above the second it warns. */
const SWAP_ERROR_COSINE = 0.999, SWAP_WARN_COSINE = 0.99;

/** What a generation keeps between its forwards: each layer's steering scale per position, once given. */
export interface InterventionState {
  scales: Map<number, number[]>;
}

export class LensIntervention {
  readonly kind: "steer" | "ablate" | "swap";
  /** The edited layers, ascending. */
  readonly layers: number[];
  readonly dModel: number;
  readonly #edits: Map<number, Edit>;
  readonly #positions: readonly number[] | null;
  readonly #generated: boolean;

  /** @internal made by lensSteering / lensAblation / lensSwap */
  constructor(kind: LensIntervention["kind"], edits: Map<number, Edit>, d: number, where: InterventionPositions) {
    this.kind = kind;
    this.#edits = edits;
    this.layers = [...edits.keys()].sort((a, b) => a - b);
    this.dModel = d;
    this.#positions = where.positions ?? null;
    this.#generated = where.generated ?? true;
  }

  /** The positions edited in a sequence of n tokens whose prompt has promptLength. */
  editedPositions(n: number, promptLength: number): number[] {
    const out: number[] = [];
    if (this.#positions === null) for (let p = 0; p < Math.min(n, promptLength); p++) out.push(p);
    else {
      const set = new Set(this.#positions.map((p) => (p < 0 ? promptLength + p : p)));
      for (let p = 0; p < Math.min(n, promptLength); p++) if (set.has(p)) out.push(p);
    }
    if (this.#generated) for (let p = promptLength; p < n; p++) out.push(p);
    return out;
  }

  /** A new generation's state. */
  newState(): InterventionState {
    return { scales: new Map() };
  }

  /** Checks the prompt positions against a prompt's length (before anything runs). */
  checkPrompt(promptLength: number): void {
    for (const p of this.#positions ?? []) {
      if (p < -promptLength || p >= promptLength) throw invalid(`intervention position ${p} is outside the prompt of ${promptLength} tokens`);
    }
  }

  /**
   * Edits the stream after block `layer`, h [n × d] row-major, in place. promptLength: the
   * prompt's tokens (the first forward's positions); state: the generation's memory.
   */
  apply(layer: number, h: Float32Array, promptLength: number, state: InterventionState): void {
    const e = this.#edits.get(layer);
    if (!e) throw invalid(`the intervention does not edit layer ${layer}`);
    const d = this.dModel, n = h.length / d;
    const edited = this.editedPositions(n, promptLength);
    const norm = (p: number) => {
      let s = 0;
      for (let c = 0; c < d; c++) s += h[p * d + c] * h[p * d + c];
      return Math.sqrt(s);
    };
    let scales: number[] = [];
    if (e.kind === "steer") {
      scales = state.scales.get(layer) ?? [];
      if (scales.length === 0) {  // the first forward: the median over its edited positions (torch.median: the lower middle)
        const first = edited.filter((p) => p < promptLength).map(norm).sort((a, b) => a - b);
        const median = first.length ? first[Math.floor((first.length - 1) / 2)] : 0;
        for (let p = 0; p < promptLength; p++) scales.push(e.alpha * median);
      }
      for (let p = scales.length; p < n; p++) scales.push(e.alpha * norm(p));  // later forwards: one position each
      state.scales.set(layer, scales);
    }
    const x = new Float64Array(d);
    for (const p of edited) {
      for (let c = 0; c < d; c++) x[c] = h[p * d + c];
      if (e.kind === "steer") {
        for (let c = 0; c < d; c++) x[c] += scales[p] * e.unit[c];
      } else if (e.kind === "ablate") {
        for (const v of e.units) {
          const a = dot(x, v);
          for (let c = 0; c < d; c++) x[c] -= a * v[c];
        }
      } else {
        const a = dot(x, e.w);
        for (let c = 0; c < d; c++) x[c] += a * e.u[c];
      }
      for (let c = 0; c < d; c++) h[p * d + c] = x[c];
    }
  }
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

function unit(v: Float32Array, what: string): Float64Array {
  const u = Float64Array.from(v);
  const n = Math.sqrt(dot(u, u));
  if (!(n > 0) || !Number.isFinite(n)) throw new LljError(`${what} is zero or not finite: it has no direction`, { code: "INVALID_ARGUMENT" });
  for (let i = 0; i < u.length; i++) u[i] /= n;
  return u;
}

function commonChecks(lens: Lens, vocabulary: Vocabulary, o: CommonOptions): number[] {
  if (!Array.isArray(o.layers) || o.layers.length === 0) throw invalid("layers must be a non-empty array of the lens's source layers");
  const layers = o.layers.map((l, i) => check.integer(`layers[${i}]`, l, 0, Number.MAX_SAFE_INTEGER));
  if (new Set(layers).size !== layers.length) throw invalid("layers must not repeat");
  for (const l of layers) if (!lens.sourceLayers.includes(l)) throw invalid(`layer ${l} is not a source layer of this lens (${lens.sourceLayers.join(", ")})`);
  if (o.positions !== undefined) {
    if (!Array.isArray(o.positions) || o.positions.length === 0) throw invalid("positions must be a non-empty array of prompt positions");
    o.positions.forEach((p, i) => check.integer(`positions[${i}]`, p, -Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER));
  }
  check.optionalBoolean("generated", o.generated);
  if (vocabulary.size < 1) throw invalid("the vocabulary is empty");
  return layers;
}

/** Steering along a token's lens direction: h ← h + α · median‖h‖ · v̂_t at each layer. */
export async function lensSteering(lens: Lens, vocabulary: Vocabulary, options: LensSteeringOptions): Promise<LensIntervention> {
  const o = check.options("lens steering options", options);
  const layers = commonChecks(lens, vocabulary, o);
  const token = check.tokenIds("token", [o.token], vocabulary.size)[0];
  const alpha = o.alpha === undefined ? 4 : check.finite("alpha", o.alpha, -1e6, 1e6);
  const edits = new Map<number, Edit>();
  for (const l of layers) edits.set(l, { kind: "steer", unit: unit(await lens.vectors(vocabulary, [token], l), `the lens vector of token ${token} at layer ${l}`), alpha });
  return new LensIntervention("steer", edits, lens.dModel, o);
}

/** Projecting tokens' lens directions out: h ← h − (h·v̂)v̂ for each, in the order given. */
export async function lensAblation(lens: Lens, vocabulary: Vocabulary, options: LensAblationOptions): Promise<LensIntervention> {
  const o = check.options("lens ablation options", options);
  const layers = commonChecks(lens, vocabulary, o);
  if (!Array.isArray(o.tokens) || o.tokens.length === 0) throw invalid("tokens must be a non-empty array of token ids");
  const tokens = check.tokenIds("tokens", o.tokens, vocabulary.size);
  const d = lens.dModel, edits = new Map<number, Edit>();
  for (const l of layers) {
    const v = await lens.vectors(vocabulary, tokens, l);
    edits.set(l, { kind: "ablate", units: tokens.map((t, i) => unit(v.subarray(i * d, (i + 1) * d), `the lens vector of token ${t} at layer ${l}`)) });
  }
  return new LensIntervention("ablate", edits, d, o);
}

/** Swapping two tokens' lens coordinates: c = V⁺h, h ← h + α V (σ(c) − c). */
export async function lensSwap(lens: Lens, vocabulary: Vocabulary, options: LensSwapOptions): Promise<LensIntervention> {
  const o = check.options("lens swap options", options);
  const layers = commonChecks(lens, vocabulary, o);
  const [source, target] = check.tokenIds("source and target", [o.source, o.target], vocabulary.size);
  if (source === target) throw invalid("source and target are the same token: the swap would do nothing");
  const alpha = o.alpha === undefined ? 1 : check.finite("alpha", o.alpha, -1e6, 1e6);
  const d = lens.dModel, edits = new Map<number, Edit>();
  for (const l of layers) {
    const v = await lens.vectors(vocabulary, [source, target], l);
    const vs = Float64Array.from(v.subarray(0, d)), vt = Float64Array.from(v.subarray(d));
    const ss = dot(vs, vs), tt = dot(vt, vt), st = dot(vs, vt);
    const cos = Math.abs(st) / Math.sqrt(ss * tt);
    if (!Number.isFinite(cos) || cos >= SWAP_ERROR_COSINE) {
      throw invalid(`the lens vectors of tokens ${source} and ${target} at layer ${l} are near-parallel (|cos| ${cos.toFixed(6)}): choose better-separated concepts`);
    }
    if (cos >= SWAP_WARN_COSINE) {
      process.emitWarning(`the lens vectors of tokens ${source} and ${target} at layer ${l} are poorly conditioned (|cos| ${cos.toFixed(6)}): the swap may be amplified`, { code: "LLJ_LENS_SWAP" });
    }
    // V⁺ = (VᵀV)⁻¹Vᵀ: its rows p_s, p_t
    const det = ss * tt - st * st;
    const ps = new Float64Array(d), pt = new Float64Array(d), u = new Float64Array(d), w = new Float64Array(d);
    for (let c = 0; c < d; c++) {
      ps[c] = (tt * vs[c] - st * vt[c]) / det;
      pt[c] = (ss * vt[c] - st * vs[c]) / det;
      u[c] = alpha * (vs[c] - vt[c]);
      w[c] = pt[c] - ps[c];
    }
    edits.set(l, { kind: "swap", u, w });
  }
  return new LensIntervention("swap", edits, d, o);
}
