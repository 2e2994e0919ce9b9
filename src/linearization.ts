// The exact linear system of one prompt (docs/math.md): y = Σ_i J_i x_i (+ c), with the
// linear operator L given by its two products, jvp (L v) and vjp (Lᵀ u). Every analysis is
// built on those products.
import type { MemoryPlan } from "./planner.js";
import type { NativeLinearization, NativeTap } from "./native.js";
import { LljError, abortedError, invalid } from "./errors.js";
import { nativeCall } from "./abort.js";
import { Lifecycle, type DisposeOptions } from "./lifecycle.js";
import * as check from "./validate.js";
import { errors, jacobianOf, throughFinalNorm, type Jacobian, type LinearOperator, type PositionRange } from "./operator.js";
import { decode, type DecodedToken, type Vocabulary } from "./vocabulary.js";
import { reconstruct, type Reconstruction } from "./analyses/reconstruction.js";
import { attribution, type Attribution } from "./analyses/attribution.js";
import { emergence, type EmergenceRow } from "./analyses/layers.js";
import { svd, type SvdOptions, type SingularTriplets, type EachTokenTriplets } from "./analyses/svd.js";

export type { Jacobian, Reconstruction };

export interface LinearizeOptions {
  /** "exact" (default): weights dequantized, F32 products (docs/precision.md). */
  precision?: "exact" | "fast";
  /**
   * "detached" (default): the paper's map, every nonlinear coefficient frozen, which
   * reproduces the output exactly (docs/math.md §2). "ordinary": the true derivative of the
   * network at the prompt, the same record plus each coefficient's own derivative term
   * (docs/math.md §5); its products do not reproduce the output. "relevance": the R-lens's
   * relevance rules (RelP: residual-stream norms and activation factors detached, each gate
   * product's derivative halved between its factors, attention ordinary; routed experts'
   * routing weights detached).
   */
  mode?: "detached" | "ordinary" | "relevance";
  threads?: number;
  /** Memory the batched linear passes may use for activations (default 512 MiB); sets the batch width. */
  batchMemoryBytes?: number;
  /**
   * Bytes the whole job may allocate (model.plan: the frozen record, layer inputs,
   * dequantized layers, batches, the full Jacobian where an analysis wants it): the batch
   * width is what it leaves, "auto" analyses go matrix-free when the full Jacobian does not
   * fit, and a prompt whose fixed parts alone exceed it is refused (OUT_OF_MEMORY) before
   * anything is allocated. Instead of batchMemoryBytes.
   */
  memoryBudget?: number;
  /** Run the large products on ggml's OpenBLAS backend when it was built (default true; exact mode only: it would dequantize a fast-mode weight). */
  blas?: boolean;
  /**
   * Exact products on quantized (and F16/BF16) weights held by the CPU through the tiled
   * dequantize-and-multiply kernel (default true): ggml's own dequantization, tile by tile,
   * never a full F32 copy of a weight. false: the older cast + mul_mat route (same values
   * to F32 rounding; kept for comparison).
   */
  tiled?: boolean;
  /**
   * The context size llama.cpp would run the model with (default: the prompt length). It is
   * part of the network for Phi-3/Phi-4, whose long or short rope factors llama.cpp picks by
   * whether the context (padded to 256) exceeds rope.scaling.original_context_length.
   */
  contextSize?: number;
  /** Stops the primal pass between graph nodes; the promise then rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Called with the fraction of the primal pass done (per layer), in [0, 1]. */
  onProgress?: (progress: number) => void;
}

/**
 * Which linear map a pass applies (default: input embeddings → y). The tangents live on the
 * residual stream entering `fromLayer` (the input embeddings for 0); the result is read at
 * `tap` of `layer`: "residual" (the stream after that layer), "attn" / "mlp" (that layer's
 * branch output, after any post-norm), or "output" (y, after the final norm).
 */
export interface LayerTap {
  fromLayer?: number;
  tap?: "output" | "residual" | "attn" | "mlp";
  layer?: number;
}

