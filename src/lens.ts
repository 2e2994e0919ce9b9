// The Jacobian lens (J-lens: Gurnee et al. 2026, "Verbalizable Representations Form a Global
// Workspace in Language Models"), fitted and read on GGUF models. The estimator follows the
// public reference (anthropics/jacobian-lens, as TransformerLens 4 re-implements it): for each
// source layer l a d×d matrix
//
//   J_l = mean over prompts of (1/|V|) Σ_{s ∈ V} Σ_{t ∈ V, t ≥ s} ∂h_final[t] / ∂h_l[s]
//
// with h_l the output of block l (the residual stream after layer l), h_final the last block's
// output before the final norm, and V = [minPosition, n − 1) the valid positions (early
// attention-sink positions and the last position, which has no next token, excluded). Reading
// applies the model's own final norm and LM head: lens(h_l) = W_U norm(J_l h_l). J_l maps
// layer-l coordinates to final-block coordinates (J_l h, rows = output dimensions).
//
// One prompt costs one primal pass and ceil(d / batch) batched VJPs with a one-hot cotangent
// on one output dimension at every valid position at once: causality makes the cotangent at
// source s the sum over t ≥ s. The VJP is chained one layer at a time from the top, so every
// source layer's rows come out of one sweep down the layers.
import { lensAblation, lensSteering, lensSwap, type LensAblationOptions, type LensIntervention, type LensSteeringOptions, type LensSwapOptions } from "./lens-interventions.js";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { readLensFile, writeLensFile, type LensData, type LensFormat } from "./lens-file.js";
import { LljError, abortedError, invalid } from "./errors.js";
import * as check from "./validate.js";
import type { Model } from "./model.js";
import type { Linearization } from "./linearization.js";
import { topTokens, type DecodedToken, type Vocabulary } from "./vocabulary.js";

/**
 * "jlens": the ordinary Jacobian (the published estimator). "rlens": the relevance lens
 * (RelP rules: residual-stream norms and activation factors detached, gate products' derivative
 * halved between their factors, attention ordinary; as TransformerLens's RelevanceLens).
 * "detached": the same average over the detached map (every nonlinear coefficient frozen,
 * attention included), the full-detach member of the family.
 */
export type LensEstimator = "jlens" | "rlens" | "detached";

/** A token the lens reads: its score (logit) and its probability under the softmax of the whole readout. */
export interface LensToken extends DecodedToken {
  probability: number;
}

export interface FitLensProgress {
  /** Prompts averaged so far, and the corpus size. */
  prompts: number;
  total: number;
  /** Prompts skipped as too short (n ≤ minPosition + 1). */
  skipped: number;
  /** max over layers of ‖M_p − M_{p−1}‖_F / ‖M_p‖_F, the running mean's last change (null before two prompts). */
  change: number | null;
  /** Seconds left at the mean rate so far (corpus end, or the early stop if it comes first: not predicted). */
  etaSeconds: number | null;
}

export interface FitLensOptions {
  model: Model;
  /** Prompts, or a file: JSONL (one JSON string or {"text": …} per line) or text (one prompt per non-empty line). */
  corpus: readonly string[] | string;
  /** Layers whose output the lens reads (default every layer below the last). */
  sourceLayers?: readonly number[];
  /** Prompts are cut to this many tokens (default 128). */
  maxSeqLen?: number;
  /** The first source and target position (default 16: attention sinks excluded). */
  minPosition?: number;
  estimator?: LensEstimator;
  /**
   * Stop once the running mean changes by less than `tolerance` (relative Frobenius, the
   * worst layer) after at least `minPrompts` prompts; default { minPrompts: 100, tolerance:
   * 2e-3 }. false: the whole corpus.
   */
  earlyStop?: { minPrompts?: number; tolerance?: number } | false;
  /**
   * A file (safetensors) the running sums are saved to every `checkpointEvery` prompts
   * (default 10) and at the end; when it exists at the start, the fit resumes from it (the
   * corpus, layers, positions and estimator must be the same).
   */
  checkpoint?: string;
  checkpointEvery?: number;
  /** Passed to each linearization. */
  precision?: "exact" | "fast";
  threads?: number;
  signal?: AbortSignal;
  onProgress?: (progress: FitLensProgress) => void;
}

