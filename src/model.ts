// The loaded model: llama.cpp holds the weights (mmap, device placement) and tokenizes;
// metadata comes from the GGUF header. Every heavy call runs off the JS thread.
import os from "node:os";
import { getAddon, type NativeModel, type NativeTensor } from "./native.js";
import { initBackends, type GpuOption, type BackendInfo } from "./backends.js";
import { readGgufSummary, assertSupported, type HyperParameters, type GgufSummary } from "./gguf.js";
import { LljError, isFloat32Array } from "./errors.js";
import { abortFlagFor } from "./abort.js";
import { Linearization, type LinearizeOptions } from "./linearization.js";

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

function toInt32(tokens: ArrayLike<number>): Int32Array {
  const out = Int32Array.from(tokens);
  for (let i = 0; i < tokens.length; i++) {
    if (!Number.isInteger(tokens[i])) throw new LljError(`token at position ${i} is not an integer: ${tokens[i]}`);
  }
  return out;
}

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
  #pending = new Set<Promise<unknown>>();
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

  get disposed(): boolean {
    return this.#native === undefined;
  }

  #get(): NativeModel {
    if (!this.#native) throw new LljError("the model has been disposed");
    return this.#native;
  }

  async #track<T>(p: Promise<T>): Promise<T> {
    this.#pending.add(p);
    try {
      return await p;
    } finally {
      this.#pending.delete(p);
    }
  }

  tokenize(text: string, options: TokenizeOptions = {}): number[] {
    if (typeof text !== "string") throw new LljError("tokenize expects a string");
    return Array.from(this.#get().tokenize(text, options.addSpecial ?? true, options.parseSpecial ?? false));
  }

  detokenize(tokens: ArrayLike<number>, options: { removeSpecial?: boolean; unparseSpecial?: boolean } = {}): string {
    return this.#get().detokenize(toInt32(tokens), options.removeSpecial ?? false, options.unparseSpecial ?? false);
  }

  /** The text of each token on its own. */
  tokenPieces(tokens: ArrayLike<number>): string[] {
    return this.#get().tokenPieces(toInt32(tokens));
  }

  /** Tokens of a prompt given as text (tokenized with BOS) or as token ids. */
  toTokens(prompt: string | ArrayLike<number>): number[] {
    if (typeof prompt === "string" && prompt.length === 0) throw new LljError("the prompt is empty: at least one token is needed");
    const tokens = typeof prompt === "string" ? this.tokenize(prompt) : Array.from(toInt32(prompt));
    if (tokens.length === 0) throw new LljError("the prompt is empty: at least one token is needed");
    return tokens;
  }

  /** Runs llama.cpp's own forward on a prompt; the reference every linearization is checked against. */
  async referenceForward(prompt: string | ArrayLike<number>, options: ReferenceForwardOptions = {}): Promise<ReferenceForward> {
    const tokens = this.toTokens(prompt);
    options.signal?.throwIfAborted();
    const native = this.#get();
    const r = await this.#track(native.referenceForward(Int32Array.from(tokens), {
      layerInputs: options.layerInputs ?? true,
      threads: options.threads ?? Math.max(1, os.availableParallelism?.() ?? os.cpus().length),
      contextSize: options.contextSize,
    }));
    options.signal?.throwIfAborted();
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
      topTokenText: this.tokenPieces([top])[0],
      layerInputs: r.layerInputs,
    };
  }

  /**
   * The exact linear system the model computes for a prompt (text, token ids, or input
   * embeddings [n × d] row-major to linearize around arbitrary inputs).
   */
  async linearize(prompt: string | ArrayLike<number> | { embeddings: Float32Array }, options: LinearizeOptions = {}): Promise<Linearization> {
    const precision = options.precision ?? "exact";
    if (precision !== "exact" && precision !== "fast") throw new LljError(`precision must be "exact" or "fast", not ${JSON.stringify(precision)}`);
    let tokens: number[] | null = null;
    let embeddings: Float32Array | null = null;
    if (typeof prompt === "object" && prompt !== null && "embeddings" in prompt) {
      embeddings = prompt.embeddings;
      if (!isFloat32Array(embeddings)) throw new LljError("embeddings must be a Float32Array [n × d]");
      if (embeddings.length === 0) throw new LljError("the prompt is empty: at least one token is needed");
      if (embeddings.length % this.hparams.nEmbd !== 0) {
        throw new LljError(`embeddings must hold n·d values with d = ${this.hparams.nEmbd}, got ${embeddings.length}`);
      }
    } else {
      tokens = this.toTokens(prompt as string | ArrayLike<number>);
    }
    const { flag, done } = abortFlagFor(options.signal);
    const native = await this.#track(getAddon().linearize(this.#get(), tokens ? Int32Array.from(tokens) : null, embeddings, {
      threads: options.threads ?? Math.max(1, os.availableParallelism?.() ?? os.cpus().length),
      exact: precision === "exact",
      batchMemoryBytes: options.batchMemoryBytes ?? 512 * 1024 * 1024,
      blas: options.blas ?? true,
      tiled: options.tiled ?? true,
      contextSize: options.contextSize,
    }, options.onProgress, flag).catch((e: Error) => {
      options.signal?.throwIfAborted();
      throw e instanceof LljError ? e : new LljError(e.message, { cause: e });
    }).finally(done));
    const lin = new Linearization(native, tokens, (ids) => this.tokenPieces(ids), () => this.#linearizations.delete(lin));
    this.#linearizations.add(lin);
    if (options.signal?.aborted) {
      await lin.dispose();
      options.signal.throwIfAborted();
    }
    return lin;
  }

  /** Frees the model (and its linearizations) once running operations have finished. Safe to call twice. */
  async dispose(): Promise<void> {
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
    for (const lin of [...this.#linearizations]) await lin.dispose();
    this.#native?.dispose();
    this.#native = undefined;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

/**
 * Loads a GGUF model through llama.cpp. Rejects with an LljError naming the problem for a
 * missing file, a non-GGUF or truncated file, or an unsupported architecture.
 */
export async function loadModel(options: LoadModelOptions): Promise<Model> {
  if (!options || typeof options.modelPath !== "string" || options.modelPath === "") {
    throw new LljError("loadModel needs { modelPath }");
  }
  options.signal?.throwIfAborted();
  const backends = initBackends(options.gpu ?? "auto");
  const gguf = await readGgufSummary(options.modelPath);
  assertSupported(gguf);
  const cpuOnly = options.gpu === false;
  const hasGpu = !cpuOnly && backends.gpuBackends.length > 0;
  const gl = options.gpuLayers ?? "auto";
  let gpuLayers: number;
  if (cpuOnly && gl !== "auto" && gl !== 0) throw new LljError(`gpuLayers ${JSON.stringify(gl)} needs a GPU, but gpu is false`);
  if (gl === "max") gpuLayers = 999999;
  else if (gl === "auto") gpuLayers = hasGpu ? 999999 : 0;
  else if (Number.isInteger(gl) && gl >= 0) gpuLayers = gl;
  else throw new LljError(`gpuLayers must be a non-negative integer, "max" or "auto", not ${JSON.stringify(gl)}`);

  const { flag, done } = abortFlagFor(options.signal);
  try {
    const native = await getAddon().loadModel(gguf.path, { gpuLayers, useMmap: options.useMmap ?? true, cpuOnly },
      options.onLoadProgress, flag);
    try {
      options.signal?.throwIfAborted();
      return new Model(native, gguf, backends);
    } catch (e) {
      native.dispose();
      throw e;
    }
  } catch (e) {
    if (e instanceof LljError || (e as Error)?.name === "AbortError") throw e;
    throw new LljError((e as Error).message, { cause: e });
  } finally {
    done();
  }
}