export interface PassOptions extends LayerTap {
  /** Tangents/cotangents at every position ([B, n, d]) instead of the last one ([B, d]). */
  allPositions?: boolean;
  /**
   * Restrict the pass to positions [firstPosition, n): every per-position array of it —
   * JVP tangents, all-position outputs and cotangents, VJP results — is then
   * [B, n − firstPosition, d]. Exact by causality: a JVP's earlier tangents are zero, and a
   * VJP's cotangents on those positions depend only on later ones. The pass then costs
   * O(n − firstPosition) positions (one for J_last).
   */
  firstPosition?: number;
  /**
   * jvp only: the affine map L(v) + c, with every bias from fromLayer on (for affine models;
   * the same as L(v) otherwise). Applied to the primal input it gives the tapped quantity itself.
   */
  affine?: boolean;
  signal?: AbortSignal;
  onProgress?: (progress: number) => void;
}

/** The operator of one quantity (see Linearization.operator). */
export interface OperatorOptions extends LayerTap {
  /** Layer taps: through the detached final norm, its 1/rms frozen at the quantity's own value (default true). */
  finalNorm?: boolean;
  /** Stops the operator's products (they then reject with ABORTED). */
  signal?: AbortSignal;
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

const TAPS = ["output", "residual", "attn", "mlp"] as const;

/** The checked options of one pass (layer indices and positions exact integers in range). */
interface Pass {
  tap: NativeTap;
  allPositions: boolean;
  signal: AbortSignal | undefined;
  onProgress: ((p: number) => void) | undefined;
}

export interface NonlinearReconstruction {
  /** f'(x)·x, the ordinary Jacobian applied to the input. */
  reconstructed: Float32Array;
  output: Float32Array;
  relativeError: number;
  maxAbsError: number;
  /** "ordinary": the ordinary linearization's JVP of x (exact); "difference": a central difference of the real forward along x. */
  method: "ordinary" | "difference";
  /** The difference's relative step; null for "ordinary". */
  epsilon: number | null;
}

function firstNonFinite(a: Float32Array): number {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return i;
  return -1;
}

export class Linearization {
  /** Prompt tokens, or null when linearized around given embeddings. */
  readonly tokens: number[] | null;
  readonly nTokens: number;
  readonly nEmbd: number;
  /** x: the input embeddings, row-major [n × d]. */
  readonly inputEmbeddings: Float32Array;
  /** y: the last position's output of the final norm [d]. */
  readonly output: Float32Array;
  /** The output of the final norm at every position, row-major [n × d]. */
  readonly hidden: Float32Array;
  /** The residual stream entering the final norm (after the last layer), row-major [n × d]. */
  readonly finalResidual: Float32Array;
  /** Logits of the last position: W_U y, then the final softcap c·tanh(·/c) where the model has one (Gemma 2/3). */
  readonly logits: Float32Array;
  /** W_U y before any final softcap (equal to `logits` when there is none): linear in y. */
  readonly logitsBeforeSoftcap: Float32Array;
  /** The final logit softcap c, or 0. It acts on logits only, so y and its decomposition are unaffected. */
  readonly finalSoftcap: number;
  readonly predictedToken: number;
  /** The residual stream entering each layer, row-major [n × d] each, from our primal pass. */
  readonly layerInputs: Float32Array[];
  /**
   * Mixture-of-experts models: the experts each layer's router chose at every position,
   * row-major [n × k] per layer (k = experts used per token), as llama.cpp's top-k returns
   * them. Every mode holds this choice fixed (a derivative at a point). null for dense models.
   */
  readonly experts: Int32Array[] | null;
  /** True when biases make the map affine: y = Σ J_i x_i + c. */
  readonly affine: boolean;
  readonly biasTerm: Float32Array | null;
  readonly precision: "exact" | "fast";
  /** Which linearization this is: the detached map or the ordinary Jacobian (LinearizeOptions.mode). */
  readonly mode: "detached" | "ordinary" | "relevance";
  /** Columns per native pass, from the memory budget. */
  readonly maxBatch: number;
  /** The memory plan it was made under (linearize's memoryBudget), or null. */
  readonly plan: MemoryPlan | null;
  /** Whether the large products run on ggml's OpenBLAS backend. */
  readonly blas: boolean;
  /** Whether products on quantized weights run through the tiled kernel (see LinearizeOptions.tiled). */
  readonly tiled: boolean;
  /** Tensors llama.cpp loads but its graph never applies (ignored here too). */
  readonly ignoredTensors: string[];

