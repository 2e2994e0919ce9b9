// Synthetic test models: tiny random-weight GGUFs with a real tokenizer (from the
// llama.cpp bundle's models/ggml-vocab-*.gguf), deterministic per seed, and quantized
// copies made by llama.cpp itself. Generated into a cache outside git and reused.
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import path from "node:path";
import { getAddon, getBuildRecord, packageRoot, type GgufKv, type GgufTensorSpec } from "./native.js";
import { getBackendInfo } from "./backends.js";
import { LljError } from "./errors.js";

/** Bump when the generated files change for the same spec. */
const GENERATOR_VERSION = 1;

export type QuantType = "F32" | "F16" | "BF16" | "Q8_0" | "Q4_0" | "Q4_K_M" | "Q4_K_S" | "Q6_K" | "Q5_K_M" | "Q5_0";

/** Architectures the generator writes (llama.cpp's names). */
export type SyntheticArchitecture = "llama" | "mistral3" | "qwen2" | "qwen3" | "qwen3moe" | "gemma2" | "gemma3" | "olmo2" | "phi3" | "gpt2" | "starcoder" | "phi2" | "gptneox" | "starcoder2" | "falcon" | "mpt";

/**
 * Which optional tensors llama.cpp's loader accepts for each architecture (a file with
 * others does not load): the generator only writes those.
 */
interface ArchTensors {
  biases: string[];
  qkNorm: "none" | "perHead" | "fullWidth";
  ropeFreqs: boolean;
  preNorms: boolean;
  postNorms: boolean;
  /** "optional": output.weight may be absent (tied); "never": always tied; "required". */
  output: "optional" | "never" | "required";
  /** phi3: fused [gate; up] in ffn_up, fused QKV, long/short rope factors. */
  phi3?: boolean;
  /**
   * The LayerNorm family (gpt2, starcoder, starcoder2, phi2, gptneox, falcon): LayerNorms with biases, fused QKV, no gate,
   * and a bias on every projection, all required by llama.cpp's loader.
   */
  layerNorm?: boolean;
  /** Learned position embeddings (gpt2, starcoder). */
  positionEmbeddings?: boolean;
  /** Attention and MLP in parallel on one norm, no ffn_norm (phi2). */
  parallel?: boolean;
  /** A required output.bias (phi2). */
  outputBias?: boolean;
}
const ALL_BIASES = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];
const QKV_BIASES = ["attn_q", "attn_k", "attn_v"];
const LLAMA_LIKE: ArchTensors = { biases: ALL_BIASES, qkNorm: "none", ropeFreqs: true, preNorms: true, postNorms: false, output: "optional" };
const LAYER_NORM_FAMILY: ArchTensors = { ...LLAMA_LIKE, biases: ["attn_qkv", "attn_output", "ffn_up", "ffn_down"], ropeFreqs: false,
  layerNorm: true, positionEmbeddings: true };
const ARCH_TENSORS: Record<SyntheticArchitecture, ArchTensors> = {
  llama: LLAMA_LIKE,
  mistral3: LLAMA_LIKE,
  qwen2: { ...LLAMA_LIKE, biases: QKV_BIASES, ropeFreqs: false },
  qwen3: { ...LLAMA_LIKE, biases: QKV_BIASES, ropeFreqs: false, qkNorm: "perHead" },
  qwen3moe: { ...LLAMA_LIKE, biases: QKV_BIASES, ropeFreqs: false, qkNorm: "perHead" },
  gemma2: { ...LLAMA_LIKE, biases: QKV_BIASES, ropeFreqs: false, postNorms: true, output: "never" },
  gemma3: { ...LLAMA_LIKE, biases: QKV_BIASES, ropeFreqs: false, postNorms: true, qkNorm: "perHead" },
  olmo2: { ...LLAMA_LIKE, biases: QKV_BIASES, ropeFreqs: false, preNorms: false, postNorms: true, qkNorm: "fullWidth", output: "required" },
  phi3: { ...LLAMA_LIKE, biases: ["attn_qkv"], ropeFreqs: false, phi3: true },
  gpt2: LAYER_NORM_FAMILY,
  starcoder: LAYER_NORM_FAMILY,
  phi2: { ...LAYER_NORM_FAMILY, positionEmbeddings: false, parallel: true, outputBias: true, output: "required" },
  gptneox: { ...LAYER_NORM_FAMILY, positionEmbeddings: false },
  starcoder2: { ...LAYER_NORM_FAMILY, positionEmbeddings: false },
  falcon: { ...LAYER_NORM_FAMILY, positionEmbeddings: false, parallel: true, biases: [] },
  mpt: { ...LAYER_NORM_FAMILY, positionEmbeddings: false },
};

