"""What the PyTorch peers share: the synthetic llama's weights and input as bench/run.ts
exports them (manifest.json, raw float32 tensors, x.bin [n, d]), and its rope and mask."""
import json
import os

import numpy as np
import torch


def load_peer(root):
    m = json.load(open(os.path.join(root, "manifest.json")))
    d, hd, base = m["d"], m["head_dim"], m["rope_base"]

    def load(name):
        shape = m["tensors"][name]  # GGUF order [ne0, ne1]: rows are ne1
        a = np.fromfile(os.path.join(root, name + ".bin"), dtype=np.float32)
        return torch.from_numpy(a.reshape(list(reversed(shape))).copy())

    W = {name: load(name) for name in m["tensors"]}
    x0 = torch.from_numpy(np.fromfile(os.path.join(root, "x.bin"), dtype=np.float32).reshape(-1, d).copy())
    n = x0.shape[0]
    pos = torch.arange(n, dtype=torch.float32)
    inv = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    ang = pos[:, None] * inv[None, :]
    mask = torch.full((n, n), float("-inf")).triu(1)
    return m, W, x0, n, torch.cos(ang), torch.sin(ang), mask