  #native: NativeLinearization | undefined;
  #lc = new Lifecycle("linearization");
  readonly #nLayer: number;
  #onDispose: (() => void) | undefined;
  #pieces: (ids: number[]) => string[];
  #jacobian: Promise<Jacobian> | undefined;
  #reconstruction: Promise<Reconstruction> | undefined;
  #ordinary: (() => Promise<Linearization>) | undefined;  // the same input linearized in ordinary mode (Model.linearize)

  /** @internal created by Model.linearize() */
  constructor(native: NativeLinearization, tokens: number[] | null, pieces: (ids: number[]) => string[], onDispose?: () => void,
    ordinary?: () => Promise<Linearization>, plan?: MemoryPlan) {
    this.#native = native;
    this.plan = plan ?? null;
    this.#ordinary = ordinary;
    this.#onDispose = onDispose;
    this.#pieces = pieces;
    const info = native.info();
    const p = native.primal();
    this.tokens = tokens;
    this.nTokens = info.nTokens;
    this.nEmbd = info.nEmbd;
    this.inputEmbeddings = p.embeddings;
    this.hidden = p.hidden;
    this.finalResidual = p.finalResidual;
    this.output = p.hidden.slice((info.nTokens - 1) * info.nEmbd);
    this.logits = p.logits;
    this.logitsBeforeSoftcap = p.logitsBeforeSoftcap;
    this.finalSoftcap = p.finalSoftcap;
    let top = 0;
    for (let i = 1; i < p.logits.length; i++) if (p.logits[i] > p.logits[top]) top = i;
    this.predictedToken = top;
    this.layerInputs = p.layerInputs;
    this.experts = p.experts;
    this.affine = info.affine;
    this.mode = info.relevance ? "relevance" : info.ordinary ? "ordinary" : "detached";
    this.biasTerm = this.mode !== "detached" ? null : p.biasTerm;  // only the detached map has a constant term
    this.precision = info.exact ? "exact" : "fast";
    this.maxBatch = info.maxBatch;
    this.blas = info.blas;
    this.tiled = info.tiled;
    this.ignoredTensors = info.ignoredTensors;
    this.#nLayer = info.nLayer;
  }

  /** True once dispose() has been called. */
  get disposed(): boolean {
    return !this.#lc.live;
  }

  #get(): NativeLinearization {
    if (!this.#native) throw new LljError("the linearization has been disposed", { code: "DISPOSED" });
    return this.#native;
  }

  /**
   * One native call: aborted by the caller's signal or dispose({ abort: true }), its errors
   * as LljErrors. Internal steps of tracked operations call this directly, so that an
   * operation running when dispose() begins finishes rather than being refused halfway.
   */
  #call<T>(signal: AbortSignal | undefined, call: (n: NativeLinearization, flag: Int32Array, progress?: (p: number) => void) => Promise<T>,
    onProgress?: (p: number) => void): Promise<T> {
    const native = this.#get();
    return nativeCall(this.#lc.signal(signal), onProgress, (flag, progress) => call(native, flag, progress));
  }

  /** A NaN or infinity in a product's result is refused, never returned. */
  static #finite(what: string, out: Float32Array): Float32Array {
    const i = firstNonFinite(out);
    if (i >= 0) {
      throw new LljError(`the ${what} result is ${Number.isNaN(out[i]) ? "NaN" : "infinite"} at index ${i}: the inputs are too large for float32 ` +
        "(the map is linear: scale them down and the result by the same factor)", { code: "NON_FINITE" });
    }
    return out;
  }