/** A fitted (or loaded) lens: one d×d matrix per source layer, row-major, J_l h = row · h. */
export class Lens {
  readonly dModel: number;
  readonly nPrompts: number;
  readonly sourceLayers: number[];
  readonly estimator: LensEstimator | "unknown";
  /** Provenance kept in the file (architecture, layer count, positions, corpus size...). */
  readonly metadata: Record<string, string | number | boolean | null>;
  readonly #J: Map<number, Float32Array>;

  constructor(J: Map<number, Float32Array>, options: { dModel: number; nPrompts: number; estimator?: LensEstimator | "unknown";
    metadata?: Record<string, string | number | boolean | null> }) {
    for (const [layer, m] of J) {
      if (m.length !== options.dModel * options.dModel) throw invalid(`the lens matrix of layer ${layer} holds ${m.length} values, not d² = ${options.dModel ** 2}`);
    }
    this.#J = J;
    this.dModel = options.dModel;
    this.nPrompts = options.nPrompts;
    this.sourceLayers = [...J.keys()].sort((a, b) => a - b);
    this.estimator = options.estimator ?? "unknown";
    this.metadata = { ...options.metadata };
  }

  /**
   * Reads a lens file: the published torch.save artifact (e.g. a lens fitted on a model's
   * Hugging Face weights, which applies to its GGUF: the tensors are the same up to
   * quantization) or safetensors.
   */
  static async load(file: string): Promise<Lens> {
    const data = await readLensFile(file);
    const e = data.metadata?.estimator;
    // the published artifacts carry no estimator: theirs is the J-lens
    const estimator = e === undefined ? "jlens" : e === "jlens" || e === "rlens" || e === "detached" ? e : "unknown";
    return new Lens(data.J, { dModel: data.dModel, nPrompts: data.nPrompts, estimator, metadata: data.metadata });
  }

  /** Writes the lens: "torch" (the published artifact, default; also by a .pt name) or "safetensors" (by a .safetensors name). */
  async save(file: string, options: { format?: LensFormat; dtype?: "f16" | "f32" } = {}): Promise<void> {
    const data: LensData = { J: this.#J, dModel: this.dModel, nPrompts: this.nPrompts, sourceLayers: this.sourceLayers,
      metadata: { ...this.metadata, estimator: this.estimator } };
    await writeLensFile(file, data, options);
  }

  /** J_l row-major [d × d] (a copy). */
  matrix(layer: number): Float32Array {
    return this.#matrix(layer).slice();
  }

