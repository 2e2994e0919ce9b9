// The paired primitives of the linear passes: each linear op next to its transpose (and, for
// the frozen coefficients, the primal computation that records them). native/engine/layer.cpp wires
// them into a layer; ordinary mode (the true derivative) adds each coefficient's derivative
// term beside the same pair (norm_d, attend_dp, activation_derivative).
#include "primitives.h"

#include "tiled.h"

#include <cmath>

namespace llj {

ggml_tensor * weight_f32(ggml_context * ctx, ggml_tensor * w, bool exact) {
    if (!exact || w->type == GGML_TYPE_F32) return w;
    return ggml_cast(ctx, w, GGML_TYPE_F32);
}

// W x for x [in, n, B], as ONE product with n·B columns: ggml would otherwise run a
// separate small GEMM for each of the B sequences (broadcast over dimension 2).
static ggml_tensor * product(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x) {
    if (!ggml_is_contiguous(x)) x = ggml_cont(ctx, x);
    ggml_tensor * y = ggml_mul_mat(ctx, w, ggml_reshape_2d(ctx, x, x->ne[0], x->ne[1] * x->ne[2]));
    return ggml_reshape_3d(ctx, y, y->ne[0], x->ne[1], x->ne[2]);
}

// Exact products on a quantized (or F16/BF16) weight in host memory go through the tiled
// dequantize-and-multiply kernel (native/engine/tiled.cpp): same values as ggml_cast, no F32 copy.
// Only for narrow products (≤ 64 columns: the primal pass of a short prompt, one-position
// and small-batch passes), where reading the weight dominates. Wide batches (the Jacobian:
// n·B columns) are compute-bound, and there the F32 copy + OpenBLAS sgemm of the older route
// is faster than the kernel's own F32 arithmetic (measured: a Q4_K_M d=512 model's full
// Jacobian 9.1 s that way vs 20.8 s through the kernel, 2 shared cores).
// (Transposed products always dequantize, fast mode included: pass exact = true.)
constexpr int64_t kTiledMaxColumns = 64;
static bool use_tiled(ggml_tensor * w, const BuildOptions & opt, bool exact, int64_t columns) {
    return exact && opt.tiled && columns <= kTiledMaxColumns && tiled_eligible(w);
}

ggml_tensor * matmul(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, const BuildOptions & opt) {
    if (!use_tiled(w, opt, opt.exact, x->ne[1] * x->ne[2])) return product(ctx, weight_f32(ctx, w, opt.exact), x);
    if (!ggml_is_contiguous(x)) x = ggml_cont(ctx, x);
    ggml_tensor * y = tiled_mul(ctx, w, ggml_reshape_2d(ctx, x, x->ne[0], x->ne[1] * x->ne[2]));
    return ggml_reshape_3d(ctx, y, y->ne[0], x->ne[1], x->ne[2]);
}

// Wᵀ z, two ways. As an outer product over the weight's rows (GGML_OP_OUT_PROD, with z only
// viewed transposed): the weight is never copied, and the BLAS backend runs it as one sgemm.
// Or as the weight transposed to a contiguous copy and an ordinary product: ggml's CPU
// mul_mat is twice as fast as its out_prod on wide batches, but the copy costs as much as
// ~40 columns of product. Measured on bench/'s d=512 model (2 cores): the Jacobian in 1.7 s
// either way with BLAS; without, 2.0 s copied vs 3.8 s outer products; a 14-column VJP on
// one position of a d=2048 Q4_K model 0.47 s vs 3.2 s copied.
ggml_tensor * matmul_t(ggml_context * ctx, ggml_tensor * w, ggml_tensor * z, const BuildOptions & opt) {
    if (!ggml_is_contiguous(z)) z = ggml_cont(ctx, z);
    const int64_t cols = z->ne[1] * z->ne[2];
    if (use_tiled(w, opt, true, cols)) {
        ggml_tensor * r = tiled_mul_t(ctx, w, ggml_reshape_2d(ctx, z, z->ne[0], cols));  // [in, J]
        return ggml_reshape_3d(ctx, r, r->ne[0], z->ne[1], z->ne[2]);
    }
    if (opt.blas || cols < 64) {
        ggml_tensor * z2 = ggml_reshape_2d(ctx, z, z->ne[0], cols);                                  // [out, J]
        ggml_tensor * r = ggml_out_prod(ctx, weight_f32(ctx, w, true), ggml_transpose(ctx, z2));  // [in, J]
        return ggml_reshape_3d(ctx, r, r->ne[0], z->ne[1], z->ne[2]);
    }
    return product(ctx, ggml_cont(ctx, ggml_transpose(ctx, weight_f32(ctx, w, true))), z);
}

// 1/sqrt(mean(h²) + eps) per position: the RMSNorm coefficient frozen by detaching.
ggml_tensor * rms_inverse(ggml_context * ctx, ggml_tensor * h, ggml_tensor * ones, float eps) {
    ggml_tensor * ms = ggml_mean(ctx, ggml_sqr(ctx, h));             // [1, n]
    ggml_tensor * rms = ggml_sqrt(ctx, ggml_scale_bias(ctx, ms, 1.0f, eps));
    return ggml_div(ctx, ones, rms);
}

// o = P v per head, for v [hd·H_kv, n, B] → o [hd·H, n, B]. The batch is folded into the
// columns of v so that each head is one GEMM; query heads share KV heads in consecutive
// groups, as ggml's broadcast (and llama.cpp's GQA) does.
ggml_tensor * attend(ggml_context * ctx, ggml_tensor * v, ggml_tensor * probs, int hd, int n_head, int n_head_kv) {
    const int64_t n = v->ne[1], B = v->ne[2];
    ggml_tensor * t = ggml_reshape_4d(ctx, v, hd, n_head_kv, n, B);
    t = ggml_cont(ctx, ggml_permute(ctx, t, 1, 3, 0, 2));           // [n, hd, B, H_kv]
    t = ggml_reshape_3d(ctx, t, n, hd * B, n_head_kv);
    ggml_tensor * o = ggml_mul_mat(ctx, t, probs);                     // [hd·B, n, H]
    o = ggml_reshape_4d(ctx, o, hd, B, n, n_head);
    o = ggml_cont(ctx, ggml_permute(ctx, o, 0, 3, 2, 1));            // [hd, H, n, B]
    return ggml_reshape_3d(ctx, o, hd * n_head, n, B);
}

// The transpose of attend: dv_j = Σ_heads in group Σ_i P[i→j] do_i, for dout on n_query
// positions and probs [n_key, n_query, H] (the queries may be the last position alone).
ggml_tensor * attend_t(ggml_context * ctx, ggml_tensor * dout, ggml_tensor * probs, int hd, int n_head, int n_head_kv) {
    const int64_t nq = dout->ne[1], B = dout->ne[2], n = probs->ne[0];
    const int group = n_head / n_head_kv;
    ggml_tensor * t = ggml_reshape_4d(ctx, dout, hd, n_head, nq, B);
    t = ggml_cont(ctx, ggml_permute(ctx, t, 1, 3, 0, 2));           // [n_query, hd, B, H]
    t = ggml_reshape_3d(ctx, t, nq, hd * B, n_head);
    ggml_tensor * pt = ggml_cont(ctx, ggml_transpose(ctx, probs));    // [query, key, H]
    ggml_tensor * r = ggml_mul_mat(ctx, t, pt);                        // [hd·B, n_key, H]
    const int64_t X = hd * B;
    ggml_tensor * dv = nullptr;
    for (int g = 0; g < group; ++g) {
        ggml_tensor * part = ggml_view_3d(ctx, r, X, n, n_head_kv, r->nb[1], r->nb[2] * group, r->nb[2] * g);
        dv = dv ? ggml_add(ctx, dv, part) : ggml_cont(ctx, part);
    }
    dv = ggml_reshape_4d(ctx, dv, hd, B, n, n_head_kv);
    dv = ggml_cont(ctx, ggml_permute(ctx, dv, 0, 3, 2, 1));          // [hd, H_kv, n, B]
    return ggml_reshape_3d(ctx, dv, hd * n_head_kv, n, B);
}

// Projection as llama.cpp's attention applies it: (W x)·s + b.
ggml_tensor * proj_attn(ggml_context * ctx, ggml_tensor * w, ggml_tensor * s, ggml_tensor * b, ggml_tensor * x, const BuildOptions & opt) {
    ggml_tensor * y = matmul(ctx, w, x, opt);
    if (s) y = ggml_mul(ctx, y, s);
    if (b && opt.bias) y = ggml_add(ctx, y, b);
    return y;
}

// Projection as llama.cpp's FFN applies it: (W x + b)·s.
ggml_tensor * proj_ffn(ggml_context * ctx, ggml_tensor * w, ggml_tensor * b, ggml_tensor * s, ggml_tensor * x, const BuildOptions & opt) {
    ggml_tensor * y = matmul(ctx, w, x, opt);
    if (b && opt.bias) y = ggml_add(ctx, y, b);
    if (s) y = ggml_mul(ctx, y, s);
    return y;
}

// Rows [r0, r0 + n) of a weight (a view: rows are contiguous, quantized blocks included).
static ggml_tensor * rows(ggml_context * ctx, ggml_tensor * w, int64_t r0, int64_t n) {
    return ggml_view_2d(ctx, w, w->ne[0], n, w->nb[1], (size_t) r0 * w->nb[1]);
}
static ggml_tensor * elems(ggml_context * ctx, ggml_tensor * b, int64_t r0, int64_t n) {
    return b ? ggml_view_1d(ctx, b, n, (size_t) r0 * ggml_element_size(b)) : nullptr;
}


// Q (0), K (1) or V (2) of a layer, separate or as rows of the fused attn_qkv.
Projection qkv(ggml_context * ctx, const ModelSpec & spec, const LayerWeights & L, int which) {
    const bool bs = spec.arch.attn.qkv_bias_scale;
    Projection p;
    if (L.wqkv) {
        const int64_t nq = (int64_t) spec.n_head * spec.head_dim, nkv = (int64_t) spec.n_head_kv * spec.head_dim;
        const int64_t r0 = which == 0 ? 0 : which == 1 ? nq : nq + nkv, n = which == 0 ? nq : nkv;
        p.w = rows(ctx, L.wqkv, r0, n);
        p.b = bs ? elems(ctx, L.bqkv, r0, n) : nullptr;
        p.s = bs ? L.sqkv : nullptr;
    } else {
        p.w = which == 0 ? L.wq : which == 1 ? L.wk : L.wv;
        p.b = bs ? (which == 0 ? L.bq : which == 1 ? L.bk : L.bv) : nullptr;
        p.s = bs ? (which == 0 ? L.sq : which == 1 ? L.sk : L.sv) : nullptr;
    }
    return p;
}

// The FFN's gate (0) or up (1) projection, separate or as rows of the fused [gate; up].
Projection gate_up(ggml_context * ctx, const ModelSpec & spec, const LayerWeights & L, int which) {
    Projection p;
    if (L.up_gate) {
        p.w = rows(ctx, L.up_gate, which == 0 ? 0 : spec.n_ff, spec.n_ff);
    } else {
        p.w = which == 0 ? L.gate : L.up;
        p.b = which == 0 ? L.b_gate : L.b_up;
        p.s = which == 0 ? L.s_gate : L.s_up;
    }
    return p;
}

// 1/sqrt(mean(x²) + eps) over dimension 0, of any shape (qk-norm's per-head coefficient).
static ggml_tensor * rms_coefficient(ggml_context * ctx, ggml_tensor * x, float eps) {
    ggml_tensor * rms = ggml_sqrt(ctx, ggml_scale_bias(ctx, ggml_mean(ctx, ggml_sqr(ctx, x)), 1.0f, eps));
    return ggml_div(ctx, ggml_scale_bias(ctx, rms, 0.0f, 1.0f), rms);  // ones of rms's shape over rms
}

// An RMSNorm of Q or K as llama.cpp applies it, recording x·r and r for the derivative.
static ggml_tensor * qk_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, float eps, ggml_tensor ** nh, ggml_tensor ** r) {
    ggml_tensor * n = ggml_rms_norm(ctx, x, eps);
    if (nh) {
        *nh = n;
        *r = rms_coefficient(ctx, x, eps);
    }
    return ggml_mul(ctx, n, w);
}