export interface SyntheticSpec {
  architecture: SyntheticArchitecture;
  seed: number;
  nEmbd: number;
  nLayer: number;
  nHead: number;
  nHeadKv: number;
  /** Per-head width; default nEmbd / nHead. */
  headDim?: number;
  nFf: number;
  /** Tokenizer taken from the bundle's models/ggml-vocab-<vocab>.gguf. */
  vocab: string;
  /** Share token_embd as the LM head (no output.weight). */
  tiedEmbeddings: boolean;
  contextLength: number;
  ropeFreqBase: number;
  normEps: number;
  /** Biases on every projection the architecture's loader accepts (llama: all seven; qwen: q, k, v). */
  biases?: boolean;
  /** Per-tensor weight scales (`<proj>.scale`, shape [1]) on every projection. */
  scales?: boolean;
  /** llama3-style rope frequency factors (`rope_freqs.weight`). */
  ropeFreqs?: boolean;
  /** `<proj>.input_scale` tensors, which llama.cpp loads but this release never applies. */
  inputScales?: boolean;
  /** One fused `attn_qkv.weight` per layer instead of separate q, k, v. */
  fusedQkv?: boolean;
  /** Sliding-window attention (gemma2/3, olmo2): window size, and gemma's layer pattern period. */
  slidingWindow?: number;
  slidingWindowPattern?: number;
  /** Rope base of the sliding-window layers (gemma3). */
  ropeFreqBaseSwa?: number;
  /** Softcaps (gemma2: attention and final; gemma3: final). */
  attnLogitSoftcap?: number;
  finalLogitSoftcap?: number;
  /** mistral3's per-position Q temperature (attention.temperature_scale) and its period. */
  attnTemperatureScale?: number;
  ropeOriginalContext?: number;
  /** Rotated dims per head (partial rotary, phi3); default the head width. */
  ropeDims?: number;
  /** rope.scaling.attn_factor (phi3's long-rope magnitude scale). */
  ropeAttnFactor?: number;
  /** falcon: a second attention norm per layer (Falcon-40B: attn_norm_2 for the attention, attn_norm for the MLP). */
  attnNorm2?: boolean;
  /** mpt: ALiBi (`attention.max_alibi_bias`), `ffn.act.scales`, and full-width Q/K LayerNorms (a file llama.cpp cannot run). */
  maxAlibiBias?: number;
  qkLayerNorm?: boolean;
  actScales?: boolean;
  /** gptneox: `use_parallel_residual` (Pythia: true). */
  parallelResidual?: boolean;
  /** rope.scaling.type and .factor (Gemma 3's linear ×8 on global layers, YaRN contexts). */
  ropeScaling?: { type: "linear" | "yarn"; factor: number };
  /** Mixture-of-experts FFNs (llama, Mixtral-style): expert count and experts used per token. */
  experts?: { count: number; used: number; /** default true; false writes no ffn_gate_exps */ gated?: boolean };
  /** qwen3: the reranker head `cls.output.weight` [d, 1], which llama.cpp loads but applies only in rank pooling. */
  rerankHead?: boolean;
  /**
   * Hostile files (reliability tests): the init of named tensors replaced, e.g.
   * `{ "blk.1.attn_q.weight": { kind: "constant", a: NaN } }`.
   */
  tensorOverrides?: Record<string, { kind: "constant"; a: number } | { kind: "normal" | "uniform"; a: number; b: number; seed: number }>;
  /** Hostile files: metadata keys set (replacing generated ones) or removed (`type: "remove"`). */
  kvOverrides?: GgufKv[];
}

/** Default synthetic llama: dimensions multiples of 256 so that K-quants apply unchanged. */
export const TINY_LLAMA: SyntheticSpec = {
  architecture: "llama",
  seed: 1,
  nEmbd: 256,
  nLayer: 2,
  nHead: 4,
  nHeadKv: 2,
  nFf: 512,
  vocab: "llama-spm",
  tiedEmbeddings: false,
  contextLength: 512,
  ropeFreqBase: 10000,
  normEps: 1e-5,
};

