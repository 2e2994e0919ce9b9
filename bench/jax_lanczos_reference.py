"""The paper's long-prompt route in JAX: the detached llama forward (RMSNorm scales, SiLU gate
and attention probabilities under stop_gradient), J_last = d y / d x_last as a matrix-free
operator (jax.linearize for J v, jax.vjp for Jᵀ u, both jitted), and its top-k singular triplets
by Lanczos (scipy.sparse.linalg.svds, ARPACK's implicitly restarted Lanczos on JᵀJ).

Input: argv[1] = a directory written by bench/run.ts (manifest.json + raw float32 weights
and x.bin, as for torch_reference.py), argv[2] = threads (XLA's CPU threads are set from
the environment by the caller), argv[3] = k. Output: JSON on stdout.
"""
import json
import os
import sys
import time

import numpy as np
import jax
import jax.numpy as jnp
import scipy
from scipy.sparse.linalg import LinearOperator, svds

root, k = sys.argv[1], int(sys.argv[3])
m = json.load(open(os.path.join(root, "manifest.json")))
d, n_layer, n_head, n_kv, hd, eps, base = m["d"], m["n_layer"], m["n_head"], m["n_head_kv"], m["head_dim"], m["eps"], m["rope_base"]


def load(name):
    shape = m["tensors"][name]  # GGUF order [ne0, ne1]: rows are ne1
    return jnp.asarray(np.fromfile(os.path.join(root, name + ".bin"), dtype=np.float32).reshape(list(reversed(shape))))


W = {name: load(name) for name in m["tensors"]}
x0 = jnp.asarray(np.fromfile(os.path.join(root, "x.bin"), dtype=np.float32).reshape(-1, d))
n = x0.shape[0]
pos = jnp.arange(n, dtype=jnp.float32)
ang = pos[:, None] * (1.0 / (base ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd)))[None, :]
cos, sin = jnp.cos(ang)[:, None, :], jnp.sin(ang)[:, None, :]
mask = jnp.where(jnp.triu(jnp.ones((n, n), bool), 1), -jnp.inf, 0.0)
sg = jax.lax.stop_gradient


def rope(t):  # llama.cpp NORM mode: pairs (2i, 2i+1)
    a, b = t[..., 0::2], t[..., 1::2]
    return jnp.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(t.shape)


def rms(h, g):
    return h * sg(jax.lax.rsqrt(jnp.mean(h * h, -1, keepdims=True) + eps)) * g


def forward(x):
    h = x
    for l in range(n_layer):
        p = f"blk.{l}."
        a = rms(h, W[p + "attn_norm.weight"])
        q = rope((a @ W[p + "attn_q.weight"].T).reshape(n, n_head, hd))
        kk = jnp.repeat(rope((a @ W[p + "attn_k.weight"].T).reshape(n, n_kv, hd)), n_head // n_kv, axis=1)
        v = jnp.repeat((a @ W[p + "attn_v.weight"].T).reshape(n, n_kv, hd), n_head // n_kv, axis=1)
        prob = sg(jax.nn.softmax(jnp.einsum("ihd,jhd->hij", q, kk) / hd ** 0.5 + mask, axis=-1))
        h = h + jnp.einsum("hij,jhd->ihd", prob, v).reshape(n, n_head * hd) @ W[p + "attn_output.weight"].T
        mm = rms(h, W[p + "ffn_norm.weight"])
        gate = sg(jax.nn.silu(mm @ W[p + "ffn_gate.weight"].T))
        h = h + (gate * (mm @ W[p + "ffn_up.weight"].T)) @ W[p + "ffn_down.weight"].T
    return rms(h, W["output_norm.weight"])[-1]


def f_last(xl):  # y as a function of the last input embedding alone
    return forward(x0.at[-1].set(xl))


# jax.linearize and jax.vjp evaluate the primal once; each product then runs only the linear part.
_, linear = jax.linearize(f_last, x0[-1])
matvec = jax.jit(linear)
_, pullback = jax.vjp(f_last, x0[-1])
rmatvec = jax.jit(lambda u: pullback(u)[0])
counts = {"jvp": 0, "vjp": 0}


def mv(v):
    counts["jvp"] += 1
    return np.asarray(matvec(jnp.asarray(np.ravel(v), jnp.float32)), np.float64)


def rmv(u):
    counts["vjp"] += 1
    return np.asarray(rmatvec(jnp.asarray(np.ravel(u), jnp.float32)), np.float64)


mv(np.ones(d)); rmv(np.ones(d))  # compile both before timing
counts = {"jvp": 0, "vjp": 0}
op = LinearOperator((d, d), matvec=mv, rmatvec=rmv, dtype=np.float64)
t0 = time.perf_counter()
u, s, vt = svds(op, k=k, tol=1e-6, solver="arpack", v0=np.random.default_rng(0).standard_normal(d))
sec = time.perf_counter() - t0
order = np.argsort(-s)
json.dump({"seconds": sec, "values": s[order].tolist(), "jvps": counts["jvp"], "vjps": counts["vjp"], "n": n,
           "jax": jax.__version__, "scipy": scipy.__version__, "backend": jax.default_backend()}, sys.stdout)
