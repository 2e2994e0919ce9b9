#include "tiled.h"

#include "ggml-backend.h"

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LLJ_X86 1
#endif

namespace llj {

namespace {

// Tile of TM weight rows × KC columns, dequantized at once: 64 × 256 floats = 64 KiB, which
// stays in L2 while it is multiplied with every column of the other operand.
constexpr int64_t TM = 64;
constexpr int64_t KC_MIN = 256;
constexpr int64_t NC = 64;  // columns of the other operand per pass over a tile (≤ 64 KiB of it)

// Columns per dequantized chunk: a multiple of the type's block (so chunk boundaries are
// block boundaries and to_float of a chunk equals that part of to_float of the row).
int64_t chunk_columns(ggml_type type) {
    const int64_t b = ggml_blck_size(type);
    return (KC_MIN + b - 1) / b * b;
}

}  // namespace

int64_t tiled_chunk_columns(ggml_type type) { return chunk_columns(type); }

namespace {

}  // namespace

void tiled_dequantize(const ggml_tensor * w, int64_t m0, int64_t tm, int64_t k0, int64_t kc, float * tile) {
    const ggml_to_float_t to_float = ggml_get_type_traits(w->type)->to_float;
    const size_t offset = (size_t) (k0 / ggml_blck_size(w->type)) * ggml_type_size(w->type);
    const char * base = (const char *) w->data + offset;
    for (int64_t i = 0; i < tm; ++i) to_float(base + (size_t) (m0 + i) * w->nb[1], tile + i * kc, kc);
}

namespace {

float * thread_tile(size_t floats) {
    static thread_local std::vector<float> tile;
    if (tile.size() < floats) tile.resize(floats);
    return tile.data();
}

// ---- micro-kernels: portable versions (the compiler vectorizes what it can) ----

// Y[r + c·ldy] += Σ_k A[r·kc + k] X[k + c·ldx] for r < R, c < C.
template <int R, int C>
void fwd_micro_generic(const float * A, int64_t kc, const float * X, int64_t ldx, float * Y, int64_t ldy) {
    for (int r = 0; r < R; ++r) {
        for (int c = 0; c < C; ++c) {
            float s = 0;
            for (int64_t k = 0; k < kc; ++k) s += A[r * kc + k] * X[c * ldx + k];
            Y[r + c * ldy] += s;
        }
    }
}

// Z[k + c·ldz] += Σ_i A[i·kc + k] U[i + c·ldu] for i < tm, k < kn, c < C.
template <int C>
void tr_micro_generic(const float * A, int64_t tm, int64_t kc, int64_t kn, const float * U, int64_t ldu, float * Z, int64_t ldz) {
    for (int c = 0; c < C; ++c) {
        for (int64_t i = 0; i < tm; ++i) {
            const float u = U[i + c * ldu];
            for (int64_t k = 0; k < kn; ++k) Z[k + c * ldz] += A[i * kc + k] * u;
        }
    }
}

#ifdef LLJ_X86
// ---- AVX2/FMA micro-kernels: 12 accumulators, 7 loads per 12 FMAs ----

__attribute__((target("avx2,fma"))) inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

template <int R, int C>
__attribute__((target("avx2,fma"))) void fwd_micro_avx2(const float * A, int64_t kc, const float * X, int64_t ldx, float * Y, int64_t ldy) {
    __m256 acc[R][C];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
        __m256 x[C];
        for (int c = 0; c < C; ++c) x[c] = _mm256_loadu_ps(X + c * ldx + k);
        for (int r = 0; r < R; ++r) {
            const __m256 a = _mm256_loadu_ps(A + r * kc + k);
            for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(a, x[c], acc[r][c]);
        }
    }
    for (int r = 0; r < R; ++r) {
        for (int c = 0; c < C; ++c) {
            float s = hsum(acc[r][c]);
            for (int64_t kk = k; kk < kc; ++kk) s += A[r * kc + kk] * X[c * ldx + kk];
            Y[r + c * ldy] += s;
        }
    }
}

// V vectors of 8 consecutive k × C columns.
template <int V, int C>
__attribute__((target("avx2,fma"))) void tr_micro_avx2(const float * A, int64_t tm, int64_t kc, const float * U, int64_t ldu, float * Z, int64_t ldz) {
    __m256 acc[V][C];
    for (int v = 0; v < V; ++v)
        for (int c = 0; c < C; ++c) acc[v][c] = _mm256_setzero_ps();
    for (int64_t i = 0; i < tm; ++i) {
        __m256 u[C];
        for (int c = 0; c < C; ++c) u[c] = _mm256_broadcast_ss(U + i + c * ldu);
        for (int v = 0; v < V; ++v) {
            const __m256 a = _mm256_loadu_ps(A + i * kc + 8 * v);
            for (int c = 0; c < C; ++c) acc[v][c] = _mm256_fmadd_ps(a, u[c], acc[v][c]);
        }
    }
    for (int v = 0; v < V; ++v)
        for (int c = 0; c < C; ++c) {
            float * z = Z + c * ldz + 8 * v;
            _mm256_storeu_ps(z, _mm256_add_ps(_mm256_loadu_ps(z), acc[v][c]));
        }
}

bool has_avx2() {
    static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return ok;
}
#endif

// Y[0..R) × [0..N) += tile (R × kc) · X (kc × N), register blocks of 4 rows × 3 columns.
template <int RB>
void fwd_rows(const float * A, int64_t kc, const float * X, int64_t ldx, int64_t N, float * Y, int64_t ldy) {
    int64_t c = 0;
#ifdef LLJ_X86
    if (has_avx2()) {
        for (; c + 3 <= N; c += 3) fwd_micro_avx2<RB, 3>(A, kc, X + c * ldx, ldx, Y + c * ldy, ldy);
        for (; c < N; ++c) fwd_micro_avx2<RB, 1>(A, kc, X + c * ldx, ldx, Y + c * ldy, ldy);
        return;
    }
#endif
    for (; c + 3 <= N; c += 3) fwd_micro_generic<RB, 3>(A, kc, X + c * ldx, ldx, Y + c * ldy, ldy);
    for (; c < N; ++c) fwd_micro_generic<RB, 1>(A, kc, X + c * ldx, ldx, Y + c * ldy, ldy);
}

void fwd_tile(const float * A, int64_t tm, int64_t kc, const float * X, int64_t ldx, int64_t N, float * Y, int64_t ldy) {
    for (int64_t c0 = 0; c0 < N; c0 += NC) {
        const int64_t nc = std::min(NC, N - c0);
        const float * Xc = X + c0 * ldx;
        float * Yc = Y + c0 * ldy;
        int64_t r = 0;
        for (; r + 4 <= tm; r += 4) fwd_rows<4>(A + r * kc, kc, Xc, ldx, nc, Yc + r, ldy);
        for (; r < tm; ++r) fwd_rows<1>(A + r * kc, kc, Xc, ldx, nc, Yc + r, ldy);
    }
}

// Z (kc × N) += tileᵀ · U (tm × N).
void tr_tile(const float * A, int64_t tm, int64_t kc, const float * U, int64_t ldu, int64_t N, float * Z, int64_t ldz) {
    for (int64_t c0 = 0; c0 < N; c0 += NC) {
        const int64_t nc = std::min(NC, N - c0);
        int64_t k = 0;
#ifdef LLJ_X86
        if (has_avx2()) {
            for (; k + 32 <= kc; k += 32) {
                int64_t c = c0;
                for (; c + 3 <= c0 + nc; c += 3) tr_micro_avx2<4, 3>(A + k, tm, kc, U + c * ldu, ldu, Z + k + c * ldz, ldz);
                for (; c < c0 + nc; ++c) tr_micro_avx2<4, 1>(A + k, tm, kc, U + c * ldu, ldu, Z + k + c * ldz, ldz);
            }
            for (; k + 8 <= kc; k += 8) {
                int64_t c = c0;
                for (; c + 3 <= c0 + nc; c += 3) tr_micro_avx2<1, 3>(A + k, tm, kc, U + c * ldu, ldu, Z + k + c * ldz, ldz);
                for (; c < c0 + nc; ++c) tr_micro_avx2<1, 1>(A + k, tm, kc, U + c * ldu, ldu, Z + k + c * ldz, ldz);
            }
        }
#endif
        if (k < kc) {
            for (int64_t c = c0; c < c0 + nc; ++c) tr_micro_generic<1>(A + k, tm, kc, kc - k, U + c * ldu, ldu, Z + k + c * ldz, ldz);
        }
    }
}

// dst [M, N] = W x. Threads own disjoint row ranges of the result (no reduction).
void tiled_mul_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * w = dst->src[0], * x = dst->src[1];
    const int64_t K = w->ne[0], M = w->ne[1], N = x->ne[1];
    const int64_t ldx = (int64_t) (x->nb[1] / sizeof(float)), ldy = (int64_t) (dst->nb[1] / sizeof(float));
    const int64_t KC = chunk_columns(w->type);
    const int64_t per = ((M + nth - 1) / nth + 3) / 4 * 4;
    const int64_t r0 = std::min(M, ith * per), r1 = std::min(M, r0 + per);
    if (r0 >= r1) return;
    const float * X = (const float *) x->data;
    float * Y = (float *) dst->data;
    for (int64_t c = 0; c < N; ++c) std::memset(Y + c * ldy + r0, 0, (size_t) (r1 - r0) * sizeof(float));
    float * tile = thread_tile((size_t) (TM * KC));
    for (int64_t m0 = r0; m0 < r1; m0 += TM) {
        const int64_t tm = std::min(TM, r1 - m0);
        for (int64_t k0 = 0; k0 < K; k0 += KC) {
            const int64_t kc = std::min(KC, K - k0);
            tiled_dequantize(w, m0, tm, k0, kc, tile);
            fwd_tile(tile, tm, kc, X + k0, ldx, N, Y + m0, ldy);
        }
    }
}