static ggml_tensor * rope(ggml_context * ctx, ggml_tensor * x, const LayerWeights & L, const GraphInputs & in, bool back) {
    const RopeParams & r = L.rope;
    if (back) return ggml_rope_ext_back(ctx, x, in.pos, L.rope_freqs, r.n_rot, r.mode, r.n_ctx_orig, r.freq_base, r.freq_scale,
                                        r.ext_factor, r.attn_factor, r.beta_fast, r.beta_slow);
    return ggml_rope_ext(ctx, x, in.pos, L.rope_freqs, r.n_rot, r.mode, r.n_ctx_orig, r.freq_base, r.freq_scale,
                         r.ext_factor, r.attn_factor, r.beta_fast, r.beta_slow);
}

// The frozen attention probabilities of one layer (primal pass only): Q and K with
// everything llama.cpp applies to them, then the masked softmax.
ggml_tensor * attention_probs(ggml_context * ctx, const ModelSpec & spec, const LayerWeights & L, const GraphInputs & in,
                              ggml_tensor * a, const BuildOptions & opt, AttentionRecord * rec) {
    const int hd = spec.head_dim, H = spec.n_head, Hkv = spec.n_head_kv;
    const int64_t n = a->ne[1];
    const float eps = spec.norm_eps;
    const Projection pq = qkv(ctx, spec, L, 0), pk = qkv(ctx, spec, L, 1);
    ggml_tensor * q = proj_attn(ctx, pq.w, pq.s, pq.b, a, opt);  // [hd·H, n, 1]
    ggml_tensor * k = proj_attn(ctx, pk.w, pk.s, pk.b, a, opt);
    if (spec.arch.norms.qk == QkNorm::FullWidth) {  // one RMSNorm over all heads (olmo2)
        q = qk_norm(ctx, q, L.q_norm, eps, rec ? &rec->qn_q : nullptr, rec ? &rec->qr_q : nullptr);
        k = qk_norm(ctx, k, L.k_norm, eps, rec ? &rec->qn_k : nullptr, rec ? &rec->qr_k : nullptr);
    }

    q = ggml_reshape_3d(ctx, q, hd, H, n);
    k = ggml_reshape_3d(ctx, k, hd, Hkv, n);
    if (spec.arch.norms.qk == QkNorm::PerHead) {  // an RMSNorm per head (qwen3, gemma3)
        q = qk_norm(ctx, q, L.q_norm, eps, rec ? &rec->qn_q : nullptr, rec ? &rec->qr_q : nullptr);
        k = qk_norm(ctx, k, L.k_norm, eps, rec ? &rec->qn_k : nullptr, rec ? &rec->qr_k : nullptr);
    }
    if (spec.arch.attn.rope) {
        q = rope(ctx, q, L, in, false);
        k = rope(ctx, k, L, in, false);
    }
    if (spec.arch.attn.scales_q()) q = ggml_scale(ctx, q, spec.q_scale);
    if (in.attn_temp) q = ggml_mul(ctx, q, in.attn_temp);
    if (rec) {
        rec->q = q;
        rec->k = k;
    }
    ggml_tensor * kq = ggml_mul_mat(ctx, ggml_permute(ctx, k, 0, 2, 1, 3), ggml_permute(ctx, q, 0, 2, 1, 3));
    ggml_mul_mat_set_prec(kq, GGML_PREC_F32);
    if (spec.attn_softcap != 0.0f) {
        ggml_tensor * t = ggml_tanh(ctx, ggml_scale(ctx, kq, 1.0f / spec.attn_softcap));
        if (rec) rec->cap = ggml_scale_bias(ctx, ggml_sqr(ctx, t), -1.0f, 1.0f);
        kq = ggml_scale(ctx, t, spec.attn_softcap);
    }
    return ggml_soft_max_ext(ctx, kq, L.swa ? in.mask_swa : in.mask, spec.kq_scale, spec.max_alibi_bias);
}