  /** Checks the options of a pass exactly (integers, known taps, layers in range). */
  #pass(options: PassOptions | undefined): Pass {
    const o = check.options("pass options", options);
    const L = this.#nLayer;
    const fromLayer = check.optionalInteger("fromLayer", o.fromLayer, 0, L - 1) ?? 0;
    const tap = check.oneOf("tap", o.tap, TAPS, "output");
    const layer = check.optionalInteger("layer", o.layer, 0, L - 1);
    const firstPosition = check.optionalInteger("firstPosition", o.firstPosition, 0, this.nTokens - 1);
    return {
      tap: { fromLayer, tap, tapLayer: layer, firstPosition, affine: check.optionalBoolean("affine", o.affine) },
      allPositions: check.optionalBoolean("allPositions", o.allPositions) ?? false,
      signal: check.optionalSignal("signal", o.signal),
      onProgress: check.optionalFunction<(p: number) => void>("onProgress", o.onProgress),
    };
  }

  /**
   * L v for a batch of tangent sequences, v row-major [B, n, d] (B inferred from the
   * length; [B, n − firstPosition, d] with firstPosition). Returns [B, d] (last position) or
   * [B, n, d] with allPositions.
   */
  async jvp(tangents: Float32Array, options: PassOptions = {}): Promise<Float32Array> {
    const pass = this.#pass(options);
    check.float32Array("tangents", tangents);
    return this.#lc.run(() => this.#jvp(tangents, pass));
  }

  async #jvp(tangents: Float32Array, pass: Pass): Promise<Float32Array> {
    const m = this.nTokens - (pass.tap.firstPosition ?? 0), per = m * this.nEmbd;
    if (tangents.length === 0 || tangents.length % per !== 0) {
      throw invalid(`tangents must be a Float32Array of B·n·d values (n·d = ${m}·${this.nEmbd} = ${per}), got ${tangents.length}`);
    }
    const out = await this.#call(pass.signal, (n, flag, progress) => n.jvp({ ...pass.tap, tangents, batch: tangents.length / per, allPositions: pass.allPositions, onProgress: progress, abortFlag: flag }), pass.onProgress);
    return Linearization.#finite("jvp", out);
  }

  /**
   * Lᵀ u for a batch of cotangents, u row-major [B, d] (on the last position) or [B, n, d]
   * with allPositions. Returns the cotangents on the input embeddings, [B, n, d] (n counted
   * from firstPosition when given).
   */
  async vjp(cotangents: Float32Array, options: PassOptions = {}): Promise<Float32Array> {
    const pass = this.#pass(options);
    check.float32Array("cotangents", cotangents);
    if (pass.tap.affine) throw invalid("affine applies to jvp only");
    return this.#lc.run(() => this.#vjp(cotangents, pass));
  }

  async #vjp(cotangents: Float32Array, pass: Pass): Promise<Float32Array> {
    const per = (pass.allPositions ? this.nTokens - (pass.tap.firstPosition ?? 0) : 1) * this.nEmbd;
    if (cotangents.length === 0 || cotangents.length % per !== 0) {
      throw invalid(`cotangents must be a Float32Array of ${pass.allPositions ? "B·n·d" : "B·d"} values (${per} per item), got ${cotangents.length}`);
    }
    const out = await this.#call(pass.signal, (n, flag, progress) => n.vjp({ ...pass.tap, cotangents, batch: cotangents.length / per, allPositions: pass.allPositions, onProgress: progress, abortFlag: flag }), pass.onProgress);
    return Linearization.#finite("vjp", out);
  }

  /**
   * The full detached Jacobian, n blocks [d × d], assembled from d VJPs (reverse mode); with
   * a tap, the Jacobian of that layer quantity (last position) instead.
   */
  async jacobian(options: LayerTap & { firstPosition?: number; signal?: AbortSignal; onProgress?: (p: number) => void } = {}): Promise<Jacobian> {
    const pass = this.#pass(options);
    return this.#lc.run(() => this.#jacobianOf(pass));
  }

  async #jacobianOf(pass: Pass): Promise<Jacobian> {
    const data = await this.#call(pass.signal, (n, flag, progress) => n.jacobian({ ...pass.tap, onProgress: progress, abortFlag: flag }), pass.onProgress);
    return jacobianOf(Linearization.#finite("jacobian", data), this.nTokens, this.nEmbd, pass.tap.firstPosition ?? 0);
  }

  /**
   * The linear map of one quantity as an operator value (JVP, VJP, Jacobian; docs/math.md):
   * by default input embeddings → y. With `tap`/`layer`, the residual stream after a layer or
   * a branch output, passed through the detached final norm unless `finalNorm: false`; with
   * `fromLayer`, from the stream entering that layer. Every analysis takes such an operator.
   */
  async operator(options: OperatorOptions = {}): Promise<LinearOperator> {
    const q = this.#operatorOptions(options);
    return this.#lc.run(() => this.#operator(q));
  }

  #operatorOptions(options: OperatorOptions): Required<Omit<OperatorOptions, "signal" | "layer">> & { layer?: number; signal?: AbortSignal } {
    const o = check.options("operator options", options);
    const L = this.#nLayer;
    const tap = check.oneOf("tap", o.tap, TAPS, "output");
    const layer = tap === "output" ? check.optionalInteger("layer", o.layer, 0, L - 1) : check.integer("layer", o.layer, 0, L - 1);
    return { tap, layer, fromLayer: check.optionalInteger("fromLayer", o.fromLayer, 0, L - 1) ?? 0,
      finalNorm: check.optionalBoolean("finalNorm", o.finalNorm) ?? true, signal: check.optionalSignal("signal", o.signal) };
  }

  async #operator(q: { tap: (typeof TAPS)[number]; layer?: number; fromLayer: number; finalNorm: boolean; signal?: AbortSignal }): Promise<LinearOperator> {
    const { signal } = q;
    const input = q.fromLayer === 0 ? this.inputEmbeddings : this.layerInputs[q.fromLayer];
    if (q.tap === "output" && q.fromLayer === 0) return this.#outputOperator(signal);
    const tap = { fromLayer: q.fromLayer, tap: q.tap, layer: q.layer };
    const pass = (range?: PositionRange, affine?: boolean) => this.#pass({ ...tap, firstPosition: range?.firstPosition, affine, signal: range?.signal ?? signal });
    // the quantity itself: the affine map (biases included) at the primal input reproduces it
    const output = await this.#jvp(input, pass(undefined, true));
    // c = value − L x: one more pass, only where biases make the map affine
    let biasTerm: Float32Array | null = null;
    if (this.affine && this.mode === "detached") {
      const lx = await this.#jvp(input, pass());
      biasTerm = output.map((v, k) => v - lx[k]);
    }
    const op: LinearOperator = {
      nTokens: this.nTokens, nEmbd: this.nEmbd, input, output, biasTerm,
      jvp: (t, range) => this.#jvp(t, pass(range)),
      vjp: (u, range) => this.#vjp(u, pass(range)),
      jacobian: (range) => this.#jacobianOf(pass(range)),
      jacobianFits: this.plan ? this.plan.route === "full Jacobian" : undefined,
    };
    return q.tap !== "output" && q.finalNorm ? throughFinalNorm(op, this.#get().outputNorm(), this.mode === "ordinary") : op;
  }

  /** The map to y, with the full Jacobian cached once computed (shared by later calls, so one caller's signal does not stop it). */
  #outputOperator(signal?: AbortSignal): LinearOperator {
    const pass = (range?: PositionRange) => this.#pass({ firstPosition: range?.firstPosition, signal: range?.signal ?? signal });
    return {
      nTokens: this.nTokens, nEmbd: this.nEmbd, input: this.inputEmbeddings, output: this.output, biasTerm: this.biasTerm,
      jvp: (t, range) => this.#jvp(t, pass(range)),
      vjp: (u, range) => this.#vjp(u, pass(range)),
      jacobian: (range) => (this.#jacobian || !range?.firstPosition ? this.#cachedJacobian() : this.#jacobianOf(pass(range))),
      jacobianFits: this.plan ? this.plan.route === "full Jacobian" : undefined,
    };
  }

  /**
   * The model's own final norm applied to rows [B × d] (what the LM head reads: a lens
   * readout's norm(J_l h)); each row normalized on its own, bias included.
   */
  finalNorm(rows: Float32Array): Float32Array {
    if (!check.float32Array("rows", rows) || rows.length === 0 || rows.length % this.nEmbd !== 0) {
      throw invalid(`rows must be a Float32Array of B·d values (d = ${this.nEmbd}), got ${rows.length}`);
    }
    const norm = this.#get().outputNorm(), d = this.nEmbd, out = new Float32Array(rows.length);
    for (let i = 0; i < rows.length; i += d) {
      let mean = 0;
      if (norm.layerNorm) for (let k = 0; k < d; k++) mean += rows[i + k] / d;
      let ms = 0;
      for (let k = 0; k < d; k++) ms += (rows[i + k] - mean) ** 2;
      const r = 1 / Math.sqrt(ms / d + norm.eps);
      for (let k = 0; k < d; k++) out[i + k] = (rows[i + k] - mean) * r * norm.weight[k] + (norm.bias?.[k] ?? 0);
    }
    return out;
  }

  /** The vocabulary matrices (LM head, input embeddings), as tracked native calls. */
  get vocabulary(): Vocabulary {
    return {
      size: this.logits.length,
      pieces: (ids) => this.#pieces(ids),
      lmHeadScores: (v, b) => this.#call(undefined, (n) => n.vocabProducts({ vectors: v, batch: b, kind: "lmHead" })),
      embeddingCosines: (v, b) => this.#call(undefined, (n) => n.vocabProducts({ vectors: v, batch: b, kind: "embedding" })),
      lmHeadRows: (t) => this.#call(undefined, (n) => n.lmHeadRows({ tokens: t })),
    };
  }

  /**
   * Σ_i J_i x_i (+ c) against y: each J_i x_i is L applied to x restricted to position i
   * (batched JVPs), so the contributions are exact per-token attributions. Computed once
   * (attribution reuses it; onProgress is the first call's); a failed or aborted computation
   * is not kept.
   */
  async reconstruction(options: { signal?: AbortSignal; onProgress?: (progress: number) => void } = {}): Promise<Reconstruction> {
    const o = check.options("reconstruction options", options);
    const signal = check.optionalSignal("signal", o.signal);
    const onProgress = check.optionalFunction<(p: number) => void>("onProgress", o.onProgress);
    return this.#lc.run(() => this.#cachedReconstruction(signal, onProgress));
  }

  #cachedReconstruction(signal?: AbortSignal, onProgress?: (progress: number) => void): Promise<Reconstruction> {
    if (signal?.aborted) return Promise.reject(abortedError(signal.reason));
    this.#reconstruction ??= reconstruct(this.#outputOperator(signal), onProgress).catch((e) => {
      this.#reconstruction = undefined;
      throw e;
    });
    return this.#reconstruction;
  }

  /**
   * The contrast: the ordinary (non-detached) Jacobian applied to x, f'(x)·x. Unlike the
   * detached map it does not give y. Method "ordinary" (default): the JVP of x through the
   * ordinary linearization (this one, or the same input linearized in ordinary mode for the
   * call). "difference": a central difference of the
   * real forward along x, with relative step epsilon (default 1e-3; giving one picks this
   * method), kept as a check.
   */
  async nonlinearReconstruction(options: { method?: "ordinary" | "difference"; epsilon?: number; signal?: AbortSignal } = {}): Promise<NonlinearReconstruction> {
    const o = check.options("nonlinearReconstruction options", options);
    const canOrdinary = this.mode === "ordinary" || this.#ordinary !== undefined;
    // a step given asks for the difference
    const method = check.oneOf("method", o.method, ["ordinary", "difference"] as const, canOrdinary && o.epsilon === undefined ? "ordinary" : "difference");
    if (method === "ordinary" && !canOrdinary) {
      throw new LljError("the ordinary method needs an ordinary linearization of the same input, which this linearization cannot make: use method \"difference\"", { code: "UNSUPPORTED" });
    }
    if (method === "ordinary" && o.epsilon !== undefined) throw invalid("epsilon is the difference method's step; the ordinary method has none");
    // relative step: 0 divides by zero, ≥ 1 flips or zeroes the input
    const eps = o.epsilon === undefined ? 1e-3 : check.finite("epsilon", o.epsilon, 0, 0.5, true);
    const signal = check.optionalSignal("signal", o.signal);
    return this.#lc.run(() => (method === "ordinary" ? this.#nonlinearOrdinary(signal) : this.#nonlinear(eps, signal)));
  }

  async #nonlinearOrdinary(signal: AbortSignal | undefined): Promise<NonlinearReconstruction> {
    const pass = this.#pass({ signal });
    let reconstructed: Float32Array;
    if (this.mode === "ordinary") {
      reconstructed = await this.#jvp(this.inputEmbeddings, pass);
    } else {
      const ord = await this.#ordinary!();
      try {
        reconstructed = await ord.jvp(this.inputEmbeddings, { signal });
      } finally {
        await ord.dispose();
      }
    }
    return { reconstructed, output: this.output, ...errors(reconstructed, this.output), method: "ordinary", epsilon: null };
  }

  async #nonlinear(eps: number, signal: AbortSignal | undefined): Promise<NonlinearReconstruction> {
    const x = this.inputEmbeddings;
    const plus = new Float32Array(x.length), minus = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) {
      plus[i] = x[i] * (1 + eps);
      minus[i] = x[i] * (1 - eps);
    }
    const hp = await this.#call(signal, (n, flag) => n.forward({ embeddings: plus, abortFlag: flag })), hm = await this.#call(signal, (n, flag) => n.forward({ embeddings: minus, abortFlag: flag }));
    const d = this.nEmbd, off = (this.nTokens - 1) * d;
    const reconstructed = new Float32Array(d);
    for (let k = 0; k < d; k++) reconstructed[k] = (hp[off + k] - hm[off + k]) / (2 * eps);
    Linearization.#finite("nonlinear reconstruction", reconstructed);
    return { reconstructed, output: this.output, ...errors(reconstructed, this.output), method: "difference", epsilon: eps };
  }

  /** The Jacobian, computed once and kept (n·d² floats). */
  async cachedJacobian(): Promise<Jacobian> {
    return this.#lc.run(() => this.#cachedJacobian());
  }

  #cachedJacobian(): Promise<Jacobian> {
    this.#jacobian ??= this.#jacobianOf(this.#pass({})).catch((e) => {
      this.#jacobian = undefined;
      throw e;
    });
    return this.#jacobian;
  }

  /** SVD options with the memory plan's batch bytes where the caller gave none. */
  #planned<T extends { batchMemoryBytes?: number }>(o: T): T {
    return this.plan && o.batchMemoryBytes === undefined ? { ...o, batchMemoryBytes: this.plan.batchBytes } : o;
  }

  /**
   * Top-k singular triplets of the detached Jacobian of one input position (default the
   * last), of [J_1 … J_n] ("all"), or of every J_i ("each"), with left vectors pointing along y.
   */
  async svd(options: SvdOptions & { token: "each" }): Promise<EachTokenTriplets>;
  async svd(options?: SvdOptions): Promise<SingularTriplets>;
  async svd(options: SvdOptions = {}): Promise<SingularTriplets | EachTokenTriplets> {
    const o = this.#planned(check.options("svd options", options));
    check.svdOptions(o as Record<string, unknown>, this.nTokens);  // refused before any work
    const signal = check.optionalSignal("signal", o.signal);
    return this.#lc.run(() => svd(this.#outputOperator(signal), o));
  }

  /**
   * Tokens that vectors point to: output-space vectors [B × d] through the LM head (top of
   * W_U·u), input-space vectors [B × d] by cosine similarity to the input embeddings.
   */
  async decode(vectors: Float32Array, options: { space: "output" | "input"; top?: number }): Promise<DecodedToken[][]> {
    if (!check.float32Array("vectors", vectors) || vectors.length === 0 || vectors.length % this.nEmbd !== 0) {
      throw invalid(`vectors must be a Float32Array of B·d values (d = ${this.nEmbd}), got ${vectors.length}`);
    }
    const i = firstNonFinite(vectors);
    if (i >= 0) throw invalid(`vectors hold a non-finite value (${vectors[i]}) at index ${i}`);
    if (options === null || typeof options !== "object") throw invalid(`decode needs { space: "output" | "input" }`);
    const space = check.oneOf("space", options.space, ["output", "input"] as const);
    const top = check.optionalInteger("top", options.top, 1, this.logits.length) ?? Math.min(10, this.logits.length);
    return this.#lc.run(() => decode(this.vocabulary, vectors, this.nEmbd, space, top));
  }

  /**
   * Exact attribution of a token's logit (default the predicted one) to the input positions:
   * the contributions W_U[t]·J_i x_i sum, with the bias terms, to the logit before any final softcap.
   */
  async attribution(options: { token?: number } = {}): Promise<Attribution> {
    const o = check.options("attribution options", options);
    const token = o.token === undefined ? this.predictedToken : o.token;
    if (typeof token !== "number" || !Number.isInteger(token) || token < 0 || token >= this.logits.length) {
      throw invalid(`token must be an id in [0, ${this.logits.length}), not ${String(token)}`);
    }
    if (this.mode !== "detached") {
      throw new LljError("attribution is exact only for the detached map: linearize with mode \"detached\" (the default)", { code: "UNSUPPORTED" });
    }
    return this.#lc.run(async () => attribution(await this.#cachedReconstruction(), this.vocabulary, token));
  }

  /**
   * Singular triplets of the last token's Jacobian of a layer quantity (the residual stream
   * after a layer, or a branch output; through the final norm by default) with respect to the
   * input embeddings — or, with fromLayer, to the stream entering that layer.
   */
  async layerSvd(q: LayerQuantity, options: SvdOptions = {}): Promise<SingularTriplets> {
    if (q === null || typeof q !== "object") throw invalid("the layer quantity must be { layer, tap }");
    const quantity = this.#operatorOptions({ ...q, tap: check.oneOf("tap", q.tap, ["residual", "attn", "mlp"] as const) });
    const o = this.#planned(check.options("svd options", options));
    if (check.svdOptions(o as Record<string, unknown>, this.nTokens).token === "each") throw invalid('layerSvd takes one position or "all", not "each"');
    return this.#lc.run(async () => svd(await this.#operator({ ...quantity, signal: o.signal }), o as SvdOptions & { token?: number | "all" }));
  }

  /**
   * Concept emergence: for each layer, the leading singular vectors of the last token's
   * Jacobian of the residual stream after it (through the final norm), decoded through the LM head.
   */
  async emergence(options: { k?: number; top?: number; layers?: number[]; method?: SvdOptions["method"]; seed?: number;
    signal?: AbortSignal; onProgress?: (progress: number) => void } = {}): Promise<EmergenceRow[]> {
    const o = check.options("emergence options", options);
    const L = this.#nLayer;
    if (o.layers !== undefined && !Array.isArray(o.layers)) throw invalid("layers must be an array of layer indices");
    const layers = (o.layers ?? this.layerInputs.map((_, l) => l)).map((l, i) => check.integer(`layers[${i}]`, l, 0, L - 1));
    const k = check.optionalInteger("k", o.k, 1, this.nEmbd) ?? 1;
    const top = check.optionalInteger("top", o.top, 1, this.logits.length) ?? Math.min(5, this.logits.length);
    check.svdOptions({ k, method: o.method, seed: o.seed }, this.nTokens);
    const signal = check.optionalSignal("signal", o.signal);
    const onProgress = check.optionalFunction<(p: number) => void>("onProgress", o.onProgress);
    return this.#lc.run(() => emergence((layer) => this.#operator({ tap: "residual", layer, fromLayer: 0, finalNorm: true, signal }),
      this.vocabulary, layers, { k, top, method: o.method, seed: o.seed, onProgress }));
  }

  /**
   * Frees the linearization once its running operations have finished (or aborts them with
   * `{ abort: true }`: they reject with ABORTED). Calls made after dispose() began are refused
   * with DISPOSED. Safe to call twice.
   */
  async dispose(options: DisposeOptions = {}): Promise<void> {
    const o = check.options("dispose options", options);
    const abort = check.optionalBoolean("abort", o.abort) ?? false;
    return this.#lc.dispose({ abort }, () => {
      this.#native?.dispose();
      this.#native = undefined;
      this.#onDispose?.();
      this.#onDispose = undefined;
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}
