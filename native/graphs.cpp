#include "graphs.h"

#include <stdexcept>

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

static ggml_tensor * matmul(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, bool exact) {
    return product(ctx, weight_f32(ctx, w, exact), x);
}

// Wᵀ z: the weight transposed to a contiguous F32 copy, then an ordinary product.
static ggml_tensor * matmul_t(ggml_context * ctx, ggml_tensor * w, ggml_tensor * z) {
    ggml_tensor * wt = ggml_cont(ctx, ggml_transpose(ctx, weight_f32(ctx, w, true)));
    return product(ctx, wt, z);
}

// 1/sqrt(mean(h²) + eps) per position: the RMSNorm coefficient frozen by detaching.
static ggml_tensor * rms_inverse(ggml_context * ctx, ggml_tensor * h, ggml_tensor * ones, float eps) {
    ggml_tensor * ms = ggml_mean(ctx, ggml_sqr(ctx, h));             // [1, n]
    ggml_tensor * rms = ggml_sqrt(ctx, ggml_scale_bias(ctx, ms, 1.0f, eps));
    return ggml_div(ctx, ones, rms);
}

// o = P v per head, for v [hd·H_kv, n, B] → o [hd·H, n, B]. The batch is folded into the
// columns of v so that each head is one GEMM; query heads share KV heads in consecutive
// groups, as ggml's broadcast (and llama.cpp's GQA) does.
static ggml_tensor * attend(ggml_context * ctx, ggml_tensor * v, ggml_tensor * probs, int hd, int n_head, int n_head_kv) {
    const int64_t n = v->ne[1], B = v->ne[2];
    ggml_tensor * t = ggml_reshape_4d(ctx, v, hd, n_head_kv, n, B);
    t = ggml_cont(ctx, ggml_permute(ctx, t, 1, 3, 0, 2));           // [n, hd, B, H_kv]
    t = ggml_reshape_3d(ctx, t, n, hd * B, n_head_kv);
    ggml_tensor * o = ggml_mul_mat(ctx, t, probs);                     // [hd·B, n, H]
    o = ggml_reshape_4d(ctx, o, hd, B, n, n_head);
    o = ggml_cont(ctx, ggml_permute(ctx, o, 0, 3, 2, 1));            // [hd, H, n, B]
    return ggml_reshape_3d(ctx, o, hd * n_head, n, B);
}

