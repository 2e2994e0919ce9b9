// The primitives of the linear passes, each linear op paired with its transpose (x ↦ A x and
// z ↦ Aᵀ z with the same frozen coefficients), and the primal computations that record those
// coefficients. native/engine/layer.cpp describes a layer as a sequence of them.
// Layout [d, n, B] (ggml order) throughout: B sequences of n positions of width d.
#pragma once

#include "graphs.h"

namespace llj {

// W x and Wᵀ z: dense, tiled (quantized weights) or BLAS outer products as BuildOptions say.
ggml_tensor * matmul(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, const BuildOptions & opt);
ggml_tensor * matmul_t(ggml_context * ctx, ggml_tensor * w, ggml_tensor * z, const BuildOptions & opt);

// One projection: weight, bias and per-tensor scale as the graph applies them.
struct Projection {
    ggml_tensor * w = nullptr, * b = nullptr, * s = nullptr;
};
// (W x)·s + b, as llama.cpp's attention applies it; and (W x + b)·s, as its FFN does.
// The transpose of either is Wᵀ(s·z) (the bias is a constant).
ggml_tensor * proj_attn(ggml_context * ctx, ggml_tensor * w, ggml_tensor * s, ggml_tensor * b, ggml_tensor * x, const BuildOptions & opt);
ggml_tensor * proj_ffn(ggml_context * ctx, ggml_tensor * w, ggml_tensor * b, ggml_tensor * s, ggml_tensor * x, const BuildOptions & opt);
// Q (0), K (1) or V (2) of a layer, separate or as rows of the fused attn_qkv.
Projection qkv(ggml_context * ctx, const ModelSpec & spec, const LayerWeights & L, int which);
// The FFN's gate (0) or up (1) projection, separate or as rows of the fused [gate; up].
Projection gate_up(ggml_context * ctx, const ModelSpec & spec, const LayerWeights & L, int which);

// o = P v per head (GQA groups as llama.cpp), and its transpose; probs [n_key, n_query, H].
ggml_tensor * attend(ggml_context * ctx, ggml_tensor * v, ggml_tensor * probs, int hd, int n_head, int n_head_kv);
ggml_tensor * attend_t(ggml_context * ctx, ggml_tensor * dout, ggml_tensor * probs, int hd, int n_head, int n_head_kv);
// What the ordinary derivative of the probabilities reads (primal, BuildOptions::ordinary).
struct AttentionRecord {
    ggml_tensor * q = nullptr, * k = nullptr;    // [hd, H, n], [hd, H_kv, n] as the scores read them
    ggml_tensor * qn_q = nullptr, * qr_q = nullptr, * qn_k = nullptr, * qr_k = nullptr;  // qk-norm x·r and r
    ggml_tensor * cap = nullptr;                 // [n, n, H] softcap derivative
};
// Primal: the frozen probabilities of one layer from its attention input a (and, given rec,
// what their derivative reads).
ggml_tensor * attention_probs(ggml_context * ctx, const ModelSpec & spec, const LayerWeights & L, const GraphInputs & in,
                              ggml_tensor * a, const BuildOptions & opt, AttentionRecord * rec = nullptr);
// Ordinary mode: the probabilities' own term of o = P v, dP·v, for the tangent da of the
// attention input [d, n, B]; and its transpose, the cotangent on a from dout [hd·H, n, B].
// fz_* are this layer's recorded tensors (P, Q, K, V, qk-norm, softcap).
struct AttentionTensors {
    ggml_tensor * probs, * q, * k, * v, * qn_q, * qr_q, * qn_k, * qr_k, * cap;
};
ggml_tensor * attend_dp(ggml_context * ctx, const ModelSpec & spec, const LayerWeights & L, const GraphInputs & in,
                        const AttentionTensors & t, ggml_tensor * da, const BuildOptions & opt);
ggml_tensor * attend_dp_t(ggml_context * ctx, const ModelSpec & spec, const LayerWeights & L, const GraphInputs & in,
                          const AttentionTensors & t, ggml_tensor * dout, const BuildOptions & opt);

// Norms with their coefficient r frozen: h·r·w, or (center) (h - mean)·r·w + b; and the transpose.
ggml_tensor * norm(ggml_context * ctx, ggml_tensor * h, ggml_tensor * r, ggml_tensor * w, ggml_tensor * b, bool center,
                   const BuildOptions & opt);
ggml_tensor * norm_t(ggml_context * ctx, ggml_tensor * dy, ggml_tensor * r, ggml_tensor * w, bool center);
// Ordinary mode: a norm's true derivative, w·r·(x - nh·mean(nh·x)) with nh = x·r at the
// primal (x centered first for LayerNorm; eps included through r), and its transpose.
ggml_tensor * norm_d(ggml_context * ctx, ggml_tensor * x, ggml_tensor * r, ggml_tensor * nh, ggml_tensor * w, bool center);
ggml_tensor * norm_d_t(ggml_context * ctx, ggml_tensor * z, ggml_tensor * r, ggml_tensor * nh, ggml_tensor * w, bool center);
ggml_tensor * scaled(ggml_context * ctx, ggml_tensor * h, ggml_tensor * r, ggml_tensor * w);  // h·r·w
ggml_tensor * centered(ggml_context * ctx, ggml_tensor * h);                                  // h - mean(h), self-transpose
// Primal: 1/sqrt(mean(h²) + eps) per position.
ggml_tensor * rms_inverse(ggml_context * ctx, ggml_tensor * h, ggml_tensor * ones, float eps);

// Primal: the frozen gate factor act(gate(m)) (gated FFNs), or s(z) = act(z)/z for a plain
// activation act(z) = z·s(z) (divided by ffn_act.scales when present).
ggml_tensor * gate_activation(ggml_context * ctx, const ArchSpec & arch, ggml_tensor * g);
ggml_tensor * activation_factor(ggml_context * ctx, const ArchSpec & arch, ggml_tensor * z, ggml_tensor * act_scales);
// Ordinary mode: y ⊙ act'(z), the derivative of the ideal activation (ggml's CPU GELU reads
// an F16 table; its derivative is that of the function the table samples).
ggml_tensor * activation_derivative(ggml_context * ctx, const ArchSpec & arch, ggml_tensor * z, ggml_tensor * y);

// The routed FFN with routing, weights and gate activations frozen: Σ_k coef_k · down_k(G_k ⊙ up_k(m)),
// and its transpose. ids: the chosen experts of each of the n·B columns.
// Ordinary mode (given dv): each chosen expert's own derivative, the inner factor
// G_k ⊙ up_k(dm) becoming up_factor·G_k ⊙ up_k(dm) + gate_d_k ⊙ gate_k(dm) (the routing
// weights' term is route_d's).
struct ExpertsDerivative {
    ggml_tensor * gate_d;  // [ff, k, n] up_k(m) ⊙ silu'(g_k) × gate scale (relevance: half of up_k(m) ⊙ silu(g_k)/g_k × scale)
    float up_factor;       // 1, or ½ (relevance's half rule)
};
ggml_tensor * experts_forward(ggml_context * ctx, const ModelSpec & spec, const LayerWeights & L, ggml_tensor * m,
                              ggml_tensor * ids, ggml_tensor * G, ggml_tensor * coef, bool exact,
                              const ExpertsDerivative * dv = nullptr);
ggml_tensor * experts_transpose(ggml_context * ctx, const ModelSpec & spec, const LayerWeights & L, ggml_tensor * dd,
                                ggml_tensor * ids, ggml_tensor * G, ggml_tensor * coef, const ExpertsDerivative * dv = nullptr);
// Primal: the router (ids [k, n], gate activations [ff, k, n], coefficients [1, k, n]).
struct Routing {
    ggml_tensor * ids, * G, * coef;
};
// What ordinary mode's expert terms read (primal, BuildOptions::ordinary).
struct RoutingRecord {
    ggml_tensor * w = nullptr;       // [1, k, n]  the renormalized routing weights (before expert_weights_scale)
    ggml_tensor * out = nullptr;     // [d, k, n]  each chosen expert's output, what w_k multiplies (scales included)
    ggml_tensor * gate_d = nullptr;  // [ff, k, n] ExpertsDerivative::gate_d
};
Routing route(ggml_context * ctx, const ModelSpec & spec, const LayerWeights & L, ggml_tensor * m, const BuildOptions & opt,
              RoutingRecord * rec = nullptr);
// Ordinary mode: the routing weights' term Σ_k dw_k · out_k for the tangent dm [d, n, B] of
// the router's input, the chosen experts held fixed; and its transpose (cotangent dd [d, n, B]
// → the cotangent on m).
ggml_tensor * route_d(ggml_context * ctx, const LayerWeights & L, ggml_tensor * dm, ggml_tensor * ids, ggml_tensor * w, ggml_tensor * out);
ggml_tensor * route_d_t(ggml_context * ctx, const LayerWeights & L, ggml_tensor * dd, ggml_tensor * ids, ggml_tensor * w, ggml_tensor * out);

}  // namespace llj
