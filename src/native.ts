// Loads the native addon and types its surface. Everything native goes through here.
import { createRequire } from "node:module";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { LljError } from "./errors.js";

/** Root of the llj-gguf package (the folder holding package.json). */
export const packageRoot = (() => {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, "package.json"))) {
    const up = path.dirname(dir);
    if (up === dir) throw new LljError("llj-gguf: cannot find the package root");
    dir = up;
  }
  return dir;
})();

export interface NativeTensor {
  name: string;
  type: string;
  shape: number[];
  bytes: number;
  buffer: string;
  device: string;
}

export interface NativeModelInfo {
  description: string;
  nEmbd: number;
  nLayer: number;
  nHead: number;
  nHeadKv: number;
  nCtxTrain: number;
  nVocab: number;
  nParams: number;
  sizeBytes: number;
  vocabType: number;
  bos: number;
  eos: number;
  layerInputsSupported: boolean;
  metadata: Record<string, string>;
}

export interface NativeForward {
  hidden: Float32Array;
  logits: Float32Array;
  layerInputs: Float32Array[] | null;
}

/** Each method with arguments takes one options object, checked in src/model.ts (native only asserts). */
export interface NativeModel {
  info(): NativeModelInfo;
  tensors(): NativeTensor[];
  tokenize(options: { text: string; addSpecial: boolean; parseSpecial: boolean }): Int32Array;
  detokenize(options: { tokens: Int32Array; removeSpecial: boolean; unparseSpecial: boolean }): string;
  tokenPieces(options: { tokens: Int32Array }): string[];
  referenceForward(options: { tokens: Int32Array; layerInputs?: boolean; threads?: number; contextSize?: number }): Promise<NativeForward>;
  graphSupport(): { ok: boolean; affine?: boolean; reason?: string; ignored: string[] };
  dispose(): void;
}

export interface NativeLinearizationInfo {
  nTokens: number;
  nEmbd: number;
  nLayer: number;
  nVocab: number;
  affine: boolean;
  exact: boolean;
  ordinary: boolean;
  relevance: boolean;
  nExpert: number;
  maxBatch: number;
  blas: boolean;
  tiled: boolean;
  ignoredTensors: string[];
}

/** The final norm: RMSNorm x·r·w, or LayerNorm (x − mean)·r·w + bias. */
export interface OutputNorm {
  weight: Float32Array;
  bias: Float32Array | null;
  eps: number;
  layerNorm: boolean;
}

export interface NativeTap {
  fromLayer?: number;
  tap?: "output" | "residual" | "attn" | "mlp";
  tapLayer?: number;
  /** Restrict the pass to positions [firstPosition, n). */
  firstPosition?: number;
  /** jvp only: the affine map L(v) + c, biases included. */
  affine?: boolean;
}

/** What a pass reads and where it starts, its progress callback and abort flag. */
export interface NativePass extends NativeTap {
  onProgress?: (p: number) => void;
  abortFlag?: Int32Array;
}

/** Each method takes one options object, checked in src/linearization.ts (native only asserts). */
export interface NativeLinearization {
  info(): NativeLinearizationInfo;
  primal(): { embeddings: Float32Array; hidden: Float32Array; finalResidual: Float32Array; logits: Float32Array; logitsBeforeSoftcap: Float32Array;
    finalSoftcap: number; layerInputs: Float32Array[]; biasTerm: Float32Array | null; experts: Int32Array[] | null };
  /** tangents [batch·(n − firstPosition)·d] → [batch·d], or [batch·(n − firstPosition)·d] with allPositions. */
  jvp(options: NativePass & { tangents: Float32Array; batch: number; allPositions: boolean }): Promise<Float32Array>;
  /** cotangents [batch·d], or [batch·(n − firstPosition)·d] with allPositions → [batch·(n − firstPosition)·d]. */
  vjp(options: NativePass & { cotangents: Float32Array; batch: number; allPositions: boolean }): Promise<Float32Array>;
  jacobian(options: NativePass): Promise<Float32Array>;
  forward(options: { embeddings: Float32Array; abortFlag?: Int32Array }): Promise<Float32Array>;
  vocabProducts(options: { vectors: Float32Array; batch: number; kind: "lmHead" | "embedding" }): Promise<Float32Array>;
  lmHeadRows(options: { tokens: Int32Array }): Promise<Float32Array>;
  outputNorm(): OutputNorm;
  dispose(): void;
}

