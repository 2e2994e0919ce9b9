"""The published J-lens estimator (anthropics/jacobian-lens, as TransformerLens 4 implements
it) re-implemented in PyTorch autograd on the synthetic llama's own weights: the ordinary
(non-detached) forward from the input embeddings, the prompt replicated dim_batch times,
then ceil(d / dim_batch) backward passes, each with a one-hot cotangent on one output
dimension at every valid target position of the last block's output, the gradients at each
source block's output averaged over the valid positions.

Input: argv[1] = a directory written by bench/run.ts (manifest.json, raw float32 weights, x.bin
the prompt's input embeddings [n, d]); argv[2] = threads; argv[3] = minPosition; argv[4] =
dim_batch. Output: JSON {seconds, ...} on stdout; the matrices of every source layer written
as raw float32 [L - 1, d, d] so that the benchmark can check the two agree.
"""
import json
import os
import re
import sys
import time

import numpy as np
import torch

from peer_weights import load_peer

root, threads, min_pos, dim_batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
m, W, x0, n, cos, sin, mask = load_peer(root)
d, n_layer, n_head, n_kv, hd, eps, base = m["d"], m["n_layer"], m["n_head"], m["n_head_kv"], m["head_dim"], m["eps"], m["rope_base"]


def rope(t):  # t [B, n, heads, hd], llama.cpp NORM mode: pairs (2i, 2i+1)
    a, b = t[..., 0::2], t[..., 1::2]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(-2)


def rms(h, g):
    return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * g


def forward(x):  # x [B, n, d] -> every block's output
    B = x.shape[0]
    h, outs = x, []
    for l in range(n_layer):
        p = f"blk.{l}."
        a = rms(h, W[p + "attn_norm.weight"])
        q = rope((a @ W[p + "attn_q.weight"].T).view(B, n, n_head, hd))
        k = rope((a @ W[p + "attn_k.weight"].T).view(B, n, n_kv, hd)).repeat_interleave(n_head // n_kv, dim=2)
        v = (a @ W[p + "attn_v.weight"].T).view(B, n, n_kv, hd).repeat_interleave(n_head // n_kv, dim=2)
        att = torch.einsum("bihd,bjhd->bhij", q, k) / hd ** 0.5 + mask
        o = torch.einsum("bhij,bjhd->bihd", torch.softmax(att, dim=-1), v).reshape(B, n, n_head * hd)
        h = h + o @ W[p + "attn_output.weight"].T
        mm = rms(h, W[p + "ffn_norm.weight"])
        h = h + (torch.nn.functional.silu(mm @ W[p + "ffn_gate.weight"].T) * (mm @ W[p + "ffn_up.weight"].T)) @ W[p + "ffn_down.weight"].T
        outs.append(h)
    return outs


sources = list(range(n_layer - 1))
valid = torch.arange(min_pos, n - 1)
t0 = time.perf_counter()
x = x0[None].expand(dim_batch, n, d).clone().requires_grad_(True)
outs = forward(x)
target = outs[-1]
J = torch.zeros(len(sources), d, d)
cot = torch.zeros_like(target)
passes = -(-d // dim_batch)
bi = torch.arange(dim_batch)
for p in range(passes):
    k0, nb = p * dim_batch, min(dim_batch, d - p * dim_batch)
    cot.zero_()
    cot[bi[:nb, None], valid[None, :], k0 + bi[:nb, None]] = 1.0
    grads = torch.autograd.grad(target, [outs[l] for l in sources], grad_outputs=cot, retain_graph=p < passes - 1)
    for j, g in enumerate(grads):
        J[j, k0:k0 + nb, :] = g[:nb, valid, :].mean(dim=1)
sec = time.perf_counter() - t0
J.numpy().astype(np.float32).tofile(os.path.join(root, "jlens.bin"))
blas = re.findall(r"(?:BLAS|LAPACK)_INFO=\w+", torch.__config__.show())
json.dump({"seconds": sec, "passes": passes, "dim_batch": dim_batch, "torch": torch.__version__,
           "blas": "; ".join(blas) or "unknown", "file": os.path.join(root, "jlens.bin")}, sys.stdout)
