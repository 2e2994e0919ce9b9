// The loaded model: llama.cpp holds the weights (mmap, device placement) and tokenizes;
// metadata comes from the GGUF header. Every heavy call runs off the JS thread.
import { getAddon, type NativeModel, type NativeTensor } from "./native.js";
import { initBackends, type GpuOption, type BackendInfo } from "./backends.js";
import { readGgufSummary, assertSupported, assertValidHyperParameters, type HyperParameters, type GgufSummary } from "./gguf.js";
import { LljError, isFloat32Array, fromNative, abortedError, invalid } from "./errors.js";
import { nativeCall } from "./abort.js";
import { resolveModelPath } from "./model-uri.js";
import { Lifecycle, type DisposeOptions } from "./lifecycle.js";
import { Linearization, type LinearizeOptions } from "./linearization.js";
import * as check from "./validate.js";
import { planMemory, type MemoryPlan } from "./planner.js";
import { generate, generateStream, type GenerateOptions, type Generation, type GeneratedToken, type GenerationHost } from "./generate.js";
import { createSteeringOperator, type SteeringOperator, type SteeringOperatorOptions } from "./steering.js";

export interface LoadModelOptions {
  modelPath: string;
  /** Layers to offload to the GPU: a number, "max" (all), or "auto" (all when a GPU is in use, else none). Default "auto". */
  gpuLayers?: number | "max" | "auto";
  /** Backend choice for this process (see initBackends); default "auto". */
  gpu?: GpuOption;
  /** Called with the load progress in [0, 1]. */
  onLoadProgress?: (progress: number) => void;
  /** Aborts loading; the promise then rejects. */
  signal?: AbortSignal;
  /** Memory-map the file (default true). */
  useMmap?: boolean;
}

/** A tensor of the model, named as in the GGUF, with where llama.cpp placed it. */
export type TensorInfo = NativeTensor;

export interface TokenizeOptions {
  /** Add the BOS/EOS tokens the model asks for (default true). */
  addSpecial?: boolean;
  /** Parse special-token text such as "<s>" into special tokens (default false). */
  parseSpecial?: boolean;
}

export interface ReferenceForwardOptions {
  /** Also return llama.cpp's per-layer inputs (default true). */
  layerInputs?: boolean;
  threads?: number;
  /** Context size of llama.cpp's context (default: the prompt length); see LinearizeOptions.contextSize. */
  contextSize?: number;
  signal?: AbortSignal;
}

/** llama.cpp's own forward pass for one prompt (F32 KV cache, flash attention off). */
export interface ReferenceForward {
  tokens: number[];
  nTokens: number;
  nEmbd: number;
  /** Final hidden state (after the output norm) of every position, row-major [nTokens × nEmbd]. */
  hidden: Float32Array;
  /** The last position's final hidden state, the vector the LM head multiplies. */
  lastHidden: Float32Array;
  /** Logits of the last position [nVocab]. */
  logits: Float32Array;
  /** Argmax of `logits`, and its text. */
  topToken: number;
  topTokenText: string;
  /**
   * Input of each layer l (the residual stream entering block l), row-major [nTokens × nEmbd]
   * each; layer 0's input is the token embeddings. Recorded by llama.cpp where its graph
   * does, else observed through its eval callback. Null when not requested.
   */
  layerInputs: Float32Array[] | null;
}

/** First non-finite entry of a, or -1. */
function firstNonFinite(a: Float32Array): number {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return i;
  return -1;
}
const kind = (x: number) => (Number.isNaN(x) ? "NaN" : "infinite");

const nativeOfModel = new WeakMap<Model, () => NativeModel>();

/** @internal The native handle of a model, for bench/ and tests; not part of the API. */
export function nativeModelOf(model: Model): NativeModel {
  const get = nativeOfModel.get(model);
  if (!get) throw new LljError("not a loaded model");
  return get();
}

/** Whether llj-gguf's graphs implement a loaded model exactly, and how. */
export interface Linearizability {
  /** False when the file asks for something our graph does not implement (see `reason`). */
  ok: boolean;
  /** "linear" (y = Σ J_i x_i) or "affine" (biases on the linear path: y = Σ J_i x_i + c). */
  decomposition?: "linear" | "affine";
  reason?: string;
  /** Tensors llama.cpp loads but its graph for this architecture never applies (ignored too). */
  ignoredTensors: string[];
}

