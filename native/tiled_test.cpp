// Test entry points of the tiled kernel (native/tiled.h), not used by the library:
//   tiledTypes()                      -> every ggml type the kernel takes (to_float, not F32)
//   tiledSelfTest(type, rows, n, threads) -> Promise<{ ... }>
// The self-test quantizes random data to `type` with ggml_quantize_chunk and compares, on
// the CPU backend:
//   - the kernel's dequantized tiles (the chunks it cuts each row into) with ggml's to_float
//     of whole rows, bit for bit;
//   - W·I and Wᵀ·I through the kernel with those values (equal as numbers: a product with a
//     unit vector only adds exact zeros, which can turn a -0 into +0);
//   - W·X and Wᵀ·U through the kernel with today's cast + mul_mat / out_prod route.
#include "common.h"
#include "runner.h"
#include "tiled.h"

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"

#include <cmath>
#include <algorithm>
#include <cstring>
#include <random>

namespace llj {

static bool tiled_type(ggml_type t) {
    return t != GGML_TYPE_F32 && ggml_type_size(t) > 0 && ggml_blck_size(t) > 0 && ggml_get_type_traits(t)->to_float != nullptr;
}

// The types ggml_quantize_chunk handles (it aborts on any other).
static bool quantizable(ggml_type t) {
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

class TiledSelfTestRun {
  public:
    TiledSelfTestRun(ggml_type type, int64_t m, int64_t n, int threads) : type_(type), m_(m), n_(n), threads_(threads) {}
    // Long: one self-contained test scenario (inputs, both kernels, every comparison) read top to bottom.
    void run() {
        const int64_t blck = ggml_blck_size(type_);
        // Two 256-column chunks plus one block: a partial last chunk (and, for F16/BF16,
        // a length that is not a multiple of the vector width).
        const int64_t K = 512 + blck, M = m_, N = n_;
        std::mt19937 rng(7);
        std::normal_distribution<float> nd;
        std::vector<float> w((size_t) (M * K)), x((size_t) (K * N)), u((size_t) (M * N));
        for (auto & v : w) v = nd(rng);
        for (auto & v : x) v = nd(rng);
        for (auto & v : u) v = nd(rng);
        std::vector<char> q(ggml_row_size(type_, K) * (size_t) M);
        std::vector<float> imatrix((size_t) K, 1.0f);
        ggml_quantize_chunk(type_, w.data(), q.data(), 0, M, K, ggml_quantize_requires_imatrix(type_) ? imatrix.data() : nullptr);
        // ggml's dequantization, row by row
        std::vector<float> wd((size_t) (M * K));
        const ggml_to_float_t to_float = ggml_get_type_traits(type_)->to_float;
        for (int64_t r = 0; r < M; ++r) to_float(q.data() + (size_t) r * ggml_row_size(type_, K), wd.data() + r * K, K);

        ggml_backend_t cpu = cpu_backend(threads_);
        ggml_init_params p = {ggml_tensor_overhead() * 32 + ggml_graph_overhead(), nullptr, true};
        ggml_context * ctx = ggml_init(p);
        ggml_tensor * tw = ggml_new_tensor_2d(ctx, type_, K, M);
        ggml_tensor * tx = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, K, N);
        ggml_tensor * tu = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, M, N);
        ggml_tensor * eye_k = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, K, K);
        ggml_tensor * eye_m = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, M, M);
        ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(ctx, cpu);  // the inputs
        eligible_ = tiled_eligible(tw);
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
        forward_rel_ = rel(get(outs[0]), get(outs[1]));
        transpose_rel_ = rel(get(outs[2]), get(outs[3]));
        const auto fi = get(outs[4]), ti = get(outs[5]), cast = get(outs[6]);
        for (int64_t r = 0; r < M; ++r) {
            for (int64_t k = 0; k < K; ++k) {
                const float ref = wd[(size_t) (r * K + k)];
                if (!(fi[(size_t) (r + k * M)] == ref)) ++forward_mismatch_;
                if (!(ti[(size_t) (k + r * K)] == ref)) ++transpose_mismatch_;
                if (std::memcmp(&cast[(size_t) (r * K + k)], &ref, sizeof ref) != 0) ++cast_mismatch_;
            }
        }
        // the kernel's tiles, as it cuts them (TM-row tiles of KC-column chunks), bit for bit
        const int64_t KC = tiled_chunk_columns(type_);
        std::vector<float> tile((size_t) (M * KC));
        for (int64_t k0 = 0; k0 < K; k0 += KC) {
            const int64_t kc = std::min(KC, K - k0);
            tiled_dequantize(tw, 0, M, k0, kc, tile.data(), kc);
            for (int64_t r = 0; r < M; ++r) {
                if (std::memcmp(tile.data() + r * kc, wd.data() + r * K + k0, (size_t) kc * sizeof(float)) != 0) ++tile_mismatch_rows_;
            }
        }
        // the same on random bits as blocks: every bit pattern of scales and quants (IEEE
        // specials included), compared as bits
        std::uniform_int_distribution<int> byte(0, 255);
        for (auto & c : q) c = (char) byte(rng);
        if (type_ == GGML_TYPE_F16 || type_ == GGML_TYPE_BF16 || random_bits_ok(type_)) {
            ggml_backend_tensor_set(tw, q.data(), 0, q.size());
            for (int64_t r = 0; r < M; ++r) to_float(q.data() + (size_t) r * ggml_row_size(type_, K), wd.data() + r * K, K);
            for (int64_t k0 = 0; k0 < K; k0 += KC) {
                const int64_t kc = std::min(KC, K - k0);
                tiled_dequantize(tw, 0, M, k0, kc, tile.data(), kc);
                for (int64_t r = 0; r < M; ++r) {
                    if (std::memcmp(tile.data() + r * kc, wd.data() + r * K + k0, (size_t) kc * sizeof(float)) != 0) ++random_mismatch_rows_;
                }
            }
        }
        k_ = K;
        ggml_gallocr_free(alloc);
        ggml_backend_buffer_free(buf);
        ggml_free(ctx);
        ggml_backend_free(cpu);
    }
    Napi::Value result(Napi::Env env) const {
        auto o = Napi::Object::New(env);
        o.Set("type", ggml_type_name(type_));
        o.Set("cols", (double) k_);
        o.Set("eligible", eligible_);
        o.Set("tileMismatchRows", (double) tile_mismatch_rows_);   // tile rows whose bits differ from to_float
        o.Set("randomBitsMismatchRows", (double) random_mismatch_rows_);  // likewise, blocks of random bits
        o.Set("forwardMismatches", (double) forward_mismatch_);     // W·I ≠ to_float, element count
        o.Set("transposeMismatches", (double) transpose_mismatch_); // Wᵀ·I ≠ to_float
        o.Set("castMismatches", (double) cast_mismatch_);           // ggml_cast ≠ to_float
        o.Set("forwardRelError", forward_rel_);                     // ‖tiled − cast+mul_mat‖/‖·‖
        o.Set("transposeRelError", transpose_rel_);                 // ‖tiled − cast+out_prod‖/‖·‖
        return o;
    }
  private:
    ggml_type type_;
    int64_t m_, n_, k_ = 0;
    int threads_;
    bool eligible_ = false;
    int64_t random_mismatch_rows_ = 0, tile_mismatch_rows_ = 0, forward_mismatch_ = 0, transpose_mismatch_ = 0, cast_mismatch_ = 0;
    double forward_rel_ = 0, transpose_rel_ = 0;
};

