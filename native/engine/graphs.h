// The graph builders of the linearization, over ggml:
//   build_forward   — the network with every nonlinear coefficient either computed (primal
//                     pass, which records them) or read back frozen (the linear map L, JVP),
//                     over a batch of B input sequences at once;
//   build_transpose — the transpose Lᵀ (VJP), the same frozen structure walked backwards.
// Each layer is one program of paired blocks (native/engine/layer.h) that both walk.
// Both share the layout [d, n, B] (ggml order): B sequences of n positions of width d.
#pragma once

#include "arch.h"
#include "ggml.h"

#include <vector>

namespace llj {

// The frozen coefficients of docs/math.md §2, one set per layer, as graph tensors.
// Entries an architecture does not have (pre- or post-norms) stay null.
struct FrozenTensors {
    std::vector<ggml_tensor *> r_attn;       // [1, n]     1/rms of the attention-norm input
    std::vector<ggml_tensor *> probs;        // [n, n, H]  attention probabilities (key, query, head)
    std::vector<ggml_tensor *> r_attn_post;  // [1, n]     1/rms of the attention output (post-norm)
    std::vector<ggml_tensor *> r_ffn;        // [1, n]     1/rms of the FFN-norm input
    std::vector<ggml_tensor *> gate_act;     // [n_ff, n]  act(gate(h)), the frozen gate factor
    std::vector<ggml_tensor *> r_ffn_post;   // [1, n]     1/rms of the FFN output (post-norm)
    // routed experts (moe layers): gate_act is then [n_ff_exp, k, n] for the k chosen experts
    std::vector<ggml_tensor *> moe_ids;      // [k, n] i32  the chosen experts of each position
    std::vector<ggml_tensor *> moe_coef;     // [1, k, n]   router weight × the experts' up and down scales
    ggml_tensor * r_out = nullptr;           // [1, n]     1/rms before the output norm

    // Ordinary mode (BuildOptions::ordinary) also records what the derivative of each
    // coefficient reads (docs/math.md §5); null in detached linearizations.
    std::vector<ggml_tensor *> nh_attn, nh_attn_post, nh_ffn, nh_ffn_post;  // [d, n] each norm's x·r (centered for LayerNorm)
    std::vector<ggml_tensor *> att_q;        // [hd, H, n]    Q as the scores read it (after qk-norm, rope, scales)
    std::vector<ggml_tensor *> att_k;        // [hd, H_kv, n] K likewise
    std::vector<ggml_tensor *> att_v;        // [hd·H_kv, n]  V
    std::vector<ggml_tensor *> qn_q, qr_q, qn_k, qr_k;  // qk-norm: normalized Q/K and their 1/rms
    std::vector<ggml_tensor *> att_cap;      // [n, n, H]     the attention softcap's derivative 1 - tanh²
    std::vector<ggml_tensor *> gate_d;       // [n_ff, n]     gated FFN: up ⊙ act'(gate); plain: act'(z); moe: [n_ff_exp, k, n]
    std::vector<ggml_tensor *> moe_w;        // [1, k, n]     moe: the renormalized routing weights (ordinary, not relevance)
    std::vector<ggml_tensor *> moe_out;      // [d, k, n]     moe: each chosen expert's output, what its weight multiplies
    ggml_tensor * nh_out = nullptr;          // [d, n]        the final norm's x·r

