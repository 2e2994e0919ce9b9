// Reading a GGUF's metadata in JS before llama.cpp sees the file (node-llama-cpp's GGUF
// reader): clear errors for bad files, the architecture check, and the hyper-parameters.
import { stat } from "node:fs/promises";
import { readGgufFileInfo } from "node-llama-cpp";
import { LljError } from "./errors.js";
import { readGgufHeader } from "./gguf-header.js";
import { getAddon, type NativeArchitectures } from "./native.js";

// The architecture lists come from the native registry (native/arch/registry.cpp), read on
// first use: importing this module does not load the addon.
let registry: NativeArchitectures | undefined;
let refusals: Array<[RegExp, string]> | undefined;

/** The native registry of model families: supported names, families, refusal reasons. */
export function architectureRegistry(): NativeArchitectures {
  return (registry ??= getAddon().architectures());
}

/** Architectures llj-gguf linearizes exactly, in the registry's order. Others are refused with a reason. */
export function supportedArchitectures(): readonly string[] {
  return architectureRegistry().supported;
}

/**
 * The same list as a readonly array (filled from the native registry on first access).
 * Prefer supportedArchitectures().
 */
export const SUPPORTED_ARCHITECTURES: readonly string[] = (() => {
  const target: string[] = [];
  const fill = () => {
    if (target.length === 0) { target.push(...supportedArchitectures()); Object.freeze(target); }
    return target;
  };
  return new Proxy(target, {
    get: (_t, p) => Reflect.get(fill(), p),
    has: (_t, p) => Reflect.has(fill(), p),
    ownKeys: () => Reflect.ownKeys(fill()),
    getOwnPropertyDescriptor: (_t, p) => Reflect.getOwnPropertyDescriptor(fill(), p),
  });
})();

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
  if (v === undefined) throw new LljError(`the GGUF lacks the required key ${key}`, { code: "INVALID_MODEL" });
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
    if (!s.isFile()) throw new LljError(`not a file: ${modelPath}`, { code: "INVALID_MODEL" });
    size = s.size;
  } catch (e) {
    if (e instanceof LljError) throw e;
    const why = (e as NodeJS.ErrnoException).code;
    if (why === "ELOOP") throw new LljError(`cannot open ${modelPath}: a loop of symbolic links`, { cause: e, code: "INVALID_MODEL" });
    if (why === "EACCES") throw new LljError(`cannot open ${modelPath}: permission denied`, { cause: e, code: "INVALID_MODEL" });
    if (why === "ENAMETOOLONG") throw new LljError(`cannot open the model: the path is too long`, { cause: e, code: "INVALID_MODEL" });
    throw new LljError(`model file not found: ${modelPath}`, { cause: e, code: "INVALID_MODEL" });
  }
  // bounded walk first: node-llama-cpp's reader trusts the header's counts
  try {
    await readGgufHeader(modelPath, size);
  } catch (e) {
    if (e instanceof LljError) throw e;
    throw new LljError(`cannot read ${modelPath}: ${(e as Error).message}`, { cause: e, code: "INVALID_MODEL" });
  }
  let info: Awaited<ReturnType<typeof readGgufFileInfo>>;
  try {
    info = await readGgufFileInfo(modelPath, { readTensorInfo: true });
  } catch (e) {
    const msg = (e as Error).message ?? String(e);
    if (/magic/i.test(msg)) throw new LljError(`not a GGUF file: ${modelPath} (${msg})`, { cause: e, code: "INVALID_MODEL" });
    throw new LljError(`cannot read the GGUF header of ${modelPath}: ${msg} (is the file truncated or corrupt?)`, { cause: e, code: "INVALID_MODEL" });
  }
  // The reader does not notice a file that ends inside its header; compare the offsets.
  if (Number(info.infoEndOffset) > size) {
    throw new LljError(`${modelPath} is truncated: its header needs ${Number(info.infoEndOffset)} bytes but the file has ${size}`, { code: "INVALID_MODEL" });
  }
  const metadata = info.metadata as unknown as Tree;
  const architecture = String(lookup(metadata, "general.architecture") ?? "");
  if (!architecture) throw new LljError(`${modelPath} has no general.architecture key`, { code: "INVALID_MODEL" });

  const tensors: GgufTensorEntry[] = (info.fullTensorInfo ?? info.tensorInfo ?? []).map((t) => ({
    name: t.name,
    shape: t.dimensions.map((d) => Number(d)),
    ggmlType: Number(t.ggmlType),
  }));
  const lastOffset = Math.max(0, ...(info.fullTensorInfo ?? []).map((t) => Number(t.fileOffset)));
  if (lastOffset > size) {
    throw new LljError(`${modelPath} is truncated: a tensor starts at byte ${lastOffset} but the file has only ${size} bytes`, { code: "INVALID_MODEL" });
  }

  const supported = supportedArchitectures().includes(architecture);
  const a = architecture;
  const byName = new Map(tensors.map((t) => [t.name, t]));
  // An architecture we do not support is refused by name later (assertSupported), not for a missing key.
  const need = (key: string) => (supported ? required(metadata, key) : num(metadata, key) ?? 0);
  const nEmbd = need(`${a}.embedding_length`);
  const nHead = num(metadata, `${a}.attention.head_count`) ?? 0;
  const headDim = num(metadata, `${a}.attention.key_length`) ?? (nHead ? nEmbd / nHead : 0);
  const hparams: HyperParameters = {
    architecture,
    nEmbd,
    nLayer: need(`${a}.block_count`),
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

/** Why llj-gguf refuses an architecture, as precisely as known (the native registry's reasons). */
export function unsupportedReason(architecture: string): string {
  refusals ??= architectureRegistry().refused.map(({ pattern, reason }) => [new RegExp(`^(?:${pattern})$`), reason]);
  for (const [re, reason] of refusals) if (re.test(architecture)) return reason;
  return architectureRegistry().otherReason;
}

export function assertSupported(summary: GgufSummary): void {
  // llama.cpp's own mpt graph of this release asserts (aborting the process) on Q/K
  // LayerNorms: it reshapes views of the fused QKV that are not contiguous.
  if (summary.architecture === "mpt" && summary.tensors.some((t) => /\.attn_[qk]_norm\./.test(t.name))) {
    throw new LljError(`${summary.path}: an mpt file with Q/K LayerNorms (attn_q_norm, attn_k_norm) cannot be run by ` +
      "the pinned llama.cpp (v0.4.0): its mpt graph aborts on them; refusing it before llama.cpp does", { code: "UNSUPPORTED" });
  }
  if (!summary.supported) {
    throw new LljError(`architecture "${summary.architecture}" of ${summary.path} is not supported by llj-gguf: ` +
      `${unsupportedReason(summary.architecture)} (supported: ${supportedArchitectures().join(", ")})`, { code: "UNSUPPORTED" });
  }
}


// ggml types a weight may have: floats and quantizations. Integer and F64 tensors (ggml
// types 24–28) reach ggml's binary ops as weights and abort the process there.
const FORBIDDEN_TYPES = new Map([[24, "I8"], [25, "I16"], [26, "I32"], [27, "I64"], [28, "F64"]]);
/** Highest ggml type id of the pinned ggml (GGML_TYPE_COUNT − 1). */
const MAX_GGML_TYPE = 39;

/**
 * The hyper-parameters and tensors llama.cpp and our graphs rely on, checked before
 * llama.cpp sees the file: several bad values abort or hang llama.cpp (a zero block_count,
 * a NaN or negative norm epsilon, integer weights), others give NaN outputs (rope base 0).
 * Each refusal is INVALID_MODEL naming the key or tensor.
 */
export function assertValidHyperParameters(summary: GgufSummary): void {
  const a = summary.architecture, m = summary.metadata, h = summary.hparams;
  const bad = (what: string) => new LljError(`${summary.path}: ${what}`, { code: "INVALID_MODEL" });
  const intKey = (key: string, lo: number, hi: number, optional = false): number | undefined => {
    const raw = lookup(m, key);
    if (raw === undefined && optional) return undefined;
    if (Array.isArray(raw)) return undefined;  // per-layer arrays: checked by llama.cpp's loader
    const v = typeof raw === "bigint" ? Number(raw) : raw;
    if (typeof v !== "number" || !Number.isInteger(v) || v < lo || v > hi) {
      throw bad(`${key} must be an integer in [${lo}, ${hi}], not ${String(raw)}`);
    }
    return v;
  };
  const positiveKey = (key: string) => {
    const v = lookup(m, key);
    if (v === undefined || Array.isArray(v)) return;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) throw bad(`${key} must be a finite number > 0, not ${String(v)}`);
  };
  const nLayer = intKey(`${a}.block_count`, 1, 65536)!;
  const nEmbd = intKey(`${a}.embedding_length`, 1, 1 << 20)!;
  const nHead = intKey(`${a}.attention.head_count`, 1, 1 << 16, true);
  const nHeadKv = intKey(`${a}.attention.head_count_kv`, 1, 1 << 16, true);
  const keyLength = intKey(`${a}.attention.key_length`, 1, 1 << 16, true);
  intKey(`${a}.attention.value_length`, 1, 1 << 16, true);
  intKey(`${a}.feed_forward_length`, 1, 1 << 24, true);
  intKey(`${a}.context_length`, 1, 2 ** 31 - 1, true);
  const embd = summary.tensors.find((t) => t.name === "token_embd.weight");
  if (!embd) throw bad("the tensor token_embd.weight is missing");
  if (embd.shape[0] !== nEmbd) throw bad(`token_embd.weight has rows of ${embd.shape[0]} values, but ${a}.embedding_length is ${nEmbd}`);
  if (nHead !== undefined && nHeadKv !== undefined && nHead % nHeadKv !== 0) {
    throw bad(`${a}.attention.head_count (${nHead}) must be a multiple of ${a}.attention.head_count_kv (${nHeadKv})`);
  }
  if (nHead !== undefined && keyLength === undefined && nEmbd % nHead !== 0) {
    throw bad(`${a}.embedding_length (${nEmbd}) must be divisible by ${a}.attention.head_count (${nHead})`);
  }
  positiveKey(`${a}.attention.layer_norm_rms_epsilon`);
  positiveKey(`${a}.attention.layer_norm_epsilon`);
  positiveKey(`${a}.rope.freq_base`);
  positiveKey(`${a}.rope.freq_base_swa`);
  positiveKey(`${a}.rope.scaling.factor`);
  const headDim = keyLength ?? (nHead ? nEmbd / nHead : 0);
  const ropeDims = intKey(`${a}.rope.dimension_count`, 0, 1 << 16, true);
  if (ropeDims !== undefined && headDim > 0 && ropeDims > headDim) {
    throw bad(`${a}.rope.dimension_count (${ropeDims}) exceeds the head dimension (${headDim})`);
  }
  for (const t of summary.tensors) {
    const name = t.name || "(a tensor with an empty name)";
    if (t.name === "") throw bad(`${name} in the tensor list`);
    if (FORBIDDEN_TYPES.has(t.ggmlType)) throw bad(`tensor ${name} has type ${FORBIDDEN_TYPES.get(t.ggmlType)}: a weight must be a float or quantized type`);
    if (!Number.isInteger(t.ggmlType) || t.ggmlType < 0 || t.ggmlType > MAX_GGML_TYPE) throw bad(`tensor ${name} has an unknown ggml type ${t.ggmlType}`);
    if (t.shape.length < 1 || t.shape.length > 4) throw bad(`tensor ${name} has ${t.shape.length} dimensions (ggml allows 1 to 4)`);
    if (t.shape.some((d) => !Number.isSafeInteger(d) || d < 1)) throw bad(`tensor ${name} has an invalid shape [${t.shape.join(", ")}]`);
  }
  const nVocab = embd.shape[1] ?? 1;
  for (const key of ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"]) {
    const v = lookup(m, key);
    const id = typeof v === "bigint" ? Number(v) : v;
    if (typeof id === "number" && (id < 0 || id >= nVocab) && id !== -1 && id !== 0xffffffff) {
      throw bad(`${key} (${id}) is outside the vocabulary [0, ${nVocab})`);
    }
  }
  const blocks = new Set<number>();
  for (const t of summary.tensors) {
    const mm = /^blk\.(\d+)\./.exec(t.name);
    if (mm) blocks.add(Number(mm[1]));
  }
  for (const l of blocks) if (l >= nLayer) throw bad(`tensor blk.${l}.* lies beyond ${a}.block_count (${nLayer})`);
  void h;
}
