// The hostile-input corpus (issue #15): malformed files, metadata, tensor types, non-finite
// weights, prompts, ids, embeddings, product arguments, taps, SVD/decode options, lifecycle
// and CLI arguments. Every case runs in a child process and must end in a rejected promise
// (an LljError with a stable code and a one-line message naming the problem) or a CLI exit in
// 1..127 with one line on stderr: never a signal, a hang or a resolved non-finite answer.
// Cases are batched per child (a crash loses the rest of the batch, which fails the test) and
// the children run two at a time.
import { spawn } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync, statSync, truncateSync, mkdirSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { packageRoot, getAddon } from "../src/native.js";
import { initBackends } from "../src/backends.js";
import { readGgufHeader } from "../src/gguf-header.js";
import { syntheticModel, TINY_LLAMA, type SyntheticSpec } from "../src/index.js";
import { STORIES } from "./helpers.js";
import { runChild, CRASH_SIGNATURE, type ChildResult } from "./child.js";

const tmp = mkdtempSync(path.join(os.tmpdir(), "llj-hostile-"));

/** A case: its name, what the message must say, and the codes allowed. */
interface Expect { name: string; message: RegExp; codes: string[] }
const expectations: Expect[] = [];
const groups: Array<{ title: string; body: string }> = [];

// ---------------------------------------------------------------------------------------
// Files: copies of stories260K with one field patched, found with the bounded header walk.

interface FileCase { name: string; file: string; message: RegExp; codes: string[]; reference?: boolean }

