"""Checks that lens files written by llj-gguf load in PyTorch as the published artifact does:
torch.load(weights_only=True) of each .pt (f16, f32, ZIP64), its keys, key types, dtypes and
shapes, and its values against the f32 safetensors twin written from the same matrices: f32
exactly, f16 equal to torch's own rounding of the f32 values (round to nearest even). The
safetensors files are also read with the safetensors package when it is installed. Not part of
npm test (tests need no Python); run by hand:
  npm run build:ts && node scripts/write-lens-sample.mjs DIR && python scripts/check-lens-torch.py DIR
"""
import json
import os
import struct
import sys
import zipfile

import torch

root = sys.argv[1]


def safetensors_values(name):
    """{layer: f32 tensor} and the metadata, read with nothing but struct and json."""
    with open(os.path.join(root, name), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for key, info in header.items():
            if key == "__metadata__":
                continue
            f.seek(base + info["data_offsets"][0])
            raw = f.read(info["data_offsets"][1] - info["data_offsets"][0])
            dtype = {"F32": torch.float32, "F16": torch.float16}[info["dtype"]]
            out[int(key.split(".")[1])] = torch.frombuffer(bytearray(raw), dtype=dtype).reshape(info["shape"]).float()
        return out, header.get("__metadata__", {})


ref, ref_meta = safetensors_values("lens.safetensors")
report = {"torch": torch.__version__, "files": {}}
for name, dtype in [("lens.pt", torch.float16), ("lens-f32.pt", torch.float32), ("lens-zip64.pt", torch.float16)]:
    with zipfile.ZipFile(os.path.join(root, name)) as z:  # an independent zip reader: structure and every CRC
        assert z.testzip() is None
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
    pt = torch.load(os.path.join(root, name), map_location="cpu", weights_only=True)
    assert set(pt) == {"J", "n_prompts", "source_layers", "d_model", "metadata"}, sorted(pt)
    d = pt["d_model"]
    assert pt["source_layers"] == sorted(pt["J"]) == sorted(ref), (pt["source_layers"], sorted(pt["J"]))
    worst = 0.0
    for layer, t in pt["J"].items():
        assert type(layer) is int, type(layer)
        assert t.dtype == dtype and tuple(t.shape) == (d, d) and t.is_contiguous(), (t.dtype, t.shape)
        want = ref[layer].to(dtype)  # torch's own rounding of the f32 values
        assert torch.equal(t, want), f"{name} J[{layer}] differs from torch's rounding"
        assert torch.equal(torch.signbit(t), torch.signbit(want))  # negative zero kept
        worst = max(worst, float(((t.float() - ref[layer]).abs() / ref[layer].abs().clamp_min(6.1e-5)).max()))
    report["files"][name] = {"dtype": str(dtype), "layers": sorted(pt["J"]), "d_model": d, "n_prompts": pt["n_prompts"],
                             "metadata": pt["metadata"], "identical_to_torch_rounding": True,
                             "max_relative_difference_vs_f32": worst}

f16, meta = safetensors_values("lens-f16.safetensors")
for layer in ref:
    assert torch.equal(f16[layer].half(), ref[layer].half()), layer
report["safetensors_metadata"] = meta
try:
    from safetensors.torch import load_file

    for name in ("lens.safetensors", "lens-f16.safetensors"):
        loaded = load_file(os.path.join(root, name))
        assert sorted(loaded) == [f"J.{l}" for l in sorted(ref)], sorted(loaded)
        for layer in ref:
            assert torch.equal(loaded[f"J.{layer}"].float(), ref[layer] if name == "lens.safetensors" else f16[layer])
    import safetensors

    report["safetensors_package"] = safetensors.__version__
except ImportError:
    report["safetensors_package"] = None
print(json.dumps(report["torch"]))
for name, r in report["files"].items():
    print(name, json.dumps(r))
print("safetensors metadata", json.dumps(report["safetensors_metadata"]), "; read by the safetensors package", report["safetensors_package"])
