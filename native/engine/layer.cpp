#include "layer.h"

#include <stdexcept>
#include <tuple>

namespace llj {

ggml_tensor * freeze(ggml_tensor * t, const char * name, int il, const BuildOptions & opt) {
    ggml_format_name(t, "%s-%d", name, il);
    if (opt.keep_frozen) ggml_set_output(t);
    return t;
}

static Block norm_block(ggml_tensor * w, ggml_tensor * b, FrozenSet coef, FrozenSet nhat, const char * name, bool center) {
    Block k{BlockKind::Norm};
    k.p.w = w;
    k.p.b = b;
    k.coef = coef;
    k.nhat = nhat;
    k.coef_name = name;
    k.center = center;
    return k;
}

// pre-norm, V, P·, O, post-norm: llama.cpp's attention with Q and K inside the frozen P.
static Branch attention_branch(ggml_context * ctx, const ModelSpec & spec, const LayerWeights & L) {
    const NormSpec & norms = spec.arch.norms;
    Branch br{Tap::Attn, {}};
    if (norms.pre) br.blocks.push_back(norm_block(L.attn_norm, L.attn_norm_b, &FrozenTensors::r_attn, &FrozenTensors::nh_attn, "r_attn", norms.kind == NormKind::Layer));
    Block v{BlockKind::Proj};
    v.p = qkv(ctx, spec, L, 2);
    Block attend{BlockKind::Attend};
    attend.coef = &FrozenTensors::probs;
    attend.coef_name = "probs";
    Block o{BlockKind::Proj};
    o.p = {L.wo, L.bo, L.so};
    br.blocks.insert(br.blocks.end(), {v, attend, o});
    if (norms.post) br.blocks.push_back(norm_block(L.attn_post_norm, nullptr, &FrozenTensors::r_attn_post, &FrozenTensors::nh_attn_post, "r_attn_post", false));
    return br;
}

// pre-norm (or the attention's, shared), then down(G ⊙ up(m)) or the routed experts, post-norm.
static Branch ffn_branch(ggml_context * ctx, const ModelSpec & spec, const LayerWeights & L) {
    const NormSpec & norms = spec.arch.norms;
    const bool ln = norms.kind == NormKind::Layer;
    Branch br{Tap::Mlp, {}};
    if (spec.shared_ffn_norm) {
        br.blocks.push_back(norm_block(L.attn_norm, L.attn_norm_b, &FrozenTensors::r_attn, &FrozenTensors::nh_attn, "r_attn", ln));
        br.blocks.back().shared = true;
    } else if (norms.pre) {
        br.blocks.push_back(norm_block(L.ffn_norm, L.ffn_norm_b, &FrozenTensors::r_ffn, &FrozenTensors::nh_ffn, "r_ffn", ln));
    }
    if (spec.n_expert > 0) {
        br.blocks.push_back(Block{BlockKind::Experts});
    } else {
        Block up{BlockKind::Proj};
        up.p = gate_up(ctx, spec, L, 1);
        up.ffn_order = true;
        Block gate{BlockKind::Gate};
        gate.coef = &FrozenTensors::gate_act;
        gate.coef_name = "gate_act";
        gate.plain = spec.arch.ffn.kind == FfnKind::Plain;
        if (!gate.plain) gate.p = gate_up(ctx, spec, L, 0);
        Block down{BlockKind::Proj};
        down.p = {L.down, L.b_down, L.s_down};
        down.ffn_order = true;
        br.blocks.insert(br.blocks.end(), {up, gate, down});
    }
    if (norms.post) br.blocks.push_back(norm_block(L.ffn_post_norm, nullptr, &FrozenTensors::r_ffn_post, &FrozenTensors::nh_ffn_post, "r_ffn_post", false));
    return br;
}

LayerProgram layer_program(ggml_context * ctx, const ModelSpec & spec, int il) {
    const LayerWeights & L = spec.layers[(size_t) il];
    Branch attn = attention_branch(ctx, spec, L), ffn = ffn_branch(ctx, spec, L);
    LayerProgram prog;
    if (spec.parallel) prog.steps = {{attn, ffn}};  // h + attn(h) + ffn(h)
    else prog.steps = {{attn}, {ffn}};              // h1 = h + attn(h); h1 + ffn(h1)
    return prog;
}

// Primal: the block's frozen coefficient, from its input x or from the branch's normed input
// m (the input of its first block after the norm: what Q, K, the gate and the router read);
// in ordinary mode also what its derivative term reads.
static void freeze_block(ggml_context * ctx, const ModelSpec & spec, int il, const Block & b, FrozenTensors & fz,
                         const GraphInputs & in, ggml_tensor * x, ggml_tensor * m, const BuildOptions & opt) {
    const LayerWeights & L = spec.layers[(size_t) il];
    switch (b.kind) {
    case BlockKind::Norm: {  // 1/rms, or LayerNorm's 1/std (the rms of the centered input)
        if (b.shared) return;
        ggml_tensor * c = b.center ? centered(ctx, x) : x;
        (fz.*b.coef)[il] = freeze(rms_inverse(ctx, c, in.ones, spec.norm_eps), b.coef_name, il, opt);
        if (opt.ordinary && !opt.relevance) (fz.*b.nhat)[il] = freeze(ggml_mul(ctx, c, (fz.*b.coef)[il]), "nh", il, opt);
        return;
    }
    case BlockKind::Proj:
        return;
    case BlockKind::Attend: {
        AttentionRecord rec;
        (fz.*b.coef)[il] = freeze(attention_probs(ctx, spec, L, in, m, opt, opt.ordinary ? &rec : nullptr), b.coef_name, il, opt);
        if (!opt.ordinary) return;
        fz.att_q[il] = freeze(rec.q, "att_q", il, opt);
        fz.att_k[il] = freeze(rec.k, "att_k", il, opt);
        fz.att_v[il] = freeze(x, "att_v", il, opt);
        for (auto [t, set, name] : {std::tuple{rec.qn_q, &FrozenTensors::qn_q, "qn_q"}, {rec.qr_q, &FrozenTensors::qr_q, "qr_q"},
                                    {rec.qn_k, &FrozenTensors::qn_k, "qn_k"}, {rec.qr_k, &FrozenTensors::qr_k, "qr_k"},
                                    {rec.cap, &FrozenTensors::att_cap, "att_cap"}}) {
            if (t) (fz.*set)[il] = freeze(t, name, il, opt);
        }
        return;
    }
    case BlockKind::Gate: {  // act(gate(m)), or for down(act(u)) = down(u·s(u)) the factor s(u)
        ggml_tensor * g = b.plain ? nullptr : proj_ffn(ctx, b.p.w, b.p.b, b.p.s, m, opt);
        ggml_tensor * G = b.plain ? activation_factor(ctx, spec.arch, x, L.ffn_act) : gate_activation(ctx, spec.arch, g);
        (fz.*b.coef)[il] = freeze(G, b.coef_name, il, opt);
        if (!opt.ordinary || (opt.relevance && b.plain)) return;
        // gated: up ⊙ act'(gate), what the gate's tangent is multiplied by (relevance: half of
        // up ⊙ act(gate)/gate, the identity rule inside the half rule); plain: act'(z)
        ggml_tensor * gd = opt.relevance ? ggml_scale(ctx, ggml_mul(ctx, x, activation_factor(ctx, spec.arch, g, nullptr)), 0.5f)
                         : b.plain ? activation_derivative(ctx, spec.arch, x, nullptr) : activation_derivative(ctx, spec.arch, g, x);
        if (b.plain && L.ffn_act) gd = ggml_div(ctx, gd, L.ffn_act);
        fz.gate_d[il] = freeze(gd, "gate_d", il, opt);
        return;
    }
    case BlockKind::Experts: {
        RoutingRecord rec;
        const Routing r = route(ctx, spec, L, m, opt, opt.ordinary ? &rec : nullptr);
        fz.moe_ids[il] = freeze(r.ids, "moe_ids", il, opt);
        fz.gate_act[il] = freeze(r.G, "gate_act", il, opt);
        fz.moe_coef[il] = freeze(r.coef, "moe_coef", il, opt);
        if (!opt.ordinary) return;
        fz.gate_d[il] = freeze(rec.gate_d, "gate_d", il, opt);
        if (opt.relevance) return;  // relevance: the routing weights stay detached
        fz.moe_w[il] = freeze(rec.w, "moe_w", il, opt);
        fz.moe_out[il] = freeze(rec.out, "moe_out", il, opt);
        return;
    }
    }
}

static AttentionTensors attention_tensors(const FrozenTensors & fz, int il) {
    const size_t l = (size_t) il;
    return {fz.probs[l], fz.att_q[l], fz.att_k[l], fz.att_v[l], fz.qn_q[l], fz.qr_q[l], fz.qn_k[l], fz.qr_k[l], fz.att_cap[l]};
}

// The block on x (m: the tangent at the branch's normed input, which ordinary mode's
// attention and gate terms read).
static ggml_tensor * block_forward(ggml_context * ctx, const ModelSpec & spec, int il, const Block & b, const FrozenTensors & fz,
                                   const GraphInputs & in, ggml_tensor * x, ggml_tensor * m, const BuildOptions & opt) {
    const bool d = opt.ordinary && !opt.primal;  // the derivative terms (the primal pass computes the values)
    const LayerWeights & L = spec.layers[(size_t) il];
    switch (b.kind) {
    case BlockKind::Norm:
        if (d && !opt.relevance) return norm_d(ctx, x, (fz.*b.coef)[il], (fz.*b.nhat)[il], b.p.w, b.center);
        return norm(ctx, x, (fz.*b.coef)[il], b.p.w, b.p.b, b.center, opt);
    case BlockKind::Proj:
        return b.ffn_order ? proj_ffn(ctx, b.p.w, b.p.b, b.p.s, x, opt) : proj_attn(ctx, b.p.w, b.p.s, b.p.b, x, opt);
    case BlockKind::Attend: {
        ggml_tensor * o = attend(ctx, x, (fz.*b.coef)[il], spec.head_dim, spec.n_head, spec.n_head_kv);
        return d ? ggml_add(ctx, o, attend_dp(ctx, spec, L, in, attention_tensors(fz, il), m, opt)) : o;
    }
    case BlockKind::Gate: {
        if (d && b.plain && !opt.relevance) return ggml_mul(ctx, x, fz.gate_d[il]);
        if (!d || b.plain) return ggml_mul(ctx, x, (fz.*b.coef)[il]);
        ggml_tensor * up = ggml_mul(ctx, x, (fz.*b.coef)[il]);
        if (opt.relevance) up = ggml_scale(ctx, up, 0.5f);  // the half rule
        return ggml_add(ctx, up, ggml_mul(ctx, proj_ffn(ctx, b.p.w, b.p.b, b.p.s, m, opt), fz.gate_d[il]));
    }
    case BlockKind::Experts: {
        ggml_tensor * ids = opt.primal ? fz.moe_ids[il] : in.moe_ids_batch.at((size_t) il);
        if (!d) return experts_forward(ctx, spec, L, x, ids, fz.gate_act[il], fz.moe_coef[il], opt.exact);
        // each chosen expert's own derivative (the gate's act' term), then the routing
        // weights' (x is the router's input m); relevance: half rule, routing detached
        const ExpertsDerivative dv{fz.gate_d[il], opt.relevance ? 0.5f : 1.0f};
        ggml_tensor * y = experts_forward(ctx, spec, L, x, ids, fz.gate_act[il], fz.moe_coef[il], opt.exact, &dv);
        return opt.relevance ? y : ggml_add(ctx, y, route_d(ctx, L, x, ids, fz.moe_w[il], fz.moe_out[il]));
    }
    }
    throw std::logic_error("unknown block");
}

// The block transposed; ordinary mode's attention and gate terms add their cotangent on the
// branch's normed input into *side.
static ggml_tensor * block_transpose(ggml_context * ctx, const ModelSpec & spec, int il, const Block & b, const FrozenTensors & fz,
                                     const GraphInputs & in, ggml_tensor * z, const BuildOptions & opt, ggml_tensor ** side) {
    const bool d = opt.ordinary;
    const LayerWeights & L = spec.layers[(size_t) il];
    auto add_side = [&](ggml_tensor * t) { *side = *side ? ggml_add(ctx, *side, t) : t; };
    switch (b.kind) {
    case BlockKind::Norm:
        if (d && !opt.relevance) return norm_d_t(ctx, z, (fz.*b.coef)[il], (fz.*b.nhat)[il], b.p.w, b.center);
        return norm_t(ctx, z, (fz.*b.coef)[il], b.p.w, b.center);
    case BlockKind::Proj:  // Wᵀ(s·z), either order of bias and scale
        if (b.p.s) z = ggml_mul(ctx, z, b.p.s);
        return matmul_t(ctx, b.p.w, z, opt);
    case BlockKind::Attend:
        if (d) add_side(attend_dp_t(ctx, spec, L, in, attention_tensors(fz, il), z, opt));
        return attend_t(ctx, z, (fz.*b.coef)[il], spec.head_dim, spec.n_head, spec.n_head_kv);
    case BlockKind::Gate: {
        if (d && b.plain && !opt.relevance) return ggml_mul(ctx, z, fz.gate_d[il]);
        if (!d || b.plain) return ggml_mul(ctx, z, (fz.*b.coef)[il]);
        ggml_tensor * g = ggml_mul(ctx, z, fz.gate_d[il]);
        if (b.p.s) g = ggml_mul(ctx, g, b.p.s);
        add_side(matmul_t(ctx, b.p.w, g, opt));
        ggml_tensor * up = ggml_mul(ctx, z, (fz.*b.coef)[il]);
        return opt.relevance ? ggml_scale(ctx, up, 0.5f) : up;
    }
    case BlockKind::Experts: {
        ggml_tensor * ids = in.moe_ids_batch.at((size_t) il);
        if (!d) return experts_transpose(ctx, spec, L, z, ids, fz.gate_act[il], fz.moe_coef[il]);
        const ExpertsDerivative dv{fz.gate_d[il], opt.relevance ? 0.5f : 1.0f};
        if (!opt.relevance) add_side(route_d_t(ctx, L, z, ids, fz.moe_w[il], fz.moe_out[il]));  // the router reads m
        return experts_transpose(ctx, spec, L, z, ids, fz.gate_act[il], fz.moe_coef[il], &dv);
    }
    }
    throw std::logic_error("unknown block");
}

// The branch on x; attn_normed: the attention branch's normed input, set by it and read by a
// shared norm (the same primitive on the same input, computed once).
static ggml_tensor * branch_forward(ggml_context * ctx, const ModelSpec & spec, int il, const Branch & br, FrozenTensors & fz,
                                    const GraphInputs & in, ggml_tensor * x, const BuildOptions & opt, ggml_tensor *& attn_normed) {
    ggml_tensor * m = nullptr;
    for (const Block & b : br.blocks) {
        if (b.kind != BlockKind::Norm && !m) m = x;
        if (opt.primal) freeze_block(ctx, spec, il, b, fz, in, x, m, opt);
        x = b.shared ? attn_normed : block_forward(ctx, spec, il, b, fz, in, x, m, opt);
    }
    if (br.tap == Tap::Attn) attn_normed = m;
    return x;
}

ggml_tensor * layer_forward(ggml_context * ctx, const ModelSpec & spec, int il, FrozenTensors & fz, const GraphInputs & in,
                            ggml_tensor * h, const BuildOptions & opt, Tap stop) {
    const LayerProgram prog = layer_program(ctx, spec, il);
    ggml_tensor * attn_normed = nullptr;
    for (const auto & step : prog.steps) {
        ggml_tensor * out = h;
        for (const Branch & br : step) {
            ggml_tensor * y = branch_forward(ctx, spec, il, br, fz, in, h, opt, attn_normed);
            if (br.tap == stop) return y;
            out = ggml_add(ctx, out, y);
        }
        h = out;
    }
    return h;
}

// A cotangent and whether it holds the last position only (BuildOptions::last_only).
struct Cotangent {
    ggml_tensor * t;
    bool last;
};

// The branch's blocks transposed in reverse order. A last-position cotangent reads the
// last-position coefficients until the attention spreads it over every key.
static Cotangent branch_transpose(ggml_context * ctx, const ModelSpec & spec, int il, const Branch & br, const FrozenTensors & fz,
                                  const FrozenTensors * at_last, const GraphInputs & in, Cotangent z, const BuildOptions & opt) {
    // the first block after the norm reads the normed input m: ordinary mode's side cotangents join there
    size_t first = 0;
    while (first < br.blocks.size() && br.blocks[first].kind == BlockKind::Norm) ++first;
    ggml_tensor * side = nullptr;
    for (auto b = br.blocks.rbegin(); b != br.blocks.rend(); ++b) {
        if (z.last && b->kind == BlockKind::Attend) {
            ggml_tensor * p = (fz.*b->coef)[il];  // [key, query, head]: the last query, every key
            const int64_t m = p->ne[0];
            ggml_tensor * p_last = ggml_view_3d(ctx, p, m, 1, p->ne[2], p->nb[1], p->nb[2], (size_t) (m - 1) * p->nb[1]);
            z = {attend_t(ctx, z.t, p_last, spec.head_dim, spec.n_head, spec.n_head_kv), false};
            continue;
        }
        z.t = block_transpose(ctx, spec, il, *b, z.last ? *at_last : fz, in, z.t, opt, &side);
        if ((size_t) (br.blocks.rend() - b) - 1 == first && side) z.t = ggml_add(ctx, z.t, side);
    }
    return z;
}

// acc + t; a last-position acc is added into the last position of an all-position t.
static Cotangent add(ggml_context * ctx, Cotangent acc, Cotangent t) {
    if (acc.last == t.last) return {ggml_add(ctx, acc.t, t.t), acc.last};
    if (!acc.last) throw std::logic_error("a branch cannot narrow the cotangent's positions");
    const int64_t m = t.t->ne[1];
    return {ggml_acc(ctx, t.t, acc.t, t.t->nb[1], t.t->nb[2], t.t->nb[3], (size_t) (m - 1) * t.t->nb[1]), false};
}

ggml_tensor * layer_transpose(ggml_context * ctx, const ModelSpec & spec, int il, const FrozenTensors & fz,
                              const FrozenTensors * at_last, const GraphInputs & in, ggml_tensor * d,
                              const BuildOptions & opt, Tap start) {
    const LayerProgram prog = layer_program(ctx, spec, il);
    Cotangent z{d, at_last != nullptr};
    int s = (int) prog.steps.size() - 1;
    if (start == Tap::Attn || start == Tap::Mlp) {  // d enters at that branch's output: no residual identity there
        for (; s >= 0; --s) {
            const Branch * hit = nullptr;
            for (const Branch & br : prog.steps[(size_t) s]) if (br.tap == start) hit = &br;
            if (!hit) continue;
            z = branch_transpose(ctx, spec, il, *hit, fz, at_last, in, z, opt);
            break;
        }
        --s;  // the steps before it
    }
    for (; s >= 0; --s) {  // each step h + Σ_b branch_b(h) transposed: d + Σ_b branch_bᵀ(d), last branch first
        const auto & step = prog.steps[(size_t) s];
        Cotangent acc = z;
        for (auto br = step.rbegin(); br != step.rend(); ++br) acc = add(ctx, acc, branch_transpose(ctx, spec, il, *br, fz, at_last, in, z, opt));
        z = acc;
    }
    if (z.last) throw std::logic_error("the cotangent did not reach every position");
    return z.t;
}

}  // namespace llj
