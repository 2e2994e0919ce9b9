#include "tiled.h"

#include "ggml-backend.h"

#include <algorithm>
#include <cstdint>
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
constexpr int64_t NC = 64;
// Tile rows are KC + PAD floats apart: a power-of-two stride (1 KiB) would put a column strip
// of the tile into a few L1 sets, and the transposed kernel reads the tile by column strips.
constexpr int64_t PAD = 16;  // columns of the other operand per pass over a tile (≤ 64 KiB of it)

// Columns per dequantized chunk: a multiple of the type's block (so chunk boundaries are
// block boundaries and to_float of a chunk equals that part of to_float of the row).
int64_t chunk_columns(ggml_type type) {
    const int64_t b = ggml_blck_size(type);
    return (KC_MIN + b - 1) / b * b;
}

}  // namespace

int64_t tiled_chunk_columns(ggml_type type) { return chunk_columns(type); }

// ---- dequantization ----
//
// ggml's to_float (ggml-base) is generic C built for the baseline ISA; for the types that
// dominate real files it costs more than the products themselves (measured, 2 cores: Q6_K
// 2.6–6 ns and F16 2.4 ns per weight, against ~0.4 for Q4_K and Q8_0). For those types the
// loops below repeat ggml's reference dequantization operation for operation — the same
// float multiplications and subtractions in the same order, no contraction into FMAs (this
// file is built with -ffp-contract=off) — in a form the compiler vectorizes for AVX2, so
// their results are bit-identical to to_float (tested for every type against to_float
// itself, test/tiled.test.ts). Every other type, or a CPU without AVX2, calls to_float.

