// Reading a GGUF's metadata in JS before llama.cpp sees the file (node-llama-cpp's GGUF
// reader): clear errors for bad files, the architecture check, and the hyper-parameters.
import { stat } from "node:fs/promises";
import { readGgufFileInfo } from "node-llama-cpp";
import { LljError } from "./errors.js";

/** Architectures llj-gguf linearizes exactly. Others are refused with a reason. */
export const SUPPORTED_ARCHITECTURES = ["llama", "mistral3", "qwen2", "qwen3", "qwen3moe", "gemma2", "gemma3", "olmo2", "phi3", "gpt2", "starcoder", "phi2", "gptneox", "starcoder2", "falcon", "mpt"] as const;
export type SupportedArchitecture = (typeof SUPPORTED_ARCHITECTURES)[number];

export interface RopeParameters {
  /** Rotated dimensions per head. */
  dimensionCount: number;
  freqBase: number;
  /** "none", "linear", "yarn", "llama3", ... as the GGUF says (default "none"). */
  scalingType: string;
  scalingFactor: number;
  originalContextLength: number | undefined;
  /** Whether the file carries `rope_freqs.weight` (per-dimension frequency factors). */
  hasFreqFactors: boolean;
}

export interface HyperParameters {
  architecture: string;
  /** Model (residual stream) width d. */
  nEmbd: number;
  nLayer: number;
  nHead: number;
  nHeadKv: number;
  headDim: number;
  /** Feed-forward (MLP hidden) width. */
  nFf: number;
  nVocab: number;
  /** Training context length (`<arch>.context_length`). */
  contextLength: number;
  normEps: number;
  /** RMSNorm, or LayerNorm with a bias (gpt2: `attention.layer_norm_epsilon`). */
  norm: "rms" | "layer";
  rope: RopeParameters;
  /** Learned absolute position embeddings (`position_embd.weight`, gpt2) instead of rope. */
  learnedPositions: boolean;
  /** True when there is no `output.weight`: the LM head is `token_embd`. */
  tiedEmbeddings: boolean;
}

export interface GgufTensorEntry {
  name: string;
  shape: number[];
  ggmlType: number;
}

export interface GgufSummary {
  path: string;
  fileSize: number;
  architecture: string;
  supported: boolean;
  hparams: HyperParameters;
  tensors: GgufTensorEntry[];
  /** The raw metadata tree as node-llama-cpp reads it. */
  metadata: Record<string, unknown>;
}

type Tree = Record<string, unknown>;

function lookup(tree: Tree, key: string): unknown {
  let node: unknown = tree;
  for (const part of key.split(".")) {
    if (node === null || typeof node !== "object") return undefined;
    node = (node as Tree)[part];
  }
  return node;
}

function num(tree: Tree, key: string): number | undefined {
  const v = lookup(tree, key);
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v);
  return undefined;
}

function required(tree: Tree, key: string): number {
  const v = num(tree, key);
  if (v === undefined) throw new LljError(`the GGUF lacks the required key ${key}`);
  return v;
}

/**
 * Reads and checks a GGUF's header: missing files, non-GGUF files and files cut short
 * before their tensor data get a clear error here; the data itself is checked by llama.cpp.
 */