function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** Keys and tensors of a GGUF of the spec's architecture, as llama.cpp's loader expects them. */
export function ggufSpec(spec: SyntheticSpec): { kv: GgufKv[]; tensors: GgufTensorSpec[] } {
  const a = spec.architecture;
  const allowed = ARCH_TENSORS[a];
  if (!allowed) throw new LljError(`no synthetic generator for architecture "${a}"`);
  if (a === "qwen3moe" && !spec.experts) throw new LljError("qwen3moe needs experts");
  if (spec.ropeFreqs && !allowed.ropeFreqs) throw new LljError(`llama.cpp's ${a} graph has no rope frequency factors`);
  const { nEmbd: d, nHead, nHeadKv, nFf, nLayer } = spec;
  const hd = spec.headDim ?? d / nHead;
  if (!Number.isInteger(hd) || hd <= 0 || hd % 2 !== 0) throw new LljError("headDim must be a positive even integer");
  if (nHead % nHeadKv !== 0) throw new LljError("nHead must be a multiple of nHeadKv");
  const kv: GgufKv[] = [
    { key: "general.architecture", type: "str", value: a },
    { key: "general.name", type: "str", value: `llj-synthetic-${a}-${spec.seed}` },
    { key: "general.file_type", type: "u32", value: 0 },
    { key: `${a}.block_count`, type: "u32", value: nLayer },
    { key: `${a}.context_length`, type: "u32", value: spec.contextLength },
    { key: `${a}.embedding_length`, type: "u32", value: d },
    { key: `${a}.feed_forward_length`, type: "u32", value: nFf },
    { key: `${a}.attention.head_count`, type: "u32", value: nHead },
    { key: `${a}.attention.head_count_kv`, type: "u32", value: nHeadKv },
    { key: `${a}.attention.key_length`, type: "u32", value: hd },
    { key: `${a}.attention.value_length`, type: "u32", value: hd },
    { key: `${a}.attention.${allowed.layerNorm ? "layer_norm_epsilon" : "layer_norm_rms_epsilon"}`, type: "f32", value: spec.normEps },
    { key: `${a}.rope.dimension_count`, type: "u32", value: spec.ropeDims ?? hd },
    { key: `${a}.rope.freq_base`, type: "f32", value: spec.ropeFreqBase },
  ];
  const optional: Array<[string, "u32" | "f32", number | undefined]> = [
    ["attention.sliding_window", "u32", spec.slidingWindow],
    ["attention.sliding_window_pattern", "u32", spec.slidingWindowPattern],
    ["rope.freq_base_swa", "f32", spec.ropeFreqBaseSwa],
    ["attn_logit_softcapping", "f32", spec.attnLogitSoftcap],
    ["final_logit_softcapping", "f32", spec.finalLogitSoftcap],
    ["attention.temperature_scale", "f32", spec.attnTemperatureScale],
    ["rope.scaling.original_context_length", "u32", spec.ropeOriginalContext],
    ["rope.scaling.attn_factor", "f32", spec.ropeAttnFactor],
    ["attention.max_alibi_bias", "f32", spec.maxAlibiBias],
  ];
  for (const [k, type, value] of optional) if (value !== undefined) kv.push({ key: `${a}.${k}`, type, value });
  if (spec.parallelResidual !== undefined) kv.push({ key: `${a}.use_parallel_residual`, type: "bool", value: spec.parallelResidual });
  if (spec.ropeScaling) {
    kv.push({ key: `${a}.rope.scaling.type`, type: "str", value: spec.ropeScaling.type },
      { key: `${a}.rope.scaling.factor`, type: "f32", value: spec.ropeScaling.factor });
  }
  if (spec.experts) {
    if (a !== "llama" && a !== "qwen3moe") throw new LljError("the generator writes experts for llama and qwen3moe only");
    kv.push({ key: `${a}.expert_count`, type: "u32", value: spec.experts.count }, { key: `${a}.expert_used_count`, type: "u32", value: spec.experts.used });
    if (a === "qwen3moe") kv.push({ key: `${a}.expert_feed_forward_length`, type: "u32", value: nFf });
  }
  // The tokenizer files are llama GGUFs: their own llama.* hyper-parameters must not leak in
  // (the vocabulary size is the tokenizer's, so llama.vocab_size goes too).
  const vocabKeys = a === "llama" ? ["vocab_size"] : ["block_count", "context_length", "embedding_length",
    "feed_forward_length", "attention.head_count", "attention.head_count_kv", "attention.layer_norm_rms_epsilon",
    "rope.dimension_count", "vocab_size"];
  for (const k of vocabKeys) kv.push({ key: `llama.${k}`, type: "remove" });
  const tensors: GgufTensorSpec[] = [];
  const seedOf = (name: string) => spec.seed * 2 ** 32 + fnv1a(name);
  // Matrices ~ N(0, 1/fan_in) keep activations O(1) through the layers; norm weights
  // around 1 (not exactly 1) so that a graph that forgot one would be caught.
  const matrix = (name: string, fanIn: number, fanOut: number) =>
    tensors.push({ name, shape: [fanIn, fanOut], init: { kind: "normal", a: 0, b: 1 / Math.sqrt(fanIn), seed: seedOf(name) } });
  const norm = (name: string) =>
    tensors.push({ name, shape: [d], init: { kind: "uniform", a: 0.7, b: 1.3, seed: seedOf(name) } });
  // A projection with its optional bias and per-tensor scale.
  const proj = (prefix: string, fanIn: number, fanOut: number) => {
    matrix(`${prefix}.weight`, fanIn, fanOut);
    if (spec.inputScales) tensors.push({ name: `${prefix}.input_scale`, shape: [1], init: { kind: "uniform", a: 0.5, b: 1.5, seed: seedOf(`${prefix}.input_scale`) } });
    if ((spec.biases || allowed.layerNorm) && allowed.biases.includes(prefix.replace(/^blk\.\d+\./, ""))) tensors.push({ name: `${prefix}.bias`, shape: [fanOut], init: { kind: "normal", a: 0, b: 0.2, seed: seedOf(`${prefix}.bias`) } });
    if (spec.scales) tensors.push({ name: `${prefix}.scale`, shape: [1], init: { kind: "uniform", a: 0.5, b: 1.5, seed: seedOf(`${prefix}.scale`) } });
  };
  const vec = (name: string, n: number) =>
    tensors.push({ name, shape: [n], init: { kind: "uniform", a: 0.7, b: 1.3, seed: seedOf(name) } });
  if (allowed.output === "never" && !spec.tiedEmbeddings) throw new LljError(`llama.cpp's ${a} always ties the LM head: set tiedEmbeddings`);
  if (allowed.output === "required" && spec.tiedEmbeddings) throw new LljError(`llama.cpp's ${a} needs an untied LM head`);
  tensors.push({ name: "token_embd.weight", shape: [d, -1], init: { kind: "normal", a: 0, b: 1, seed: seedOf("token_embd.weight") } });
  // A LayerNorm's bias: small, non-zero, so that a graph that dropped it would be caught.
  const normBias = (name: string) => tensors.push({ name, shape: [d], init: { kind: "normal", a: 0, b: 0.1, seed: seedOf(name) } });
  if (allowed.positionEmbeddings) {
    tensors.push({ name: "position_embd.weight", shape: [d, spec.contextLength], init: { kind: "normal", a: 0, b: 0.5, seed: seedOf("position_embd.weight") } });
  }
  norm("output_norm.weight");
  if (allowed.layerNorm) normBias("output_norm.bias");
  if (!spec.tiedEmbeddings) matrix("output.weight", d, -1);
  if (allowed.outputBias) tensors.push({ name: "output.bias", shape: [-1], init: { kind: "normal", a: 0, b: 0.2, seed: seedOf("output.bias") } });
  if (spec.ropeFreqs) {
    tensors.push({ name: "rope_freqs.weight", shape: [hd / 2], init: { kind: "uniform", a: 1, b: 8, seed: seedOf("rope_freqs.weight") } });
  }
  if (allowed.phi3) {  // both sets, different ranges, so that picking the wrong one shows
    const nRot = spec.ropeDims ?? hd;
    tensors.push({ name: "rope_factors_long.weight", shape: [nRot / 2], init: { kind: "uniform", a: 4, b: 16, seed: seedOf("rope_factors_long.weight") } });
    tensors.push({ name: "rope_factors_short.weight", shape: [nRot / 2], init: { kind: "uniform", a: 1, b: 2, seed: seedOf("rope_factors_short.weight") } });
  }
  const fusedQkv = spec.fusedQkv || allowed.phi3 || allowed.layerNorm;
  for (let l = 0; l < nLayer; l++) {
    if (allowed.preNorms) norm(`blk.${l}.attn_norm.weight`);
    if (allowed.layerNorm) normBias(`blk.${l}.attn_norm.bias`);
    if (spec.attnNorm2) {
      if (a !== "falcon") throw new LljError("attnNorm2 is falcon's");
      norm(`blk.${l}.attn_norm_2.weight`);
      normBias(`blk.${l}.attn_norm_2.bias`);
    }
    if (fusedQkv) {
      proj(`blk.${l}.attn_qkv`, d, (nHead + 2 * nHeadKv) * hd);
    } else {
      proj(`blk.${l}.attn_q`, d, nHead * hd);
      proj(`blk.${l}.attn_k`, d, nHeadKv * hd);
      proj(`blk.${l}.attn_v`, d, nHeadKv * hd);
    }
    proj(`blk.${l}.attn_output`, nHead * hd, d);
    if (spec.qkLayerNorm) {
      if (a !== "mpt") throw new LljError("qkLayerNorm is mpt's");
      for (const [t, width] of [["attn_q_norm", nHead * hd], ["attn_k_norm", nHeadKv * hd]] as const) {
        vec(`blk.${l}.${t}.weight`, width);
        tensors.push({ name: `blk.${l}.${t}.bias`, shape: [width], init: { kind: "normal", a: 0, b: 0.1, seed: seedOf(`blk.${l}.${t}.bias`) } });
      }
    }
    if (allowed.qkNorm !== "none") {
      const full = allowed.qkNorm === "fullWidth";
      vec(`blk.${l}.attn_q_norm.weight`, full ? nHead * hd : hd);
      vec(`blk.${l}.attn_k_norm.weight`, full ? nHeadKv * hd : hd);
    }
    if (allowed.postNorms) norm(`blk.${l}.post_attention_norm.weight`);
    if (allowed.preNorms && !allowed.parallel) norm(`blk.${l}.ffn_norm.weight`);
    if (allowed.layerNorm && !allowed.parallel) normBias(`blk.${l}.ffn_norm.bias`);
    if (spec.experts) {
      const e = spec.experts.count;
      matrix(`blk.${l}.ffn_gate_inp.weight`, d, e);
      const projections = [["ffn_gate_exps", d, nFf], ["ffn_up_exps", d, nFf], ["ffn_down_exps", nFf, d]] as const;
      for (const [name, fanIn, fanOut] of projections.filter(([nm]) => spec.experts!.gated !== false || nm !== "ffn_gate_exps")) {
        const n = `blk.${l}.${name}`;
        tensors.push({ name: `${n}.weight`, shape: [fanIn, fanOut, e], init: { kind: "normal", a: 0, b: 1 / Math.sqrt(fanIn), seed: seedOf(n) } });
        if (spec.scales) tensors.push({ name: `${n}.scale`, shape: [e], init: { kind: "uniform", a: 0.5, b: 1.5, seed: seedOf(`${n}.scale`) } });
      }
      continue;
    }
    if (allowed.phi3) {
      proj(`blk.${l}.ffn_up`, d, 2 * nFf);  // [gate; up]
    } else if (allowed.layerNorm) {
      proj(`blk.${l}.ffn_up`, d, nFf);      // no gate: down(gelu(up(m)))
    } else {
      proj(`blk.${l}.ffn_gate`, d, nFf);
      proj(`blk.${l}.ffn_up`, d, nFf);
    }
    proj(`blk.${l}.ffn_down`, nFf, d);
    if (spec.actScales) {
      if (a !== "mpt") throw new LljError("actScales is mpt's");
      tensors.push({ name: `blk.${l}.ffn.act.scales`, shape: [nFf], init: { kind: "uniform", a: 0.5, b: 2, seed: seedOf(`blk.${l}.ffn.act.scales`) } });
    }
    if (allowed.postNorms) norm(`blk.${l}.post_ffw_norm.weight`);
  }
  if (spec.rerankHead) {
    if (a !== "qwen3") throw new LljError("rerankHead is qwen3's (llama.cpp loads cls.output.weight for qwen3 only)");
    matrix("cls.output.weight", d, 1);
  }
  for (const [name, init] of Object.entries(spec.tensorOverrides ?? {})) {
    const t = tensors.find((x) => x.name === name);
    if (!t) throw new LljError(`tensorOverrides: no tensor ${name} in this spec`);
    t.init = init;
  }
  for (const o of spec.kvOverrides ?? []) {
    const i = kv.findIndex((x) => x.key === o.key);
    if (i >= 0) kv.splice(i, 1);
    kv.push(o);
  }
  // -1 stands for the vocabulary size, known once the tokenizer file is read.
  return { kv, tensors };
}

