"""Best sgemm rate of this machine (NumPy's BLAS, OpenBLAS) for the shapes given on stdin.

Input: JSON {"threads": t, "shapes": [[m, k, n], ...]}; output: JSON [{m, k, n, gflops}, ...].
Run by bench/run.ts; the thread count is set before NumPy loads its BLAS.
"""
import json
import os
import sys
import time

spec = json.load(sys.stdin)
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(spec["threads"])
import numpy as np  # noqa: E402

rng = np.random.default_rng(0)
out = []
for m, k, n in spec["shapes"]:
    w = rng.standard_normal((m, k), dtype=np.float32)
    x = rng.standard_normal((k, n), dtype=np.float32)
    w @ x  # warm-up
    reps, t0 = 0, time.perf_counter()
    while True:
        w @ x
        reps += 1
        if time.perf_counter() - t0 > 0.3 and reps >= 3:
            break
    sec = (time.perf_counter() - t0) / reps
    out.append({"m": m, "k": k, "n": n, "gflops": 2.0 * m * k * n / sec / 1e9})
json.dump(out, sys.stdout)