// dst [K, N] = Wᵀ z. Threads own disjoint ranges of block-aligned chunks of K.
void tiled_mul_t_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * w = dst->src[0], * z = dst->src[1];
    const int64_t K = w->ne[0], M = w->ne[1], N = z->ne[1];
    const int64_t ldu = (int64_t) (z->nb[1] / sizeof(float)), ldz = (int64_t) (dst->nb[1] / sizeof(float));
    // Smaller chunks when K is short, so that every thread gets work.
    int64_t KC = chunk_columns(w->type);
    const int64_t blck = ggml_blck_size(w->type);
    while ((K + KC - 1) / KC < 2 * nth && KC % (2 * blck) == 0 && KC > 32) KC /= 2;
    const int64_t chunks = (K + KC - 1) / KC;
    const int64_t c0 = ith * chunks / nth, c1 = (ith + 1) * chunks / nth;
    const int64_t k_begin = std::min(K, c0 * KC), k_end = std::min(K, c1 * KC);
    if (k_begin >= k_end) return;
    const float * U = (const float *) z->data;
    float * Z = (float *) dst->data;
    for (int64_t c = 0; c < N; ++c) std::memset(Z + c * ldz + k_begin, 0, (size_t) (k_end - k_begin) * sizeof(float));
    float * tile = thread_tile((size_t) (TM * KC));
    for (int64_t m0 = 0; m0 < M; m0 += TM) {
        const int64_t tm = std::min(TM, M - m0);
        for (int64_t k0 = k_begin; k0 < k_end; k0 += KC) {
            const int64_t kc = std::min(KC, k_end - k0);
            tiled_dequantize(w, m0, tm, k0, kc, tile);
            tr_tile(tile, tm, kc, U + m0, ldu, N, Z + k0, ldz);
        }
    }
}

}  // namespace