  #matrix(layer: number): Float32Array {
    const m = this.#J.get(layer);
    if (!m) throw invalid(`layer ${layer} is not a source layer of this lens (${this.sourceLayers.join(", ")})`);
    return m;
  }

  /** J_l h for rows h [B × d] (layer-l activations into final-block coordinates). */
  transport(rows: Float32Array, layer: number): Float32Array {
    const d = this.dModel, J = this.#matrix(layer);
    if (rows.length % d !== 0) throw invalid(`rows must hold B·d values (d = ${d}), got ${rows.length}`);
    const out = new Float32Array(rows.length);
    for (let b = 0; b < rows.length; b += d) {
      for (let r = 0; r < d; r++) {
        let s = 0;
        for (let c = 0; c < d; c++) s += J[r * d + c] * rows[b + c];
        out[b + r] = s;
      }
    }
    return out;
  }

  /**
   * The top tokens the lens reads from layer `layer` at `position` (default the last) of a
   * linearized prompt: W_U norm(J_l h_l), with the model's final softcap where it has one.
   * The last layer reads through the identity (its lens is the model's own output). Each
   * token carries its probability (softmax over the whole vocabulary).
   */
  async readout(lin: Linearization, options: { layer: number; position?: number; top?: number }): Promise<LensToken[]> {
    const o = check.options("readout options", options);
    const L = lin.layerInputs.length;
    const layer = check.integer("layer", o.layer, 0, L - 1);
    const position = check.optionalInteger("position", o.position, 0, lin.nTokens - 1) ?? lin.nTokens - 1;
    const top = check.optionalInteger("top", o.top, 1, lin.vocabulary.size) ?? 10;
    this.#checkModel(lin.nEmbd, L);
    const d = lin.nEmbd;
    // block l's output: the stream entering layer l + 1 (the final residual after the last)
    const h = layer === L - 1 ? lin.finalResidual.slice(position * d, (position + 1) * d) : lin.layerInputs[layer + 1].slice(position * d, (position + 1) * d);
    const transported = layer === L - 1 ? h : this.transport(h, layer);
    const scores = await lin.vocabulary.lmHeadScores(lin.finalNorm(transported), 1);
    const cap = lin.finalSoftcap;
    if (cap > 0) for (let t = 0; t < scores.length; t++) scores[t] = cap * Math.tanh(scores[t] / cap);
    let max = -Infinity, z = 0;
    for (const v of scores) max = Math.max(max, v);
    for (const v of scores) z += Math.exp(v - max);
    return topTokens(scores, 1, top, (ids) => lin.vocabulary.pieces(ids))[0].map((t) => ({ ...t, probability: Math.exp(t.score - max) / z }));
  }

  /** J-lens vectors: J_lᵀ W_U[:, t] for each token, [T × d] (layer-l directions of single tokens). */
  async vectors(vocabulary: Vocabulary, tokens: readonly number[], layer: number): Promise<Float32Array> {
    const d = this.dModel, J = this.#matrix(layer);
    for (const t of tokens) if (!Number.isInteger(t) || t < 0 || t >= vocabulary.size) throw invalid(`token ${t} is not an id in [0, ${vocabulary.size})`);
    const rows = await vocabulary.lmHeadRows(Int32Array.from(tokens));  // [T × (d + 1)]
    const out = new Float32Array(tokens.length * d);
    for (let i = 0; i < tokens.length; i++) {
      for (let r = 0; r < d; r++) {
        const w = rows[i * (d + 1) + r];
        for (let c = 0; c < d; c++) out[i * d + c] += J[r * d + c] * w;
      }
    }
    return out;
  }

  /** Steering along token's lens direction at each layer (model.generate's intervention): h ← h + α·median‖h‖·v̂_t. */
  steering(vocabulary: Vocabulary, options: LensSteeringOptions): Promise<LensIntervention> {
    return lensSteering(this, vocabulary, options);
  }

  /** Projecting tokens' lens directions out of the stream at each layer: h ← h − (h·v̂)v̂. */
  ablation(vocabulary: Vocabulary, options: LensAblationOptions): Promise<LensIntervention> {
    return lensAblation(this, vocabulary, options);
  }

  /** Swapping two tokens' lens coordinates at each layer: c = V⁺h, h ← h + α V(σ(c) − c). */
  swap(vocabulary: Vocabulary, options: LensSwapOptions): Promise<LensIntervention> {
    return lensSwap(this, vocabulary, options);
  }

  /**
   * Refuses a model the lens cannot belong to (another width, or source layers at or above
   * its last layer); warns (process warning LLJ_LENS_MODEL) when the file names another
   * architecture or layer count.
   */
  checkModel(model: { hparams: { nEmbd: number; nLayer: number; architecture: string } }): void {
    this.#checkModel(model.hparams.nEmbd, model.hparams.nLayer);
    const { architecture, nLayer } = this.metadata;
    const other = (architecture !== undefined && architecture !== null && String(architecture) !== model.hparams.architecture)
      || (nLayer !== undefined && nLayer !== null && Number(nLayer) !== model.hparams.nLayer);
    if (other) {
      process.emitWarning(`the lens was fitted on ${String(architecture ?? "?")} with ${String(nLayer ?? "?")} layers; this model is ` +
        `${model.hparams.architecture} with ${model.hparams.nLayer}`, { code: "LLJ_LENS_MODEL" });
    }
  }

  #checkModel(d: number, nLayer: number): void {
    if (d !== this.dModel) throw invalid(`the lens is for d = ${this.dModel}, the model has d = ${d}: it belongs to another model`);
    const bad = this.sourceLayers.filter((l) => l >= nLayer - 1);
    if (bad.length) throw invalid(`the lens has source layers ${bad.join(", ")} at or above the model's last layer ${nLayer - 1}: it belongs to another model`);
  }
}