export class Model {
  readonly path: string;
  readonly architecture: string;
  readonly hparams: HyperParameters;
  /** GGUF metadata as llama.cpp read it, key → value string. */
  readonly metadata: Record<string, string>;
  readonly description: string;
  readonly nParams: number;
  readonly sizeBytes: number;
  readonly tensors: readonly TensorInfo[];
  readonly layerInputsSupported: boolean;
  /** Whether `linearize` can represent this model exactly (checked against its tensors and hyper-parameters). */
  readonly linearizability: Linearizability;
  readonly backends: BackendInfo;
  readonly gguf: GgufSummary;

  #native: NativeModel | undefined;
  #lc = new Lifecycle("model");
  #linearizations = new Set<Linearization>();

  /** @internal use loadModel() */
  constructor(native: NativeModel, gguf: GgufSummary, backends: BackendInfo) {
    this.#native = native;
    nativeOfModel.set(this, () => this.#get());
    const info = native.info();
    this.path = gguf.path;
    this.gguf = gguf;
    this.architecture = gguf.architecture;
    this.hparams = gguf.hparams;
    this.metadata = info.metadata;
    this.description = info.description;
    this.nParams = info.nParams;
    this.sizeBytes = info.sizeBytes;
    this.layerInputsSupported = info.layerInputsSupported;
    const support = native.graphSupport();
    this.linearizability = { ok: support.ok, ignoredTensors: support.ignored, reason: support.reason,
      decomposition: support.ok ? (support.affine ? "affine" : "linear") : undefined };
    this.tensors = native.tensors();
    this.backends = backends;
    // llama.cpp's view and the GGUF header must agree; a mismatch means our metadata reading is wrong.
    if (info.nEmbd !== this.hparams.nEmbd || info.nLayer !== this.hparams.nLayer || info.nVocab !== this.hparams.nVocab) {
      throw new LljError(`metadata mismatch between the GGUF header and llama.cpp for ${gguf.path}`);
    }
  }

  /** True once dispose() has been called. */
  get disposed(): boolean {
    return !this.#lc.live;
  }

  #get(): NativeModel {
    if (!this.#native) throw new LljError("the model has been disposed", { code: "DISPOSED" });
    return this.#native;
  }

  /** Native calls made on the JS thread, their errors as LljErrors. */
  #sync<T>(call: (n: NativeModel) => T): T {
    this.#lc.enter();
    try {
      return call(this.#get());
    } catch (e) {
      throw fromNative(e);
    }
  }

  #ids(tokens: unknown): Int32Array {
    return Int32Array.from(check.tokenIds("tokens", tokens, this.hparams.nVocab));
  }

