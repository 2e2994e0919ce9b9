// The tiled kernel's self-test (native/engine/tiled.h), not used by the library; bound as
// tiledTypes() and tiledSelfTest(type, rows, n, threads) in native/napi/module.cpp.
// The self-test quantizes random data to `type` with ggml_quantize_chunk and compares, on
// the CPU backend:
//   - the kernel's dequantized tiles (the chunks it cuts each row into) with ggml's to_float
//     of whole rows, bit for bit;
//   - W·I and Wᵀ·I through the kernel with those values (equal as numbers: a product with a
//     unit vector only adds exact zeros, which can turn a -0 into +0);
//   - W·X and Wᵀ·U through the kernel with today's cast + mul_mat / out_prod route.
#include "engine/probes.h"
#include "engine/runner.h"
#include "engine/tiled.h"

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"

#include <cmath>
#include <algorithm>
#include <cstring>
#include <random>

namespace llj {

bool tiled_type(ggml_type t) {
    return t != GGML_TYPE_F32 && ggml_type_size(t) > 0 && ggml_blck_size(t) > 0 && ggml_get_type_traits(t)->to_float != nullptr;
}

// The types ggml_quantize_chunk handles (it aborts on any other).
bool quantizable(ggml_type t) {
    switch (t) {
        case GGML_TYPE_Q1_0: case GGML_TYPE_Q2_0: case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0:
        case GGML_TYPE_Q5_1: case GGML_TYPE_Q8_0: case GGML_TYPE_MXFP4: case GGML_TYPE_NVFP4: case GGML_TYPE_Q2_K:
        case GGML_TYPE_Q3_K: case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K: case GGML_TYPE_TQ1_0:
        case GGML_TYPE_TQ2_0: case GGML_TYPE_IQ2_XXS: case GGML_TYPE_IQ2_XS: case GGML_TYPE_IQ3_XXS: case GGML_TYPE_IQ3_S:
        case GGML_TYPE_IQ2_S: case GGML_TYPE_IQ1_S: case GGML_TYPE_IQ1_M: case GGML_TYPE_IQ4_NL: case GGML_TYPE_IQ4_XS:
        case GGML_TYPE_F16: case GGML_TYPE_BF16:
            return true;
        default:
            return false;
    }
}

// Types whose to_float reads any bit pattern safely (no table indexed past its end): the
// classic and k-quants; the IQ/TQ/FP4 types are checked on quantized data only.
static bool random_bits_ok(ggml_type t) {
    switch (t) {
        case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1: case GGML_TYPE_Q8_0:
        case GGML_TYPE_Q2_K: case GGML_TYPE_Q3_K: case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K:
            return true;
        default:
            return false;
    }
}

void TiledKernelCheck::run() {
    const int64_t blck = ggml_blck_size(type);
    // Two 256-column chunks plus one block: a partial last chunk (and, for F16/BF16,
    // a length that is not a multiple of the vector width).
    const int64_t K = 512 + blck, M = m, N = n;
    std::mt19937 rng(7);
    std::normal_distribution<float> nd;
    std::vector<float> w((size_t) (M * K)), x((size_t) (K * N)), u((size_t) (M * N));
    for (auto & v : w) v = nd(rng);
    for (auto & v : x) v = nd(rng);
    for (auto & v : u) v = nd(rng);
    std::vector<char> q(ggml_row_size(type, K) * (size_t) M);
    std::vector<float> imatrix((size_t) K, 1.0f);
    ggml_quantize_chunk(type, w.data(), q.data(), 0, M, K, ggml_quantize_requires_imatrix(type) ? imatrix.data() : nullptr);
    // ggml's dequantization, row by row
    std::vector<float> wd((size_t) (M * K));
    const ggml_to_float_t to_float = ggml_get_type_traits(type)->to_float;
    for (int64_t r = 0; r < M; ++r) to_float(q.data() + (size_t) r * ggml_row_size(type, K), wd.data() + r * K, K);

    ggml_backend_t cpu = cpu_backend(threads);
    ggml_init_params p = {ggml_tensor_overhead() * 32 + ggml_graph_overhead(), nullptr, true};
    ggml_context * ctx = ggml_init(p);
    ggml_tensor * tw = ggml_new_tensor_2d(ctx, type, K, M);
    ggml_tensor * tx = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, K, N);
    ggml_tensor * tu = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, M, N);
    ggml_tensor * eye_k = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, K, K);
    ggml_tensor * eye_m = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, M, M);
    ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(ctx, cpu);  // the inputs
    eligible = tiled_eligible(tw);
    ggml_tensor * wf = ggml_cast(ctx, tw, GGML_TYPE_F32);
    ggml_tensor * outs[] = {
        tiled_mul(ctx, tw, tx),                                // W X, tiled
        ggml_mul_mat(ctx, wf, tx),                             // W X, cast + mul_mat
        tiled_mul_t(ctx, tw, tu),                              // Wᵀ U, tiled
        ggml_out_prod(ctx, wf, ggml_transpose(ctx, tu)),       // Wᵀ U, cast + out_prod
        tiled_mul(ctx, tw, eye_k),                             // [M, K]: W
        tiled_mul_t(ctx, tw, eye_m),                           // [K, M]: Wᵀ
        wf,                                                    // ggml_cast's dequantization
    };
    ggml_cgraph * gf = ggml_new_graph(ctx);
    for (auto * t : outs) { ggml_set_output(t); ggml_build_forward_expand(gf, t); }
    ggml_gallocr_t alloc = ggml_gallocr_new(ggml_backend_get_default_buffer_type(cpu));
    if (!ggml_gallocr_alloc_graph(alloc, gf)) throw std::runtime_error("cannot allocate the test graph");
    std::vector<float> ek((size_t) (K * K), 0.0f), em((size_t) (M * M), 0.0f);
    for (int64_t i = 0; i < K; ++i) ek[(size_t) (i * K + i)] = 1.0f;
    for (int64_t i = 0; i < M; ++i) em[(size_t) (i * M + i)] = 1.0f;
    ggml_backend_tensor_set(tw, q.data(), 0, q.size());
    ggml_backend_tensor_set(tx, x.data(), 0, ggml_nbytes(tx));
    ggml_backend_tensor_set(tu, u.data(), 0, ggml_nbytes(tu));
    ggml_backend_tensor_set(eye_k, ek.data(), 0, ggml_nbytes(eye_k));
    ggml_backend_tensor_set(eye_m, em.data(), 0, ggml_nbytes(eye_m));
    if (ggml_backend_graph_compute(cpu, gf) != GGML_STATUS_SUCCESS) throw std::runtime_error("test graph failed");
    auto get = [](ggml_tensor * t) {
        std::vector<float> v((size_t) ggml_nelements(t));
        ggml_backend_tensor_get(t, v.data(), 0, ggml_nbytes(t));
        return v;
    };
    auto rel = [](const std::vector<float> & a, const std::vector<float> & b) {
        double num = 0, den = 0;
        for (size_t i = 0; i < a.size(); ++i) { num += ((double) a[i] - b[i]) * ((double) a[i] - b[i]); den += (double) b[i] * b[i]; }
        return std::sqrt(num / den);
    };
    forward_rel = rel(get(outs[0]), get(outs[1]));
    transpose_rel = rel(get(outs[2]), get(outs[3]));
    const auto fi = get(outs[4]), ti = get(outs[5]), cast = get(outs[6]);
    for (int64_t r = 0; r < M; ++r) {
        for (int64_t k = 0; k < K; ++k) {
            const float ref = wd[(size_t) (r * K + k)];
            if (!(fi[(size_t) (r + k * M)] == ref)) ++forward_mismatch;
            if (!(ti[(size_t) (k + r * K)] == ref)) ++transpose_mismatch;
            if (std::memcmp(&cast[(size_t) (r * K + k)], &ref, sizeof ref) != 0) ++cast_mismatch;
        }
    }
    // the kernel's tiles, as it cuts them (TM-row tiles of KC-column chunks), bit for bit
    const int64_t KC = tiled_chunk_columns(type);
    std::vector<float> tile((size_t) (M * KC));
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
        const int64_t kc = std::min(KC, K - k0);
        tiled_dequantize(tw, 0, M, k0, kc, tile.data(), kc);
        for (int64_t r = 0; r < M; ++r) {
            if (std::memcmp(tile.data() + r * kc, wd.data() + r * K + k0, (size_t) kc * sizeof(float)) != 0) ++tile_mismatch_rows;
        }
    }
    // the same on random bits as blocks: every bit pattern of scales and quants (IEEE
    // specials included), compared as bits
    std::uniform_int_distribution<int> byte(0, 255);
    for (auto & c : q) c = (char) byte(rng);
    if (type == GGML_TYPE_F16 || type == GGML_TYPE_BF16 || random_bits_ok(type)) {
        ggml_backend_tensor_set(tw, q.data(), 0, q.size());
        for (int64_t r = 0; r < M; ++r) to_float(q.data() + (size_t) r * ggml_row_size(type, K), wd.data() + r * K, K);
        for (int64_t k0 = 0; k0 < K; k0 += KC) {
            const int64_t kc = std::min(KC, K - k0);
            tiled_dequantize(tw, 0, M, k0, kc, tile.data(), kc);
            for (int64_t r = 0; r < M; ++r) {
                if (std::memcmp(tile.data() + r * kc, wd.data() + r * K + k0, (size_t) kc * sizeof(float)) != 0) ++random_mismatch_rows;
            }
        }
    }
    k = K;
    ggml_gallocr_free(alloc);
    ggml_backend_buffer_free(buf);
    ggml_free(ctx);
    ggml_backend_free(cpu);
}

}  // namespace llj