async function patchedCopies(): Promise<FileCase[]> {
  const size = statSync(STORIES).size;
  const h = await readGgufHeader(STORIES, size);
  const dataStart = Math.ceil(h.end / 32) * 32;  // general.alignment is absent: 32
  const key = (k: string) => {
    const e = h.keys.find((x) => x.key === k);
    if (!e) throw new Error(`stories260K has no key ${k}`);
    return e.valueOffset;
  };
  const tensor = (n: string) => {
    const t = h.tensors.find((x) => x.name === n);
    if (!t) throw new Error(`stories260K has no tensor ${n}`);
    return t;
  };
  const out: FileCase[] = [];
  let i = 0;
  const make = (name: string, message: RegExp, codes: string[], patch: (b: Buffer) => Buffer | void) => {
    const buf = readFileSync(STORIES);
    const file = path.join(tmp, `case-${i++}.gguf`);
    writeFileSync(file, patch(buf) ?? buf);
    out.push({ name, file, message, codes });
  };
  const M = ["INVALID_MODEL"], NF = ["NON_FINITE"];
  const u32 = (k: string, v: number) => (b: Buffer) => void b.writeUInt32LE(v, key(k));
  const f32 = (k: string, v: number) => (b: Buffer) => void b.writeFloatLE(v, key(k));
  make("block_count 0", /llama\.block_count must be an integer in \[1, /, M, u32("llama.block_count", 0));
  make("block_count 100000", /llama\.block_count must be an integer/, M, u32("llama.block_count", 100000));
  make("block_count below the tensors' layers", /blk\.4\.\* lies beyond llama\.block_count \(4\)/, M, u32("llama.block_count", 4));
  make("embedding_length 0", /llama\.embedding_length must be an integer/, M, u32("llama.embedding_length", 0));
  make("embedding_length not the tensors'", /token_embd\.weight has rows of 64 values, but llama\.embedding_length is 63/, M, u32("llama.embedding_length", 63));
  make("head_count 0", /llama\.attention\.head_count must be an integer/, M, u32("llama.attention.head_count", 0));
  make("head_count not a multiple of head_count_kv", /head_count \(6\) must be a multiple of .*head_count_kv \(4\)/, M, u32("llama.attention.head_count", 6));
  make("head_count not dividing d", /embedding_length \(64\) must be divisible by .*head_count \(12\)/, M, (b) => {
    b.writeUInt32LE(12, key("llama.attention.head_count"));
    b.writeUInt32LE(4, key("llama.attention.head_count_kv"));
  });
  make("head_count_kv 0", /head_count_kv must be an integer/, M, u32("llama.attention.head_count_kv", 0));
  make("norm epsilon NaN", /layer_norm_rms_epsilon must be a finite number > 0, not NaN/, M, f32("llama.attention.layer_norm_rms_epsilon", NaN));
  make("norm epsilon negative", /layer_norm_rms_epsilon must be a finite number > 0, not -1/, M, f32("llama.attention.layer_norm_rms_epsilon", -1));
  make("norm epsilon 0", /layer_norm_rms_epsilon must be a finite number > 0, not 0/, M, f32("llama.attention.layer_norm_rms_epsilon", 0));
  make("norm epsilon infinite", /layer_norm_rms_epsilon must be a finite number > 0, not Infinity/, M, f32("llama.attention.layer_norm_rms_epsilon", Infinity));
  make("rope dimension_count above the head dim", /rope\.dimension_count \(1000\) exceeds the head dimension \(8\)/, M, u32("llama.rope.dimension_count", 1000));
  make("context_length 0", /llama\.context_length must be an integer/, M, u32("llama.context_length", 0));
  make("feed_forward_length 0", /llama\.feed_forward_length must be an integer/, M, u32("llama.feed_forward_length", 0));
  make("BOS id outside the vocabulary", /tokenizer\.ggml\.bos_token_id \(99999\) is outside the vocabulary \[0, 512\)/, M, u32("tokenizer.ggml.bos_token_id", 99999));
  make("EOS id outside the vocabulary", /tokenizer\.ggml\.eos_token_id \(70000\) is outside the vocabulary/, M, u32("tokenizer.ggml.eos_token_id", 70000));
  for (const [type, label] of [[24, "I8"], [25, "I16"], [26, "I32"], [27, "I64"], [28, "F64"]] as const) {
    make(`weight of type ${label}`, new RegExp(`tensor blk\\.0\\.attn_q\\.weight has type ${label}: a weight must be a float or quantized type`), M,
      (b) => void b.writeUInt32LE(type, tensor("blk.0.attn_q.weight").typeOffset));
  }
  make("unknown tensor type", /tensor blk\.1\.ffn_up\.weight has an unknown ggml type 200/, M, (b) => void b.writeUInt32LE(200, tensor("blk.1.ffn_up.weight").typeOffset));
  make("array length 2^64 - 1", /the array length of tokenizer\.ggml\.tokens is 18446744073709551615, more than the \d+ bytes left/, M,
    (b) => void b.writeBigUInt64LE(2n ** 64n - 1n, key("tokenizer.ggml.tokens") + 4));
  make("metadata key count 2^63", /the metadata key count is 9223372036854775808/, M, (b) => void b.writeBigUInt64LE(2n ** 63n, 16));
  make("tensor count 2^40", /the tensor count is 1099511627776/, M, (b) => void b.writeBigUInt64LE(2n ** 40n, 8));
  make("2^32 - 1 dimensions", /tensor token_embd\.weight has 4294967295 dimensions/, M, (b) => {
    // the dimension count sits after the tensor's name (u64 length + bytes)
    const at = h.tensors.length ? findTensorInfo(b, "token_embd.weight") : 0;
    b.writeUInt32LE(0xffffffff, at);
  });
  make("an element count past 2^63 (each dimension in range)", /tensor token_embd\.weight has 9223372036854775808 elements \(shape \[2147483648, 4294967296\]\), more than ggml can count/, M, (b) => {
    const at = findTensorInfo(b, "token_embd.weight");
    b.writeBigUInt64LE(2n ** 31n, at + 4);
    b.writeBigUInt64LE(2n ** 32n, at + 12);
  });
  make("a zero dimension", /dimension 0 of tensor token_embd\.weight is 0/, M, (b) => void b.writeBigUInt64LE(0n, findTensorInfo(b, "token_embd.weight") + 4));
  make("GGUF version 7", /GGUF version 7/, M, (b) => void b.writeUInt32LE(7, 4));
  make("bad magic", /not a GGUF file/, M, (b) => void b.write("GGUX", 0));
  make("a string longer than the file", /the length of the value of general\.architecture is \d+, more than/, M,
    (b) => void b.writeBigUInt64LE(2n ** 50n, key("general.architecture")));
  make("tensor data beyond the file", /tensor output\.weight starts at byte \d+ of its data, beyond the file/, M,
    (b) => void b.writeBigUInt64LE(BigInt(size) * 4n, tensor("output.weight").typeOffset + 4));
  make("truncated inside the header", /truncated|ends/, M, (b) => b.subarray(0, 100));
  // names that differ only after a NUL byte are one name to llama.cpp's C-string lookups (found by scripts/fuzz.mjs)
  make("a NUL byte in a tensor name", /the name of tensor #\d+ \("blk\.0\.ffn_up\\u0000weight"\) contains a NUL byte/, M,
    (b) => void b.writeUInt8(0, b.indexOf("blk.0.ffn_up.weight") + "blk.0.ffn_up".length));
  make("a NUL byte in a metadata key", /metadata key #\d+ \("llama\.context\\u0000length"\) contains a NUL byte/, M,
    (b) => void b.writeUInt8(0, b.indexOf("llama.context_length") + "llama.context".length));
  make("truncated inside the tensor data", /truncated|out of bounds|not within the file bounds|could not load|failed to (load|read)/i, M, (b) => b.subarray(0, Math.floor(size * 0.6)));
  make("an empty file", /shorter than the GGUF magic/, M, () => Buffer.alloc(0));
  // refused by llama.cpp's loader: its error leads the message, before its warnings
  make("a required tensor missing (renamed)", /llama\.cpp could not load .* \(llama\.cpp: llama_model_load: error loading model: check_tensor_dims: tensor 'blk\.0\.ffn_up\.weight' not found/, M,
    (b) => void b.write("blk.0.ffn_uq.weight", b.indexOf("blk.0.ffn_up.weight")));
  const fill = (name: string, v: number, count?: number, from = 0) => (b: Buffer) => {
    const t = tensor(name);
    const n = count ?? t.dims.reduce((a, x) => a * x, 1);
    for (let k = 0; k < n; k++) b.writeFloatLE(v, dataStart + t.dataOffset + 4 * (from + k));
  };
  make("NaN attention weight (blk.3.attn_q)", /blk\.3 output .* is NaN at position \d+: check blk\.3\.attn_q\.weight.*attention/, NF, fill("blk.3.attn_q.weight", NaN));
  make("one infinite element in blk.2.ffn_down", /blk\.2 output .* (is NaN|is infinite) at position \d+: check blk\.2\.ffn_\* weights/, NF, fill("blk.2.ffn_down.weight", Infinity, 1));
  make("NaN output norm", /the output of the final norm is NaN at position \d+: check output_norm\.weight/, NF, fill("output_norm.weight", NaN));
  make("NaN BOS embedding row", /the input embedding of token 1 at position 0 is NaN: check row 1 of token_embd\.weight/, NF, fill("token_embd.weight", NaN, 64, 64));
  make("huge weights overflow (blk.1.ffn_up = 3e38)", /blk\.1 output .* (infinite|NaN) at position \d+: check blk\.1\.ffn_/, NF, fill("blk.1.ffn_up.weight", 3e38));
  make("NaN LM head row", /logit of token \d+ is NaN: check output\.weight \(the LM head\)/, NF, fill("output.weight", NaN, 64, 64 * 7));
  make("infinite attn_norm (blk.0)", /blk\.0 output .* at position \d+: check blk\.0\.attn_/, NF, fill("blk.0.attn_norm.weight", Infinity));
  make("NaN value projection (blk.4.attn_v)", /blk\.4 output .* NaN at position \d+: check blk\.4\.attn_/, NF, fill("blk.4.attn_v.weight", NaN));
  // llama.cpp's own forward on the same broken weights: refused too, not returned as NaN
  const nanAttn = out.find((c) => c.name.startsWith("NaN attention weight"))!;
  out.push({ ...nanAttn, name: "referenceForward on a NaN attention weight", message: /llama\.cpp's forward: the input of layer 4 is NaN/, reference: true });
  const nanNorm = out.find((c) => c.name === "NaN output norm")!;
  out.push({ ...nanNorm, name: "referenceForward on a NaN output norm", message: /llama\.cpp's forward: the final hidden state is NaN/, reference: true });
  return out;
}

/** Offset of the dimension count of a tensor's info (after its name) in a header buffer. */
function findTensorInfo(b: Buffer, name: string): number {
  const needle = Buffer.concat([Buffer.alloc(8), Buffer.from(name)]);
  needle.writeBigUInt64LE(BigInt(name.length), 0);
  const at = b.lastIndexOf(needle);
  if (at < 0) throw new Error(`no tensor info for ${name}`);
  return at + needle.length;
}

const SMALL: SyntheticSpec = { ...TINY_LLAMA, seed: 901, nEmbd: 64, nFf: 128, nHead: 4, nHeadKv: 2, tiedEmbeddings: true };

async function syntheticCases(): Promise<FileCase[]> {
  const M = ["INVALID_MODEL"];
  const out = [];
  for (const [label, v] of [["0", 0], ["NaN", NaN], ["negative", -5], ["infinite", Infinity]] as const) {
    out.push({ name: `rope freq_base ${label}`, message: new RegExp(`llama\\.rope\\.freq_base must be a finite number > 0, not ${String(v)}`), codes: M,
      file: await syntheticModel({ ...SMALL, kvOverrides: [{ key: "llama.rope.freq_base", type: "f32", value: v }] }) });
  }
  out.push({ name: "gemma3 rope freq_base_swa 0", message: /gemma3\.rope\.freq_base_swa must be a finite number > 0/, codes: M,
    file: await syntheticModel({ ...SMALL, architecture: "gemma3", seed: 902, slidingWindow: 8, kvOverrides: [{ key: "gemma3.rope.freq_base_swa", type: "f32", value: 0 }] }) });
  initBackends(false);
  const stub = path.join(tmp, "unknown-arch.gguf");
  await getAddon().writeGguf({ path: stub,
    kv: [{ key: "general.architecture", type: "str", value: "frobnicator" }, { key: "frobnicator.block_count", type: "u32", value: 2 }],
    tensors: [{ name: "token_embd.weight", shape: [16, 8], init: { kind: "normal", a: 0, b: 1, seed: 1 } }],
  });
  out.push({ name: "unknown architecture without its keys", message: /architecture "frobnicator" .* is not supported/, codes: ["UNSUPPORTED"], file: stub });
  const loop = path.join(tmp, "loop.gguf");
  symlinkSync(loop, loop);
  out.push({ name: "a symlink loop", message: /loop of symbolic links/, codes: M, file: loop });
  out.push({ name: "a missing file", message: /model file not found/, codes: M, file: path.join(tmp, "nope.gguf") });
  mkdirSync(path.join(tmp, "dir.gguf"));
  out.push({ name: "a folder", message: /not a file/, codes: M, file: path.join(tmp, "dir.gguf") });
  return out;
}

// ---------------------------------------------------------------------------------------
// API cases on stories260K: each `c(name, message, codes, expression)` is one case.

const apiCases: Array<{ group: string; setup: string; cases: Array<[string, RegExp, string[], string]> }> = [];
const A = ["INVALID_ARGUMENT"];
apiCases.push({
  group: "prompts, ids, embeddings and linearize options",
  setup: `const model = await lib.loadModel({ modelPath: STORIES, gpu: false }); const P = "Once upon a time";`,
  cases: [
    ["linearize(null)", /the prompt must be text, an array of token ids or \{ embeddings \}, not null/, A, `model.linearize(null)`],
    ["linearize(undefined)", /the prompt must be/, A, `model.linearize(undefined)`],
    ["linearize(42)", /the prompt must be .* not number/, A, `model.linearize(42)`],
    ["linearize({})", /\{ embeddings: Float32Array/, A, `model.linearize({})`],
    ["empty text", /the prompt is empty/, A, `model.linearize("")`],
    ["no token ids", /the prompt is empty/, A, `model.linearize([])`],
    ["token id 2^32 + 5 (must not wrap to 5)", /token id 4294967301 at position 1 is outside the vocabulary \[0, 512\)/, A, `model.linearize([1, 2 ** 32 + 5])`],
    ["fractional token id", /token at position 1 is not an integer: 2\.5/, A, `model.linearize([1, 2.5])`],
    ["negative token id", /token id -1 at position 1 is outside the vocabulary/, A, `model.linearize([1, -1])`],
    ["NaN token id", /token at position 0 is not an integer: NaN/, A, `model.linearize([NaN])`],
    ["string token id", /token at position 0 is not an integer: "1"/, A, `model.linearize(["1"])`],
    ["token id = vocab size", /token id 512 at position 1 is outside the vocabulary/, A, `model.linearize([1, 512])`],
    ["prompt longer than the context", /2049 tokens, more than the model's context of 2048/, A, `model.linearize(new Array(2049).fill(1))`],
    ["embeddings not n·d", /embeddings must hold n·d values with d = 64, got 65/, A, `model.linearize({ embeddings: new Float32Array(65) })`],
    ["NaN embeddings", /embeddings hold a non-finite value \(NaN\) at index 3/, A, `model.linearize({ embeddings: Float32Array.from({ length: 64 }, (_, i) => (i === 3 ? NaN : 0.1)) })`],
    ["embeddings as a plain array", /embeddings must be a Float32Array/, A, `model.linearize({ embeddings: [1, 2] })`],
    ["precision float8", /precision must be "exact" or "fast", not "float8"/, A, `model.linearize(P, { precision: "float8" })`],
    ["threads 0", /threads must be an integer in \[1, /, A, `model.linearize(P, { threads: 0 })`],
    ["threads 1000", /threads must be an integer in \[1, \d+\), not 1000/, A, `model.linearize(P, { threads: 1000 })`],
    ["threads 1.5", /threads must be an integer/, A, `model.linearize(P, { threads: 1.5 })`],
    ["batchMemoryBytes 0", /batchMemoryBytes must be a whole number of bytes in \[1, 2\^50\], not 0/, A, `model.linearize(P, { batchMemoryBytes: 0 })`],
    ["batchMemoryBytes -1", /batchMemoryBytes must be/, A, `model.linearize(P, { batchMemoryBytes: -1 })`],
    ["batchMemoryBytes NaN", /batchMemoryBytes must be .* not NaN/, A, `model.linearize(P, { batchMemoryBytes: NaN })`],
    ["batchMemoryBytes 2^60", /batchMemoryBytes must be .* not 1152921504606847000/, A, `model.linearize(P, { batchMemoryBytes: 2 ** 60 })`],
    ["signal: {}", /signal must be an AbortSignal, not an object/, A, `model.linearize(P, { signal: {} })`],
    ["onProgress: 5", /onProgress must be a function/, A, `model.linearize(P, { onProgress: 5 })`],
    ["contextSize below the prompt", /contextSize is smaller than the prompt/, A, `model.linearize(P, { contextSize: 1 })`],
    ["contextSize 1.5", /contextSize must be an integer/, A, `model.linearize(P, { contextSize: 1.5 })`],
    ["options null", /linearize options must be an options object, not null/, A, `model.linearize(P, null)`],
    ["aborted signal", /abort/i, ["ABORTED"], `model.linearize(P, { signal: AbortSignal.abort() })`],
    ["referenceForward(null)", /the prompt must be|not iterable|text, an array/, A, `model.referenceForward(null)`],
    ["referenceForward threads -3", /threads must be an integer/, A, `model.referenceForward(P, { threads: -3 })`],
    ["tokenize(null)", /tokenize expects a string, not null/, A, `() => model.tokenize(null)`],
    ["detokenize 2^32 + 5", /token id 4294967301 at position 0 is outside the vocabulary/, A, `() => model.detokenize([2 ** 32 + 5])`],
    ["tokenPieces(-1)", /token id -1 at position 0 is outside/, A, `() => model.tokenPieces([-1])`],
    ["loadModel({})", /loadModel needs \{ modelPath: string \}/, A, `lib.loadModel({})`],
    ["loadModel(null)", /loadModel needs/, A, `lib.loadModel(null)`],
    ["loadModel gpuLayers -1", /gpuLayers must be a non-negative integer/, A, `lib.loadModel({ modelPath: STORIES, gpu: false, gpuLayers: -1 })`],
    ["loadModel signal: {}", /signal must be an AbortSignal/, A, `lib.loadModel({ modelPath: STORIES, gpu: false, signal: {} })`],
    ["loadModel aborted", /abort/i, ["ABORTED"], `lib.loadModel({ modelPath: STORIES, gpu: false, signal: AbortSignal.abort() })`],
    ["onLoadProgress throws", /onProgress threw: boom/, A, `lib.loadModel({ modelPath: STORIES, gpu: false, onLoadProgress: () => { throw new Error("boom"); } })`],
    ["linearize onProgress throws", /onProgress threw: boom/, A, `model.linearize(P, { onProgress: () => { throw new Error("boom"); } })`],
  ],
});
apiCases.push({
  group: "products, taps, SVD, decode, attribution options",
  setup: `const model = await lib.loadModel({ modelPath: STORIES, gpu: false });
    const lin = await model.linearize("Once upon a time"); const n = lin.nTokens, d = lin.nEmbd;
    const huge = new Float32Array(n * d).fill(3e38);`,
  cases: [
    ["jvp(null)", /tangents must be a Float32Array, not null/, A, `lin.jvp(null)`],
    ["jvp(Float64Array)", /tangents must be a Float32Array, not a Float64Array/, A, `lin.jvp(new Float64Array(n * d))`],
    ["jvp wrong length", /tangents must be a Float32Array of B·n·d values/, A, `lin.jvp(new Float32Array(n * d - 1))`],
    ["jvp NaN tangents", /non-finite value at index 0/, A, `lin.jvp(new Float32Array(n * d).fill(NaN))`],
    ["jvp huge tangents overflow", /the jvp result is (infinite|NaN) at index \d+: the inputs are too large for float32/, ["NON_FINITE"], `lin.jvp(huge)`],
    ["vjp huge cotangents overflow", /the vjp result is (infinite|NaN)/, ["NON_FINITE"], `lin.vjp(new Float32Array(d).fill(3e38))`],
    ["vjp wrong length", /cotangents must be a Float32Array of B·d values/, A, `lin.vjp(new Float32Array(d + 1))`],
    ["tap nope", /tap must be "output" or "residual" or "attn" or "mlp", not "nope"/, A, `lin.jvp(lin.inputEmbeddings, { tap: "nope", layer: 1 })`],
    ["fractional layer", /layer must be an integer in \[0, 5\), not 1\.5/, A, `lin.jvp(lin.inputEmbeddings, { tap: "mlp", layer: 1.5 })`],
    ["layer 9", /layer must be an integer in \[0, 5\), not 9/, A, `lin.vjp(new Float32Array(d), { tap: "residual", layer: 9 })`],
    ["fromLayer -1", /fromLayer must be an integer in \[0, 5\), not -1/, A, `lin.vjp(new Float32Array(d), { fromLayer: -1 })`],
    ["firstPosition 1.5", /firstPosition must be an integer in \[0, \d+\), not 1\.5/, A, `lin.vjp(new Float32Array(d), { firstPosition: 1.5 })`],
    ["firstPosition n", /firstPosition must be an integer/, A, `lin.vjp(new Float32Array(d), { firstPosition: n })`],
    ["vjp affine", /affine applies to jvp only/, A, `lin.vjp(new Float32Array(d), { affine: true })`],
    ["jvp signal: {}", /signal must be an AbortSignal/, A, `lin.jvp(lin.inputEmbeddings, { signal: {} })`],
    ["jacobian layer -1", /layer must be an integer/, A, `lin.jacobian({ tap: "mlp", layer: -1 })`],
    ["jacobian aborted", /abort/i, ["ABORTED"], `lin.jacobian({ signal: AbortSignal.abort() })`],
    ["jacobian onProgress throws", /onProgress threw: boom/, A, `lin.jacobian({ onProgress: () => { throw new Error("boom"); } })`],
    ["vjp onProgress throws a string", /onProgress threw: nope/, A, `lin.vjp(new Float32Array(d), { onProgress: () => { throw "nope"; } })`],
    ["svd(null)", /svd options must be an options object, not null/, A, `lin.svd(null)`],
    ["svd k 0", /k must be a positive integer/, A, `lin.svd({ k: 0 })`],
    ["svd k 1.5", /k must be a positive integer/, A, `lin.svd({ k: 1.5 })`],
    ["svd token 99", /token must be a position in/, A, `lin.svd({ token: 99 })`],
    ["svd token 0.5", /token must be a position in/, A, `lin.svd({ token: 0.5 })`],
    ["svd method qr", /method must be "exact", "randomized" or "auto"/, A, `lin.svd({ method: "qr" })`],
    ["svd tolerance 0", /tolerance must be positive/, A, `lin.svd({ method: "randomized", tolerance: 0 })`],
    ["svd maxIterations 0", /maxIterations must be a positive integer/, A, `lin.svd({ method: "randomized", maxIterations: 0 })`],
    ["svd oversampling -1", /oversampling must be a non-negative integer/, A, `lin.svd({ method: "randomized", oversampling: -1 })`],
    ["decode(null)", /vectors must be a Float32Array, not null/, A, `lin.decode(null, { space: "output" })`],
    ["decode unknown space", /space must be "output" or "input", not "middle"/, A, `lin.decode(lin.output, { space: "middle" })`],
    ["decode negative top", /top must be an integer in \[1, 513\), not -1/, A, `lin.decode(lin.output, { space: "output", top: -1 })`],
    ["decode fractional top", /top must be an integer/, A, `lin.decode(lin.output, { space: "input", top: 1.5 })`],
    ["decode without options", /decode needs \{ space/, A, `lin.decode(lin.output)`],
    ["decode NaN vector", /vectors hold a non-finite value \(NaN\) at index 0/, A, `lin.decode(new Float32Array(d).fill(NaN), { space: "output" })`],
    ["attribution token 2^32 + 5", /token must be an id in \[0, 512\), not 4294967301/, A, `lin.attribution({ token: 2 ** 32 + 5 })`],
    ["attribution token '3'", /token must be an id in \[0, 512\), not 3/, A, `lin.attribution({ token: "3" })`],
    ["attribution(null)", /attribution options must be an options object/, A, `lin.attribution(null)`],
    ["nonlinearReconstruction epsilon 0", /epsilon must be a finite number in \(0, 0\.5\], not 0/, A, `lin.nonlinearReconstruction({ epsilon: 0 })`],
    ["nonlinearReconstruction epsilon -1", /epsilon must be a finite number/, A, `lin.nonlinearReconstruction({ epsilon: -1 })`],
    ["nonlinearReconstruction epsilon NaN", /epsilon must be a finite number .* not NaN/, A, `lin.nonlinearReconstruction({ epsilon: NaN })`],
    ["nonlinearReconstruction epsilon 1", /epsilon must be a finite number .* not 1/, A, `lin.nonlinearReconstruction({ epsilon: 1 })`],
    ["layerSvd fractional layer", /layer must be an integer in \[0, 5\), not 1\.5/, A, `lin.layerSvd({ layer: 1.5, tap: "mlp" })`],
    ["layerSvd tap output", /tap must be "residual" or "attn" or "mlp", not "output"/, A, `lin.layerSvd({ layer: 0, tap: "output" })`],
    ["layerSvd(null)", /the layer quantity must be \{ layer, tap \}/, A, `lin.layerSvd(null)`],
    ["emergence layer 7", /layers\[0\] must be an integer in \[0, 5\), not 7/, A, `lin.emergence({ layers: [7] })`],
    ["emergence layers 'all'", /layers must be an array of layer indices/, A, `lin.emergence({ layers: "all" })`],
    ["emergence k 0", /k must be an integer in \[1, /, A, `lin.emergence({ k: 0 })`],
    ["reconstruction signal: {}", /signal must be an AbortSignal/, A, `lin.reconstruction({ signal: {} })`],
  ],
});
apiCases.push({
  group: "lifecycle",
  setup: `const model = await lib.loadModel({ modelPath: STORIES, gpu: false });
    const lin = await model.linearize("Once upon a time"); const d = lin.nEmbd;
    const lin2 = await model.linearize("One day"); await lin2.dispose();`,
  cases: [
    ["jvp after the linearization's dispose", /the linearization has been disposed/, ["DISPOSED"], `lin2.jvp(new Float32Array(lin2.nTokens * d))`],
    ["svd after the linearization's dispose", /the linearization has been disposed/, ["DISPOSED"], `lin2.svd()`],
    ["dispose({ abort: 'yes' })", /abort must be true or false/, A, `lin.dispose({ abort: "yes" })`],
    ["model.dispose(null)", /dispose options must be an options object/, A, `model.dispose(null)`],
    ["linearize after the model's dispose", /the model has been disposed/, ["DISPOSED"], `model.dispose().then(() => model.linearize("x"))`],
    ["decode after the model's dispose", /has been disposed/, ["DISPOSED"], `lin.decode(lin.output, { space: "output" })`],
    ["tokenize after the model's dispose", /the model has been disposed/, ["DISPOSED"], `() => model.tokenize("x")`],
    ["referenceForward after the model's dispose", /the model has been disposed/, ["DISPOSED"], `model.referenceForward("x")`],
  ],
});

for (const g of apiCases) {
  const body = [g.setup, ...g.cases.map(([name, , , expr]) => `await outcome(${JSON.stringify(name)}, ${expr.startsWith("() =>") ? expr : `() => ${expr}`});`)].join("\n");
  groups.push({ title: g.group, body });
  for (const [name, message, codes] of g.cases) expectations.push({ name, message, codes });
}

// ---------------------------------------------------------------------------------------
// CLI arguments: exit 1..127 with one line on stderr, within the timeout.

const cli = path.join(packageRoot, "dist", "src", "cli.js");
const cliCases: Array<[string, string[], RegExp]> = [
  ["info on a missing file", ["info", "/no/such/model.gguf"], /model file not found/],
  ["info on package.json", ["info", path.join(packageRoot, "package.json")], /not a GGUF file/],
  ["info without a model", ["info"], /Not enough non-option arguments/],
  ["analyze with an empty prompt", ["analyze", STORIES, "", "--gpu", "false"], /the prompt is empty/],
  ["analyze --precision without a value", ["analyze", STORIES, "Once", "--gpu", "false", "--precision"], /Not enough arguments following: precision/],
  ["analyze --precision float8", ["analyze", STORIES, "Once", "--gpu", "false", "--precision", "float8"], /Invalid values/],
  ["analyze --npy /proc/x (must not hang)", ["analyze", STORIES, "Once", "--gpu", "false", "--npy", "/proc/x"], /--npy \/proc\/x: cannot create/],
  ["analyze --npy into a file", ["analyze", STORIES, "Once", "--gpu", "false", "--npy", path.join(packageRoot, "package.json", "sub")], /not a folder/],
  ["analyze --npy without a value", ["analyze", STORIES, "Once", "--gpu", "false", "--npy"], /Not enough arguments following: npy/],
  ["an unknown command", ["frobnicate"], /Unknown argument|name a command/],
  ["an unknown option", ["info", STORIES, "--frob"], /Unknown argument/],
  ["--gpu tpu", ["info", STORIES, "--gpu", "tpu"], /gpu/],
];

function runCli(args: string[], timeoutMs = 60_000): Promise<ChildResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, ...args], { env: { ...process.env, NODE_OPTIONS: "" }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "", stderr = "", timedOut = false;
    child.stdout.on("data", (b) => (stdout += b));
    child.stderr.on("data", (b) => (stderr += b));
    const timer = setTimeout(() => { timedOut = true; child.kill("SIGKILL"); }, timeoutMs);
    child.on("close", (status, signal) => { clearTimeout(timer); resolve({ status, signal, timedOut, stdout, stderr, reports: [] }); });
  });
}

/** Runs tasks at most `width` at a time. */
async function pool<T>(tasks: Array<() => Promise<T>>, width = 2): Promise<T[]> {
  const out: T[] = new Array(tasks.length);
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < tasks.length) {
      const i = next++;
      out[i] = await tasks[i]();
    }
  }));
  return out;
}

test("the hostile-input corpus: every case refused by name, no signal, no hang, no non-finite answer", async () => {
  const files = [...await patchedCopies(), ...await syntheticCases()];
  // file cases in two children (a crash in one loses the rest of its batch, and fails)
  const half = Math.ceil(files.length / 2);
  for (const [k, batch] of [files.slice(0, half), files.slice(half)].entries()) {
    groups.push({
      title: `files ${k + 1}`,
      body: batch.map((f) => `await outcome(${JSON.stringify(f.name)}, async () => {
        const m = await lib.loadModel({ modelPath: ${JSON.stringify(f.file)}, gpu: false });
        try {
          ${f.reference ? `return (await m.referenceForward("Once upon a time")).hidden;` : `const lin = await m.linearize("Once upon a time"); return lin.output;`}
        } finally { await m.dispose(); }
      });`).join("\n"),
    });
    for (const f of batch) expectations.push({ name: f.name, message: f.message, codes: f.codes });
  }
  const t0 = Date.now();
  const [children, clis] = await Promise.all([
    pool(groups.map((g) => () => runChild(g.body, { timeoutMs: 90_000 }).then((r) => ({ g, r })))),
    pool(cliCases.map(([, args]) => () => runCli(args)), 1),
  ]);
  const problems: string[] = [];
  for (const { g, r } of children) {
    if (r.signal || r.timedOut || r.status !== 0 || CRASH_SIGNATURE.test(r.stderr)) {
      problems.push(`child "${g.title}": status ${r.status}, signal ${r.signal}, timed out ${r.timedOut}: ${r.stderr.slice(-800)}`);
    }
  }
  const reports = new Map(children.flatMap(({ r }) => r.reports).map((x) => [x.name as string, x]));
  for (const e of expectations) {
    const x = reports.get(e.name);
    if (!x) { problems.push(`${e.name}: no outcome (the child died before it)`); continue; }
    if (x.outcome !== "rejected") { problems.push(`${e.name}: resolved${x.nonFinite ? " with a non-finite answer" : ""}`); continue; }
    const message = String(x.message);
    if (!x.lljError) problems.push(`${e.name}: not an LljError: ${message}`);
    if (!e.codes.includes(String(x.code))) problems.push(`${e.name}: code ${x.code}, expected ${e.codes.join("|")}: ${message}`);
    if (!e.message.test(message)) problems.push(`${e.name}: message ${JSON.stringify(message)} does not match ${e.message}`);
    if (/\n/.test(message)) problems.push(`${e.name}: the message has several lines`);
    if (/tensor ''/.test(message)) problems.push(`${e.name}: the message names an empty tensor`);
  }
  cliCases.forEach(([name, , message], i) => {
    const r = clis[i];
    const lines = r.stderr.trim().split("\n");
    if (r.signal || r.timedOut || r.status === null || r.status < 1 || r.status > 127) problems.push(`CLI ${name}: status ${r.status}, signal ${r.signal}, timed out ${r.timedOut}`);
    else if (lines.length !== 1 || !message.test(lines[0])) problems.push(`CLI ${name}: stderr ${JSON.stringify(r.stderr.slice(0, 300))} does not match ${message}`);
    if (CRASH_SIGNATURE.test(r.stderr)) problems.push(`CLI ${name}: crash signature in stderr`);
  });
  const total = expectations.length + cliCases.length;
  console.log(`hostile corpus: ${total} cases (${expectations.length} API/file, ${cliCases.length} CLI) in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  expect(problems).toEqual([]);
  expect(total).toBeGreaterThanOrEqual(60);
}, 300_000);

test("degenerate inputs get a defined answer: y = 0 gives relativeError 0, not NaN", async () => {
  const r = await runChild(`
    const model = await lib.loadModel({ modelPath: STORIES, gpu: false });
    const lin = await model.linearize({ embeddings: new Float32Array(3 * 64) });
    const rec = await lin.reconstruction(), nl = await lin.nonlinearReconstruction();
    report({ y: Math.max(...lin.output.map(Math.abs)), rel: rec.relativeError, nl: nl.relativeError });
    await model.dispose();`);
  expect(r.signal).toBeNull();
  expect(r.reports[0]).toEqual({ y: 0, rel: 0, nl: 0 });
});
