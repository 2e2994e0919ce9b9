"""Checks that lens files written by llj-gguf load in PyTorch as the published artifact:
torch.load(weights_only=True) of the .pt, its keys, dtypes and shapes, and its values against
the safetensors twin (written from the same matrices in f32). Not part of npm test (tests need
no Python); run by hand or by the bench:
  node scripts/write-lens-sample.mjs DIR && python scripts/check-lens-torch.py DIR
"""
import json
import os
import struct
import sys

import numpy as np
import torch

root = sys.argv[1]
pt = torch.load(os.path.join(root, "lens.pt"), map_location="cpu", weights_only=True)
assert set(pt) >= {"J", "n_prompts", "source_layers", "d_model"}, sorted(pt)
d = pt["d_model"]
with open(os.path.join(root, "lens.safetensors"), "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    base = 8 + n
    worst = 0.0
    for layer, t in pt["J"].items():
        assert isinstance(layer, int), type(layer)
        assert t.dtype == torch.float16 and tuple(t.shape) == (d, d), (t.dtype, t.shape)
        info = header[f"J.{layer}"]
        f.seek(base + info["data_offsets"][0])
        ref = np.frombuffer(f.read(d * d * 4), dtype=np.float32).reshape(d, d)
        # f16 storage: within half an f16 ulp of the f32 values
        worst = max(worst, float(np.max(np.abs(t.float().numpy() - ref) / np.maximum(np.abs(ref), 6.1e-5))))
print(json.dumps({"torch": torch.__version__, "layers": sorted(pt["J"]), "d_model": d, "n_prompts": pt["n_prompts"],
                  "source_layers": pt["source_layers"], "dtype": str(next(iter(pt["J"].values())).dtype),
                  "max_relative_difference_vs_f32": worst, "metadata": pt.get("metadata")}))
assert worst <= 2 ** -11 + 1e-7, worst
