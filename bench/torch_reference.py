"""The method's own reference route (the paper's code path): the detached llama forward in
PyTorch and torch.autograd.functional.jacobian(vectorize=True, strategy="reverse-mode"),
and beside it torch.func.jacrev (vmap over VJPs), PyTorch's strongest route for a full
Jacobian on the CPU.

Input: argv[1] = a directory written by bench/run.ts (manifest.json + raw float32 weights
of the same synthetic GGUF llj-gguf linearizes); argv[2] = threads.
Output: JSON {seconds, jacobian_file} on stdout; the Jacobian [d, n, d] is written as raw
float32 so that the benchmark can check both routes agree.
"""
import json
import re
import os
import sys
import time

import numpy as np
import torch

from peer_weights import load_peer

root, threads = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(threads)
m, W, x0, n, cos, sin, mask = load_peer(root)
d, n_layer, n_head, n_kv, hd, eps, base = m["d"], m["n_layer"], m["n_head"], m["n_head_kv"], m["head_dim"], m["eps"], m["rope_base"]


def rope(t):  # t [n, heads, hd], llama.cpp NORM mode: pairs (2i, 2i+1)
    a, b = t[..., 0::2], t[..., 1::2]
    c, s = cos[:, None, :], sin[:, None, :]
    out = torch.empty_like(t)
    out[..., 0::2] = a * c - b * s
    out[..., 1::2] = a * s + b * c
    return out


def rms_detached(h, g):
    r = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps).detach()
    return h * r * g


def forward(x):
    h = x
    for l in range(n_layer):
        p = f"blk.{l}."
        a = rms_detached(h, W[p + "attn_norm.weight"])
        q = rope((a @ W[p + "attn_q.weight"].T).view(n, n_head, hd))
        k = rope((a @ W[p + "attn_k.weight"].T).view(n, n_kv, hd))
        v = (a @ W[p + "attn_v.weight"].T).view(n, n_kv, hd)
        k = k.repeat_interleave(n_head // n_kv, dim=1)
        v = v.repeat_interleave(n_head // n_kv, dim=1)
        att = torch.einsum("ihd,jhd->hij", q, k) / hd ** 0.5 + mask
        prob = torch.softmax(att, dim=-1).detach()
        o = torch.einsum("hij,jhd->ihd", prob, v).reshape(n, n_head * hd)
        h = h + o @ W[p + "attn_output.weight"].T
        mm = rms_detached(h, W[p + "ffn_norm.weight"])
        gate = torch.nn.functional.silu(mm @ W[p + "ffn_gate.weight"].T).detach()
        h = h + (gate * (mm @ W[p + "ffn_up.weight"].T)) @ W[p + "ffn_down.weight"].T
    return rms_detached(h, W["output_norm.weight"])[-1]


with torch.no_grad():
    y = forward(x0)
t0 = time.perf_counter()
J = torch.autograd.functional.jacobian(forward, x0, vectorize=True, strategy="reverse-mode")
sec = time.perf_counter() - t0
# the paper's analysis of the last token: the SVD of J_last, from that Jacobian
t1 = time.perf_counter()
sigma = torch.linalg.svd(J[:, -1, :].double()).S
svd_sec = time.perf_counter() - t1
# torch.func: jacrev vmaps the VJP over the d output directions (one batched backward).
t2 = time.perf_counter()
Jf = torch.func.jacrev(forward)(x0)
func_sec = time.perf_counter() - t2
func_agree = float((Jf - J).norm() / J.norm())
blas = re.findall(r"(?:BLAS|LAPACK)_INFO=\w+", torch.__config__.show())
J.numpy().astype(np.float32).tofile(os.path.join(root, "jacobian.bin"))
recon = torch.einsum("kic,ic->k", J, x0)
json.dump({"seconds": sec, "svd_seconds": svd_sec, "svd_values": sigma.tolist(), "reconstruction_error": float((recon - y).norm() / y.norm()),
           "jacobian_file": os.path.join(root, "jacobian.bin"), "torch": torch.__version__,
           "func_seconds": func_sec, "func_agreement": func_agree, "blas": "; ".join(blas) or "unknown"}, sys.stdout)
