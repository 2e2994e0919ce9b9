// llama.cpp control vectors: writing them, and reading them back with every check made
// before llama.cpp sees the data. The layout is the one llama.cpp's common loader reads
// (common/common.cpp, common_control_vector_load_one) and tools/cvector-generator writes:
//   general.architecture       = "controlvector"
//   controlvector.model_hint   = the model's architecture ("llama", ...)
//   controlvector.layer_count  = n_layer − 1 (i32): one direction per layer that can take one
//   direction.<il>, il = 1 … n_layer − 1: F32 [n_embd], added by llama.cpp to the output of
//   layer il (build_cvec, just before "l_out-<il>"), i.e. to the residual stream after layer
//   il — our residual tap `layer: il`. There is never a direction for layer 0: llama.cpp's
//   loader refuses index 0 and its adapter has no tensor there.
import { statSync } from "node:fs";
import { getAddon } from "./native.js";
import { LljError, fromNative, invalid } from "./errors.js";
import { readGgufHeader } from "./gguf-header.js";
import type { HyperParameters } from "./gguf.js";

export interface ControlVectorFile {
  path: string;
  modelHint: string | null;
  layerCount: number;
  /** llama_set_adapter_cvec's buffer: n_embd·(n_layer − 1) values, layer 1 first (directions of one layer summed, as llama.cpp does). */
  data: Float32Array;
  /** The layers with a non-zero direction. */
  layers: number[];
}

/** Writes a control vector that adds `vector` [n_embd] to the residual stream after `layer` (1 … n_layer − 1). */
export async function writeControlVector(path: string, options: { architecture: string; hparams: HyperParameters; layer: number; vector: Float32Array }): Promise<string> {
  const { nLayer, nEmbd } = options.hparams;
  if (!Number.isInteger(options.layer) || options.layer < 1 || options.layer >= nLayer) {
    throw invalid(`a control vector acts on layers 1 to ${nLayer - 1} (llama.cpp never steers layer 0's output), not ${options.layer}`);
  }
  if (options.vector.length !== nEmbd) throw invalid(`the direction must have n_embd = ${nEmbd} values, not ${options.vector.length}`);
  const tensors = [];
  for (let il = 1; il < nLayer; il++) {
    tensors.push({ name: `direction.${il}`, shape: [nEmbd], init: { kind: "data" as const, data: il === options.layer ? options.vector : new Float32Array(nEmbd) } });
  }
  const kv = [
    { key: "general.architecture", type: "str" as const, value: "controlvector" },
    { key: "controlvector.model_hint", type: "str" as const, value: options.architecture },
    { key: "controlvector.layer_count", type: "i32" as const, value: nLayer - 1 },
  ];
  try {
    return await getAddon().writeGguf({ path, kv, tensors });
  } catch (e) {
    throw fromNative(e);
  }
}

/**
 * Reads a control vector for a model, refusing (INVALID_ARGUMENT, naming the file) what
 * llama.cpp would reject or silently misapply: not a control vector, a layer count that is
 * not the model's n_layer − 1, a direction for layer 0 or beyond the last layer, a
 * direction whose width is not n_embd, or one that is not a 1-D F32 tensor.
 */
export async function readControlVector(path: string, hparams: HyperParameters): Promise<ControlVectorFile> {
  const bad = (what: string) => invalid(`control vector ${path}: ${what}`);
  let size: number;
  try {
    const st = statSync(path);
    if (!st.isFile()) throw bad("not a file");
    size = st.size;
  } catch (e) {
    if (e instanceof LljError) throw e;
    throw bad(`cannot read it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  try {
    await readGgufHeader(path, size);  // bounded walk first: a hostile header never reaches ggml's reader
  } catch (e) {
    throw bad(e instanceof Error ? e.message : String(e));
  }
  const v = await getAddon().readControlVector({ path }).catch((e: unknown) => {
    throw bad(fromNative(e).message);
  });
  const { nLayer, nEmbd } = hparams;
  if (v.architecture !== "controlvector") {
    throw bad(`general.architecture is ${JSON.stringify(v.architecture)}, not "controlvector" (is it a model file?)`);
  }
  if (v.layerCount !== nLayer - 1) {
    throw bad(`controlvector.layer_count is ${v.layerCount ?? "missing"}, but this model has ${nLayer} layers and takes ${nLayer - 1} directions (layers 1 to ${nLayer - 1}): ` +
      `it was made for another model${v.modelHint ? ` (model_hint "${v.modelHint}")` : ""}`);
  }
  if (v.tensors.length === 0) throw bad("it holds no direction tensors");
  const data = new Float32Array(nEmbd * (nLayer - 1));
  const layers = new Set<number>();
  for (const t of v.tensors) {
    const m = /^direction\.(\d+)$/.exec(t.name);
    if (!m) throw bad(`tensor ${t.name} is not named direction.<layer>`);
    const il = Number(m[1]);
    if (il < 1 || il >= nLayer) throw bad(`${t.name}: a direction acts on layers 1 to ${nLayer - 1} of this model (llama.cpp never steers layer 0)`);
    if (t.type !== "f32" || !t.data) throw bad(`${t.name} is ${t.type}, not F32`);
    if (t.dims.length !== 1) throw bad(`${t.name} has shape [${t.dims.join(", ")}], not [n_embd]`);
    if (t.dims[0] !== nEmbd) throw bad(`${t.name} has ${t.dims[0]} values, but the model's n_embd is ${nEmbd}`);
    let nonzero = false;
    for (let k = 0; k < nEmbd; k++) {
      if (!Number.isFinite(t.data[k])) throw bad(`${t.name} holds a non-finite value at index ${k}`);
      data[(il - 1) * nEmbd + k] += t.data[k];  // several directions for one layer add up, as in llama.cpp
      nonzero ||= t.data[k] !== 0;
    }
    if (nonzero) layers.add(il);
  }
  return { path, modelHint: v.modelHint, layerCount: v.layerCount, data, layers: [...layers].sort((a, b) => a - b) };
}