  tokenize(text: string, options: TokenizeOptions = {}): number[] {
    if (typeof text !== "string") throw invalid(`tokenize expects a string, not ${text === null ? "null" : typeof text}`);
    const o = check.options("tokenize options", options);
    const add = check.optionalBoolean("addSpecial", o.addSpecial) ?? true, parse = check.optionalBoolean("parseSpecial", o.parseSpecial) ?? false;
    return Array.from(this.#sync((n) => n.tokenize({ text, addSpecial: add, parseSpecial: parse })));
  }

  detokenize(tokens: ArrayLike<number>, options: { removeSpecial?: boolean; unparseSpecial?: boolean } = {}): string {
    const o = check.options("detokenize options", options);
    const ids = this.#ids(tokens);
    return this.#sync((n) => n.detokenize({ tokens: ids, removeSpecial: check.optionalBoolean("removeSpecial", o.removeSpecial) ?? false,
      unparseSpecial: check.optionalBoolean("unparseSpecial", o.unparseSpecial) ?? false }));
  }

  /** Token texts for running operations: allowed while dispose() waits for them. */
  #pieces(ids: number[]): string[] {
    return this.#get().tokenPieces({ tokens: Int32Array.from(ids) });
  }

  /** The text of each token on its own. */
  tokenPieces(tokens: ArrayLike<number>): string[] {
    const ids = this.#ids(tokens);
    return this.#sync((n) => n.tokenPieces({ tokens: ids }));
  }

  /** Tokens of a prompt given as text (tokenized with BOS) or as token ids (each checked against the vocabulary). */
  toTokens(prompt: string | ArrayLike<number>): number[] {
    if (typeof prompt === "string" && prompt.length === 0) throw invalid("the prompt is empty: at least one token is needed");
    const tokens = typeof prompt === "string" ? this.tokenize(prompt) : check.tokenIds("prompt", prompt, this.hparams.nVocab);
    if (tokens.length === 0) throw invalid("the prompt is empty: at least one token is needed");
    return tokens;
  }

  /** Runs llama.cpp's own forward on a prompt; the reference every linearization is checked against. */
  async referenceForward(prompt: string | ArrayLike<number>, options: ReferenceForwardOptions = {}): Promise<ReferenceForward> {
    const o = check.options("referenceForward options", options);
    const tokens = this.toTokens(prompt);
    const layerInputs = check.optionalBoolean("layerInputs", o.layerInputs) ?? true;
    const threads = check.threads(o.threads);
    const contextSize = check.optionalInteger("contextSize", o.contextSize, 1, 2 ** 31 - 1);
    const userSignal = check.optionalSignal("signal", o.signal);
    const r = await this.#lc.run(async () => {
      const signal = this.#lc.signal(userSignal);
      const native = this.#get();
      // llama.cpp's decode polls no flag: the signal is checked before and after it
      const out = await nativeCall(signal, undefined, () => native.referenceForward({ tokens: Int32Array.from(tokens), layerInputs, threads, contextSize }));
      if (signal.aborted) throw abortedError(signal.reason);
      // llama.cpp's own forward on a broken file: refused like ours, never returned as NaN
      const where = [...(out.layerInputs ?? []).map((h, l) => [`the input of layer ${l}`, h] as const),
        ["the final hidden state", out.hidden] as const, ["the logits", out.logits] as const]
        .find(([, a]) => firstNonFinite(a) >= 0);
      if (where) {
        const i = firstNonFinite(where[1]);
        throw new LljError(`llama.cpp's forward: ${where[0]} is ${kind(where[1][i])} at index ${i}: check the weights before it`, { code: "NON_FINITE" });
      }
      let top = 0;
      for (let i = 1; i < out.logits.length; i++) if (out.logits[i] > out.logits[top]) top = i;
      return { ...out, topTokenText: this.#pieces([top])[0] };
    });
    const d = this.hparams.nEmbd;
    let top = 0;
    for (let i = 1; i < r.logits.length; i++) if (r.logits[i] > r.logits[top]) top = i;
    return {
      tokens,
      nTokens: tokens.length,
      nEmbd: d,
      hidden: r.hidden,
      lastHidden: r.hidden.slice((tokens.length - 1) * d, tokens.length * d),
      logits: r.logits,
      topToken: top,
      topTokenText: r.topTokenText,
      layerInputs: r.layerInputs,
    };
  }

  /**
   * The memory plan of linearizing `prompt` (text, token ids, or a token count) and analysing
   * it, made from the model's shapes before anything is allocated: each part's estimate, the
   * batch width the budget leaves, the route (the full Jacobian, or matrix-free products when
   * it does not fit), and why. Refuses (OUT_OF_MEMORY) when the fixed parts alone exceed the
   * budget (default: 80% of the free memory).
   */
  plan(prompt: string | ArrayLike<number> | number, options: { mode?: LinearizeOptions["mode"]; precision?: "exact" | "fast"; memoryBudget?: number;
    /** false: single products only (no SVD parts). */ analyses?: boolean } = {}): MemoryPlan {
    const o = check.options("plan options", options);
    const n = typeof prompt === "number" ? check.integer("prompt length", prompt, 1, this.hparams.contextLength) : this.toTokens(prompt).length;
    const memoryBudget = o.memoryBudget === undefined ? undefined : check.integer("memoryBudget", o.memoryBudget, 1, 2 ** 53);
    return planMemory(this, {
      nTokens: n, mode: check.oneOf("mode", o.mode, ["detached", "ordinary", "relevance"] as const, "detached"),
      precision: check.oneOf("precision", o.precision, ["exact", "fast"] as const, "exact"), wantsJacobian: true, memoryBudget,
      analyses: check.optionalBoolean("analyses", o.analyses) ?? true,
    });
  }

  /**
   * The exact linear system the model computes for a prompt (text, token ids, or input
   * embeddings [n × d] row-major to linearize around arbitrary inputs).
   */
  async linearize(prompt: string | ArrayLike<number> | { embeddings: Float32Array }, options: LinearizeOptions = {}): Promise<Linearization> {
    return this.#linearize(prompt, options, false);
  }

  /** inside: a step of a linearization's own running call (tracked, not refused while disposal waits). */
  async #linearize(prompt: string | ArrayLike<number> | { embeddings: Float32Array }, options: LinearizeOptions, inside: boolean): Promise<Linearization> {
    const o = check.options("linearize options", options);
    const precision = check.oneOf("precision", o.precision, ["exact", "fast"] as const, "exact");
    const mode = check.oneOf("mode", o.mode, ["detached", "ordinary", "relevance"] as const, "detached");
    const threads = check.threads(o.threads);
    if (o.memoryBudget !== undefined && o.batchMemoryBytes !== undefined) throw invalid("give memoryBudget or batchMemoryBytes, not both");
    let batchMemoryBytes = check.batchMemoryBytes(o.batchMemoryBytes);
    const blas = check.optionalBoolean("blas", o.blas) ?? true;
    const tiled = check.optionalBoolean("tiled", o.tiled) ?? true;
    const contextSize = check.optionalInteger("contextSize", o.contextSize, 1, 2 ** 31 - 1);
    const userSignal = check.optionalSignal("signal", o.signal);
    const onProgress = check.optionalFunction<(p: number) => void>("onProgress", o.onProgress);
    let tokens: number[] | null = null;
    let embeddings: Float32Array | null = null;
    if (typeof prompt === "object" && prompt !== null && !Array.isArray(prompt) && !ArrayBuffer.isView(prompt)) {
      if (!("embeddings" in prompt)) throw invalid("the prompt must be text, an array of token ids or { embeddings: Float32Array [n × d] }");
      embeddings = prompt.embeddings;
      if (!isFloat32Array(embeddings)) throw invalid("embeddings must be a Float32Array [n × d]");
      if (embeddings.length === 0) throw invalid("the prompt is empty: at least one token is needed");
      if (embeddings.length % this.hparams.nEmbd !== 0) {
        throw invalid(`embeddings must hold n·d values with d = ${this.hparams.nEmbd}, got ${embeddings.length}`);
      }
      const bad = firstNonFinite(embeddings);
      if (bad >= 0) throw invalid(`embeddings hold a non-finite value (${embeddings[bad]}) at index ${bad}`);
    } else {
      if (typeof prompt !== "string" && (prompt === null || typeof prompt !== "object")) {
        throw invalid(`the prompt must be text, an array of token ids or { embeddings }, not ${prompt === null ? "null" : typeof prompt}`);
      }
      tokens = this.toTokens(prompt as string | ArrayLike<number>);
    }
    // the memory plan, before anything is allocated: it sets the batch, or refuses
    let plan: MemoryPlan | undefined;
    if (o.memoryBudget !== undefined) {
      // (the contrast's inner linearization serves one product: no room for analyses)
      plan = this.plan(embeddings ? embeddings.length / this.hparams.nEmbd : tokens!.length, { mode, precision, memoryBudget: o.memoryBudget, analyses: !inside });
      batchMemoryBytes = plan.batchBytes;
    }
    return (inside ? this.#lc.track.bind(this.#lc) : this.#lc.run.bind(this.#lc))(async () => {
      const signal = this.#lc.signal(userSignal);
      const model = this.#get();
      const native = await nativeCall(signal, onProgress, (flag, progress) => getAddon().linearize({ model,
        tokens: tokens ? Int32Array.from(tokens) : null, embeddings, threads, exact: precision === "exact", ordinary: mode === "ordinary",
        relevance: mode === "relevance", batchMemoryBytes, blas, tiled, contextSize, onProgress: progress, abortFlag: flag }), { discard: (n) => n.dispose() });
      // the contrast's ordinary linearization: the same input and options, in ordinary mode
      // (under a memory plan: in the room this one's plan kept for it)
      const ordinary = () => this.#linearize(embeddings ? { embeddings } : tokens!, { ...options, mode: "ordinary", signal: undefined, onProgress: undefined,
        // (the JS heap headroom is shared: counted in both plans)
        memoryBudget: plan ? plan.budget - plan.peakBytes + ["ordinary contrast", "JS heap headroom"].reduce((a, name) => a + (plan!.fixed.find((p) => p.name === name)?.bytes ?? 0), 0) : undefined }, true);
      const lin = new Linearization(native, tokens, (ids) => this.#pieces(ids), () => this.#linearizations.delete(lin), ordinary, plan);
      this.#linearizations.add(lin);
      try {
        if (signal.aborted) throw abortedError(signal.reason);
        if (!inside && !this.#lc.live) throw new LljError("the model was disposed while linearize() ran; its linearization was freed", { code: "DISPOSED" });
        await this.#checkFinite(lin);
      } catch (e) {
        await lin.dispose();
        throw e;
      }
      return lin;
    });
  }

  /**
   * Never a silently wrong answer: a NaN or infinity in the primal record is refused, naming
   * the first place it appears (input embedding row, layer and branch, final norm, LM head).
   */
  async #checkFinite(lin: Linearization): Promise<void> {
    const d = this.hparams.nEmbd;
    const nonFinite = (what: string, check: string, a: Float32Array, i: number): LljError =>
      new LljError(`${what} ${kind(a[i])} at position ${Math.floor(i / d)}: check ${check}`, { code: "NON_FINITE" });
    let i = firstNonFinite(lin.inputEmbeddings);
    if (i >= 0) {
      const pos = Math.floor(i / d), t = lin.tokens?.[pos];
      throw new LljError(`the input embedding of token ${t} at position ${pos} is ${kind(lin.inputEmbeddings[i])}: check row ${t} of token_embd.weight` +
        (this.hparams.learnedPositions ? ` and row ${pos} of position_embd.weight` : ""), { code: "NON_FINITE" });
    }
    const L = lin.layerInputs.length;
    for (let l = 0; l < L; l++) {
      const out = l + 1 < L ? lin.layerInputs[l + 1] : lin.finalResidual;
      i = firstNonFinite(out);
      if (i < 0) continue;
      // Which branch: the attention output of layer l at the primal input (the affine tap).
      let branch = "blk." + l + ".* weights", attnBad: boolean | undefined;
      try {
        await lin.jvp(lin.inputEmbeddings, { tap: "attn", layer: l, affine: true, allPositions: true });
        attnBad = false;
      } catch (e) {
        if (e instanceof LljError && e.code === "NON_FINITE") attnBad = true;
      }
      if (attnBad !== undefined) {
        branch = attnBad
          ? `blk.${l}.attn_q.weight, blk.${l}.attn_k.weight, blk.${l}.attn_v.weight, blk.${l}.attn_output.weight and blk.${l}.attn_norm.weight (the attention probabilities or output are not finite)`
          : `blk.${l}.ffn_* weights and blk.${l}.ffn_norm.weight (the MLP output is not finite)`;
      }
      throw nonFinite(`blk.${l} output (the residual stream after layer ${l}) is`, branch, out, i);
    }
    i = firstNonFinite(lin.hidden);
    if (i >= 0) throw nonFinite("the output of the final norm is", "output_norm.weight and the norm epsilon", lin.hidden, i);
    i = firstNonFinite(lin.logits);
    if (i >= 0) {
      throw new LljError(`logit of token ${i} is ${kind(lin.logits[i])}: check ${this.hparams.tiedEmbeddings ? "token_embd.weight (the tied LM head)" : "output.weight (the LM head)"} row ${i}`,
        { code: "NON_FINITE" });
    }
  }

  /** What generation and steering need of this model (src/generate.ts, src/steering.ts). */
  #host(): GenerationHost {
    return {
      owner: this, hparams: this.hparams, architecture: this.architecture, linearizability: this.linearizability,
      native: () => this.#get(),
      toTokens: (p) => this.toTokens(p),
      pieces: (ids) => this.#pieces(ids),
      detokenize: (ids) => this.#get().detokenize({ tokens: Int32Array.from(ids), removeSpecial: false, unparseSpecial: false }),
      signal: (user) => this.#lc.signal(user),
    };
  }

  /**
   * Generates a continuation of the prompt: greedy by default, or sampled; unsteered and with
   * a control vector through llama.cpp's own decode, steered through our own graph
   * (src/generate.ts says which runs what). Streams tokens to onToken; abortable.
   */
  generate(prompt: string | ArrayLike<number>, options: GenerateOptions = {}): Promise<Generation> {
    return generate(this.#host(), (body) => this.#lc.run(body), prompt, options);
  }

  /** generate() as an async iterator of tokens (`for await (const t of model.generateStream(...))`); returns the Generation. */
  generateStream(prompt: string | ArrayLike<number>, options: GenerateOptions = {}): AsyncGenerator<GeneratedToken, Generation> {
    return generateStream(this.#host(), (body) => this.#lc.run(body), prompt, options);
  }

  /**
   * The steering operator of a concept prompt (src/steering.ts): the concept's detached
   * layer-l Jacobian, applied along a new text by generate({ steering }). Dispose it (or let
   * the model's dispose do it) to free the concept's linearization.
   */
  steeringOperator(options: SteeringOperatorOptions): Promise<SteeringOperator> {
    return createSteeringOperator(this.#host(), (concept, signal) => this.linearize(concept, { signal }), options);
  }

  /**
   * Frees the model and its linearizations once running operations have finished (or aborts
   * them with `{ abort: true }`; they reject with ABORTED). Calls made after dispose() began
   * are refused with DISPOSED. Safe to call twice.
   */
  async dispose(options: DisposeOptions = {}): Promise<void> {
    const o = check.options("dispose options", options);
    const abort = check.optionalBoolean("abort", o.abort) ?? false;
    // aborting: stop the linearizations' work now, not after the model's own calls settle
    if (abort) for (const lin of this.#linearizations) void lin.dispose({ abort }).catch(() => {});
    return this.#lc.dispose({ abort }, async () => {
      for (const lin of [...this.#linearizations]) await lin.dispose({ abort });
      this.#native?.dispose();
      this.#native = undefined;
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

/**
 * Loads a GGUF model through llama.cpp: a file path, or a URI (`hf:user/repo:quant`,
 * `hf:user/repo/file.gguf`, `https://…`; src/model-uri.ts) that node-llama-cpp resolves and
 * downloads. Rejects with an LljError naming the problem for a missing file, a non-GGUF or
 * truncated file, an unsupported architecture, or a URI that cannot be fetched (NETWORK).
 */
export async function loadModel(options: LoadModelOptions): Promise<Model> {
  if (!options || typeof options !== "object" || typeof options.modelPath !== "string" || options.modelPath === "") {
    throw invalid("loadModel needs { modelPath: string }");
  }
  const signal = check.optionalSignal("signal", options.signal);
  const onLoadProgress = check.optionalFunction<(p: number) => void>("onLoadProgress", options.onLoadProgress);
  check.optionalBoolean("useMmap", options.useMmap);
  if (signal?.aborted) throw abortedError(signal.reason);
  const backends = initBackends(options.gpu ?? "auto");
  const gguf = await readGgufSummary(await resolveModelPath(options.modelPath, { signal }));
  assertSupported(gguf);
  assertValidHyperParameters(gguf);
  const cpuOnly = options.gpu === false;
  const hasGpu = !cpuOnly && backends.gpuBackends.length > 0;
  const gl = options.gpuLayers ?? "auto";
  let gpuLayers: number;
  if (gl !== "auto" && gl !== "max" && !(Number.isInteger(gl) && (gl as number) >= 0)) {
    throw invalid(`gpuLayers must be a non-negative integer, "max" or "auto", not ${JSON.stringify(gl)}`);
  }
  if (cpuOnly && gl !== "auto" && gl !== 0) throw new LljError(`gpuLayers ${JSON.stringify(gl)} needs a GPU, but gpu is false`);
  if (gl === "max") gpuLayers = 999999;
  else if (gl === "auto") gpuLayers = hasGpu ? 999999 : 0;
  else if (Number.isInteger(gl) && gl >= 0) gpuLayers = gl;
  else if (Number.isInteger(gl) && (gl as number) > 999999) gpuLayers = 999999;
  else throw new LljError(`gpuLayers must be a non-negative integer, "max" or "auto", not ${JSON.stringify(gl)}`);

  const native = await nativeCall(signal, onLoadProgress, (flag, progress) => getAddon().loadModel({ path: gguf.path, gpuLayers, useMmap: options.useMmap ?? true, cpuOnly,
    onProgress: progress, abortFlag: flag }), { fallback: "INVALID_MODEL", discard: (n) => n.dispose() });
  try {
    if (signal?.aborted) throw abortedError(signal.reason);
    return new Model(native, gguf, backends);
  } catch (e) {
    native.dispose();
    throw e;
  }
}