// Ordinary mode. The tangent of Q (which 0) or K (1) as the scores read it, [hd, heads, n, B],
// from the tangent da [d, n, B] of the attention input: every step after the projection is
// linear at fixed positions (rope, scales, temperature) except the qk-norm, whose derivative
// norm_d is.
// What the Q (which 0) or K (1) side of the tangent reads: its heads, projection and qk-norm.
struct QkSide {
    int heads;
    Projection p;
    ggml_tensor * nh, * r, * w;
};
static QkSide qk_side(ggml_context * ctx, const ModelSpec & spec, const LayerWeights & L, const AttentionTensors & t, int which) {
    const bool q = which == 0;
    return {q ? spec.n_head : spec.n_head_kv, qkv(ctx, spec, L, which), q ? t.qn_q : t.qn_k, q ? t.qr_q : t.qr_k, q ? L.q_norm : L.k_norm};
}

static ggml_tensor * qk_tangent(ggml_context * ctx, const ModelSpec & spec, const LayerWeights & L, const GraphInputs & in,
                                const AttentionTensors & t, ggml_tensor * da, int which, const BuildOptions & opt) {
    const int hd = spec.head_dim;
    const int64_t n = da->ne[1], B = da->ne[2];
    const auto [heads, p, nh, r, w] = qk_side(ctx, spec, L, t, which);
    ggml_tensor * x = matmul(ctx, p.w, da, opt);  // the bias is a constant
    if (p.s) x = ggml_mul(ctx, x, p.s);
    if (spec.arch.norms.qk == QkNorm::FullWidth) x = norm_d(ctx, x, r, nh, w, false);
    x = ggml_reshape_4d(ctx, ggml_cont(ctx, x), hd, heads, n, B);
    if (spec.arch.norms.qk == QkNorm::PerHead) x = norm_d(ctx, x, r, nh, w, false);
    if (spec.arch.attn.rope) x = rope(ctx, ggml_cont(ctx, x), L, in, false);
    if (which == 0 && spec.arch.attn.scales_q()) x = ggml_scale(ctx, x, spec.q_scale);
    if (which == 0 && in.attn_temp) x = ggml_mul(ctx, x, in.attn_temp);
    return x;
}

