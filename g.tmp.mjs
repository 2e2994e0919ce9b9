import { loadModel, syntheticModel, TINY_LLAMA } from './dist/src/index.js';
const rel = (a, b) => { let n=0, d=0; for (let i=0;i<a.length;i++){n+=(a[i]-b[i])**2; d+=b[i]**2} return Math.sqrt(n/d) };
const P = "Once upon a time, there was a little";
for (const [name, spec, q] of [
  ['qwen3', {...TINY_LLAMA, architecture: 'qwen3', seed: 41}, 'F32'],
  ['qwen3 bias+scales+hd', {...TINY_LLAMA, architecture: 'qwen3', seed: 42, biases: true, scales: true, headDim: 128}, 'F32'],
  ['qwen2 bias', {...TINY_LLAMA, architecture: 'qwen2', seed: 43, biases: true}, 'F32'],
  ['qwen2 bias+scales', {...TINY_LLAMA, architecture: 'qwen2', seed: 44, biases: true, scales: true, tiedEmbeddings: true}, 'F32'],
  ['qwen3 q4k', {...TINY_LLAMA, architecture: 'qwen3', seed: 41}, 'Q4_K_M'],
  ['qwen2 q8', {...TINY_LLAMA, architecture: 'qwen2', seed: 43, biases: true}, 'Q8_0'],
]) {
  try {
  const model = await loadModel({ modelPath: await syntheticModel(spec, q), gpu: false });
  const ref = await model.referenceForward(P);
  const lin = await model.linearize(P);
  const r = await lin.reconstruction();
  const li = lin.layerInputs.map((x, l) => rel(x, ref.layerInputs[l]).toExponential(1)).join(',');
  console.log(name, q, 'faith', rel(lin.hidden, ref.hidden).toExponential(2), 'logits', rel(lin.logits, ref.logits).toExponential(2), 'layers', li, 'recon', r.relativeError.toExponential(2), 'affine', lin.affine, 'ignored', lin.ignoredTensors.length);
  await model.dispose();
  } catch (e) { console.log(name, 'ERR', e.message) }
}