Napi::Value TiledTypes(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto a = Napi::Array::New(env);
    for (int t = 0; t < GGML_TYPE_COUNT; ++t) {
        if (!tiled_type((ggml_type) t)) continue;
        auto o = Napi::Object::New(env);
        o.Set("name", ggml_type_name((ggml_type) t));
        o.Set("quantizable", quantizable((ggml_type) t));  // the self-test can make data of this type
        a.Set(a.Length(), o);
    }
    return a;
}

Napi::Value TiledSelfTest(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    const std::string name = info[0].As<Napi::String>().Utf8Value();
    int type = -1;
    for (int t = 0; t < GGML_TYPE_COUNT; ++t) {
        if (tiled_type((ggml_type) t) && name == ggml_type_name((ggml_type) t)) type = t;
    }
    if (type < 0) throw Napi::RangeError::New(env, "not a type of the tiled kernel: " + name);
    if (!quantizable((ggml_type) type)) throw Napi::RangeError::New(env, "ggml_quantize_chunk cannot make " + name);
    const int64_t m = info[1].As<Napi::Number>().Int64Value(), n = info[2].As<Napi::Number>().Int64Value();
    if (m < 1 || n < 1 || m > 4096 || n > 4096) throw Napi::RangeError::New(env, "rows and columns must lie in [1, 4096]");
    auto t = std::make_shared<TiledSelfTestRun>((ggml_type) type, m, n, info[3].As<Napi::Number>().Int32Value());
    return queue(env, [t](const Job &) { t->run(); }, [t](Napi::Env e) { return t->result(e); });
}

}  // namespace llj