export function vocabFile(vocab: string): string {
  const file = path.join(getBuildRecord().source, "models", `ggml-vocab-${vocab}.gguf`);
  if (!existsSync(file)) throw new LljError(`no tokenizer file ${file} (vocab "${vocab}")`);
  return file;
}

export function syntheticCacheDir(): string {
  return process.env.LLJ_GGUF_CACHE ? path.resolve(process.env.LLJ_GGUF_CACHE) : path.join(packageRoot, ".cache", "models");
}

/** Writes one synthetic model to `outPath` (F32), atomically. */
export async function writeSyntheticModel(outPath: string, spec: SyntheticSpec): Promise<string> {
  getBackendInfo();
  const addon = getAddon();
  const vocabPath = vocabFile(spec.vocab);
  // The vocabulary size is the tokenizer's: read it from the tokenizer file.
  const { readGgufFileInfo } = await import("node-llama-cpp");
  const vinfo = await readGgufFileInfo(vocabPath);
  const nVocab = (vinfo.metadata as unknown as { tokenizer: { ggml: { tokens: string[] } } }).tokenizer.ggml.tokens.length;
  const { kv, tensors } = ggufSpec(spec);
  for (const t of tensors) t.shape = t.shape.map((n) => (n === -1 ? nVocab : n));
  const tmp = `${outPath}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    await addon.writeGguf({ path: tmp, copyKvFrom: vocabPath, kv, tensors });
    renameSync(tmp, outPath);
  } finally {
    rmSync(tmp, { force: true });
  }
  return outPath;
}

/** Quantizes a GGUF with llama.cpp's own quantizer, atomically. */
export async function quantizeModel(input: string, output: string, type: QuantType): Promise<string> {
  getBackendInfo();
  const tmp = `${output}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    await getAddon().quantize({ input, output: tmp, type });
    renameSync(tmp, output);
  } finally {
    rmSync(tmp, { force: true });
  }
  return output;
}

