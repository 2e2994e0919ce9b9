// Steering with the detached Jacobian of a concept prompt: the steering operator of Golden,
// "Large Language Models are Locally Linear Mappings" (arXiv 2505.24293; TMLR 2025 as
// "Equivalent Linear Mappings of Large Language Models"), as its public reference code
// computes it (github.com/jamesgolden1/equivalent-linear-LLMs, `apply_steering_operator` in
// src/JacobianAnalyzer.py, called by the steering notebooks). For a concept prompt of n_c
// tokens and the operator's layer l (the reference's lsplit = l + 1 blocks):
//
//   J_i   = N · ∂h^(l)_last / ∂x_i, i < n_c: the concept's detached layer-l Jacobian blocks
//           through the detached final norm N = diag(w · r) at the concept's last position
//           (the reference's model_forward ends in model.norm; finalNorm: false drops it);
//   s_k   = J_{k mod n_c} · e_k: the block of position k mod n_c applied to the input
//           embedding e_k of the new text's token at position k;
//   S_k   = s_0 + … + s_k: the running sum over the new text's positions;
//   h_k  += λ · ‖h_k‖ / (2‖S_k‖) · S_k: added to the residual stream entering block l (after
//           layer l − 1: the reference's key='layer_input'), h_k being that stream's unsteered
//           value at position k, so the insertion has norm λ‖h_k‖/2.
//
// Applied at every position of the text (prompt and generated tokens) in our own primal
// graph (native/engine/session.cpp); the reference re-runs the whole text each step, and so do we.
// The default layer is the reference's: lsplit = ⌊2L/3⌋ blocks, i.e. l = ⌊2L/3⌋ − 1 (its
// Qwen 3 8B run: 24 of 36). λ defaults to 1 (the reference's signature default is 1.028;
// its notebooks use 0.17–0.8 on 8B–12B models). A fixed-direction approximation (one vector
// for every position) is what llama.cpp's control vectors can express: see controlVector().
import type { Linearization } from "./linearization.js";
import type { LinearOperator } from "./operator.js";
import type { DecodedToken } from "./vocabulary.js";
import type { HyperParameters } from "./gguf.js";
import { LljError, invalid } from "./errors.js";
import { writeControlVector } from "./cvec.js";
import * as check from "./validate.js";

export interface SteeringOperatorOptions {
  /** The concept prompt: text (tokenized with BOS) or token ids. */
  concept: string | ArrayLike<number>;
  /** The operator's layer: its Jacobian is of the residual stream after this layer (default ⌊2·nLayer/3⌋ − 1, the reference's). */
  layer?: number;
  /** The vector is added to the stream after this layer (default layer − 1: the stream entering block `layer`, as the reference; 0 for layer 0). */
  injectLayer?: number;
  /** Pass the Jacobian through the detached final norm, as the reference does (default true). */
  finalNorm?: boolean;
  /** The strength λ (default 1: on stories260K 0.5 barely moves the concept's tokens, see the README; the reference uses 0.5–0.8 on 8B models). */
  lambda?: number;
  signal?: AbortSignal;
}

/** The operator's default layer for a model of L layers: the reference's lsplit = ⌊2L/3⌋ blocks, i.e. layer ⌊2L/3⌋ − 1 (at least 0). */
export function defaultSteeringLayer(nLayer: number): number {
  return Math.max(0, Math.floor((2 * nLayer) / 3) - 1);
}

/** Where the operator of layer l adds its vector by default: the stream entering block l (after layer l − 1), as the reference; layer 0 after itself. */
export function defaultInjectLayer(layer: number): number {
  return Math.max(0, layer - 1);
}

export const DEFAULT_LAMBDA = 1;

/** The vectors of the operator over a sequence, row-major [n × d] each (float64 sums kept in float32 here). */
export interface SteeringVectors {
  /** s_k = J_{k mod n_c} e_k. */
  steering: Float32Array;
  /** S_k = Σ_{j ≤ k} s_j. */
  sums: Float32Array;
  /** What the graph adds before scaling by ‖h_k‖: λ/2 · S_k / ‖S_k‖ (0 where S_k = 0). */
  injection: Float32Array;
}