// Its transpose: g [hd, heads, n, B] on Q or K → the cotangent on the attention input.
static ggml_tensor * qk_tangent_t(ggml_context * ctx, const ModelSpec & spec, const LayerWeights & L, const GraphInputs & in,
                                  const AttentionTensors & t, ggml_tensor * g, int which, const BuildOptions & opt) {
    const int hd = spec.head_dim;
    const int64_t n = g->ne[2], B = g->ne[3];
    const auto [heads, p, nh, r, w] = qk_side(ctx, spec, L, t, which);
    if (which == 0 && in.attn_temp) g = ggml_mul(ctx, g, in.attn_temp);
    if (which == 0 && spec.arch.attn.scales_q()) g = ggml_scale(ctx, g, spec.q_scale);
    if (spec.arch.attn.rope) g = rope(ctx, ggml_cont(ctx, g), L, in, true);  // the inverse rotation is the transpose
    if (spec.arch.norms.qk == QkNorm::PerHead) g = norm_d_t(ctx, g, r, nh, w, false);
    g = ggml_reshape_3d(ctx, ggml_cont(ctx, g), (int64_t) hd * heads, n, B);
    if (spec.arch.norms.qk == QkNorm::FullWidth) g = norm_d_t(ctx, g, r, nh, w, false);
    if (p.s) g = ggml_mul(ctx, g, p.s);
    return matmul_t(ctx, p.w, g, opt);
}

// The softmax's derivative at its probabilities: dS ↦ P ⊙ (dS - Σ_key P ⊙ dS) per query, with
// the scale and the softcap before it. The map is symmetric, so it is its own transpose
// (with scale and softcap after it).
static ggml_tensor * softmax_d(ggml_context * ctx, const ModelSpec & spec, const AttentionTensors & t, ggml_tensor * ds, bool transposed) {
    auto pre = [&](ggml_tensor * x) {
        if (t.cap) x = ggml_mul(ctx, x, t.cap);
        return ggml_scale(ctx, x, spec.kq_scale);
    };
    if (!transposed) ds = pre(ds);
    ggml_tensor * y = ggml_mul(ctx, ggml_sub(ctx, ds, ggml_sum_rows(ctx, ggml_mul(ctx, ds, t.probs))), t.probs);
    return transposed ? pre(y) : y;
}

// x [hd·H_kv, n] as [n, hd, H_kv]: each KV head's rows by key.
static ggml_tensor * by_key(ggml_context * ctx, ggml_tensor * x, int hd, int heads) {
    return ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_3d(ctx, x, hd, heads, x->ne[ggml_n_dims(x) - 1]), 1, 2, 0, 3));
}