// The transpose of attend: dv_j = Σ_heads in group Σ_i P[i→j] do_i.
static ggml_tensor * attend_t(ggml_context * ctx, ggml_tensor * dout, ggml_tensor * probs, int hd, int n_head, int n_head_kv) {
    const int64_t n = dout->ne[1], B = dout->ne[2];
    const int group = n_head / n_head_kv;
    ggml_tensor * t = ggml_reshape_4d(ctx, dout, hd, n_head, n, B);
    t = ggml_cont(ctx, ggml_permute(ctx, t, 1, 3, 0, 2));           // [n, hd, B, H]
    t = ggml_reshape_3d(ctx, t, n, hd * B, n_head);
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
static ggml_tensor * proj_attn(ggml_context * ctx, ggml_tensor * w, ggml_tensor * s, ggml_tensor * b, ggml_tensor * x, const BuildOptions & opt) {
    ggml_tensor * y = matmul(ctx, w, x, opt.exact);
    if (s) y = ggml_mul(ctx, y, s);
    if (b && opt.bias) y = ggml_add(ctx, y, b);
    return y;
}

// Projection as llama.cpp's FFN applies it: (W x + b)·s.
static ggml_tensor * proj_ffn(ggml_context * ctx, ggml_tensor * w, ggml_tensor * b, ggml_tensor * s, ggml_tensor * x, const BuildOptions & opt) {
    ggml_tensor * y = matmul(ctx, w, x, opt.exact);
    if (b && opt.bias) y = ggml_add(ctx, y, b);
    if (s) y = ggml_mul(ctx, y, s);
    return y;
}

ggml_tensor * build_forward(ggml_context * ctx, const ModelSpec & spec, FrozenTensors & fz, const GraphInputs & in,
                            ggml_tensor * x, const BuildOptions & opt, std::vector<ggml_tensor *> * layer_inputs) {
    const int hd = spec.head_dim, H = spec.n_head, Hkv = spec.n_head_kv;
    const int64_t n = x->ne[1];
    if (opt.primal && x->ne[2] != 1) throw std::logic_error("the primal pass runs one sequence");
    if (opt.primal) {
        fz = FrozenTensors{};
        fz.r_attn.resize(spec.n_layer); fz.probs.resize(spec.n_layer);
        fz.r_ffn.resize(spec.n_layer); fz.gate_act.resize(spec.n_layer);
    }
    auto freeze = [&](ggml_tensor * t, const char * name, int il) {
        ggml_format_name(t, "%s-%d", name, il);
        ggml_set_output(t);
        return t;
    };

    ggml_tensor * h = x;
    for (int il = 0; il < spec.n_layer; ++il) {
        const LayerWeights & L = spec.layers[(size_t) il];
        if (layer_inputs) {
            ggml_set_output(h);
            layer_inputs->push_back(h);
        }

        // attention branch
        if (opt.primal) fz.r_attn[il] = freeze(rms_inverse(ctx, h, in.ones, spec.norm_eps), "r_attn", il);
        ggml_tensor * a = ggml_mul(ctx, ggml_mul(ctx, h, fz.r_attn[il]), L.attn_norm);
        if (opt.primal) {
            ggml_tensor * q = ggml_reshape_3d(ctx, proj_attn(ctx, L.wq, L.sq, L.bq, a, opt), hd, H, n);
            ggml_tensor * k = ggml_reshape_3d(ctx, proj_attn(ctx, L.wk, L.sk, L.bk, a, opt), hd, Hkv, n);
            if (spec.arch.qk_norm) {  // inside the frozen attention: an ordinary RMSNorm per head
                q = ggml_mul(ctx, ggml_rms_norm(ctx, q, spec.norm_eps), L.q_norm);
                k = ggml_mul(ctx, ggml_rms_norm(ctx, k, spec.norm_eps), L.k_norm);
            }
            const RopeParams & r = spec.rope;
            q = ggml_rope_ext(ctx, q, in.pos, L.rope_freqs, r.n_rot, r.mode, r.n_ctx_orig, r.freq_base, r.freq_scale,
                              r.ext_factor, r.attn_factor, r.beta_fast, r.beta_slow);
            k = ggml_rope_ext(ctx, k, in.pos, L.rope_freqs, r.n_rot, r.mode, r.n_ctx_orig, r.freq_base, r.freq_scale,
                              r.ext_factor, r.attn_factor, r.beta_fast, r.beta_slow);
            ggml_tensor * kq = ggml_mul_mat(ctx, ggml_permute(ctx, k, 0, 2, 1, 3), ggml_permute(ctx, q, 0, 2, 1, 3));
            ggml_mul_mat_set_prec(kq, GGML_PREC_F32);
            fz.probs[il] = freeze(ggml_soft_max_ext(ctx, kq, in.mask, spec.kq_scale, 0.0f), "probs", il);
        }
        ggml_tensor * v = proj_attn(ctx, L.wv, L.sv, L.bv, a, opt);             // [hd·H_kv, n, B]
        ggml_tensor * o = attend(ctx, v, fz.probs[il], hd, H, Hkv);             // [hd·H, n, B]
        h = ggml_add(ctx, h, proj_attn(ctx, L.wo, L.so, L.bo, o, opt));

        // FFN branch: down(act(gate(m)) ⊙ up(m)) with act(gate(m)) frozen
        if (opt.primal) fz.r_ffn[il] = freeze(rms_inverse(ctx, h, in.ones, spec.norm_eps), "r_ffn", il);
        ggml_tensor * m = ggml_mul(ctx, ggml_mul(ctx, h, fz.r_ffn[il]), L.ffn_norm);
        if (opt.primal) {
            ggml_tensor * g = proj_ffn(ctx, L.gate, L.b_gate, L.s_gate, m, opt);
            fz.gate_act[il] = freeze(ggml_silu(ctx, g), "gate_act", il);
        }
        ggml_tensor * u = proj_ffn(ctx, L.up, L.b_up, L.s_up, m, opt);
        ggml_tensor * f = proj_ffn(ctx, L.down, L.b_down, L.s_down, ggml_mul(ctx, u, fz.gate_act[il]), opt);
        h = ggml_add(ctx, h, f);
    }
    if (opt.primal) fz.r_out = freeze(rms_inverse(ctx, h, in.ones, spec.norm_eps), "r_out", -1);
    return ggml_mul(ctx, ggml_mul(ctx, h, fz.r_out), spec.output_norm);
}

ggml_tensor * build_transpose(ggml_context * ctx, const ModelSpec & spec, const FrozenTensors & fz, ggml_tensor * u, bool exact) {
    (void) exact;  // transposed products always use F32 weights (no transposed quantized kernel)
    const int hd = spec.head_dim, H = spec.n_head, Hkv = spec.n_head_kv;
    ggml_tensor * dh = ggml_mul(ctx, ggml_mul(ctx, u, spec.output_norm), fz.r_out);
    for (int il = spec.n_layer - 1; il >= 0; --il) {
        const LayerWeights & L = spec.layers[(size_t) il];
        // FFN: f = s_down·Wd(G ⊙ s_up·Wu(m)), m = h·r_ffn·g_ffn
        ggml_tensor * z = L.s_down ? ggml_mul(ctx, dh, L.s_down) : dh;
        ggml_tensor * t = ggml_mul(ctx, matmul_t(ctx, L.down, z), fz.gate_act[il]);
        if (L.s_up) t = ggml_mul(ctx, t, L.s_up);
        ggml_tensor * dm = matmul_t(ctx, L.up, t);
        dh = ggml_add(ctx, dh, ggml_mul(ctx, ggml_mul(ctx, dm, L.ffn_norm), fz.r_ffn[il]));
        // attention: attn = s_o·Wo(P · s_v·Wv(a)), a = h·r_attn·g_attn
        z = L.so ? ggml_mul(ctx, dh, L.so) : dh;
        ggml_tensor * dv = attend_t(ctx, matmul_t(ctx, L.wo, z), fz.probs[il], hd, H, Hkv);
        if (L.sv) dv = ggml_mul(ctx, dv, L.sv);
        ggml_tensor * da = matmul_t(ctx, L.wv, dv);
        dh = ggml_add(ctx, dh, ggml_mul(ctx, ggml_mul(ctx, da, L.attn_norm), fz.r_attn[il]));
    }
    return dh;
}

}  // namespace llj
