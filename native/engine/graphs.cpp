// The model-level passes: the layers' programs (native/engine/layer.cpp) from the input to the tap,
// forwards or transposed, between the input embeddings and the final norm.
#include "graphs.h"

#include "layer.h"
#include "primitives.h"

#include <stdexcept>

namespace llj {

// The frozen coefficients restricted to positions [p0, n): views (the attention block is
// made contiguous, a small copy).
static ggml_tensor * positions_from(ggml_context * ctx, ggml_tensor * t, int64_t p0) {
    if (!t) return nullptr;
    const int pd = ggml_n_dims(t) - 1;  // positions are the outermost dimension
    const int64_t n = t->ne[pd] - p0;
    if (pd == 1) return ggml_view_2d(ctx, t, t->ne[0], n, t->nb[1], (size_t) p0 * t->nb[1]);
    return ggml_view_3d(ctx, t, t->ne[0], t->ne[1], n, t->nb[1], t->nb[2], (size_t) p0 * t->nb[2]);
}

static FrozenTensors frozen_from(ggml_context * ctx, const FrozenTensors & fz, int64_t p0) {
    FrozenTensors s = fz;
    for (size_t l = 0; l < fz.probs.size(); ++l) {
        for (auto * v : {&s.r_attn, &s.r_attn_post, &s.r_ffn, &s.gate_act, &s.r_ffn_post, &s.moe_coef}) (*v)[l] = positions_from(ctx, (*v)[l], p0);
        ggml_tensor * p = fz.probs[l];  // [key, query, head]: both position dimensions
        const int64_t n = p->ne[0] - p0;
        s.probs[l] = ggml_cont(ctx, ggml_view_3d(ctx, p, n, n, p->ne[2], p->nb[1], p->nb[2], (size_t) p0 * (p->nb[0] + p->nb[1])));
        s.moe_ids[l] = nullptr;  // linear passes take the ids from GraphInputs
    }
    s.r_out = positions_from(ctx, fz.r_out, p0);
    return s;
}

// The layer whose output (or branch output) a pass taps.
static int tap_layer(const ModelSpec & spec, const BuildOptions & opt) {
    return opt.tap == Tap::Output ? spec.n_layer - 1 : opt.tap_layer;
}
// Which part of layer il a pass stops at (forward) or starts from (transpose): a branch
// output in the tapped layer, else the whole layer.
static Tap layer_tap(const ModelSpec & spec, const BuildOptions & opt, int il) {
    return il == tap_layer(spec, opt) && (opt.tap == Tap::Attn || opt.tap == Tap::Mlp) ? opt.tap : Tap::Output;
}

// Steering: h_k + v_k (· ‖h_k‖), where llama.cpp adds a control vector.
static ggml_tensor * inject(ggml_context * ctx, ggml_tensor * h, const GraphInputs & in, const BuildOptions & opt) {
    ggml_tensor * v = in.inject;
    if (opt.inject_norm_scaled) v = ggml_mul(ctx, v, ggml_sqrt(ctx, ggml_sum_rows(ctx, ggml_sqr(ctx, h))));
    return ggml_add(ctx, h, v);
}

ggml_tensor * build_forward(ggml_context * ctx, const ModelSpec & spec, FrozenTensors & fz_all, const GraphInputs & in,
                            ggml_tensor * x, const BuildOptions & opt, std::vector<ggml_tensor *> * layer_inputs,
                            ggml_tensor ** final_residual) {
    // A recording primal pass runs the whole network; generation's unrecorded one may run a
    // segment of its layers (native/engine/session.cpp).
    if (opt.primal && (x->ne[2] != 1 || (opt.keep_frozen && (opt.from_layer != 0 || opt.tap != Tap::Output)) ||
                       (opt.tap != Tap::Output && opt.tap != Tap::Residual))) {
        throw std::logic_error("the primal pass runs one whole sequence");
    }
    const int last = tap_layer(spec, opt);
    if (opt.from_layer < 0 || last < opt.from_layer - (opt.tap == Tap::Residual ? 1 : 0) || last >= spec.n_layer) {
        throw std::logic_error("bad layer range");
    }
    if (opt.primal) fz_all.reset((size_t) spec.n_layer);
    if (opt.primal && opt.first_position != 0) throw std::logic_error("the primal pass covers every position");
    // the derivative of the probabilities reads every key: no truncated ordinary passes
    if (opt.ordinary && opt.first_position != 0) throw std::logic_error("ordinary passes cover every position");
    FrozenTensors sliced;
    if (opt.first_position > 0) sliced = frozen_from(ctx, fz_all, opt.first_position);
    FrozenTensors & fz = opt.first_position > 0 ? sliced : fz_all;

    ggml_tensor * h = x;
    for (int il = opt.from_layer; il <= last; ++il) {
        if (layer_inputs) {
            ggml_set_output(h);
            layer_inputs->push_back(h);
        }
        const Tap stop = layer_tap(spec, opt, il);
        ggml_tensor * y = layer_forward(ctx, spec, il, fz, in, h, opt, stop);
        if (stop != Tap::Output) return y;  // a branch output of the tapped layer
        h = in.inject && il == opt.inject_layer ? inject(ctx, y, in, opt) : y;
        ggml_format_name(h, "l_out-%d", il);  // observed for progress reports
    }
    if (opt.tap == Tap::Residual) return h;
    if (final_residual) {
        ggml_set_output(h);
        *final_residual = h;
    }
    const bool ln = spec.arch.norms.kind == NormKind::Layer;
    if (opt.primal) {
        ggml_tensor * c = ln ? centered(ctx, h) : h;
        fz.r_out = freeze(rms_inverse(ctx, c, in.ones, spec.norm_eps), "r_out", -1, opt);
        if (opt.ordinary && !opt.relevance) fz.nh_out = freeze(ggml_mul(ctx, c, fz.r_out), "nh_out", -1, opt);
    }
    if (opt.ordinary && !opt.relevance && !opt.primal) return norm_d(ctx, h, fz.r_out, fz.nh_out, spec.output_norm, ln);
    return norm(ctx, h, fz.r_out, spec.output_norm, spec.output_norm_b, ln, opt);
}

ggml_tensor * build_transpose(ggml_context * ctx, const ModelSpec & spec, const FrozenTensors & fz_all, const GraphInputs & in,
                              ggml_tensor * u, const BuildOptions & opt) {
    // transposed products always use F32 weights (there is no transposed quantized kernel)
    const int last = tap_layer(spec, opt);
    const bool ln = spec.arch.norms.kind == NormKind::Layer;
    FrozenTensors sliced;
    if (opt.first_position > 0) sliced = frozen_from(ctx, fz_all, opt.first_position);
    const FrozenTensors & fz = opt.first_position > 0 ? sliced : fz_all;
    // last_only: the cotangent sits on the last position only, and everything of the top layer
    // above its attention acts per position: that part runs on the one position (at_last).
    FrozenTensors at_last;
    ggml_tensor * dh = u;
    if (opt.ordinary && (opt.last_only || opt.first_position != 0)) throw std::logic_error("ordinary passes cover every position");
    if (opt.ordinary && !opt.relevance && opt.tap == Tap::Output) {
        dh = norm_d_t(ctx, u, fz.r_out, fz.nh_out, spec.output_norm, ln);
    } else if (opt.last_only) {
        if (opt.tap != Tap::Output || spec.n_expert > 0) throw std::logic_error("last_only is for dense models' output cotangents");
        at_last = frozen_from(ctx, fz, fz.probs[(size_t) last]->ne[0] - 1);
        dh = norm_t(ctx, u, at_last.r_out, spec.output_norm, ln);
    } else if (opt.tap == Tap::Output) {
        dh = norm_t(ctx, u, fz.r_out, spec.output_norm, ln);
    }
    for (int il = last; il >= opt.from_layer; --il) {
        const FrozenTensors * narrow = opt.last_only && il == last ? &at_last : nullptr;
        dh = layer_transpose(ctx, spec, il, fz, narrow, in, dh, opt, layer_tap(spec, opt, il));
    }
    return dh;
}

}  // namespace llj