ggml_tensor * attend_dp(ggml_context * ctx, const ModelSpec & spec, const LayerWeights & L, const GraphInputs & in,
                        const AttentionTensors & t, ggml_tensor * da, const BuildOptions & opt) {
    const int hd = spec.head_dim, H = spec.n_head, Hkv = spec.n_head_kv;
    const int64_t n = da->ne[1], B = da->ne[2];
    ggml_tensor * dq = qk_tangent(ctx, spec, L, in, t, da, 0, opt);  // [hd, H, n, B]
    ggml_tensor * dk = qk_tangent(ctx, spec, L, in, t, da, 1, opt);  // [hd, H_kv, n, B]
    // dS = K·dQ + dK·Q per head, [key, query, H, B] (Q repeated over the batch for the broadcast)
    ggml_tensor * s1 = ggml_mul_mat(ctx, ggml_permute(ctx, t.k, 0, 2, 1, 3), ggml_permute(ctx, dq, 0, 2, 1, 3));
    ggml_tensor * q_b = ggml_repeat_4d(ctx, t.q, hd, H, n, B);
    ggml_tensor * s2 = ggml_mul_mat(ctx, ggml_permute(ctx, dk, 0, 2, 1, 3), ggml_permute(ctx, q_b, 0, 2, 1, 3));
    ggml_tensor * dp = softmax_d(ctx, spec, t, ggml_add(ctx, s1, s2), false);
    ggml_tensor * o = ggml_mul_mat(ctx, by_key(ctx, t.v, hd, Hkv), dp);  // dP·v: [hd, query, H, B]
    o = ggml_cont(ctx, ggml_permute(ctx, o, 0, 2, 1, 3));                // [hd, H, query, B]
    return ggml_reshape_3d(ctx, o, (int64_t) hd * H, n, B);
}

ggml_tensor * attend_dp_t(ggml_context * ctx, const ModelSpec & spec, const LayerWeights & L, const GraphInputs & in,
                          const AttentionTensors & t, ggml_tensor * dout, const BuildOptions & opt) {
    const int hd = spec.head_dim, H = spec.n_head, Hkv = spec.n_head_kv, group = H / Hkv;
    const int64_t n = dout->ne[1], B = dout->ne[2];
    ggml_tensor * z = ggml_reshape_4d(ctx, ggml_cont(ctx, dout), hd, H, n, B);
    ggml_tensor * v = ggml_permute(ctx, ggml_reshape_3d(ctx, t.v, hd, Hkv, n), 0, 2, 1, 3);  // [hd, key, H_kv]
    ggml_tensor * dp = ggml_mul_mat(ctx, v, ggml_permute(ctx, z, 0, 2, 1, 3));           // [key, query, H, B]
    ggml_tensor * ds = softmax_d(ctx, spec, t, dp, true);
    // Q̄ = Σ_key K dS̄: [hd, query, H, B]
    ggml_tensor * dq = ggml_mul_mat(ctx, ggml_cont(ctx, ggml_permute(ctx, t.k, 1, 2, 0, 3)), ds);
    dq = ggml_cont(ctx, ggml_permute(ctx, dq, 0, 2, 1, 3));  // [hd, H, n, B]
    // K̄ = Σ_query Q dS̄ᵀ, summed over each KV head's group of query heads: [hd, key, H_kv, B]
    ggml_tensor * r = ggml_mul_mat(ctx, ggml_cont(ctx, ggml_permute(ctx, t.q, 1, 2, 0, 3)), ggml_cont(ctx, ggml_permute(ctx, ds, 1, 0, 2, 3)));
    ggml_tensor * dk = nullptr;
    for (int g = 0; g < group; ++g) {
        ggml_tensor * part = ggml_view_4d(ctx, r, hd, n, Hkv, B, r->nb[1], r->nb[2] * group, r->nb[3], r->nb[2] * g);
        dk = dk ? ggml_add(ctx, dk, part) : ggml_cont(ctx, part);
    }
    dk = ggml_cont(ctx, ggml_permute(ctx, dk, 0, 2, 1, 3));  // [hd, H_kv, n, B]
    return ggml_add(ctx, qk_tangent_t(ctx, spec, L, in, t, dq, 0, opt), qk_tangent_t(ctx, spec, L, in, t, dk, 1, opt));
}

// t [d, k, n, B] summed over its k chosen experts → [d, n, B], in llama.cpp's order.
static ggml_tensor * sum_experts(ggml_context * ctx, ggml_tensor * t) {
    ggml_tensor * out = nullptr;
    for (int64_t j = 0; j < t->ne[1]; ++j) {
        ggml_tensor * part = ggml_view_3d(ctx, t, t->ne[0], t->ne[2], t->ne[3], t->nb[2], t->nb[3], (size_t) j * t->nb[1]);
        out = out ? ggml_add(ctx, out, part) : ggml_cont(ctx, part);
    }
    return out;
}

// Σ_k coef_k · down_k(G_k ⊙ up_k(m)) over the k chosen experts of each position, for
// m [d, n, B]: the routed FFN with routing, weights and gate activations frozen. ids holds
// the experts of each of the n·B columns. With dv (ordinary mode) the inner factor also
// carries the gate's tangent: up_factor·G ⊙ up(m) + gate_d ⊙ gate(m).
ggml_tensor * experts_forward(ggml_context * ctx, const ModelSpec & spec, const LayerWeights & L, ggml_tensor * m,
                              ggml_tensor * ids, ggml_tensor * G, ggml_tensor * coef, bool exact, const ExpertsDerivative * dv) {
    const int64_t d = m->ne[0], n = m->ne[1], B = m->ne[2], k = spec.n_expert_used, ff = spec.n_ff_exp;
    if (!ggml_is_contiguous(m)) m = ggml_cont(ctx, m);
    ggml_tensor * m3 = ggml_reshape_3d(ctx, m, d, 1, n * B);
    ggml_tensor * up = ggml_mul_mat_id(ctx, weight_f32(ctx, L.up_exps, exact), m3, ids);  // [ff, k, n·B]
    ggml_tensor * t = ggml_mul(ctx, ggml_reshape_4d(ctx, up, ff, k, n, B), G);
    if (dv) {
        if (dv->up_factor != 1.0f) t = ggml_scale(ctx, t, dv->up_factor);
        ggml_tensor * g = ggml_mul_mat_id(ctx, weight_f32(ctx, L.gate_exps, exact), m3, ids);  // [ff, k, n·B]
        t = ggml_add(ctx, t, ggml_mul(ctx, ggml_reshape_4d(ctx, g, ff, k, n, B), dv->gate_d));
    }
    ggml_tensor * down = ggml_mul_mat_id(ctx, weight_f32(ctx, L.down_exps, exact), ggml_reshape_3d(ctx, t, ff, k, n * B), ids);  // [d, k, n·B]
    return sum_experts(ctx, ggml_mul(ctx, ggml_reshape_4d(ctx, down, d, k, n, B), coef));
}