    // The per-layer sets, in a fixed order.
    std::vector<std::vector<ggml_tensor *> *> per_layer() {
        return {&r_attn, &probs, &r_attn_post, &r_ffn, &gate_act, &r_ffn_post, &moe_ids, &moe_coef,
                &nh_attn, &nh_attn_post, &nh_ffn, &nh_ffn_post, &att_q, &att_k, &att_v, &qn_q, &qr_q, &qn_k, &qr_k,
                &att_cap, &gate_d, &moe_w, &moe_out};
    }
    // n_layer empty entries in every set.
    void reset(size_t n_layer) {
        for (auto * v : per_layer()) v->assign(n_layer, nullptr);
        r_out = nullptr;
        nh_out = nullptr;
    }
    // Every frozen tensor, in a fixed order (for copying them as a set).
    std::vector<ggml_tensor **> all() {
        std::vector<ggml_tensor **> out;
        for (size_t l = 0; l < probs.size(); ++l) {
            for (auto * v : per_layer()) out.push_back(&(*v)[l]);
        }
        out.push_back(&r_out);
        out.push_back(&nh_out);
        return out;
    }
};

struct GraphInputs {
    ggml_tensor * pos = nullptr;         // [n] i32 positions (primal, and ordinary linear passes: rope of the tangents)
    ggml_tensor * mask = nullptr;        // [n, n] causal mask (primal only)
    ggml_tensor * mask_swa = nullptr;    // [n, n] causal sliding-window mask (primal, SWA models)
    ggml_tensor * ones = nullptr;        // [1, n] of 1 (primal only, for 1/rms)
    ggml_tensor * attn_temp = nullptr;   // [1, 1, n] per-position Q temperature (primal and ordinary passes, when used)
    // Steering (primal, native/engine/session.cpp): [d, n] added to the residual stream after layer
    // BuildOptions::inject_layer, each column times that position's ‖h‖ when inject_norm_scaled.
    ggml_tensor * inject = nullptr;
    // linear passes of moe models: each layer's chosen experts repeated for the B sequences, [k, n·B] i32
    std::vector<ggml_tensor *> moe_ids_batch;
};

// Where a linear pass reads its result (forward) or injects its cotangent (transpose).
enum class Tap {
    Output,    // the final norm's output (the model's y)
    Residual,  // the residual stream after layer `layer`
    Attn,      // the attention branch output of layer `layer` (after its post-norm, before the add)
    Mlp,       // the FFN branch output of layer `layer` (likewise)
};

struct BuildOptions {
    bool primal = false;  // compute and record the frozen values (B must be 1)
    // The true derivative instead of the detached map: each frozen coefficient's own
    // derivative term is added (docs/math.md §5). Primal: also record what those terms read.
    // Linear passes then cover every position (first_position 0, no last_only).
    bool ordinary = false;
    // With ordinary: the relevance rules of the R-lens (RelP) instead of the true derivative —
    // residual-stream norms and activation factors detached, a gate's product split in half
    // between its two factors, attention ordinary (docs/math.md §5).
    bool relevance = false;
    bool bias = false;    // include the bias terms (primal, and the constant term c)
    bool exact = true;    // dequantize weights to F32 for every product (docs/precision.md)
    bool tiled = true;    // exact products on quantized CPU weights through the tiled kernel (native/engine/tiled.h)
    int from_layer = 0;   // linear passes: x is the residual stream entering this layer
    Tap tap = Tap::Output;
    int tap_layer = -1;   // the layer of a Residual/Attn/Mlp tap
    // Linear passes over positions [first_position, n) only. Forward: causal attention keeps
    // earlier positions at zero when the tangents are zero there. Transpose: the cotangents
    // on positions >= first_position depend only on those positions, so they are exact.
    int first_position = 0;
    // Transpose of the output map: u holds the last position only, [d, 1, B] (dense models;
    // the top layer then runs on that position).
    bool last_only = false;
    // The BLAS backend runs the products: transposed products as outer products (sgemm).
    bool blas = false;
    // The layer after which GraphInputs::inject is added (when given), and whether each of
    // its columns is scaled by the norm of the residual stream there at that position.
    int inject_layer = -1;
    bool inject_norm_scaled = false;
    // Primal: keep the frozen values as graph outputs (false when only the result is read,
    // e.g. generation: the scheduler may then reuse their memory).
    bool keep_frozen = true;
};

// x: [d, n, B], the residual stream entering layer opt.from_layer (the input embeddings for
// 0). Returns the tapped quantity at every position, [d, n, B] (default: the final norm's
// output). In primal mode, fills `frozen` and, if given, `layer_inputs` (the residual
// stream entering each layer) and `final_residual` (the stream before the final norm).
ggml_tensor * build_forward(ggml_context * ctx, const ModelSpec & spec, FrozenTensors & frozen,
                            const GraphInputs & in, ggml_tensor * x, const BuildOptions & opt,
                            std::vector<ggml_tensor *> * layer_inputs, ggml_tensor ** final_residual = nullptr);

// u: cotangent on the tapped quantity (opt.tap) at positions [opt.first_position, n),
// [d, n - first_position, B]. Returns the cotangent on the residual stream entering layer
// opt.from_layer at those positions, same shape.
ggml_tensor * build_transpose(ggml_context * ctx, const ModelSpec & spec, const FrozenTensors & frozen,
                              const GraphInputs & in, ggml_tensor * u, const BuildOptions & opt);

// A weight ready for an F32 product: dequantized in the graph in exact mode (per layer,
// never the whole model at once).
ggml_tensor * weight_f32(ggml_context * ctx, ggml_tensor * w, bool exact);

}  // namespace llj