bool tiled_eligible(const ggml_tensor * w) {
    if (w->type == GGML_TYPE_F32 || ggml_get_type_traits(w->type)->to_float == nullptr) return false;
    if (w->nb[0] != ggml_type_size(w->type) || ggml_n_dims(w) > 2) return false;  // rows of contiguous blocks, 2-D
    const ggml_tensor * base = w->view_src ? w->view_src : w;
    return base->buffer != nullptr && ggml_backend_buffer_is_host(base->buffer);
}

ggml_tensor * tiled_mul(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x) {
    GGML_ASSERT(x->type == GGML_TYPE_F32 && x->ne[0] == w->ne[0] && x->nb[0] == sizeof(float));
    ggml_tensor * args[2] = {w, x};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], x->ne[1], 1, 1, args, 2, tiled_mul_op, GGML_N_TASKS_MAX, nullptr);
}

ggml_tensor * tiled_mul_t(ggml_context * ctx, ggml_tensor * w, ggml_tensor * z) {
    GGML_ASSERT(z->type == GGML_TYPE_F32 && z->ne[0] == w->ne[1] && z->nb[0] == sizeof(float));
    ggml_tensor * args[2] = {w, z};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[0], z->ne[1], 1, 1, args, 2, tiled_mul_t_op, GGML_N_TASKS_MAX, nullptr);
}

}  // namespace llj