/**
 * Path of a cached synthetic model of the given type, generating (and quantizing) it on
 * first use. Concurrent callers are safe: files appear atomically.
 */
export async function syntheticModel(spec: SyntheticSpec = TINY_LLAMA, type: QuantType = "F32"): Promise<string> {
  const dir = syntheticCacheDir();
  mkdirSync(dir, { recursive: true });
  const key = createHash("sha256")
    // (non-finite numbers of hostile specs kept apart: JSON would write them all as null)
    .update(JSON.stringify({ spec, tag: getBuildRecord().llamaCppTag, v: GENERATOR_VERSION },
      (_k, v: unknown) => (typeof v === "number" && !Number.isFinite(v) ? `number:${v}` : v)))
    .digest("hex").slice(0, 16);
  const base = path.join(dir, `${spec.architecture}-${key}`);
  const f32 = `${base}-F32.gguf`;
  if (!existsSync(f32)) await writeSyntheticModel(f32, spec);
  if (type === "F32") return f32;
  const out = `${base}-${type}.gguf`;
  if (!existsSync(out)) await quantizeModel(f32, out, type);
  return out;
}

/**
 * The quantized synthetic model dequantized back to F32 by llama.cpp: the same network as
 * the quantized file, for llama.cpp's own F32 forward to check exact mode against.
 */
export async function dequantizedSyntheticModel(spec: SyntheticSpec, type: Exclude<QuantType, "F32">): Promise<string> {
  const quantized = await syntheticModel(spec, type);
  const out = quantized.replace(/\.gguf$/, "-dequantized.gguf");
  if (!existsSync(out)) await quantizeModel(quantized, out, "F32");
  return out;
}
