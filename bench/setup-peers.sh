#!/usr/bin/env bash
# The benchmark's PyTorch peers at their best, in their own venv (outside the repository):
# PyTorch 2.13 CPU (the wheel on the machine's disk: `pip install torch==2.13.0`), transformers
# and gguf (the paper's route: from_pretrained(..., gguf_file=...)), NumPy. The product never
# needs any of this; only `npm run bench` uses it.
set -euo pipefail
venv="${LLJ_BENCH_VENV:-$HOME/.cache/llj-gguf/bench-venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q torch==2.13.0 numpy scipy jax jaxlib transformers accelerate gguf sentencepiece protobuf
"$venv/bin/python" - <<'PY'
import re, torch, transformers, numpy
blas = re.findall(r"(?:BLAS|LAPACK)_INFO=\w+", torch.__config__.show())
print(f"torch {torch.__version__} ({'; '.join(blas)}), transformers {transformers.__version__}, numpy {numpy.__version__}")
PY