namespace {

constexpr int QK_K = 256;
struct BlockQ6K { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; ggml_fp16_t d; };
struct BlockQ4K { ggml_fp16_t d, dmin; uint8_t scales[12]; uint8_t qs[QK_K / 2]; };
struct BlockQ40 { ggml_fp16_t d; uint8_t qs[16]; };
static_assert(sizeof(BlockQ6K) == 210 && sizeof(BlockQ4K) == 144 && sizeof(BlockQ40) == 18, "ggml block layouts");

#ifdef LLJ_X86
// dequantize_row_q6_K: y = d * sc * q, evaluated (d * sc) * q as C does.
__attribute__((target("avx2,fma,f16c"))) void dequant_q6_K(const void * vx, float * y, int64_t k) {
    const BlockQ6K * x = (const BlockQ6K *) vx;
    for (int64_t i = 0; i < k / QK_K; ++i) {
        const float d = ggml_fp16_to_fp32(x[i].d);
        const uint8_t * ql = x[i].ql, * qh = x[i].qh;
        const int8_t * sc = x[i].scales;
        for (int n = 0; n < QK_K; n += 128) {
            int8_t q[128];
            for (int l = 0; l < 32; ++l) {
                q[l + 0] = (int8_t) ((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                q[l + 32] = (int8_t) ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                q[l + 64] = (int8_t) ((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                q[l + 96] = (int8_t) ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            }
            // y[l + 32j] uses sc[l/16 + 2j]: 16 consecutive outputs share one scale
            for (int g = 0; g < 8; ++g) {
                const float ds = d * sc[(g & 1) + 2 * (g >> 1)];
                for (int t = 0; t < 16; ++t) y[16 * g + t] = ds * q[16 * g + t];
            }
            y += 128; ql += 64; qh += 32; sc += 8;
        }
    }
}

// dequantize_row_q4_K: y = d1 * q - m1 with d1 = d * sc, m1 = min * m.
__attribute__((target("avx2,fma,f16c"))) void dequant_q4_K(const void * vx, float * y, int64_t k) {
    const BlockQ4K * x = (const BlockQ4K *) vx;
    for (int64_t i = 0; i < k / QK_K; ++i) {
        const uint8_t * q = x[i].qs, * s = x[i].scales;
        const float d = ggml_fp16_to_fp32(x[i].d), min = ggml_fp16_to_fp32(x[i].dmin);
        for (int j = 0, is = 0; j < QK_K; j += 64, is += 2) {
            uint8_t sc[2], m[2];
            for (int h = 0; h < 2; ++h) {  // get_scale_min_k4
                const int jj = is + h;
                if (jj < 4) { sc[h] = s[jj] & 63; m[h] = s[jj + 4] & 63; }
                else { sc[h] = (s[jj + 4] & 0xF) | ((s[jj - 4] >> 6) << 4); m[h] = (s[jj + 4] >> 4) | ((s[jj - 0] >> 6) << 4); }
            }
            const float d1 = d * sc[0], m1 = min * m[0], d2 = d * sc[1], m2 = min * m[1];
            for (int l = 0; l < 32; ++l) y[l] = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; ++l) y[32 + l] = d2 * (q[l] >> 4) - m2;
            y += 64; q += 32;
        }
    }
}

// dequantize_row_q4_0: y = (q - 8) * d.
__attribute__((target("avx2,fma,f16c"))) void dequant_q4_0(const void * vx, float * y, int64_t k) {
    const BlockQ40 * x = (const BlockQ40 *) vx;
    for (int64_t i = 0; i < k / 32; ++i) {
        const float d = ggml_fp16_to_fp32(x[i].d);
        for (int j = 0; j < 16; ++j) {
            y[32 * i + j] = ((x[i].qs[j] & 0x0F) - 8) * d;
            y[32 * i + j + 16] = ((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

// F16 → F32 is exact; the F16C instruction gives the same value as ggml's conversion.
__attribute__((target("avx2,fma,f16c"))) void dequant_f16(const void * vx, float * y, int64_t k) {
    const uint16_t * x = (const uint16_t *) vx;
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (x + i))));
    for (; i < k; ++i) y[i] = ggml_fp16_to_fp32(x[i]);
}

// BF16 → F32: the 16 bits are the high half of the float (ggml_bf16_to_fp32).
__attribute__((target("avx2,fma,f16c"))) void dequant_bf16(const void * vx, float * y, int64_t k) {
    const uint16_t * x = (const uint16_t *) vx;
    for (int64_t i = 0; i < k; ++i) {
        const uint32_t u = (uint32_t) x[i] << 16;
        std::memcpy(y + i, &u, sizeof u);
    }
}
#endif

ggml_to_float_t row_dequantizer(ggml_type type) {
#ifdef LLJ_X86
    static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (avx2) {
        switch (type) {
            case GGML_TYPE_Q6_K: return dequant_q6_K;
            case GGML_TYPE_Q4_K: return dequant_q4_K;
            case GGML_TYPE_Q4_0: return dequant_q4_0;
            case GGML_TYPE_F16: return dequant_f16;
            case GGML_TYPE_BF16: return dequant_bf16;
            default: break;
        }
    }
#endif
    return ggml_get_type_traits(type)->to_float;
}

}  // namespace

void tiled_dequantize(const ggml_tensor * w, int64_t m0, int64_t tm, int64_t k0, int64_t kc, float * tile, int64_t ld) {
    const ggml_to_float_t to_float = row_dequantizer(w->type);
    const size_t offset = (size_t) (k0 / ggml_blck_size(w->type)) * ggml_type_size(w->type);
    const char * base = (const char *) w->data + offset;
    for (int64_t i = 0; i < tm; ++i) to_float(base + (size_t) (m0 + i) * w->nb[1], tile + i * ld, kc);
}

namespace {

float * thread_tile(size_t floats) {
    static thread_local std::vector<float> tile;
    if (tile.size() < floats) tile.resize(floats);
    return tile.data();
}

// ---- micro-kernels: portable versions (the compiler vectorizes what it can) ----

// Y[r + c·ldy] += Σ_k A[r·lda + k] X[k + c·ldx] for r < R, c < C.
template <int R, int C>
void fwd_micro_generic(const float * A, int64_t lda, int64_t kc, const float * X, int64_t ldx, float * Y, int64_t ldy) {
    for (int r = 0; r < R; ++r) {
        for (int c = 0; c < C; ++c) {
            float s = 0;
            for (int64_t k = 0; k < kc; ++k) s += A[r * lda + k] * X[c * ldx + k];
            Y[r + c * ldy] += s;
        }
    }
}

// Z[k + c·ldz] += Σ_i A[i·lda + k] U[i + c·ldu] for i < tm, k < kn, c < C.
template <int C>
void tr_micro_generic(const float * A, int64_t tm, int64_t lda, int64_t kn, const float * U, int64_t ldu, float * Z, int64_t ldz) {
    for (int c = 0; c < C; ++c) {
        for (int64_t i = 0; i < tm; ++i) {
            const float u = U[i + c * ldu];
            for (int64_t k = 0; k < kn; ++k) Z[k + c * ldz] += A[i * lda + k] * u;
        }
    }
}

#ifdef LLJ_X86
// ---- AVX2/FMA micro-kernels: 8 accumulators (4 × 2), 6 loads per 8 FMAs ----
// (4 × 3 would need all 16 ymm registers and GCC then spills the accumulators: measured slower.)

__attribute__((target("avx2,fma"))) inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

template <int R, int C>
__attribute__((target("avx2,fma"))) void fwd_micro_avx2(const float * A, int64_t lda, int64_t kc, const float * X, int64_t ldx, float * Y, int64_t ldy) {
    __m256 acc[R][C];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
        __m256 x[C];
        for (int c = 0; c < C; ++c) x[c] = _mm256_loadu_ps(X + c * ldx + k);
        for (int r = 0; r < R; ++r) {
            const __m256 a = _mm256_loadu_ps(A + r * lda + k);
            for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(a, x[c], acc[r][c]);
        }
    }
    for (int r = 0; r < R; ++r) {
        for (int c = 0; c < C; ++c) {
            float s = hsum(acc[r][c]);
            for (int64_t kk = k; kk < kc; ++kk) s += A[r * lda + kk] * X[c * ldx + kk];
            Y[r + c * ldy] += s;
        }
    }
}

// V vectors of 8 consecutive k × C columns.
template <int V, int C>
__attribute__((target("avx2,fma"))) void tr_micro_avx2(const float * A, int64_t tm, int64_t lda, const float * U, int64_t ldu, float * Z, int64_t ldz) {
    __m256 acc[V][C];
    for (int v = 0; v < V; ++v)
        for (int c = 0; c < C; ++c) acc[v][c] = _mm256_setzero_ps();
    for (int64_t i = 0; i < tm; ++i) {
        __m256 u[C];
        for (int c = 0; c < C; ++c) u[c] = _mm256_broadcast_ss(U + i + c * ldu);
        for (int v = 0; v < V; ++v) {
            const __m256 a = _mm256_loadu_ps(A + i * lda + 8 * v);
            for (int c = 0; c < C; ++c) acc[v][c] = _mm256_fmadd_ps(a, u[c], acc[v][c]);
        }
    }
    for (int v = 0; v < V; ++v)
        for (int c = 0; c < C; ++c) {
            float * z = Z + c * ldz + 8 * v;
            _mm256_storeu_ps(z, _mm256_add_ps(_mm256_loadu_ps(z), acc[v][c]));
        }
}

// The two main blocks with named accumulators: with an array of __m256 accumulators GCC
// stores the whole array to the stack on every iteration (seen in perf annotate).
__attribute__((target("avx2,fma"))) void fwd_4x2_avx2(const float * A, int64_t lda, int64_t kc, const float * X, int64_t ldx, float * Y, int64_t ldy) {
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
    const float * x0 = X, * x1 = X + ldx;
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
        const __m256 u0 = _mm256_loadu_ps(x0 + k), u1 = _mm256_loadu_ps(x1 + k);
        __m256 w = _mm256_loadu_ps(A + k);
        a00 = _mm256_fmadd_ps(w, u0, a00); a01 = _mm256_fmadd_ps(w, u1, a01);
        w = _mm256_loadu_ps(A + lda + k);
        a10 = _mm256_fmadd_ps(w, u0, a10); a11 = _mm256_fmadd_ps(w, u1, a11);
        w = _mm256_loadu_ps(A + 2 * lda + k);
        a20 = _mm256_fmadd_ps(w, u0, a20); a21 = _mm256_fmadd_ps(w, u1, a21);
        w = _mm256_loadu_ps(A + 3 * lda + k);
        a30 = _mm256_fmadd_ps(w, u0, a30); a31 = _mm256_fmadd_ps(w, u1, a31);
    }
    const __m256 acc[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
    for (int r = 0; r < 4; ++r) {
        for (int c = 0; c < 2; ++c) {
            float s = hsum(acc[r][c]);
            for (int64_t kk = k; kk < kc; ++kk) s += A[r * lda + kk] * X[c * ldx + kk];
            Y[r + c * ldy] += s;
        }
    }
}

__attribute__((target("avx2,fma"))) void tr_4x2_avx2(const float * A, int64_t tm, int64_t lda, const float * U, int64_t ldu, float * Z, int64_t ldz) {
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
    const float * u0 = U, * u1 = U + ldu;
    for (int64_t i = 0; i < tm; ++i) {
        const __m256 b0 = _mm256_broadcast_ss(u0 + i), b1 = _mm256_broadcast_ss(u1 + i);
        const float * w = A + i * lda;
        __m256 v = _mm256_loadu_ps(w);
        a00 = _mm256_fmadd_ps(v, b0, a00); a01 = _mm256_fmadd_ps(v, b1, a01);
        v = _mm256_loadu_ps(w + 8);
        a10 = _mm256_fmadd_ps(v, b0, a10); a11 = _mm256_fmadd_ps(v, b1, a11);
        v = _mm256_loadu_ps(w + 16);
        a20 = _mm256_fmadd_ps(v, b0, a20); a21 = _mm256_fmadd_ps(v, b1, a21);
        v = _mm256_loadu_ps(w + 24);
        a30 = _mm256_fmadd_ps(v, b0, a30); a31 = _mm256_fmadd_ps(v, b1, a31);
    }
    float * z0 = Z, * z1 = Z + ldz;
    _mm256_storeu_ps(z0, _mm256_add_ps(_mm256_loadu_ps(z0), a00));
    _mm256_storeu_ps(z0 + 8, _mm256_add_ps(_mm256_loadu_ps(z0 + 8), a10));
    _mm256_storeu_ps(z0 + 16, _mm256_add_ps(_mm256_loadu_ps(z0 + 16), a20));
    _mm256_storeu_ps(z0 + 24, _mm256_add_ps(_mm256_loadu_ps(z0 + 24), a30));
    _mm256_storeu_ps(z1, _mm256_add_ps(_mm256_loadu_ps(z1), a01));
    _mm256_storeu_ps(z1 + 8, _mm256_add_ps(_mm256_loadu_ps(z1 + 8), a11));
    _mm256_storeu_ps(z1 + 16, _mm256_add_ps(_mm256_loadu_ps(z1 + 16), a21));
    _mm256_storeu_ps(z1 + 24, _mm256_add_ps(_mm256_loadu_ps(z1 + 24), a31));
}

bool has_avx2() {
    static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return ok;
}
#endif

// Y[0..R) × [0..N) += tile (R × kc) · X (kc × N), register blocks of 4 rows × 2 columns.
template <int RB>
void fwd_rows(const float * A, int64_t lda, int64_t kc, const float * X, int64_t ldx, int64_t N, float * Y, int64_t ldy) {
    int64_t c = 0;
#ifdef LLJ_X86
    if (has_avx2()) {
        for (; c + 2 <= N; c += 2) {
            if constexpr (RB == 4) fwd_4x2_avx2(A, lda, kc, X + c * ldx, ldx, Y + c * ldy, ldy);
            else fwd_micro_avx2<RB, 2>(A, lda, kc, X + c * ldx, ldx, Y + c * ldy, ldy);
        }
        for (; c < N; ++c) fwd_micro_avx2<RB, 1>(A, lda, kc, X + c * ldx, ldx, Y + c * ldy, ldy);
        return;
    }
#endif
    for (; c + 3 <= N; c += 3) fwd_micro_generic<RB, 3>(A, lda, kc, X + c * ldx, ldx, Y + c * ldy, ldy);
    for (; c < N; ++c) fwd_micro_generic<RB, 1>(A, lda, kc, X + c * ldx, ldx, Y + c * ldy, ldy);
}

void fwd_tile(const float * A, int64_t lda, int64_t tm, int64_t kc, const float * X, int64_t ldx, int64_t N, float * Y, int64_t ldy) {
    for (int64_t c0 = 0; c0 < N; c0 += NC) {
        const int64_t nc = std::min(NC, N - c0);
        const float * Xc = X + c0 * ldx;
        float * Yc = Y + c0 * ldy;
        int64_t r = 0;
        for (; r + 4 <= tm; r += 4) fwd_rows<4>(A + r * lda, lda, kc, Xc, ldx, nc, Yc + r, ldy);
        for (; r < tm; ++r) fwd_rows<1>(A + r * lda, lda, kc, Xc, ldx, nc, Yc + r, ldy);
    }
}

// Z (kc × N) += tileᵀ · U (tm × N).
void tr_tile(const float * A, int64_t lda, int64_t tm, int64_t kc, const float * U, int64_t ldu, int64_t N, float * Z, int64_t ldz) {
    for (int64_t c0 = 0; c0 < N; c0 += NC) {
        const int64_t nc = std::min(NC, N - c0);
        int64_t k = 0;
#ifdef LLJ_X86
        if (has_avx2()) {
            for (; k + 32 <= kc; k += 32) {
                int64_t c = c0;
                for (; c + 2 <= c0 + nc; c += 2) tr_4x2_avx2(A + k, tm, lda, U + c * ldu, ldu, Z + k + c * ldz, ldz);
                for (; c < c0 + nc; ++c) tr_micro_avx2<4, 1>(A + k, tm, lda, U + c * ldu, ldu, Z + k + c * ldz, ldz);
            }
            for (; k + 8 <= kc; k += 8) {
                int64_t c = c0;
                for (; c + 2 <= c0 + nc; c += 2) tr_micro_avx2<1, 2>(A + k, tm, lda, U + c * ldu, ldu, Z + k + c * ldz, ldz);
                for (; c < c0 + nc; ++c) tr_micro_avx2<1, 1>(A + k, tm, lda, U + c * ldu, ldu, Z + k + c * ldz, ldz);
            }
        }
#endif
        if (k < kc) {
            for (int64_t c = c0; c < c0 + nc; ++c) tr_micro_generic<1>(A + k, tm, lda, kc - k, U + c * ldu, ldu, Z + k + c * ldz, ldz);
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
    const int64_t lda = KC + PAD;
    float * tile = thread_tile((size_t) (TM * lda));
    for (int64_t m0 = r0; m0 < r1; m0 += TM) {
        const int64_t tm = std::min(TM, r1 - m0);
        for (int64_t k0 = 0; k0 < K; k0 += KC) {
            const int64_t kc = std::min(KC, K - k0);
            tiled_dequantize(w, m0, tm, k0, kc, tile, lda);
            fwd_tile(tile, lda, tm, kc, X + k0, ldx, N, Y + m0, ldy);
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
    const int64_t lda = KC + PAD;
    float * tile = thread_tile((size_t) (TM * lda));
    for (int64_t m0 = 0; m0 < M; m0 += TM) {
        const int64_t tm = std::min(TM, M - m0);
        for (int64_t k0 = k_begin; k0 < k_end; k0 += KC) {
            const int64_t kc = std::min(KC, k_end - k0);
            tiled_dequantize(w, m0, tm, k0, kc, tile, lda);
            tr_tile(tile, lda, tm, kc, U + m0, ldu, N, Z + k0, ldz);
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
