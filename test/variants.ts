// The synthetic model variants the engine's tests run: every architecture of the registry,
// with the optional tensors and keys a real file can carry.
import { TINY_LLAMA, type SyntheticSpec } from "../src/index.js";

export const PHI3: SyntheticSpec = { ...TINY_LLAMA, architecture: "phi3", vocab: "phi-3", seed: 61, ropeDims: 48, ropeOriginalContext: 256,
  ropeAttnFactor: 1.2, contextLength: 1024, biases: true, scales: true };

export const GPT2: SyntheticSpec = { ...TINY_LLAMA, architecture: "gpt2", vocab: "gpt-2", seed: 81, nHeadKv: 4, nLayer: 3 };

export const PHI2: SyntheticSpec = { ...TINY_LLAMA, architecture: "phi2", vocab: "gpt-2", seed: 83, nHeadKv: 4, nLayer: 3, ropeDims: 32 };

export const MPT: SyntheticSpec = { ...TINY_LLAMA, architecture: "mpt", vocab: "gpt-neox", seed: 89, nHeadKv: 4, nLayer: 2,
  maxAlibiBias: 8, actScales: true };

export const STORY = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun with her dog. " +
  "One day, she saw a big red ball in the park. She ran to the ball and kicked it very high. The dog ran after it and " +
  "they played all day long until the sun went down.";

const variants: Array<[string, SyntheticSpec]> = [
  ["llama GQA, untied", TINY_LLAMA],
  ["llama biases, scales, rope factors", { ...TINY_LLAMA, biases: true, scales: true, ropeFreqs: true, seed: 3 }],
  ["llama tied LM head, MHA", { ...TINY_LLAMA, tiedEmbeddings: true, nHeadKv: 4, nLayer: 1, seed: 4 }],
  ["qwen3 (Q/K norm), head dim 128, YaRN ×4", { ...TINY_LLAMA, architecture: "qwen3", headDim: 128, seed: 41,
    ropeScaling: { type: "yarn", factor: 4 }, ropeOriginalContext: 128 }],
  ["qwen2 (QKV biases, affine)", { ...TINY_LLAMA, architecture: "qwen2", biases: true, seed: 43 }],
  ["qwen2 with FFN scales llama.cpp ignores, tied", { ...TINY_LLAMA, architecture: "qwen2", biases: true, scales: true, tiedEmbeddings: true, nLayer: 1, seed: 44 }],
  ["gpt2 (LayerNorms, learned positions, GELU MLP, fused QKV, biases: affine)", GPT2],
  ["phi2 (LayerNorm, attention and GELU MLP in parallel, partial rotary, output bias)", PHI2],
  ["gptneox (Pythia: parallel residual with two LayerNorms, partial rotary)", { ...PHI2, architecture: "gptneox", vocab: "gpt-neox", seed: 84, parallelResidual: true }],
  ["gptneox, sequential residual", { ...PHI2, architecture: "gptneox", vocab: "gpt-neox", seed: 85, parallelResidual: false, nLayer: 2 }],
  ["starcoder2 (LayerNorm, rope, GQA, GELU MLP, biases)", { ...TINY_LLAMA, architecture: "starcoder2", vocab: "starcoder", seed: 86, nLayer: 2 }],
  ["falcon-7B style (parallel on one LayerNorm, multi-query, no projection biases)", { ...TINY_LLAMA, architecture: "falcon", vocab: "falcon", seed: 87, nHeadKv: 1, nLayer: 2 }],
  ["falcon-40B style (attn_norm_2 for the attention, attn_norm for the MLP)", { ...TINY_LLAMA, architecture: "falcon", vocab: "falcon", seed: 88, nHeadKv: 2, nLayer: 2, attnNorm2: true }],
  ["mpt (ALiBi, activation scales, no rope)", MPT],
  ["starcoder (the gpt2 graph, multi-query attention)", { ...GPT2, architecture: "starcoder", vocab: "starcoder", nHeadKv: 1, seed: 82, nLayer: 2 }],
];
// Sliding-window models: a window of 16 well inside the 300-token prompt.
const swa: Array<[string, SyntheticSpec]> = [
  ["gemma3 (Q/K norm, post-norms, GELU, SWA + global layers with linear rope ×8, final softcap)",
    { ...TINY_LLAMA, architecture: "gemma3", seed: 52, slidingWindow: 16, slidingWindowPattern: 2, ropeFreqBase: 1e6, ropeFreqBaseSwa: 1e4,
      finalLogitSoftcap: 30, ropeScaling: { type: "linear", factor: 8 } }],
  ["gemma2 (attention and final softcaps, SWA, tied)",
    { ...TINY_LLAMA, architecture: "gemma2", seed: 54, tiedEmbeddings: true, slidingWindow: 16, attnLogitSoftcap: 50, finalLogitSoftcap: 30 }],
  ["olmo2 (no pre-norms, full-width Q/K norm, SWA layers)", { ...TINY_LLAMA, architecture: "olmo2", seed: 55, nLayer: 4, slidingWindow: 16 }],
];
variants.push(
  ["phi3 (fused QKV and gate-up, partial rotary, long/short rope factors)", PHI3],
  ["mistral3 (Q temperature, biases, rope factors)",
    { ...TINY_LLAMA, architecture: "mistral3", seed: 51, attnTemperatureScale: 0.3, ropeOriginalContext: 8, ropeFreqs: true, biases: true }],
  ["llama MoE (Mixtral-style: 4 experts, top 2, per-expert scales)", { ...TINY_LLAMA, seed: 72, experts: { count: 4, used: 2 }, scales: true }],
  ["qwen3moe (8 experts, top 2)", { ...TINY_LLAMA, architecture: "qwen3moe", seed: 73, experts: { count: 8, used: 2 } }],
  ...swa);

export const VARIANTS: ReadonlyArray<readonly [string, SyntheticSpec]> = variants;
/** The sliding-window variants (run on longer prompts). */
export const SWA_VARIANTS: ReadonlyArray<readonly [string, SyntheticSpec]> = swa;