/** The corpus as prompt texts. */
export function readCorpus(corpus: readonly string[] | string): string[] {
  if (Array.isArray(corpus)) {
    corpus.forEach((p, i) => { if (typeof p !== "string") throw invalid(`corpus[${i}] is not a string`); });
    return [...corpus];
  }
  if (typeof corpus !== "string") throw invalid("corpus must be an array of strings or a file path");
  let text: string;
  try {
    text = readFileSync(corpus, "utf8");
  } catch (e) {
    throw new LljError(`cannot read the corpus ${corpus}: ${(e as Error).message}`, { code: "INVALID_ARGUMENT", cause: e });
  }
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== "");
  const jsonl = corpus.endsWith(".jsonl") || (lines.length > 0 && /^\s*[{"]/.test(lines[0]));
  if (!jsonl) return lines;
  return lines.map((line, i) => {
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch {
      throw invalid(`${corpus} line ${i + 1} is not JSON`);
    }
    if (typeof v === "string") return v;
    if (v && typeof v === "object" && typeof (v as { text?: unknown }).text === "string") return (v as { text: string }).text;
    throw invalid(`${corpus} line ${i + 1}: expected a JSON string or an object with "text"`);
  });
}

/**
 * One prompt's J_l for every source layer: (1/|V|) Σ_{s∈V} Σ_{t∈V, t≥s} ∂h_final[t]/∂h_l[s],
 * from chained one-layer VJPs of one-hot cotangents planted at every valid position.
 */
export async function promptLens(lin: Linearization, sourceLayers: readonly number[], minPosition: number,
  signal?: AbortSignal): Promise<Map<number, Float32Array>> {
  const n = lin.nTokens, d = lin.nEmbd, L = lin.layerInputs.length, nv = n - 1 - minPosition;
  if (nv < 1) throw invalid(`the prompt has ${n} tokens: a lens needs more than minPosition + 1 = ${minPosition + 1}`);
  const lowest = Math.min(...sourceLayers), wanted = new Set(sourceLayers);
  const out = new Map(sourceLayers.map((l) => [l, new Float32Array(d * d)] as const));
  const batch = Math.max(1, Math.min(d, lin.maxBatch));
  for (let k0 = 0; k0 < d; k0 += batch) {
    const nb = Math.min(batch, d - k0);
    let g: Float32Array = new Float32Array(nb * n * d);
    for (let b = 0; b < nb; b++) for (let t = minPosition; t < n - 1; t++) g[(b * n + t) * d + k0 + b] = 1;
    // down the layers: the cotangent on block l's output from the one on block l + 1's
    for (let l = L - 2; l >= lowest; l--) {
      g = await lin.vjp(g, { allPositions: true, tap: "residual", layer: l + 1, fromLayer: l + 1, signal });
      if (!wanted.has(l)) continue;
      const J = out.get(l)!;
      for (let b = 0; b < nb; b++) {
        const row = J.subarray((k0 + b) * d, (k0 + b + 1) * d);
        for (let s = minPosition; s < n - 1; s++) for (let c = 0; c < d; c++) row[c] += g[(b * n + s) * d + c];
        for (let c = 0; c < d; c++) row[c] /= nv;
      }
    }
  }
  return out;
}

/** Fits a lens on a corpus (see the module comment for the estimator). */
export async function fitLens(options: FitLensOptions): Promise<Lens> {
  const o = check.options("fitLens options", options);
  const model = o.model as Model;
  if (!model || typeof model.linearize !== "function") throw invalid("fitLens needs { model } (a loaded Model)");
  const prompts = readCorpus(o.corpus as readonly string[] | string);
  if (prompts.length === 0) throw invalid("the corpus is empty");
  const L = model.hparams.nLayer, d = model.hparams.nEmbd;
  if (L < 2) throw invalid("a lens needs a model of at least two layers (source layers lie below the last)");
  const sourceLayers = o.sourceLayers === undefined ? Array.from({ length: L - 1 }, (_, l) => l)
    : [...new Set((o.sourceLayers as number[]).map((l, i) => check.integer(`sourceLayers[${i}]`, l, 0, L - 2)))].sort((a, b) => a - b);
  if (sourceLayers.length === 0) throw invalid("sourceLayers is empty");
  const maxSeqLen = check.optionalInteger("maxSeqLen", o.maxSeqLen, 2, 2 ** 20) ?? 128;
  const minPosition = check.optionalInteger("minPosition", o.minPosition, 0, maxSeqLen - 2) ?? 16;
  const estimator = check.oneOf("estimator", o.estimator, ["jlens", "rlens", "detached"] as const, "jlens");
  const stop = o.earlyStop === false ? null : {
    minPrompts: check.optionalInteger("earlyStop.minPrompts", (o.earlyStop as { minPrompts?: number } | undefined)?.minPrompts, 1, 2 ** 31) ?? 100,
    tolerance: (o.earlyStop as { tolerance?: number } | undefined)?.tolerance === undefined ? 2e-3
      : check.finite("earlyStop.tolerance", (o.earlyStop as { tolerance: number }).tolerance, 0, 1, true),
  };
  const signal = check.optionalSignal("signal", o.signal);
  const onProgress = check.optionalFunction<(p: FitLensProgress) => void>("onProgress", o.onProgress);
  const mode = ({ jlens: "ordinary", rlens: "relevance", detached: "detached" } as const)[estimator];

  const checkpoint = o.checkpoint === undefined ? undefined : String(o.checkpoint);
  const every = check.optionalInteger("checkpointEvery", o.checkpointEvery, 1, 2 ** 31) ?? 10;
  // what a checkpoint must agree on to be resumed
  const config = { kind: "jlens-checkpoint", estimator, minPosition, maxSeqLen, corpusSize: prompts.length,
    corpus: createHash("sha256").update(JSON.stringify(prompts)).digest("hex").slice(0, 16), architecture: model.hparams.architecture, nLayer: L };

  const sum = new Map(sourceLayers.map((l) => [l, new Float64Array(d * d)] as const));
  let done = 0, skipped = 0, change: number | null = null, start = 0;
  if (checkpoint && existsSync(checkpoint)) {
    const saved = await readLensFile(checkpoint);
    const m = saved.metadata ?? {};
    for (const [k, v] of Object.entries(config)) {
      if (String(m[k]) !== String(v)) throw invalid(`the checkpoint ${checkpoint} is of another fit (${k}: ${String(m[k])}, this fit: ${String(v)}); remove it to start afresh`);
    }
    if (JSON.stringify(saved.sourceLayers) !== JSON.stringify(sourceLayers)) throw invalid(`the checkpoint ${checkpoint} has source layers [${saved.sourceLayers.join(", ")}], this fit [${sourceLayers.join(", ")}]`);
    for (const l of sourceLayers) sum.get(l)!.set(saved.J.get(l)!);
    done = saved.nPrompts;
    skipped = Number(m.skipped);
    start = Number(m.nextIndex);
  }
  const save = async (next: number) => {
    if (!checkpoint) return;
    await writeLensFile(checkpoint, { J: new Map(sourceLayers.map((l) => [l, Float32Array.from(sum.get(l)!)] as const)), dModel: d, nPrompts: done,
      sourceLayers, metadata: { ...config, nextIndex: next, skipped } }, { format: "safetensors", dtype: "f32" });
  };
  const t0 = performance.now();
  for (let p = start; p < prompts.length; p++) {
    if (signal?.aborted) throw abortedError(signal.reason);
    const tokens = model.tokenize(prompts[p]).slice(0, maxSeqLen);
    if (tokens.length <= minPosition + 1) {
      skipped++;
      continue;
    }
    const lin = await model.linearize(tokens, { mode, precision: o.precision, threads: o.threads, signal });
    let one: Map<number, Float32Array>;
    try {
      one = await promptLens(lin, sourceLayers, minPosition, signal);
    } finally {
      await lin.dispose();
    }
    // the running mean's change: M_p − M_{p−1} = (J_p − M_{p−1}) / p
    done++;
    let worst = 0;
    for (const l of sourceLayers) {
      const S = sum.get(l)!, J = one.get(l)!;
      let dd = 0, mm = 0;
      for (let i = 0; i < S.length; i++) {
        const prev = done > 1 ? S[i] / (done - 1) : 0;
        S[i] += J[i];
        dd += ((J[i] - prev) / done) ** 2;
        mm += (S[i] / done) ** 2;
      }
      worst = Math.max(worst, mm > 0 ? Math.sqrt(dd / mm) : 0);
    }
    change = done > 1 ? worst : null;
    const elapsed = (performance.now() - t0) / 1000;
    onProgress?.({ prompts: done, total: prompts.length, skipped, change, etaSeconds: elapsed / (p + 1 - start) * (prompts.length - p - 1) });
    if (stop && done >= stop.minPrompts && change !== null && change < stop.tolerance) {
      await save(p + 1);
      break;
    }
    if (done % every === 0 || p === prompts.length - 1) await save(p + 1);
  }
  if (done === 0) throw invalid(`every prompt was too short: a lens needs more than minPosition + 1 = ${minPosition + 1} tokens`);
  const J = new Map(sourceLayers.map((l) => [l, Float32Array.from(sum.get(l)!, (v) => v / done)] as const));
  return new Lens(J, { dModel: d, nPrompts: done, estimator,
    metadata: { architecture: model.hparams.architecture, nLayer: L, minPosition, maxSeqLen, skipped, corpusSize: prompts.length } });
}
