// Probes, not used by the library: the benchmark measurements (bench/) and the tiled
// kernel's self-test (test/tiled.test.ts); bound in native/napi/module.cpp.
#pragma once

#include "ggml.h"
#include "llama.h"

#include <cstdint>
#include <vector>

namespace llj {

// Seconds per F32 product Y[m×n] = W[m×k] X[k×n] on ggml's CPU backend.
double bench_gemm(int64_t m, int64_t k, int64_t n, int threads, int reps);
// Seconds per llama.cpp forward of `tokens`.
double bench_forward(llama_model * model, const std::vector<llama_token> & tokens, int threads, int reps);

// The ggml types the tiled kernel takes (to_float, not F32), and whether ggml_quantize_chunk
// can make data of one (it aborts on any other).
bool tiled_type(ggml_type t);
bool quantizable(ggml_type t);

// The tiled kernel against ggml on random data of `type` [m rows, k = 512 + one block columns]:
// see native/engine/tiled_test.cpp.
struct TiledKernelCheck {
    ggml_type type;
    int64_t m, n;
    int threads;

    int64_t k = 0;
    bool eligible = false;
    int64_t random_mismatch_rows = 0, tile_mismatch_rows = 0, forward_mismatch = 0, transpose_mismatch = 0, cast_mismatch = 0;
    double forward_rel = 0, transpose_rel = 0;

    void run();
};

}  // namespace llj