export async function readGgufSummary(modelPath: string): Promise<GgufSummary> {
  let size: number;
  try {
    const s = await stat(modelPath);
    if (!s.isFile()) throw new LljError(`not a file: ${modelPath}`);
    size = s.size;
  } catch (e) {
    if (e instanceof LljError) throw e;
    throw new LljError(`model file not found: ${modelPath}`, { cause: e });
  }
  let info: Awaited<ReturnType<typeof readGgufFileInfo>>;
  try {
    info = await readGgufFileInfo(modelPath, { readTensorInfo: true });
  } catch (e) {
    const msg = (e as Error).message ?? String(e);
    if (/magic/i.test(msg)) throw new LljError(`not a GGUF file: ${modelPath} (${msg})`, { cause: e });
    throw new LljError(`cannot read the GGUF header of ${modelPath}: ${msg} (is the file truncated or corrupt?)`, { cause: e });
  }
  // The reader does not notice a file that ends inside its header; compare the offsets.
  if (Number(info.infoEndOffset) > size) {
    throw new LljError(`${modelPath} is truncated: its header needs ${Number(info.infoEndOffset)} bytes but the file has ${size}`);
  }
  const metadata = info.metadata as unknown as Tree;
  const architecture = String(lookup(metadata, "general.architecture") ?? "");
  if (!architecture) throw new LljError(`${modelPath} has no general.architecture key`);

  const tensors: GgufTensorEntry[] = (info.fullTensorInfo ?? info.tensorInfo ?? []).map((t) => ({
    name: t.name,
    shape: t.dimensions.map((d) => Number(d)),
    ggmlType: Number(t.ggmlType),
  }));
  const lastOffset = Math.max(0, ...(info.fullTensorInfo ?? []).map((t) => Number(t.fileOffset)));
  if (lastOffset > size) {
    throw new LljError(`${modelPath} is truncated: a tensor starts at byte ${lastOffset} but the file has only ${size} bytes`);
  }

  const supported = (SUPPORTED_ARCHITECTURES as readonly string[]).includes(architecture);
  const a = architecture;
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const nEmbd = required(metadata, `${a}.embedding_length`);
  const nHead = num(metadata, `${a}.attention.head_count`) ?? 0;
  const headDim = num(metadata, `${a}.attention.key_length`) ?? (nHead ? nEmbd / nHead : 0);
  const hparams: HyperParameters = {
    architecture,
    nEmbd,
    nLayer: required(metadata, `${a}.block_count`),
    nHead,
    nHeadKv: num(metadata, `${a}.attention.head_count_kv`) ?? nHead,
    headDim,
    nFf: num(metadata, `${a}.feed_forward_length`) ?? 0,
    nVocab: byName.get("token_embd.weight")?.shape[1] ?? num(metadata, `${a}.vocab_size`) ?? 0,
    contextLength: num(metadata, `${a}.context_length`) ?? 0,
    normEps: num(metadata, `${a}.attention.layer_norm_rms_epsilon`) ?? num(metadata, `${a}.attention.layer_norm_epsilon`) ?? 1e-5,
    norm: num(metadata, `${a}.attention.layer_norm_rms_epsilon`) === undefined && num(metadata, `${a}.attention.layer_norm_epsilon`) !== undefined
      ? "layer" : "rms",
    learnedPositions: byName.has("position_embd.weight"),
    rope: {
      dimensionCount: num(metadata, `${a}.rope.dimension_count`) ?? headDim,
      freqBase: num(metadata, `${a}.rope.freq_base`) ?? 10000,
      scalingType: String(lookup(metadata, `${a}.rope.scaling.type`) ?? "none"),
      scalingFactor: num(metadata, `${a}.rope.scaling.factor`) ?? 1,
      originalContextLength: num(metadata, `${a}.rope.scaling.original_context_length`),
      hasFreqFactors: byName.has("rope_freqs.weight"),
    },
    tiedEmbeddings: !byName.has("output.weight"),
  };
  return { path: modelPath, fileSize: size, architecture, supported, hparams, tensors, metadata };
}

// Why a family of llama.cpp architectures has no exact linearization here. Families listed
// by what stands in the way; anything else gets the generic reason.
const RECURRENT = "its layers carry a recurrent state (state-space or RWKV mixing), whose detached form is not implemented";
const ENCODER = "it is an encoder (bidirectional attention, pooled outputs), not a decoder-only language model";
const UNSUPPORTED_REASONS: Array<[RegExp, string]> = [
  [/^(mamba2?|rwkv\d*|arwkv\d*|rwkv\d+qwen|jamba|falcon-h1|granite-?hybrid|lfm2.*|nemotron-h.*|plamo2|qwen3next|qwen35.*|kimi-linear|plamo3)$/, RECURRENT],
  [/^(bert|nomic-bert.*|jina-bert.*|modern-bert|neo-bert|eurobert|t5encoder|gemma-embedding|llama-embed)$/, ENCODER],
  [/^t5$/, "it is an encoder-decoder model"],
  [/^gemma3n$/, "it adds per-layer inputs (AltUp and per-layer embeddings), not implemented"],
  [/^gemma4.*$/, "its per-layer inputs and shared KV layers are not implemented"],
  [/^(deepseek2|deepseek3.*|deepseek4|kimi-k3|glm-dsa|minimax-m2)$/, "multi-head latent attention / its routing scheme is not implemented"],
  [/^llama4$/, "chunked attention and shared-expert MoE are not implemented"],
  [/^(gptj|bloom|refact|codeshell|jais.*)$/,
    "its graph in the LayerNorm and non-gated MLP family is not written yet (gpt2's, starcoder's, starcoder2's, phi2's, gptneox's, falcon's and mpt's are; the method applies)"],
];

/** Why llj-gguf refuses an architecture, as precisely as known. */
export function unsupportedReason(architecture: string): string {
  for (const [re, reason] of UNSUPPORTED_REASONS) if (re.test(architecture)) return reason;
  return "no linearization graph is written for it yet";
}

export function assertSupported(summary: GgufSummary): void {
  // llama.cpp's own mpt graph of this release asserts (aborting the process) on Q/K
  // LayerNorms: it reshapes views of the fused QKV that are not contiguous.
  if (summary.architecture === "mpt" && summary.tensors.some((t) => /\.attn_[qk]_norm\./.test(t.name))) {
    throw new LljError(`${summary.path}: an mpt file with Q/K LayerNorms (attn_q_norm, attn_k_norm) cannot be run by ` +
      "the pinned llama.cpp (v0.4.0): its mpt graph aborts on them; refusing it before llama.cpp does", { code: "unsupported-architecture" });
  }
  if (!summary.supported) {
    throw new LljError(`architecture "${summary.architecture}" of ${summary.path} is not supported by llj-gguf: ` +
      `${unsupportedReason(summary.architecture)} (supported: ${SUPPORTED_ARCHITECTURES.join(", ")})`, { code: "unsupported-architecture" });
  }
}

