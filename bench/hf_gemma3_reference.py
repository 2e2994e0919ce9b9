"""The reference method's own route on a real model (the paper's code path): Hugging Face
transformers loads the Gemma 3 GGUF (from_pretrained(..., gguf_file=...) dequantizes it to
F32), the forward is detached as the paper does — RMSNorm scales, the GELU gate and the
attention probabilities frozen with .detach() — and the detached Jacobian of the last
position's final hidden state is torch.autograd.functional.jacobian(vectorize=True,
strategy="reverse-mode"); then the SVD of every J_i, as the paper's per-token analysis.

Input: argv[1] = the GGUF file, argv[2] = JSON list of token ids, argv[3] = threads,
argv[4] = an output directory. Output: JSON on stdout; J [d, n, d] and x [n, d] as raw
float32 files in the output directory so that the benchmark can compare them with ours.
"""
import json
import re
import os
import sys
import time

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM
from transformers.models.gemma3 import modeling_gemma3 as g3

path, ids, threads, out = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(threads)


def rms_detached(self, x):
    # Gemma3RMSNorm: x / rms(x) * (1 + w), with 1/rms frozen
    r = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps).detach()
    return (x.float() * r * (1.0 + self.weight.float())).type_as(x)


def mlp_detached(self, x):
    return self.down_proj(self.act_fn(self.gate_proj(x)).detach() * self.up_proj(x))


def attention_detached(module, query, key, value, attention_mask, dropout=0.0, scaling=None, softcap=None, **kwargs):
    k = g3.repeat_kv(key, module.num_key_value_groups)
    v = g3.repeat_kv(value, module.num_key_value_groups)
    w = torch.matmul(query, k.transpose(2, 3)) * scaling
    if softcap is not None:
        w = torch.tanh(w / softcap) * softcap
    if attention_mask is not None:
        w = w + attention_mask[:, :, :, : k.shape[-2]]
    w = torch.nn.functional.softmax(w, dim=-1, dtype=torch.float32).to(query.dtype).detach()
    return torch.matmul(w, v).transpose(1, 2).contiguous(), w


g3.Gemma3RMSNorm.forward = rms_detached
g3.Gemma3MLP.forward = mlp_detached
g3.eager_attention_forward = attention_detached

t0 = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                             torch_dtype=torch.float32, attn_implementation="eager")
model.eval()
load_sec = time.perf_counter() - t0
tokens = torch.tensor([ids])
with torch.no_grad():
    x0 = model.get_input_embeddings()(tokens)[0]  # scaled by sqrt(d), what enters layer 0


def f(x):
    return model.model(inputs_embeds=x[None], use_cache=False).last_hidden_state[0, -1]


with torch.no_grad():
    y = f(x0)
    logits = model.lm_head(y)
t1 = time.perf_counter()
J = torch.autograd.functional.jacobian(f, x0, vectorize=True, strategy="reverse-mode")  # [d, n, d]
jac_sec = time.perf_counter() - t1
n = x0.shape[0]
t2 = time.perf_counter()
sigma = [torch.linalg.svd(J[:, i, :].double()).S[:8].tolist() for i in range(n)]
svd_sec = time.perf_counter() - t2
recon = torch.einsum("kic,ic->k", J, x0)
J.detach().numpy().astype(np.float32).tofile(os.path.join(out, "hf_jacobian.bin"))
x0.numpy().astype(np.float32).tofile(os.path.join(out, "hf_x.bin"))
blas = re.findall(r"(?:BLAS|LAPACK)_INFO=\w+", torch.__config__.show())
json.dump({"load_seconds": load_sec, "jacobian_seconds": jac_sec, "svd_seconds": svd_sec, "sigma": sigma,
           "reconstruction_error": float((recon - y).norm() / y.norm()), "top_token": int(logits.argmax()),
           "torch": torch.__version__, "transformers": transformers.__version__, "blas": "; ".join(blas),
           "threads": torch.get_num_threads()}, sys.stdout)
