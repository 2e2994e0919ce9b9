// The operator layer: Linearization.operator gives every quantity's map as one value (jvp,
// vjp, jacobian, output), and the analyses run on it. Checked against the primal record
// (an independent computation: our forward pass, which the faithfulness tests tie to
// llama.cpp), by the adjoint identity, and by reconstruction.
import { loadModel, reconstruct, svd, syntheticModel, TINY_LLAMA, type LinearOperator, type Linearization, type Model } from "../src/index.js";
import { STORIES, PROMPT, relErr, dot, randn } from "./helpers.js";

let model: Model, lin: Linearization, affineModel: Model, affineLin: Linearization;
beforeAll(async () => {
  model = await loadModel({ modelPath: STORIES, gpu: false });
  lin = await model.linearize(PROMPT);
  affineModel = await loadModel({ modelPath: await syntheticModel({ ...TINY_LLAMA, biases: true, scales: true, seed: 3 }, "F32"), gpu: false });
  affineLin = await affineModel.linearize("Once upon a time,");
});
afterAll(async () => {
  await model.dispose();
  await affineModel.dispose();
});

const lastRow = (a: Float32Array, n: number, d: number) => a.subarray((n - 1) * d, n * d);

async function adjointError(op: LinearOperator, firstPosition = 0): Promise<number> {
  const m = op.nTokens - firstPosition, d = op.nEmbd;
  const v = randn(m * d), u = randn(d);
  const lv = await op.jvp(v, { firstPosition }), ltu = await op.vjp(u, { firstPosition });
  return Math.abs(dot(lv, u) - dot(v, ltu)) / (Math.sqrt(dot(lv, lv)) * Math.sqrt(dot(u, u)));
}

test.each([["linear (stories260K)", () => lin], ["affine (biases and scales)", () => affineLin]])(
  "%s: each layer's residual operator reproduces the primal residual stream, and its reconstruction sums to it", async (_, get) => {
    const l0 = get(), n = l0.nTokens, d = l0.nEmbd, L = l0.layerInputs.length;
    for (let layer = 0; layer < L; layer++) {
      const op = await l0.operator({ tap: "residual", layer, finalNorm: false });
      const primal = layer + 1 < L ? l0.layerInputs[layer + 1] : l0.finalResidual;
      expect(relErr(op.output, lastRow(primal, n, d))).toBeLessThan(1e-5);
      const rec = await reconstruct(op);
      expect(rec.relativeError).toBeLessThan(1e-5);
      expect(rec.biasTerm === null).toBe(!l0.affine);
    }
    // through the detached final norm, the last layer's residual is the model's own y
    const top = await l0.operator({ tap: "residual", layer: L - 1 });
    expect(relErr(top.output, l0.output)).toBeLessThan(1e-5);
    expect(relErr((await reconstruct(top)).reconstructed, l0.output)).toBeLessThan(1e-5);
  });

test("the branch taps add up: input of layer l + attn + mlp = the residual after it (sequential Llama)", async () => {
  const n = lin.nTokens, d = lin.nEmbd;
  for (const layer of [0, 2, 4]) {
    const attn = (await lin.operator({ tap: "attn", layer, finalNorm: false })).output;
    const mlp = (await lin.operator({ tap: "mlp", layer, finalNorm: false })).output;
    const sum = lastRow(lin.layerInputs[layer], n, d).map((h, k) => h + attn[k] + mlp[k]);
    const after = layer + 1 < lin.layerInputs.length ? lin.layerInputs[layer + 1] : lin.finalResidual;
    expect(relErr(sum, lastRow(after, n, d))).toBeLessThan(1e-5);
  }
});

test("every operator satisfies the adjoint identity, its Jacobian matches its VJPs, and fromLayer starts from the stream there", async () => {
  const n = lin.nTokens, d = lin.nEmbd;
  const ops = [await lin.operator(), await lin.operator({ tap: "mlp", layer: 3 }), await lin.operator({ tap: "residual", layer: 2, fromLayer: 1, finalNorm: false }),
    await affineLin.operator({ tap: "attn", layer: 1 })];
  for (const op of ops) {
    expect(await adjointError(op)).toBeLessThan(1e-5);
    expect(await adjointError(op, op.nTokens - 2)).toBeLessThan(1e-5);
    const J = await op.jacobian({ firstPosition: op.nTokens - 1 });
    const e3 = new Float32Array(op.nEmbd);
    e3[3] = 1;
    const g = await op.vjp(e3, { firstPosition: op.nTokens - 1 });  // row 3 of J_last
    expect(relErr(J.block(op.nTokens - 1).subarray(3 * op.nEmbd, 4 * op.nEmbd), g)).toBeLessThan(1e-6);
  }
  // fromLayer 1: the input is the stream entering layer 1, and the residual after layer 2 is reproduced from it
  const fromOne = ops[2];
  expect(fromOne.input).toBe(lin.layerInputs[1]);
  expect(relErr(fromOne.output, lastRow(lin.layerInputs[3], n, d))).toBeLessThan(1e-5);
  expect((await reconstruct(fromOne)).relativeError).toBeLessThan(1e-5);
});

test("the analyses take any operator: svd of the output operator is Linearization.svd", async () => {
  const a = await svd(await lin.operator(), { k: 3 });
  const b = await lin.svd({ k: 3 });
  expect(Array.from(a.values)).toEqual(Array.from(b.values));
  expect(Array.from(a.u)).toEqual(Array.from(b.u));
  const layer = await svd(await lin.operator({ tap: "residual", layer: 2 }), { k: 2 });
  const viaLayerSvd = await lin.layerSvd({ layer: 2, tap: "residual" }, { k: 2 });
  expect(Array.from(layer.values)).toEqual(Array.from(viaLayerSvd.values));
});

test("operator options are checked: a layer tap needs an integer layer in range", async () => {
  await expect(lin.operator({ tap: "residual" })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringMatching(/layer must be an integer in \[0, 5\), not undefined/) });
  await expect(lin.operator({ tap: "mlp", layer: 5 })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
  await expect(lin.operator({ tap: "logits" as "output" })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringMatching(/tap must be/) });
  await expect(lin.operator({ finalNorm: "yes" as unknown as boolean })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
});
