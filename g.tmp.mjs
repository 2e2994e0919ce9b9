import { loadModel, syntheticModel, TINY_LLAMA } from './dist/src/index.js';
const rel = (a, b) => { let n=0, d=0; for (let i=0;i<a.length;i++){n+=(a[i]-b[i])**2; d+=b[i]**2} return Math.sqrt(n/d) };
const story = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun with her dog. One day, she saw a big red ball in the park. She ran to the ball and kicked it very high. The dog ran after it and they played all day long until the sun went down.";
const only = process.argv[2];
for (const [name, spec, q] of [
  ['mistral3', {...TINY_LLAMA, architecture: 'mistral3', seed: 51, attnTemperatureScale: 0.3, ropeOriginalContext: 8, ropeFreqs: true, biases: true}, 'F32'],
  ['gemma3', {...TINY_LLAMA, architecture: 'gemma3', seed: 52, slidingWindow: 8, slidingWindowPattern: 2, ropeFreqBaseSwa: 10000, ropeFreqBase: 1000000, finalLogitSoftcap: 30}, 'F32'],
  ['gemma3 tied nowin', {...TINY_LLAMA, architecture: 'gemma3', seed: 53, tiedEmbeddings: true}, 'F32'],
  ['gemma2', {...TINY_LLAMA, architecture: 'gemma2', seed: 54, tiedEmbeddings: true, slidingWindow: 8, attnLogitSoftcap: 50, finalLogitSoftcap: 30}, 'F32'],
  ['olmo2', {...TINY_LLAMA, architecture: 'olmo2', seed: 55, nLayer: 4, slidingWindow: 8}, 'F32'],
  ['olmo2 nowin', {...TINY_LLAMA, architecture: 'olmo2', seed: 56}, 'F32'],
]) {
  if (only && !name.startsWith(only)) continue;
  try {
  const model = await loadModel({ modelPath: await syntheticModel(spec, q), gpu: false });
  const P = model.tokenize(story).slice(0, 40);
  const ref = await model.referenceForward(P);
  const lin = await model.linearize(P);
  const r = await lin.reconstruction();
  const li = lin.layerInputs.map((x, l) => rel(x, ref.layerInputs[l]).toExponential(1)).join(',');
  console.log(name, q, 'faith', rel(lin.hidden, ref.hidden).toExponential(2), 'logits', rel(lin.logits, ref.logits).toExponential(2), 'layers', li, 'recon', r.relativeError.toExponential(2), 'affine', lin.affine, 'ignored', lin.ignoredTensors.length, model.linearizability.reason ?? '');
  await model.dispose();
  } catch (e) { console.log(name, 'ERR', e.message) }
}