// Its transpose, for the cotangent dd [d, n, B].
ggml_tensor * experts_transpose(ggml_context * ctx, const ModelSpec & spec, const LayerWeights & L, ggml_tensor * dd,
                                ggml_tensor * ids, ggml_tensor * G, ggml_tensor * coef, const ExpertsDerivative * dv) {
    const int64_t d = dd->ne[0], n = dd->ne[1], B = dd->ne[2], k = spec.n_expert_used, ff = spec.n_ff_exp;
    ggml_tensor * z = ggml_repeat_4d(ctx, ggml_reshape_4d(ctx, dd, d, 1, n, B), d, k, n, B);
    z = ggml_mul(ctx, z, coef);
    ggml_tensor * down_t = ggml_cont(ctx, ggml_transpose(ctx, weight_f32(ctx, L.down_exps, true)));  // [d, ff, E]
    ggml_tensor * t_in = ggml_mul_mat_id(ctx, down_t, ggml_reshape_3d(ctx, z, d, k, n * B), ids);     // [ff, k, n·B]
    ggml_tensor * t = ggml_mul(ctx, ggml_reshape_4d(ctx, t_in, ff, k, n, B), G);
    if (dv && dv->up_factor != 1.0f) t = ggml_scale(ctx, t, dv->up_factor);
    ggml_tensor * up_t = ggml_cont(ctx, ggml_transpose(ctx, weight_f32(ctx, L.up_exps, true)));      // [ff, d, E]
    ggml_tensor * dm = ggml_mul_mat_id(ctx, up_t, ggml_reshape_3d(ctx, t, ff, k, n * B), ids);        // [d, k, n·B]
    if (dv) {  // the gate's side: gate_kᵀ(gate_d ⊙ t̄)
        ggml_tensor * g = ggml_mul(ctx, ggml_reshape_4d(ctx, t_in, ff, k, n, B), dv->gate_d);
        ggml_tensor * gate_t = ggml_cont(ctx, ggml_transpose(ctx, weight_f32(ctx, L.gate_exps, true)));  // [ff, d, E]
        dm = ggml_add(ctx, dm, ggml_mul_mat_id(ctx, gate_t, ggml_reshape_3d(ctx, g, ff, k, n * B), ids));
    }
    return sum_experts(ctx, ggml_reshape_4d(ctx, dm, d, k, n, B));
}

// The router of a moe layer (primal only), as llama.cpp's build_moe_ffn computes it for
// llama, mistral3 and qwen3moe (all: softmax gating, norm_w true): softmax over all
// experts, top-k, weights renormalized (sum clamped at 6.1e-5), optional weight scale.
// Returns the chosen ids [k, n], the frozen gate activations [ff, k, n] and the
// coefficients [1, k, n] (weights × up and down scales); rec (ordinary mode): what the
// experts' derivative terms read.
Routing route(ggml_context * ctx, const ModelSpec & spec, const LayerWeights & L, ggml_tensor * m, const BuildOptions & opt,
              RoutingRecord * rec) {
    const int64_t d = m->ne[0], n = m->ne[1], E = spec.n_expert, k = spec.n_expert_used;
    ggml_tensor * m2 = ggml_reshape_2d(ctx, m, d, n);
    ggml_tensor * probs = ggml_soft_max(ctx, ggml_mul_mat(ctx, weight_f32(ctx, L.gate_inp, opt.exact), m2));  // [E, n]
    ggml_tensor * ids = ggml_cont(ctx, ggml_argsort_top_k(ctx, probs, (int) k));                               // [k, n]
    ggml_tensor * w = ggml_get_rows(ctx, ggml_reshape_3d(ctx, probs, 1, E, n), ids);                          // [1, k, n]
    ggml_tensor * w2 = ggml_reshape_2d(ctx, w, k, n);
    w2 = ggml_div(ctx, w2, ggml_clamp(ctx, ggml_sum_rows(ctx, w2), 6.103515625e-5f, INFINITY));
    w = ggml_reshape_3d(ctx, w2, 1, k, n);
    ggml_tensor * w_norm = w;  // before the weight scale
    const bool scales_w = spec.expert_weights_scale != 0.0f && spec.expert_weights_scale != 1.0f;
    if (scales_w) w = ggml_scale(ctx, w, spec.expert_weights_scale);
    auto expert_scale = [&](ggml_tensor * s) {  // per-expert scalar [E] → [1, k, n] for the chosen experts
        return ggml_get_rows(ctx, ggml_repeat_4d(ctx, ggml_reshape_3d(ctx, s, 1, E, 1), 1, E, n, 1), ids);
    };
    ggml_tensor * m3 = ggml_reshape_3d(ctx, m2, d, 1, n);
    ggml_tensor * gate = ggml_mul_mat_id(ctx, weight_f32(ctx, L.gate_exps, opt.exact), m3, ids);  // [ff, k, n]
    if (L.s_gate_exps) gate = ggml_mul(ctx, gate, expert_scale(L.s_gate_exps));
    ggml_tensor * coef = w;
    if (L.s_up_exps) coef = ggml_mul(ctx, coef, expert_scale(L.s_up_exps));
    if (L.s_down_exps) coef = ggml_mul(ctx, coef, expert_scale(L.s_down_exps));
    ggml_tensor * G = ggml_silu(ctx, gate);
    if (rec) {
        ggml_tensor * up = ggml_mul_mat_id(ctx, weight_f32(ctx, L.up_exps, opt.exact), m3, ids);  // [ff, k, n], its scale in coef
        // what gate_k(dm) is multiplied by: up ⊙ silu'(g) (relevance: half of up ⊙ silu(g)/g, the
        // identity rule inside the half rule, as the dense gated FFN), times the gate's own scale
        // (g = s·gate_k(m)); the experts' activation is SiLU in every graph we mirror
        ggml_tensor * gd = opt.relevance ? ggml_scale(ctx, ggml_mul(ctx, up, activation_factor(ctx, spec.arch, gate, nullptr)), 0.5f)
                                         : ggml_silu_back(ctx, up, gate);
        if (L.s_gate_exps) gd = ggml_mul(ctx, gd, expert_scale(L.s_gate_exps));
        // each expert's output as w_k multiplies it: the weight scale, the up and down scales
        ggml_tensor * out = ggml_mul_mat_id(ctx, weight_f32(ctx, L.down_exps, opt.exact), ggml_mul(ctx, G, up), ids);  // [d, k, n]
        if (scales_w) out = ggml_scale(ctx, out, spec.expert_weights_scale);
        if (L.s_up_exps) out = ggml_mul(ctx, out, expert_scale(L.s_up_exps));
        if (L.s_down_exps) out = ggml_mul(ctx, out, expert_scale(L.s_down_exps));
        *rec = {w_norm, out, gd};
    }
    return {ids, G, coef};
}

