// Writes DIR/lens.pt (torch, f16) and DIR/lens.safetensors (f32) from the same seeded
// matrices, for scripts/check-lens-torch.py.
import { writeLensFile } from "../dist/src/lens-file.js";
import { seededGaussian } from "../dist/src/random.js";
const dir = process.argv[2], d = 32;
const J = new Map([[0, seededGaussian(d * d, 1)], [2, seededGaussian(d * d, 2)]]);
const lens = { J, dModel: d, nPrompts: 5, sourceLayers: [0, 2], metadata: { estimator: "jlens", architecture: "llama" } };
await writeLensFile(`${dir}/lens.pt`, lens);
await writeLensFile(`${dir}/lens.safetensors`, lens, { dtype: "f32" });