/** What the operator needs of its model (given by Model.steeringOperator). */
export interface SteeringHost {
  owner: object;
  hparams: HyperParameters;
  architecture: string;
}

/**
 * The running state of the operator along one text: extend it with the embeddings of new
 * positions, read the injection for the whole text so far.
 */
export class SteeringSequence {
  readonly lambda: number;
  #op: SteeringOperator;
  #sum: Float64Array;
  #injection: Float32Array = new Float32Array(0);
  #n = 0;

  /** @internal made by SteeringOperator.sequence() */
  constructor(op: SteeringOperator, lambda: number) {
    this.#op = op;
    this.lambda = lambda;
    this.#sum = new Float64Array(op.nEmbd);
  }

  /** Positions covered so far. */
  get length(): number {
    return this.#n;
  }

  /** Appends positions with input embeddings e [m × d]: s_k, S_k and the injection rows for them. */
  async extend(embeddings: Float32Array, signal?: AbortSignal): Promise<SteeringVectors> {
    const d = this.#op.nEmbd, m = embeddings.length / d;
    const steering = await this.#op.steeringVectors(embeddings, this.#n, signal);
    const sums = new Float32Array(m * d), injection = new Float32Array(m * d);
    for (let r = 0; r < m; r++) {
      let sq = 0;
      for (let c = 0; c < d; c++) {
        this.#sum[c] += steering[r * d + c];
        sq += this.#sum[c] * this.#sum[c];
        sums[r * d + c] = this.#sum[c];
      }
      const norm = Math.sqrt(sq);
      if (norm > 0 && this.lambda !== 0) for (let c = 0; c < d; c++) injection[r * d + c] = (this.lambda / (2 * norm)) * this.#sum[c];
    }
    const grown = new Float32Array((this.#n + m) * d);
    grown.set(this.#injection);
    grown.set(injection, this.#n * d);
    this.#injection = grown;
    this.#n += m;
    return { steering, sums, injection };
  }

  /** The injection λ/2 · S_k/‖S_k‖ for every position so far, [n × d] (the graph scales row k by ‖h_k‖). */
  injection(): Float32Array {
    return this.#injection;
  }
}

export class SteeringOperator {
  /** The layer of the concept's Jacobian (the residual stream after it). */
  readonly layer: number;
  /** The layer after which the vector is added. */
  readonly injectLayer: number;
  /** Whether the Jacobian passes through the detached final norm. */
  readonly finalNorm: boolean;
  readonly lambda: number;
  /** The concept prompt's tokens (n_c of them). */
  readonly conceptTokens: number[];
  readonly nEmbd: number;
  /** The linearization of the concept prompt (its analyses are available; disposed with the operator). */
  readonly concept: Linearization;
  #host: SteeringHost;
  #topTokens: Promise<DecodedToken[]> | undefined;
  #map: Promise<LinearOperator> | undefined;
  #leading = new Map<boolean, Promise<Float32Array>>();

  /** @internal made by Model.steeringOperator() */
  constructor(host: SteeringHost, concept: Linearization, p: { layer: number; injectLayer: number; finalNorm: boolean; lambda: number }) {
    this.#host = host;
    this.concept = concept;
    this.layer = p.layer;
    this.injectLayer = p.injectLayer;
    this.finalNorm = p.finalNorm;
    this.lambda = p.lambda;
    this.conceptTokens = concept.tokens ?? [];
    this.nEmbd = concept.nEmbd;
  }

  get nConcept(): number {
    return this.concept.nTokens;
  }

  get disposed(): boolean {
    return this.concept.disposed;
  }

  /** Whether the operator was made on this model. */
  belongsTo(host: { owner: object }): boolean {
    return host.owner === this.#host.owner;
  }

  /**
   * s_k = J_{k mod n_c} e_k for positions k = firstPosition … firstPosition + m − 1 of a text
   * whose input embeddings there are e [m × d]: one JVP of the concept's layer-l map (through
   * the final norm when finalNorm) per position (the tangent is e_k at concept position
   * k mod n_c, zero elsewhere), batched.
   */
  async steeringVectors(embeddings: Float32Array, firstPosition = 0, signal?: AbortSignal): Promise<Float32Array> {
    const d = this.nEmbd, nc = this.nConcept;
    check.float32Array("embeddings", embeddings);
    if (embeddings.length === 0 || embeddings.length % d !== 0) throw invalid(`embeddings must hold m·d values (d = ${d}), got ${embeddings.length}`);
    check.integer("firstPosition", firstPosition, 0, Number.MAX_SAFE_INTEGER);
    const m = embeddings.length / d, out = new Float32Array(m * d);
    const op = await this.#operator();
    const chunk = Math.max(1, Math.min(m, Math.floor((1 << 22) / (nc * d))));  // tangents of at most 16 MiB per pass
    for (let r0 = 0; r0 < m; r0 += chunk) {
      const B = Math.min(chunk, m - r0), tangents = new Float32Array(B * nc * d);
      for (let b = 0; b < B; b++) {
        const i = (firstPosition + r0 + b) % nc;
        tangents.set(embeddings.subarray((r0 + b) * d, (r0 + b + 1) * d), (b * nc + i) * d);
      }
      out.set(await op.jvp(tangents, { signal }), r0 * d);
    }
    return out;
  }

  /** The concept's map x ↦ J x, made once (without a signal: each product takes its caller's). */
  #operator(): Promise<LinearOperator> {
    this.#map ??= this.concept.operator({ tap: "residual", layer: this.layer, finalNorm: this.finalNorm }).catch((e) => {
      this.#map = undefined;
      throw e;
    });
    return this.#map;
  }

  /** The operator along a text whose input embeddings are e [n × d] (positions from 0), at strength lambda (default the operator's). */
  async vectors(embeddings: Float32Array, lambda: number = this.lambda, signal?: AbortSignal): Promise<SteeringVectors> {
    return this.sequence(lambda).extend(embeddings, signal);
  }

  /** A running state along a new text (what generate() uses). */
  sequence(lambda: number = this.lambda): SteeringSequence {
    check.finite("lambda", lambda, -1e6, 1e6);
    if (this.disposed) throw new LljError("the steering operator has been disposed", { code: "DISPOSED" });
    return new SteeringSequence(this, lambda);
  }

  /**
   * The concept's top decoded tokens: the leading left singular vector of the last token's
   * layer-l Jacobian (through the final norm), through the LM head (what `analyze --layers`
   * shows for that layer). Computed once.
   */
  topTokens(top = 5): Promise<DecodedToken[]> {
    check.integer("top", top, 1, 50);
    this.#topTokens ??= (async () => {
      const u = await this.#leadingVector(true);
      return (await this.concept.decode(u.slice(), { space: "output", top: Math.min(50, this.concept.logits.length) }))[0];
    })().catch((e) => {
      this.#topTokens = undefined;  // a failed or aborted computation is not kept
      throw e;
    });
    return this.#topTokens.then((t) => t.slice(0, top));
  }

  /** u1 of the last token's layer-l Jacobian, with or without the final norm: one SVD each, shared by topTokens and direction. */
  #leadingVector(finalNorm: boolean): Promise<Float32Array> {
    let p = this.#leading.get(finalNorm);
    if (!p) {
      p = this.concept.layerSvd({ layer: this.layer, tap: "residual", finalNorm }, { k: 1 }).then((s) => s.u.slice(0, this.nEmbd));
      p.catch(() => this.#leading.delete(finalNorm));  // a failed or aborted computation is not kept
      this.#leading.set(finalNorm, p);
    }
    return p;
  }

  /**
   * One direction for every position, unit norm, for the stream after injectLayer:
   * "singular", the leading left singular vector of the operator's J_last (signed to point
   * along the concept's N·h^(l)); or "mean", the mean of the concept's own s_i = J_i x_i over
   * its positions (whose sum is N·h^(l) itself: the reconstruction).
   */
  async direction(kind: "singular" | "mean" = "singular"): Promise<Float32Array> {
    const d = this.nEmbd;
    let v: Float32Array;
    if (kind === "singular") {
      v = (await this.#leadingVector(this.finalNorm)).slice();
    } else {
      const s = await this.steeringVectors(this.concept.inputEmbeddings, 0);
      v = new Float32Array(d);
      for (let i = 0; i < this.nConcept; i++) for (let c = 0; c < d; c++) v[c] += s[i * d + c] / this.nConcept;
    }
    let norm = 0;
    for (let c = 0; c < d; c++) norm += v[c] * v[c];
    norm = Math.sqrt(norm);
    if (!(norm > 0)) throw new LljError(`the concept's ${kind} direction at layer ${this.layer} is zero`, { code: "NON_FINITE" });
    return v.map((x) => x / norm);
  }

  /**
   * The fixed-direction approximation as a vector for llama.cpp, added after injectLayer:
   * λ/2 · m · direction, where m is the median ‖h_k‖ of that stream over the concept's
   * positions — the operator's insertion norm λ‖h_k‖/2 at a typical position (a control
   * vector cannot depend on the position's own norm).
   */
  async controlVector(options: { direction?: "singular" | "mean"; lambda?: number } = {}): Promise<{ vector: Float32Array; layer: number; norm: number }> {
    const o = check.options("controlVector options", options);
    const kind = check.oneOf("direction", o.direction, ["singular", "mean"] as const, "singular");
    const lambda = o.lambda === undefined ? this.lambda : check.finite("lambda", o.lambda, -1e6, 1e6);
    const dir = await this.direction(kind);
    const d = this.nEmbd, n = this.nConcept;
    const at = this.injectLayer + 1;
    const h = at < this.concept.layerInputs.length ? this.concept.layerInputs[at] : this.concept.finalResidual;
    const norms: number[] = [];
    for (let k = 0; k < n; k++) {
      let s = 0;
      for (let c = 0; c < d; c++) s += h[k * d + c] * h[k * d + c];
      norms.push(Math.sqrt(s));
    }
    norms.sort((a, b) => a - b);
    const median = n % 2 ? norms[(n - 1) / 2] : (norms[n / 2 - 1] + norms[n / 2]) / 2;
    const scale = (lambda / 2) * median;
    return { vector: dir.map((x) => x * scale), layer: this.injectLayer, norm: Math.abs(scale) };
  }

  /** Writes controlVector(options) as a llama.cpp control-vector GGUF (src/cvec.ts for the layout). */
  async exportControlVector(path: string, options: { direction?: "singular" | "mean"; lambda?: number } = {}): Promise<{ path: string; layer: number; norm: number }> {
    if (typeof path !== "string" || path === "") throw invalid("exportControlVector needs a file path");
    if (this.injectLayer < 1) throw invalid(`a control vector cannot act on layer 0 (llama.cpp adds them to the outputs of layers 1 and up): this operator adds its vector after layer ${this.injectLayer}; choose injectLayer ≥ 1`);
    const cv = await this.controlVector(options);
    await writeControlVector(path, { architecture: this.#host.architecture, hparams: this.#host.hparams, layer: cv.layer, vector: cv.vector });
    return { path, layer: cv.layer, norm: cv.norm };
  }

  async dispose(): Promise<void> {
    await this.concept.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

/** Checks the options and builds the operator on a linearization of the concept. */
export async function createSteeringOperator(host: SteeringHost, linearize: (concept: string | ArrayLike<number>, signal?: AbortSignal) => Promise<Linearization>,
  options: SteeringOperatorOptions): Promise<SteeringOperator> {
  const o = check.options("steeringOperator options", options);
  if (typeof o.concept !== "string" && (o.concept === null || typeof o.concept !== "object")) {
    throw invalid("steeringOperator needs { concept: text or token ids }");
  }
  const L = host.hparams.nLayer;
  const layer = check.optionalInteger("layer", o.layer, 0, L - 1) ?? defaultSteeringLayer(L);
  const injectLayer = check.optionalInteger("injectLayer", o.injectLayer, 0, L - 1) ?? defaultInjectLayer(layer);
  const finalNorm = check.optionalBoolean("finalNorm", o.finalNorm) ?? true;
  const lambda = o.lambda === undefined ? DEFAULT_LAMBDA : check.finite("lambda", o.lambda, -1e6, 1e6);
  const signal = check.optionalSignal("signal", o.signal);
  const lin = await linearize(o.concept, signal);
  return new SteeringOperator(host, lin, { layer, injectLayer, finalNorm, lambda });
}