// The router's row of each chosen expert, [d, k, n·B], for ids [k, n·B].
static ggml_tensor * router_rows(ggml_context * ctx, const LayerWeights & L, ggml_tensor * ids) {
    ggml_tensor * r = ggml_get_rows(ctx, L.gate_inp, ggml_reshape_1d(ctx, ids, ggml_nelements(ids)));  // [d, k·n·B], dequantized
    return ggml_reshape_3d(ctx, r, r->ne[0], ids->ne[0], ids->ne[1]);
}

// The routing weights as a function of the router logits z with the choice held: softmax
// over all experts then renormalized over the chosen is w_k = exp(z_k) / Σ_chosen exp(z_j),
// a softmax over the chosen logits alone (the all-experts normalizer cancels; the sum's clamp
// at 6.1e-5 never binds, the top k of E probabilities summing to at least k/E). Its
// derivative dz ↦ w ⊙ (dz - Σ_k w_k dz_k) per column is symmetric: its own transpose.
// dz [k, n, B], w [1, k, n].
static ggml_tensor * chosen_softmax_d(ggml_context * ctx, ggml_tensor * dz, ggml_tensor * w) {
    ggml_tensor * w2 = ggml_reshape_2d(ctx, w, w->ne[1], w->ne[2]);
    ggml_tensor * mean = ggml_sum_rows(ctx, ggml_mul(ctx, dz, w2));  // [1, n, B]
    return ggml_mul(ctx, ggml_sub(ctx, dz, mean), w2);
}

// Σ_k dw_k · out_k: dz_k = W_router[ids_k] · dm, then the chosen softmax's derivative.
ggml_tensor * route_d(ggml_context * ctx, const LayerWeights & L, ggml_tensor * dm, ggml_tensor * ids, ggml_tensor * w, ggml_tensor * out) {
    const int64_t d = dm->ne[0], n = dm->ne[1], B = dm->ne[2], k = ids->ne[0];
    if (!ggml_is_contiguous(dm)) dm = ggml_cont(ctx, dm);
    ggml_tensor * dz = ggml_sum_rows(ctx, ggml_mul(ctx, router_rows(ctx, L, ids), ggml_reshape_3d(ctx, dm, d, 1, n * B)));  // [1, k, n·B]
    ggml_tensor * dw = chosen_softmax_d(ctx, ggml_reshape_3d(ctx, dz, k, n, B), w);                                        // [k, n, B]
    ggml_tensor * t = ggml_mul(ctx, ggml_repeat_4d(ctx, out, d, k, n, B), ggml_reshape_4d(ctx, dw, 1, k, n, B));
    return sum_experts(ctx, t);
}

// Its transpose: dw̄_k = ⟨out_k, dd⟩, the chosen softmax's derivative (symmetric), then
// Σ_k dz̄_k · W_router[ids_k].
ggml_tensor * route_d_t(ggml_context * ctx, const LayerWeights & L, ggml_tensor * dd, ggml_tensor * ids, ggml_tensor * w, ggml_tensor * out) {
    const int64_t d = dd->ne[0], n = dd->ne[1], B = dd->ne[2], k = ids->ne[0];
    ggml_tensor * z = ggml_repeat_4d(ctx, ggml_reshape_4d(ctx, ggml_cont(ctx, dd), d, 1, n, B), d, k, n, B);
    ggml_tensor * dw = ggml_sum_rows(ctx, ggml_mul(ctx, z, out));                          // [1, k, n, B]
    ggml_tensor * dz = chosen_softmax_d(ctx, ggml_reshape_3d(ctx, dw, k, n, B), w);        // [k, n, B]
    ggml_tensor * dm = ggml_mul(ctx, router_rows(ctx, L, ids), ggml_reshape_3d(ctx, dz, 1, k, n * B));  // [d, k, n·B]
    return sum_experts(ctx, ggml_reshape_4d(ctx, dm, d, k, n, B));
}