/**
 * One generation's native state (native/engine/session.cpp): llama.cpp's decode, or our own
 * graph. Each method takes one options object, checked in src/generate.ts (native only asserts).
 */
export interface NativeSession {
  /** llama engine, before the first decode: n_embd·(n_layer − 1) values from layer 1 (llama_set_adapter_cvec's layout). */
  setControlVector(options: { data: Float32Array; ilStart: number; ilEnd: number }): void;
  /** llama engine: decodes the next tokens (KV cache), resolves with the last one's logits. */
  decode(options: { tokens: Int32Array; abortFlag?: Int32Array }): Promise<Float32Array>;
  /** graph engine: the whole sequence through our primal graph, inject [n·d] added after `layer` (times ‖h_k‖ when normScaled). */
  forward(options: { tokens: Int32Array; inject: Float32Array | null; layer: number; normScaled: boolean; abortFlag?: Int32Array }):
    Promise<{ logits: Float32Array; hidden: Float32Array }>;
  /**
   * graph engine: layers [fromLayer, toLayer] on the stream entering fromLayer (null with
   * fromLayer 0: the tokens' embeddings). Before the last layer: hidden is the stream after
   * toLayer [n·d] and logits are empty; at the last layer, as forward.
   */
  segment(options: { tokens: Int32Array; stream: Float32Array | null; fromLayer: number; toLayer: number; abortFlag?: Int32Array }):
    Promise<{ logits: Float32Array; hidden: Float32Array }>;
  /** graph engine: the input embeddings x [n·d] of the tokens, as the primal pass forms them. */
  embed(options: { tokens: Int32Array }): Promise<Float32Array>;
  dispose(): void;
}

export interface NativeSessionOptions {
  model: NativeModel;
  engine: "llama" | "graph";
  /** The most positions the session will see (prompt + generated). */
  nCtx: number;
  threads: number;
  exact?: boolean;
}

/** A control-vector GGUF as ggml's reader sees it (native/gguf_io.cpp); checked in src/cvec.ts. */
export interface NativeControlVector {
  architecture: string | null;
  modelHint: string | null;
  layerCount: number | null;
  tensors: Array<{ name: string; type: string; dims: number[]; data: Float32Array | null }>;
}

export interface NativeDevice {
  name: string;
  description: string;
  type: "cpu" | "gpu" | "igpu" | "accel" | "other";
  backend: string;
  memoryFree: number;
  memoryTotal: number;
}

export type GgufKvType = "str" | "u32" | "i32" | "f32" | "bool" | "str[]" | "f32[]" | "i32[]" | "u32[]" | "remove";
export interface GgufKv {
  key: string;
  type: GgufKvType;
  value?: string | number | boolean | Array<string | number>;
}
export type TensorInit =
  | { kind: "normal"; a: number; b: number; seed: number } // mean a, std b
  | { kind: "uniform"; a: number; b: number; seed: number } // [a, b)
  | { kind: "constant"; a: number }
  | { kind: "data"; data: Float32Array };
export interface GgufTensorSpec {
  name: string;
  shape: number[];
  init: TensorInit;
}

/** The registry of model families (native/arch/registry.cpp). */
export interface NativeArchitectures {
  /** Every architecture the graphs implement, in the registry's order. */
  supported: string[];
  /** The same names by family (the native/arch/<family>.cpp defining them). */
  families: Array<{ family: string; names: string[] }>;
  /** Known architectures refused, by what stands in the way: a regex source over the whole name, and the reason. */
  refused: Array<{ pattern: string; reason: string }>;
  /** The reason for any other architecture. */
  otherReason: string;
}

