// Writes, from the same seeded matrices, the lens files scripts/check-lens-torch.py checks:
// DIR/lens.pt (torch, f16: the published form), DIR/lens-f32.pt, DIR/lens-zip64.pt (f16 with
// ZIP64 records, as torch writes past 4 GiB), DIR/lens-f16.safetensors, and the reference
// values DIR/lens.safetensors (f32). Needs the build (npm run build:ts).
import { writeLensFile } from "../dist/src/lens-file.js";
import { seededGaussian } from "../dist/src/random.js";
const dir = process.argv[2], d = 32;
if (!dir) throw new Error("usage: node scripts/write-lens-sample.mjs DIR");
const J = new Map([[0, seededGaussian(d * d, 1)], [2, seededGaussian(d * d, 2)], [5, seededGaussian(d * d, 3)]]);
J.get(0)[0] = 6e-8;  // an f16 subnormal
J.get(0)[1] = -0;
J.get(0)[2] = 1 + 2 ** -11;  // a tie: rounds to even
const lens = { J, dModel: d, nPrompts: 5, sourceLayers: [0, 2, 5], metadata: { estimator: "jlens", architecture: "llama" } };
await writeLensFile(`${dir}/lens.pt`, lens);
await writeLensFile(`${dir}/lens-f32.pt`, lens, { dtype: "f32" });
await writeLensFile(`${dir}/lens-zip64.pt`, lens, { zip64: true });
await writeLensFile(`${dir}/lens-f16.safetensors`, lens);
await writeLensFile(`${dir}/lens.safetensors`, lens, { dtype: "f32" });