ggml_tensor * gate_activation(ggml_context * ctx, const ArchSpec & arch, ggml_tensor * g) {
    return arch.ffn.act == Act::GeluTanh ? ggml_gelu(ctx, g) : ggml_silu(ctx, g);
}

// The plain activation act(z) frozen as z·s(z) (non-gated FFNs): s = act(z) / z, with z = 0
// read as 1 there (any s reproduces act(0) = 0 exactly).
ggml_tensor * activation_factor(ggml_context * ctx, const ArchSpec & arch, ggml_tensor * z, ggml_tensor * act_scales) {
    ggml_tensor * is_zero = ggml_scale_bias(ctx, ggml_step(ctx, ggml_abs(ctx, z)), -1.0f, 1.0f);
    ggml_tensor * act = gate_activation(ctx, arch, z);
    if (act_scales) act = ggml_div(ctx, act, act_scales);
    return ggml_div(ctx, act, ggml_add(ctx, z, is_zero));
}

ggml_tensor * activation_derivative(ggml_context * ctx, const ArchSpec & arch, ggml_tensor * z, ggml_tensor * y) {
    if (arch.ffn.act != Act::GeluTanh) return ggml_silu_back(ctx, y ? y : ggml_scale_bias(ctx, z, 0.0f, 1.0f), z);
    // gelu(z) = z·Φ̃(z), Φ̃ = (1 + tanh(c(z + a z³)))/2: gelu' = Φ̃ + z(1 - t²)·c(1 + 3a z²)/2
    const float c = 0.7978845608028654f, a = 0.044715f;
    ggml_tensor * z2 = ggml_sqr(ctx, z);
    ggml_tensor * t = ggml_tanh(ctx, ggml_scale(ctx, ggml_mul(ctx, z, ggml_scale_bias(ctx, z2, a, 1.0f)), c));
    ggml_tensor * inner = ggml_mul(ctx, ggml_scale_bias(ctx, ggml_sqr(ctx, t), -1.0f, 1.0f), ggml_scale_bias(ctx, z2, 1.5f * a * c, 0.5f * c));
    ggml_tensor * d = ggml_add(ctx, ggml_scale_bias(ctx, t, 0.5f, 0.5f), ggml_mul(ctx, z, inner));
    return y ? ggml_mul(ctx, d, y) : d;
}

ggml_tensor * norm_d(ggml_context * ctx, ggml_tensor * x, ggml_tensor * r, ggml_tensor * nh, ggml_tensor * w, bool center) {
    if (center) x = centered(ctx, x);
    ggml_tensor * m = ggml_mean(ctx, ggml_mul(ctx, x, nh));
    ggml_tensor * y = ggml_sub(ctx, x, ggml_mul(ctx, ggml_repeat(ctx, nh, x), m));
    return scaled(ctx, y, r, w);
}

// The transpose: diag(r·w), the projection (symmetric), then the centering.
ggml_tensor * norm_d_t(ggml_context * ctx, ggml_tensor * z, ggml_tensor * r, ggml_tensor * nh, ggml_tensor * w, bool center) {
    ggml_tensor * g = scaled(ctx, z, r, w);
    ggml_tensor * y = ggml_sub(ctx, g, ggml_mul(ctx, ggml_repeat(ctx, nh, g), ggml_mean(ctx, ggml_mul(ctx, g, nh))));
    return center ? centered(ctx, y) : y;
}

// h·r·w: an RMSNorm with its 1/rms frozen per position.
ggml_tensor * scaled(ggml_context * ctx, ggml_tensor * h, ggml_tensor * r, ggml_tensor * w) {
    return ggml_mul(ctx, ggml_mul(ctx, h, r), w);
}

// h - mean(h) per position: LayerNorm's centering, linear and its own transpose.
ggml_tensor * centered(ggml_context * ctx, ggml_tensor * h) {
    return ggml_sub(ctx, h, ggml_mean(ctx, h));
}

// A norm with its coefficient r frozen: RMSNorm h·r·w, or (centered) LayerNorm
// (h - mean)·r·w + b (the bias, a constant, only in passes with biases).
ggml_tensor * norm(ggml_context * ctx, ggml_tensor * h, ggml_tensor * r, ggml_tensor * w, ggml_tensor * b, bool center,
                   const BuildOptions & opt) {
    if (!center) return scaled(ctx, h, r, w);
    ggml_tensor * y = scaled(ctx, centered(ctx, h), r, w);
    return b && opt.bias ? ggml_add(ctx, y, b) : y;
}

// Its transpose: diag(r·w), then the centering for LayerNorm.
ggml_tensor * norm_t(ggml_context * ctx, ggml_tensor * dy, ggml_tensor * r, ggml_tensor * w, bool center) {
    ggml_tensor * t = scaled(ctx, dy, r, w);
    return center ? centered(ctx, t) : t;
}

}  // namespace llj