/** The addon's exports: every function with arguments takes one options object, checked in src/ (native only asserts). */
export interface NativeAddon {
  llamaCppTag: string;
  architectures(): NativeArchitectures;
  initBackends(options: { cpuDir: string; gpuLibraries: string[]; blasLibrary: string }):
    { loaded: string[]; failed: string[]; log: string; alreadyInitialized: boolean; blasError?: string };
  backendDevices(): NativeDevice[];
  loadModel(options: { path: string; gpuLayers: number; useMmap: boolean; cpuOnly: boolean;
    onProgress: ((p: number) => void) | undefined; abortFlag: Int32Array | undefined }): Promise<NativeModel>;
  writeGguf(options: { path: string; copyKvFrom?: string; kv: GgufKv[]; tensors: GgufTensorSpec[] }): Promise<string>;
  quantize(options: { input: string; output: string; type: string }): Promise<string>;
  /** One options object, checked in src/model.ts (native only asserts). */
  linearize(options: { model: NativeModel; tokens: Int32Array | null; embeddings: Float32Array | null; threads: number; exact: boolean;
    ordinary: boolean; relevance: boolean; batchMemoryBytes: number; blas: boolean; tiled: boolean; contextSize?: number;
    onProgress: ((p: number) => void) | undefined; abortFlag: Int32Array | undefined }): Promise<NativeLinearization>;
  /** A = U diag(s) Vᵀ for A [m × n] row-major, in double: LAPACK dgesdd when OpenBLAS was found at build time, else one-sided Jacobi. */
  svd(options: { a: Float32Array; m: number; n: number; lapack?: boolean }): Promise<{ u: Float32Array; s: Float32Array; v: Float32Array; rank: number; routine: "dgesdd" | "jacobi" }>;
  /** The rows of `block` [b × w] made orthonormal and orthogonal to the orthonormal rows of `basis` [m × w]; exhausted directions dropped. */
  orthonormalizeAgainst(options: { basis: Float32Array | null; block: Float32Array; width: number }): Promise<Float32Array>;
  /** A [p × q] times B [q × w] (or Bᵀ with B [w × q] when transposeB), accumulated in double. */
  gemm(options: { a: Float32Array; b: Float32Array; p: number; q: number; w: number; transposeB: boolean }): Promise<Float32Array>;
  /** Test support: the ggml types the tiled kernel takes (to_float, not F32), and whether ggml_quantize_chunk can make them. */
  tiledTypes(): Array<{ name: string; quantizable: boolean }>;
  /** Test support: the tiled kernel on random data quantized to `type` ([512 + block] columns × rows), against to_float and cast + mul_mat. */
  tiledSelfTest(options: { type: string; rows: number; n: number; threads: number }): Promise<{ type: string; cols: number; eligible: boolean;
    tileMismatchRows: number; randomBitsMismatchRows: number; forwardMismatches: number; transposeMismatches: number; castMismatches: number; forwardRelError: number; transposeRelError: number }>;
  NativeSession: new (options: NativeSessionOptions) => NativeSession;
  /** The tokens that end a generation (llama_vocab_is_eog). */
  eogTokens(options: { model: NativeModel }): Int32Array;
  readControlVector(options: { path: string }): Promise<NativeControlVector>;
  /** Test support: llama.cpp's own loader (common_control_vector_load in libllama-common), null when that library is missing. */
  commonControlVectorLoad(options: { libraryPath: string; path: string; strength: number }): { nEmbd: number; data: Float32Array; log: string } | null;
  /** Benchmark support (bench/): ggml's F32 matmul rate, Y[m×n] = W[m×k] X[k×n]. */
  benchGemm(options: { m: number; k: number; n: number; threads: number; reps: number }): Promise<{ seconds: number; gflops: number }>;
  /** Benchmark support: seconds of one llama.cpp forward of `tokens`. */
  benchForward(options: { model: NativeModel; tokens: Int32Array; threads: number; reps: number }): Promise<number>;
}

/** What scripts/build-native.mjs recorded about the llama.cpp the addon was built against. */
export interface BuildRecord {
  llamaCppTag: string;
  libDir: string;
  custom: boolean;
  source: string;
}

let addon: NativeAddon | undefined;
let buildRecord: BuildRecord | undefined;

export function getBuildRecord(): BuildRecord {
  if (!buildRecord) {
    const file = path.join(packageRoot, "build", "Release", "llj-build.json");
    if (!existsSync(file)) {
      throw new LljError("the llj-gguf native addon is not built: run `npm run build:native` (or `npm ci`) in " + packageRoot);
    }
    buildRecord = JSON.parse(readFileSync(file, "utf8")) as BuildRecord;
  }
  return buildRecord;
}

export function getAddon(): NativeAddon {
  if (!addon) {
    getBuildRecord();
    const require = createRequire(import.meta.url);
    try {
      addon = require(path.join(packageRoot, "build", "Release", "llj_gguf.node")) as NativeAddon;
    } catch (e) {
      throw new LljError(`cannot load the llj-gguf native addon: ${(e as Error).message}. Rebuild it with \`npm run build:native\`.`, { cause: e });
    }
  }
  return addon;
}
