// Exact products on quantized weights without an F32 copy of the weight (issue #10, item 1).
//
// A custom ggml op on the CPU backend: each thread dequantizes a small tile of the weight
// (rows × a block-aligned column range) with ggml's own per-type to_float — so the values
// are bit-identical to ggml's dequantization, i.e. to what ggml_cast produces — and
// multiplies it at once while it sits in L1/L2, accumulating in F32. Compared with
// ggml_cast + mul_mat, the weight is never written out in F32 and read back.
#pragma once

#include "ggml.h"

namespace llj {

// True when `w` can go through the tiled kernel: a type with to_float other than F32
// (every quantization, F16, BF16), rows contiguous, held in host memory (the CPU
// backend). Weights on CUDA/Metal/Vulkan/RPC buffers keep the cast + mul_mat route.
bool tiled_eligible(const ggml_tensor * w);

// The kernel's tile dequantization: to_float of columns [k0, k0 + kc) (block-aligned) of rows
// [m0, m0 + tm) of w (host memory) into tile, row i at i·ld. Exposed for the bit-exactness test.
void tiled_dequantize(const ggml_tensor * w, int64_t m0, int64_t tm, int64_t k0, int64_t kc, float * tile, int64_t ld);

// Columns per dequantized chunk for a type (a multiple of its block size).
int64_t tiled_chunk_columns(ggml_type type);

// W x for w [K, M] (ggml order: K per row) and x [K, N] F32 → [M, N] F32.
ggml_tensor * tiled_mul(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x);

// Wᵀ z for w [K, M] and z [M, N] F32 → [K, N] F32 (the VJP's transposed product; the
// weight is never transposed or copied).
ggml_tensor * tiled_mul_t(ggml_context * ctx, ggml_tensor * w, ggml_tensor * z);

}  // namespace llj
