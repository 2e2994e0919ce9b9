// The linearization of one prompt: the primal pass records the frozen coefficients, then
// the linear map L (jvp) and its transpose (vjp) run over batches, and the full detached
// Jacobian is assembled from VJPs. One NativeLinearization per prompt; its passes are
// serialized (one graph scheduler), and each runs on a worker thread.
#include "arch.h"
#include "common.h"
#include "graphs.h"
#include "model.h"
#include "primal.h"
#include "runner.h"
#include "tiled.h"

#include "ggml-alloc.h"
#include "llama.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <mutex>
#include <thread>

namespace llj {

// Whether the model's products will use the tiled kernel (quantized/F16 weights in host memory).
bool has_tiled_weights(const ModelSpec & spec) {
    for (const auto & L : spec.layers) {
        for (ggml_tensor * w : {L.wv, L.wqkv, L.wo, L.up, L.up_gate, L.down}) {
            if (w && tiled_eligible(w)) return true;
        }
    }
    return false;
}

struct LinState {
    const llama_model * model = nullptr;
    ModelSpec spec;
    std::unique_ptr<GraphRunner> runner;
    bool exact = true;
    bool use_blas = true;
    bool tiled = true;  // the tiled dequantize-and-multiply kernel for quantized CPU weights (native/tiled.h)
    bool ordinary = false;  // the true derivative, not the detached map (BuildOptions::ordinary)
    bool relevance = false;  // with ordinary: the R-lens's relevance rules (BuildOptions::relevance)
    int n = 0, d = 0;
    size_t max_batch = 1;
    std::mutex mu;

    std::vector<int32_t> tokens;           // empty when built from embeddings
    std::vector<float> x;                  // [n, d] input embeddings
    std::vector<float> hidden;             // [n, d] output of the final norm, every position
    std::vector<float> final_residual;     // [n, d] the residual stream entering the final norm
    std::vector<float> logits;             // [n_vocab], last position (after a final softcap)
    std::vector<float> logits_raw;         // [n_vocab], before the final softcap (same when none)
    std::vector<std::vector<float>> layer_inputs;  // [n, d] each
    std::vector<float> bias_term;          // [d], empty for a linear (bias-free) model
    // The frozen coefficients, kept in one host backend buffer for the life of the
    // linearization and read in place by every linear pass (no per-pass copies).
    FrozenTensors frozen;
    std::vector<std::vector<int32_t>> moe_ids;  // host copy of the chosen experts [k·n] per moe layer
    ggml_context * frozen_ctx = nullptr;
    ggml_backend_buffer_t frozen_buf = nullptr;
    // Holds the model for as long as any worker holds this state (released last, below).
    std::unique_ptr<ModelUse> use;

    ~LinState() {
        if (frozen_buf) ggml_backend_buffer_free(frozen_buf);
        if (frozen_ctx) ggml_free(frozen_ctx);
        runner.reset();
        use.reset();
    }

    size_t graph_size() const {
        // ordinary moe layers sum their k experts three more times (the gate term, the routing term)
        const size_t per_layer = (size_t) ((ordinary ? 400 : 200) + 8 * (spec.n_head / spec.n_head_kv + spec.n_expert_used) +
                                           (ordinary ? 8 * spec.n_expert_used : 0));
        return per_layer * (size_t) spec.n_layer + 512;
    }
};

// Every graph input is named, so that an error about one says which.
static ggml_tensor * new_input(ggml_context * ctx, const char * name, ggml_type type, int64_t ne0, int64_t ne1 = 1, int64_t ne2 = 1) {
    ggml_tensor * t = ggml_new_tensor_3d(ctx, type, ne0, ne1, ne2);
    ggml_set_name(t, name);
    ggml_set_input(t);
    return t;
}

// Inputs only some graphs read (the global mask in an all-sliding-window model, positions
// without rope, ...): the scheduler allocates only what the graph uses, so skip the others.
static void set_optional_input(ggml_tensor * t, const void * data, size_t bytes) {
    if (t && t->buffer) tensor_set(t, data, bytes);
}

static void read_all(const ggml_tensor * t, std::vector<float> & out) {
    out.resize((size_t) ggml_nelements(t));
    tensor_get(t, out.data(), out.size() * sizeof(float));
}

// Copies the frozen coefficients computed by the primal graph into their persistent tensors.
// The primal record's copies (hundreds of MB at long prompts: the attention probabilities)
// run after the graph, where its abort check no longer looks: check between them.
static void check_abort(const LinState & s) {
    if (s.runner->abort_requested()) throw Aborted();
}

static void store_frozen(LinState & s, FrozenTensors & computed) {
    auto from = computed.all();
    FrozenTensors & f = s.frozen;
    f.reset(computed.probs.size());
    auto to = f.all();
    ggml_init_params p = {ggml_tensor_overhead() * from.size(), nullptr, true};
    s.frozen_ctx = ggml_init(p);
    for (size_t i = 0; i < from.size(); ++i) {
        if (*from[i]) *to[i] = ggml_dup_tensor(s.frozen_ctx, *from[i]);
    }
    s.frozen_buf = ggml_backend_alloc_ctx_tensors_from_buft(s.frozen_ctx, ggml_backend_cpu_buffer_type());
    if (!s.frozen_buf) throw std::runtime_error("cannot allocate memory for the frozen coefficients");
    // into the host buffer in 16 MiB pieces, checking the abort between them
    constexpr size_t piece = (size_t) 16 << 20;
    for (size_t i = 0; i < from.size(); ++i) {
        if (!*from[i]) continue;
        const size_t bytes = ggml_nbytes(*from[i]);
        for (size_t off = 0; off < bytes; off += piece) {
            check_abort(s);
            ggml_backend_tensor_get(*from[i], (char *) (*to[i])->data + off, off, std::min(piece, bytes - off));
        }
    }
    s.moe_ids.assign(computed.moe_ids.size(), {});
    for (size_t l = 0; l < computed.moe_ids.size(); ++l) {
        if (!computed.moe_ids[l]) continue;
        s.moe_ids[l].resize((size_t) ggml_nelements(computed.moe_ids[l]));
        tensor_get(computed.moe_ids[l], s.moe_ids[l].data(), s.moe_ids[l].size() * sizeof(int32_t));
    }
}

// Inputs of a linear pass over B sequences of positions [p0, n): each moe layer's chosen
// experts, repeated per sequence.
static GraphInputs linear_inputs(ggml_context * ctx, const LinState & s, int B, int p0 = 0) {
    GraphInputs in;
    if (s.ordinary) {  // the tangents of Q and K are roped at the same positions (every position: p0 is 0)
        in.pos = new_input(ctx, "inp_pos", GGML_TYPE_I32, s.n);
        if (s.spec.attn_temp_scale != 0.0f) in.attn_temp = new_input(ctx, "inp_attn_temp", GGML_TYPE_F32, 1, 1, s.n);
    }
    if (s.spec.n_expert == 0) return in;
    for (const auto & ids : s.moe_ids) {
        in.moe_ids_batch.push_back(ids.empty() ? nullptr : new_input(ctx, "moe_ids", GGML_TYPE_I32, s.spec.n_expert_used, (int64_t) (s.n - p0) * B));
    }
    return in;
}
static void set_position_inputs(const GraphInputs & in, const ModelSpec & sp, int n);

static void set_linear_inputs(const GraphInputs & in, const LinState & s, int B, int p0 = 0) {
    if (s.ordinary) set_position_inputs(in, s.spec, s.n);
    const size_t k = (size_t) s.spec.n_expert_used;
    for (size_t l = 0; l < in.moe_ids_batch.size(); ++l) {
        // (a pass from a later layer, or tapping an earlier one, never reads some layers' ids)
        if (!in.moe_ids_batch[l] || !in.moe_ids_batch[l]->buffer) continue;
        std::vector<int32_t> rep;
        rep.reserve(s.moe_ids[l].size() * (size_t) B);
        for (int b = 0; b < B; ++b) rep.insert(rep.end(), s.moe_ids[l].begin() + (size_t) p0 * k, s.moe_ids[l].end());
        tensor_set(in.moe_ids_batch[l], rep.data(), rep.size() * sizeof(int32_t));
    }
}

// The inputs of a primal pass over n positions (positions, causal and sliding-window masks,
// ones for 1/rms, per-position attention temperature); shared with native/generate.cpp.
GraphInputs primal_inputs(ggml_context * ctx, const ModelSpec & sp, int n) {
    GraphInputs in;
    in.pos = new_input(ctx, "inp_pos", GGML_TYPE_I32, n);
    in.mask = new_input(ctx, "inp_mask", GGML_TYPE_F32, n, n);
    in.ones = new_input(ctx, "inp_ones", GGML_TYPE_F32, 1, n);
    if (sp.n_swa > 0) in.mask_swa = new_input(ctx, "inp_mask_swa", GGML_TYPE_F32, n, n);
    if (sp.attn_temp_scale != 0.0f) in.attn_temp = new_input(ctx, "inp_attn_temp", GGML_TYPE_F32, 1, 1, n);
    return in;
}

// Positions 0..n-1 and the per-position attention temperature.
static void set_position_inputs(const GraphInputs & in, const ModelSpec & sp, int n) {
    std::vector<int32_t> pos((size_t) n);
    for (int i = 0; i < n; ++i) pos[(size_t) i] = i;
    // unused (so unallocated) when nothing reads positions: no rope, embeddings given (gpt2)
    set_optional_input(in.pos, pos.data(), pos.size() * sizeof(int32_t));
    if (in.attn_temp) {  // llm_graph_input_attn_temp::set_input
        std::vector<float> temp((size_t) n);
        for (int i = 0; i < n; ++i) {
            temp[(size_t) i] = (float) (std::log(std::floor((i + sp.attn_temp_offset) / sp.attn_temp_floor) + 1.0) * sp.attn_temp_scale + 1.0);
        }
        set_optional_input(in.attn_temp, temp.data(), temp.size() * sizeof(float));
    }
}

void set_primal_inputs(const GraphInputs & in, const ModelSpec & sp, int n) {
    set_position_inputs(in, sp, n);
    // causal; the sliding window also masks keys with q - k >= n_swa (llama_hparams::is_masked_swa)
    std::vector<float> mask((size_t) n * n), mask_swa((size_t) n * n);
    for (int q = 0; q < n; ++q) {
        for (int k = 0; k < n; ++k) {
            // ALiBi models read -|q - k| where visible (llama_kv_cache::set_input_kq_mask)
            mask[(size_t) q * n + k] = k <= q ? (sp.max_alibi_bias > 0.0f ? (float) -(q - k) : 0.0f) : -INFINITY;
            mask_swa[(size_t) q * n + k] = k <= q && q - k < sp.n_swa ? 0.0f : -INFINITY;
        }
    }
    set_optional_input(in.mask, mask.data(), mask.size() * sizeof(float));
    set_optional_input(in.mask_swa, mask_swa.data(), mask_swa.size() * sizeof(float));
    std::vector<float> ones((size_t) n, 1.0f);
    set_optional_input(in.ones, ones.data(), ones.size() * sizeof(float));
}

ggml_tensor * token_embeddings(ggml_context * ctx, const ModelSpec & sp, ggml_tensor * ids, const GraphInputs & in) {
    const int64_t d = sp.n_embd, n = ids->ne[0];
    ggml_tensor * x = ggml_get_rows(ctx, sp.tok_embd, ids);
    if (sp.arch.input.scale_sqrt_d) x = ggml_scale(ctx, x, sqrtf((float) d));
    if (sp.pos_embd) x = ggml_add(ctx, x, ggml_get_rows(ctx, sp.pos_embd, in.pos));  // learned positions: x is the sum
    return ggml_reshape_3d(ctx, x, d, n, 1);
}

ggml_tensor * lm_head(ggml_context * ctx, const ModelSpec & sp, ggml_tensor * last, bool exact, bool tiled, ggml_tensor ** capped) {
    ggml_tensor * logits = exact && tiled && tiled_eligible(sp.output) ? tiled_mul(ctx, sp.output, last)  // one column
                                                                       : ggml_mul_mat(ctx, weight_f32(ctx, sp.output, exact), last);
    if (sp.output_scale) logits = ggml_mul(ctx, logits, sp.output_scale);
    if (sp.output_bias) logits = ggml_add(ctx, logits, sp.output_bias);
    *capped = nullptr;
    if (sp.final_softcap != 0.0f) {  // acts on the logits only: y and its linear system are unaffected
        *capped = ggml_scale(ctx, ggml_tanh(ctx, ggml_scale(ctx, logits, 1.0f / sp.final_softcap)), sp.final_softcap);
    }
    return logits;
}

// The primal pass: the real network on the prompt. With `record`, stores the frozen
// coefficients, the embeddings, the per-layer inputs and the logits into `s`; otherwise
// only returns the final hidden states of the given embeddings (the non-detached forward).
// `progress` (optional) gets the fraction of layers computed.
static void run_primal(LinState & s, const std::vector<float> * embeddings, bool record, std::vector<float> & hidden_out,
                       const std::function<bool(float)> * progress = nullptr) {
    const ModelSpec & sp = s.spec;
    const int n = s.n, d = s.d;
    ggml_context * ctx = s.runner->begin(s.graph_size());
    GraphInputs in = primal_inputs(ctx, sp, n);
    ggml_tensor * ids = nullptr;
    ggml_tensor * x;
    if (embeddings) {
        x = new_input(ctx, "inp_embd", GGML_TYPE_F32, d, n, 1);
    } else {
        ids = new_input(ctx, "inp_tokens", GGML_TYPE_I32, n);
        x = token_embeddings(ctx, sp, ids, in);
        ggml_set_output(x);
    }
    FrozenTensors fz;
    std::vector<ggml_tensor *> layer_in;
    BuildOptions opt;
    opt.primal = true;
    opt.bias = true;
    opt.exact = s.exact;
    opt.tiled = s.tiled;
    opt.ordinary = record && s.ordinary;
    opt.relevance = s.relevance;
    ggml_tensor * final_res = nullptr;
    ggml_tensor * y = build_forward(ctx, sp, fz, in, x, opt, record ? &layer_in : nullptr, record ? &final_res : nullptr);
    ggml_set_output(y);
    ggml_tensor * logits = nullptr, * logits_capped = nullptr;
    if (record) {
        ggml_tensor * last = ggml_view_2d(ctx, y, d, 1, y->nb[1], y->nb[1] * (n - 1));
        logits = lm_head(ctx, sp, last, s.exact, s.tiled, &logits_capped);
        ggml_set_output(logits);
        if (logits_capped) ggml_set_output(logits_capped);
    }
    ggml_cgraph * gf = ggml_new_graph_custom(ctx, s.graph_size(), false);
    ggml_build_forward_expand(gf, y);
    if (logits) ggml_build_forward_expand(gf, logits);
    if (logits_capped) ggml_build_forward_expand(gf, logits_capped);
    // what only ordinary mode's derivative terms read is no ancestor of y: compute it too
    if (record) for (ggml_tensor ** t : fz.all()) if (*t) ggml_build_forward_expand(gf, *t);

    // Layer outputs are named "l_out-<il>" by build_forward.
    GraphRunner::NodeObserver layers = {"l_out-", [&](const ggml_tensor * t) {
        int il = 0;
        if (std::sscanf(ggml_get_name(t), "l_out-%d", &il) == 1) (*progress)((float) (il + 1) / (float) sp.n_layer);
    }};
    s.runner->compute(gf, [&] {
        set_primal_inputs(in, sp, n);
        if (embeddings) tensor_set(x, embeddings->data(), embeddings->size() * sizeof(float));
        else tensor_set(ids, s.tokens.data(), s.tokens.size() * sizeof(int32_t));
    }, progress ? &layers : nullptr);

    read_all(y, hidden_out);
    if (!record) return;
    check_abort(s);
    read_all(x, s.x);
    read_all(final_res, s.final_residual);
    read_all(logits, s.logits_raw);
    if (logits_capped) read_all(logits_capped, s.logits);
    else s.logits = s.logits_raw;
    const size_t L = (size_t) sp.n_layer;
    s.layer_inputs.resize(L);
    for (size_t l = 0; l < L; ++l) {
        check_abort(s);
        read_all(layer_in[l], s.layer_inputs[l]);
    }
    store_frozen(s, fz);
    check_abort(s);
}

// Where a pass starts and what it reads: parsed from { fromLayer, tap, tapLayer }.
static BuildOptions tap_options(Napi::Env env, const Napi::Value & v, const LinState & s) {
    BuildOptions opt;
    opt.exact = s.exact;
    opt.tiled = s.tiled;
    if (!v.IsObject()) return opt;
    auto o = v.As<Napi::Object>();
    opt.from_layer = (int) get_number(o, "fromLayer", 0);
    const std::string tap = get_string(o, "tap", "output");
    if (tap == "output") opt.tap = Tap::Output;
    else if (tap == "residual") opt.tap = Tap::Residual;
    else if (tap == "attn") opt.tap = Tap::Attn;
    else if (tap == "mlp") opt.tap = Tap::Mlp;
    else throw Napi::RangeError::New(env, "tap must be \"output\", \"residual\", \"attn\" or \"mlp\"");
    const int L = s.spec.n_layer;
    opt.tap_layer = (int) get_number(o, "tapLayer", L - 1);
    if (opt.from_layer < 0 || opt.from_layer >= L) throw Napi::RangeError::New(env, "fromLayer must lie in [0, " + std::to_string(L) + ")");
    if (opt.tap != Tap::Output) {
        const int lowest = opt.tap == Tap::Residual ? opt.from_layer - 1 : opt.from_layer;
        if (opt.tap_layer < lowest || opt.tap_layer >= L) {
            throw Napi::RangeError::New(env, "tapLayer must lie in [" + std::to_string(lowest) + ", " + std::to_string(L) + ") for this fromLayer");
        }
    }
    return opt;
}

// L applied to B tangent sequences on positions [f, n) (f = opt.first_position; earlier
// positions are zero), v [B, n - f, d]: the output at those positions [B, n - f, d], or at
// the last one [B, d]. With `bias`, the detached affine map instead (used for c = map(0),
// and at the primal input for the value of a tapped quantity).
static void run_jvp(LinState & s, const float * v, int B, bool all_positions, bool bias, float * out, BuildOptions opt = {}) {
    const int n = s.n, d = s.d, f = opt.first_position, nv = n - f;
    // Positions before the first non-zero tangent stay zero through the causal network.
    int skip = nv - 1;
    for (int b = 0; b < B && skip > 0; ++b) {
        for (int i = 0; i < skip; ++i) {
            const float * row = v + ((size_t) b * nv + i) * d;
            if (std::any_of(row, row + d, [](float x) { return x != 0.0f; })) { skip = i; break; }
        }
    }
    if (bias) skip = 0;  // biases are non-zero everywhere (and f is 0 then)
    // The affine map is the detached one's, in ordinary linearizations too (their record holds
    // its coefficients): at the primal input it gives the tapped quantity itself.
    const bool ordinary = s.ordinary && !bias;
    // The pass runs on positions [p0, n): from the first non-zero tangent, or (ordinary mode,
    // whose attention term reads every key) from 0 with zeros before f.
    const int p0 = ordinary ? 0 : f + skip, m = n - p0;
    std::vector<float> xs;
    if (p0 != f) {
        xs.assign((size_t) B * m * d, 0.0f);
        const int from = std::max(p0, f);  // the first position copied
        for (int b = 0; b < B; ++b) {
            std::copy(v + ((size_t) b * nv + (from - f)) * d, v + (size_t) (b + 1) * nv * d, xs.begin() + ((size_t) b * m + (from - p0)) * d);
        }
    }
    ggml_context * ctx = s.runner->begin(s.graph_size());
    ggml_tensor * x = new_input(ctx, "inp_tangents", GGML_TYPE_F32, d, m, B);
    opt.bias = bias;
    opt.exact = s.exact;
    opt.tiled = s.tiled;
    opt.ordinary = ordinary;
    opt.relevance = s.relevance;
    opt.first_position = p0;
    GraphInputs in = linear_inputs(ctx, s, B, p0);
    ggml_tensor * y = build_forward(ctx, s.spec, s.frozen, in, x, opt, nullptr);
    if (!all_positions) y = ggml_cont(ctx, ggml_view_2d(ctx, y, d, B, y->nb[2], y->nb[1] * (m - 1)));
    ggml_set_output(y);
    ggml_cgraph * gf = ggml_new_graph_custom(ctx, s.graph_size(), false);
    ggml_build_forward_expand(gf, y);
    s.runner->compute(gf, [&] {
        set_linear_inputs(in, s, B, p0);
        tensor_set(x, p0 != f ? xs.data() : v, (size_t) B * m * d * sizeof(float));
    });
    if (!all_positions) {
        tensor_get(y, out, (size_t) B * d * sizeof(float));
    } else if (p0 == f) {
        tensor_get(y, out, (size_t) B * m * d * sizeof(float));
    } else {  // the computed positions [p0, n) into the asked ones [f, n), zeros where not computed
        std::vector<float> ys((size_t) B * m * d);
        tensor_get(y, ys.data(), ys.size() * sizeof(float));
        std::fill(out, out + (size_t) B * nv * d, 0.0f);
        const int from = std::max(p0, f);
        for (int b = 0; b < B; ++b) {
            std::copy(ys.begin() + ((size_t) b * m + (from - p0)) * d, ys.begin() + (size_t) (b + 1) * m * d, out + ((size_t) b * nv + (from - f)) * d);
        }
    }
}

// Lᵀ applied to B cotangents u ([B, d] on the last position, or [B, n - p0, d] on positions
// [p0, n) with all_positions; p0 = opt.first_position): the cotangent on the input
// embeddings at positions [p0, n), [B, n - p0, d] — exact there, as those positions depend
// only on later ones; earlier positions are not computed.
static void run_vjp(LinState & s, const float * u, int B, bool all_positions, float * out, BuildOptions opt = {}) {
    const int n = s.n, d = s.d, f = opt.first_position, nf = n - f;
    // Ordinary mode runs on every position (its attention term reads every key): the
    // cotangents then sit on [f, n) of n, and the result's positions [f, n) are read back.
    const int p0 = s.ordinary ? 0 : f, m = n - p0;
    opt.first_position = p0;
    opt.ordinary = s.ordinary;
    opt.relevance = s.relevance;
    // An output cotangent on the last position: the top layer runs on that position alone.
    opt.last_only = !s.ordinary && !all_positions && opt.tap == Tap::Output && s.spec.n_expert == 0 && m > 1;
    opt.blas = s.runner->uses_blas();
    opt.tiled = s.tiled;
    ggml_context * ctx = s.runner->begin(s.graph_size());
    ggml_tensor * ut = new_input(ctx, "inp_cotangents", GGML_TYPE_F32, d, opt.last_only ? 1 : m, B);
    GraphInputs in = linear_inputs(ctx, s, B, p0);
    ggml_tensor * dx = build_transpose(ctx, s.spec, s.frozen, in, ut, opt);
    if (p0 != f) dx = ggml_cont(ctx, ggml_view_3d(ctx, dx, d, nf, B, dx->nb[1], dx->nb[2], (size_t) (f - p0) * dx->nb[1]));
    ggml_set_output(dx);
    ggml_cgraph * gf = ggml_new_graph_custom(ctx, s.graph_size(), false);
    ggml_build_forward_expand(gf, dx);
    s.runner->compute(gf, [&] {
        set_linear_inputs(in, s, B, p0);
        if (opt.last_only || (all_positions && p0 == f)) {
            tensor_set(ut, u, (size_t) B * (opt.last_only ? 1 : m) * d * sizeof(float));
        } else {  // u's positions (all of [f, n), or the last) placed into the m computed ones
            std::vector<float> full((size_t) B * m * d, 0.0f);
            for (int b = 0; b < B; ++b) {
                if (all_positions) std::copy(u + (size_t) b * nf * d, u + (size_t) (b + 1) * nf * d, full.begin() + ((size_t) b * m + (f - p0)) * d);
                else std::copy(u + (size_t) b * d, u + (size_t) (b + 1) * d, full.begin() + ((size_t) b * m + m - 1) * d);
            }
            tensor_set(ut, full.data(), full.size() * sizeof(float));
        }
    });
    tensor_get(dx, out, (size_t) B * nf * d * sizeof(float));
}

// ---------------------------------------------------------------------------------------
// N-API surface

class NativeLinearization : public Napi::ObjectWrap<NativeLinearization> {
  public:
    static Napi::Function Define(Napi::Env env) {
        Napi::Function f = DefineClass(env, "NativeLinearization", {
            InstanceMethod("info", &NativeLinearization::Info),
            InstanceMethod("primal", &NativeLinearization::Primal),
            InstanceMethod("jvp", &NativeLinearization::Jvp),
            InstanceMethod("vjp", &NativeLinearization::Vjp),
            InstanceMethod("jacobian", &NativeLinearization::Jacobian),
            InstanceMethod("forward", &NativeLinearization::Forward),
            InstanceMethod("vocabProducts", &NativeLinearization::VocabProducts),
            InstanceMethod("lmHeadRows", &NativeLinearization::LmHeadRows),
            InstanceMethod("outputNorm", &NativeLinearization::OutputNorm),
            InstanceMethod("dispose", &NativeLinearization::Dispose),
        });
        env.GetInstanceData<AddonData>()->linearization_ctor = Napi::Persistent(f);
        return f;
    }
    explicit NativeLinearization(const Napi::CallbackInfo & info) : Napi::ObjectWrap<NativeLinearization>(info) {
        if (info.Length() != 2 || !info[0].IsExternal() || !info[1].IsObject()) {
            throw Napi::TypeError::New(info.Env(), "NativeLinearization is created by linearize()");
        }
        // linearize() hands over a heap copy of its shared pointer to the state: take it
        auto * handed = info[0].As<Napi::External<std::shared_ptr<LinState>>>().Data();
        state_ = std::move(*handed);
        delete handed;
        model_obj_ = Napi::Persistent(info[1].As<Napi::Object>());
        model_ = NativeModel::Unwrap(info[1].As<Napi::Object>());
        model_->acquire();  // the model may not be freed under a live linearization
    }
    ~NativeLinearization() override { release(); }

    std::shared_ptr<LinState> state(Napi::Env env) {
        if (!state_) throw Napi::Error::New(env, "[DISPOSED] the linearization has been disposed");
        return state_;
    }

  private:
    void release() {
        if (model_) {
            model_->release();
            model_ = nullptr;
        }
        state_.reset();
    }

    Napi::Value Info(const Napi::CallbackInfo & info);
    Napi::Value Primal(const Napi::CallbackInfo & info);
    Napi::Value Jvp(const Napi::CallbackInfo & info);
    Napi::Value Vjp(const Napi::CallbackInfo & info);
    Napi::Value Jacobian(const Napi::CallbackInfo & info);
    Napi::Value Forward(const Napi::CallbackInfo & info);
    Napi::Value VocabProducts(const Napi::CallbackInfo & info);
    Napi::Value LmHeadRows(const Napi::CallbackInfo & info);
    Napi::Value OutputNorm(const Napi::CallbackInfo & info);
    Napi::Value Dispose(const Napi::CallbackInfo & info) {
        release();
        return info.Env().Undefined();
    }

    std::shared_ptr<LinState> state_;
    Napi::ObjectReference model_obj_;
    NativeModel * model_ = nullptr;
};

Napi::Value NativeLinearization::Info(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto s = state(env);
    auto o = Napi::Object::New(env);
    o.Set("nTokens", s->n);
    o.Set("nEmbd", s->d);
    o.Set("nLayer", s->spec.n_layer);
    o.Set("nVocab", s->spec.n_vocab);
    o.Set("affine", s->spec.affine);
    o.Set("exact", s->exact);
    o.Set("ordinary", s->ordinary);
    o.Set("relevance", s->relevance);
    o.Set("nExpert", s->spec.n_expert);
    o.Set("maxBatch", Napi::Number::New(env, (double) s->max_batch));
    o.Set("blas", s->runner && s->runner->uses_blas());
    o.Set("tiled", s->tiled && has_tiled_weights(s->spec));
    auto ignored = Napi::Array::New(env);
    for (const auto & name : s->spec.ignored) ignored.Set(ignored.Length(), name);
    o.Set("ignoredTensors", ignored);
    return o;
}

Napi::Value NativeLinearization::Primal(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto s = state(env);
    std::lock_guard<std::mutex> lock(s->mu);
    auto o = Napi::Object::New(env);
    o.Set("embeddings", to_float32_array(env, s->x.data(), s->x.size()));
    o.Set("hidden", to_float32_array(env, s->hidden.data(), s->hidden.size()));
    o.Set("finalResidual", to_float32_array(env, s->final_residual.data(), s->final_residual.size()));
    o.Set("logits", to_float32_array(env, s->logits.data(), s->logits.size()));
    o.Set("logitsBeforeSoftcap", to_float32_array(env, s->logits_raw.data(), s->logits_raw.size()));
    o.Set("finalSoftcap", s->spec.final_softcap);
    auto layers = Napi::Array::New(env, s->layer_inputs.size());
    for (size_t l = 0; l < s->layer_inputs.size(); ++l) layers.Set(l, to_float32_array(env, s->layer_inputs[l].data(), s->layer_inputs[l].size()));
    o.Set("layerInputs", layers);
    o.Set("biasTerm", s->bias_term.empty() ? env.Null() : (Napi::Value) to_float32_array(env, s->bias_term.data(), s->bias_term.size()));
    // the chosen experts of each moe layer, [n, k] (null for a dense model)
    if (s->spec.n_expert == 0) {
        o.Set("experts", env.Null());
    } else {
        auto experts = Napi::Array::New(env, s->moe_ids.size());
        for (size_t l = 0; l < s->moe_ids.size(); ++l) {
            auto a = Napi::Int32Array::New(env, s->moe_ids[l].size());
            std::copy(s->moe_ids[l].begin(), s->moe_ids[l].end(), a.Data());
            experts.Set(l, a);
        }
        o.Set("experts", experts);
    }
    return o;
}

// Runs fn(state) on a worker thread with the state locked; resolves with a Float32Array.
// The abort flag also stops a graph mid-computation (GraphRunner's abort check).
using PassFn = std::function<void(LinState &, std::vector<float> &, const std::function<bool(float)> &)>;
static Napi::Promise queue_pass(Napi::Env env, std::shared_ptr<LinState> s, const Napi::Object & self, PassFn fn,
                                Napi::Value on_progress, Napi::Value abort) {
    auto keep = std::make_shared<Napi::ObjectReference>(Napi::Persistent(self));  // the linearization (and its model) stay alive meanwhile
    auto out = std::make_shared<std::vector<float>>();
    return queue(env, [s, keep, fn, out](const Job & job) {
        LogCapture log;
        std::lock_guard<std::mutex> lock(s->mu);
        AbortScope scope(*s->runner, job.aborted);
        try {
            fn(*s, *out, job.report);
        } catch (const std::exception & e) {
            throw error_with_log(e.what(), log);
        }
    }, [out](Napi::Env e) -> Napi::Value { return to_float32_array(e, out->data(), out->size()); }, on_progress, abort);
}

// Runs `pass` over the B columns in chunks of at most max_batch, reporting progress.
static void chunked(LinState & s, int B, size_t in_stride, size_t out_stride, const float * in, float * out,
                    const std::function<void(const float *, int, float *)> & pass, const std::function<bool(float)> & progress) {
    for (int b0 = 0; b0 < B; b0 += (int) s.max_batch) {
        int nb = std::min(B - b0, (int) s.max_batch);
        pass(in + (size_t) b0 * in_stride, nb, out + (size_t) b0 * out_stride);
        if (!progress((float) (b0 + nb) / (float) B)) throw Aborted();
    }
}

// The { firstPosition } of a pass's options: an integer in [0, n), default 0.
static int first_position_arg(Napi::Env env, const Napi::Value & v, int n) {
    const double p = v.IsObject() ? get_number(v.As<Napi::Object>(), "firstPosition", 0) : 0;
    if (p != std::floor(p) || p < 0 || p >= n) throw Napi::RangeError::New(env, "firstPosition must be an integer in [0, " + std::to_string(n) + ")");
    return (int) p;
}

// jvp(V: Float32Array [B·(n - firstPosition)·d], B, allPositions, onProgress?, abortFlag?,
//     { fromLayer, tap, tapLayer, firstPosition, affine }?) -> [B·d], or [B·(n - firstPosition)·d] with allPositions
Napi::Value NativeLinearization::Jvp(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto s = state(env);
    std::vector<float> v = float_array_arg(env, info[0], "tangents");
    int B = info[1].As<Napi::Number>().Int32Value();
    bool all = info[2].ToBoolean();
    BuildOptions opt = tap_options(env, info[5], *s);
    opt.first_position = first_position_arg(env, info[5], s->n);
    // The affine map L(v) + c (biases included): the quantity itself at the primal input.
    const bool affine = info[5].IsObject() && get_bool(info[5].As<Napi::Object>(), "affine", false);
    if (affine && opt.first_position != 0) throw Napi::RangeError::New(env, "the affine map covers every position (no firstPosition)");
    const int nv = s->n - opt.first_position;
    if (B < 1 || v.size() != (size_t) B * nv * s->d) {
        throw Napi::RangeError::New(env, "tangents must hold B·(n − firstPosition)·d = " + std::to_string(B) + "·" + std::to_string(nv) + "·" +
                                             std::to_string(s->d) + " values, got " + std::to_string(v.size()));
    }
    auto fn = [v = std::move(v), B, all, nv, affine, opt](LinState & st, std::vector<float> & out, const std::function<bool(float)> & progress) {
        const size_t in_stride = (size_t) nv * st.d, out_stride = (size_t) (all ? nv : 1) * st.d;
        out.assign((size_t) B * out_stride, 0.0f);
        chunked(st, B, in_stride, out_stride, v.data(), out.data(),
                [&](const float * in, int nb, float * o) { run_jvp(st, in, nb, all, affine, o, opt); }, progress);
    };
    return queue_pass(env, s, Value(), fn, info[3], info[4]);
}

// vjp(U: Float32Array [B·d] or [B·(n - firstPosition)·d], B, allPositions, onProgress?, abortFlag?,
//     { fromLayer, tap, tapLayer, firstPosition }?) -> Float32Array [B·(n - firstPosition)·d]
Napi::Value NativeLinearization::Vjp(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto s = state(env);
    std::vector<float> u = float_array_arg(env, info[0], "cotangents");
    int B = info[1].As<Napi::Number>().Int32Value();
    bool all = info[2].ToBoolean();
    BuildOptions opt = tap_options(env, info[5], *s);
    opt.first_position = first_position_arg(env, info[5], s->n);
    const size_t per = (size_t) (all ? s->n - opt.first_position : 1) * s->d;
    if (B < 1 || u.size() != (size_t) B * per) {
        throw Napi::RangeError::New(env, "cotangents must hold " + std::string(all ? "B·(n − firstPosition)·d" : "B·d") + " = " +
                                             std::to_string(B * per) + " values, got " + std::to_string(u.size()));
    }
    auto fn = [u = std::move(u), B, all, per, opt](LinState & st, std::vector<float> & out, const std::function<bool(float)> & progress) {
        const size_t out_stride = (size_t) (st.n - opt.first_position) * st.d;
        out.assign((size_t) B * out_stride, 0.0f);
        chunked(st, B, per, out_stride, u.data(), out.data(),
                [&](const float * in, int nb, float * o) { run_vjp(st, in, nb, all, o, opt); }, progress);
    };
    return queue_pass(env, s, Value(), fn, info[3], info[4]);
}

// jacobian(onProgress?, abortFlag?, { fromLayer, tap, tapLayer, firstPosition }?) -> Float32Array
// [(n - p)·d·d], p = firstPosition: block J_i (row-major [d × d], J_i[k][c] = ∂y_k/∂x_{i,c}) at
// offset (i - p)·d·d for i in [p, n). Reverse mode: d VJPs of the unit vectors, each over
// positions [p, n) only (exact by causality; J_last costs one position per VJP).
Napi::Value NativeLinearization::Jacobian(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto s = state(env);
    BuildOptions opt = tap_options(env, info[2], *s);
    opt.first_position = first_position_arg(env, info[2], s->n);
    auto fn = [opt](LinState & st, std::vector<float> & out, const std::function<bool(float)> & progress) {
        const int m = st.n - opt.first_position, d = st.d;
        out.assign((size_t) m * d * d, 0.0f);
        std::vector<float> rows;
        for (int k0 = 0; k0 < d; k0 += (int) st.max_batch) {
            const int nb = std::min(d - k0, (int) st.max_batch);
            std::vector<float> eye((size_t) nb * d, 0.0f);
            for (int b = 0; b < nb; ++b) eye[(size_t) b * d + k0 + b] = 1.0f;
            rows.assign((size_t) nb * m * d, 0.0f);
            run_vjp(st, eye.data(), nb, false, rows.data(), opt);
            for (int b = 0; b < nb; ++b)
                for (int i = 0; i < m; ++i)
                    std::copy(rows.begin() + ((size_t) b * m + i) * d, rows.begin() + ((size_t) b * m + i + 1) * d,
                              out.begin() + (size_t) i * d * d + (size_t) (k0 + b) * d);
            if (!progress((float) (k0 + nb) / (float) d)) throw Aborted();
        }
    };
    return queue_pass(env, s, Value(), fn, info[0], info[1]);
}

// forward(embeddings [n·d], abortFlag?) -> hidden [n·d]: the real (non-detached) network at
// other input embeddings, with the same positions; the linearization is unchanged.
Napi::Value NativeLinearization::Forward(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto s = state(env);
    std::vector<float> e = float_array_arg(env, info[0], "embeddings");
    if (e.size() != (size_t) s->n * s->d) throw Napi::RangeError::New(env, "embeddings must hold n·d values");
    auto fn = [e = std::move(e)](LinState & st, std::vector<float> & out, const std::function<bool(float)> &) {
        run_primal(st, &e, false, out);
    };
    return queue_pass(env, s, Value(), fn, env.Undefined(), info[1]);
}

// vocabProducts(vectors [B·d], B, kind: "lmHead" | "embedding") -> [B·V]: W_U v for each v, or
// the cosine between v and every token's input embedding (for decoding singular vectors).
Napi::Value NativeLinearization::VocabProducts(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto s = state(env);
    std::vector<float> v = float_array_arg(env, info[0], "vectors");
    const int B = info[1].As<Napi::Number>().Int32Value();
    const bool embedding = info[2].As<Napi::String>().Utf8Value() == "embedding";
    if (B < 1 || v.size() != (size_t) B * s->d) throw Napi::RangeError::New(env, "vectors must hold B·d values");
    auto fn = [v = std::move(v), B, embedding](LinState & st, std::vector<float> & out, const std::function<bool(float)> &) {
        const int d = st.d;
        ggml_tensor * w_src = embedding ? st.spec.tok_embd : st.spec.output;
        const int64_t V = w_src->ne[1];
        ggml_context * ctx = st.runner->begin(64);
        ggml_tensor * x = new_input(ctx, "inp_vectors", GGML_TYPE_F32, d, B);
        ggml_tensor * w = weight_f32(ctx, w_src, true);
        ggml_tensor * y = ggml_mul_mat(ctx, w, x);  // [V, B]
        ggml_tensor * norms = nullptr;
        if (embedding) {
            norms = ggml_sqrt(ctx, ggml_sum_rows(ctx, ggml_sqr(ctx, w)));  // [1, V]
            ggml_set_output(norms);
        }
        ggml_set_output(y);
        ggml_cgraph * gf = ggml_new_graph_custom(ctx, 64, false);
        ggml_build_forward_expand(gf, y);
        if (norms) ggml_build_forward_expand(gf, norms);
        st.runner->compute(gf, [&] { tensor_set(x, v.data(), v.size() * sizeof(float)); });
        out.resize((size_t) V * B);
        tensor_get(y, out.data(), out.size() * sizeof(float));
        if (embedding) {
            std::vector<float> nr((size_t) V);
            tensor_get(norms, nr.data(), nr.size() * sizeof(float));
            for (int b = 0; b < B; ++b) {
                double vn = 0;
                for (int k = 0; k < d; ++k) vn += (double) v[(size_t) b * d + k] * v[(size_t) b * d + k];
                vn = std::sqrt(vn);
                for (int64_t t = 0; t < V; ++t) {
                    const double den = vn * nr[(size_t) t];
                    out[(size_t) b * V + t] = den > 0 ? (float) (out[(size_t) b * V + t] / den) : 0.0f;
                }
            }
        }
    };
    return queue_pass(env, s, Value(), fn, env.Undefined(), env.Undefined());
}

// lmHeadRows(tokens: Int32Array) -> Float32Array [k·(d + 1)]: for each token the LM head row
// (times output.scale) and, last, its output bias (0 without one): logit_t = row·y + bias.
Napi::Value NativeLinearization::LmHeadRows(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto s = state(env);
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
        throw Napi::TypeError::New(env, "tokens must be an Int32Array");
    }
    auto ta = info[0].As<Napi::Int32Array>();
    std::vector<int32_t> tokens(ta.Data(), ta.Data() + ta.ElementLength());
    for (int32_t t : tokens) {
        if (t < 0 || t >= s->spec.output->ne[1]) throw Napi::RangeError::New(env, "token id " + std::to_string(t) + " is outside the vocabulary");
    }
    if (tokens.empty()) throw Napi::RangeError::New(env, "no tokens");
    auto fn = [tokens](LinState & st, std::vector<float> & out, const std::function<bool(float)> &) {
        const int d = st.d;
        const int64_t k = (int64_t) tokens.size();
        ggml_context * ctx = st.runner->begin(64);
        ggml_tensor * ids = new_input(ctx, "inp_token_ids", GGML_TYPE_I32, k);
        ggml_tensor * rows = ggml_get_rows(ctx, st.spec.output, ids);  // dequantized [d, k]
        if (st.spec.output_scale) rows = ggml_mul(ctx, rows, st.spec.output_scale);
        ggml_tensor * bias = st.spec.output_bias ? ggml_get_rows(ctx, ggml_reshape_2d(ctx, st.spec.output_bias, 1, st.spec.output_bias->ne[0]), ids) : nullptr;
        ggml_set_output(rows);
        if (bias) ggml_set_output(bias);
        ggml_cgraph * gf = ggml_new_graph_custom(ctx, 64, false);
        ggml_build_forward_expand(gf, rows);
        if (bias) ggml_build_forward_expand(gf, bias);
        st.runner->compute(gf, [&] { tensor_set(ids, tokens.data(), tokens.size() * sizeof(int32_t)); });
        std::vector<float> r((size_t) (k * d)), b((size_t) k, 0.0f);
        tensor_get(rows, r.data(), r.size() * sizeof(float));
        if (bias) tensor_get(bias, b.data(), b.size() * sizeof(float));
        out.resize((size_t) (k * (d + 1)));
        for (int64_t j = 0; j < k; ++j) {
            std::copy(r.begin() + j * d, r.begin() + (j + 1) * d, out.begin() + j * (d + 1));
            out[(size_t) (j * (d + 1) + d)] = b[(size_t) j];
        }
    };
    return queue_pass(env, s, Value(), fn, env.Undefined(), env.Undefined());
}

// outputNorm() -> { weight: Float32Array [d], bias: Float32Array [d] | null, eps, layerNorm }:
// the final norm (RMSNorm, or LayerNorm with its bias), for passing layer quantities through
// it (the reference work's decoding of intermediate layers).
Napi::Value NativeLinearization::OutputNorm(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto s = state(env);
    std::lock_guard<std::mutex> lock(s->mu);
    auto read = [&](const ggml_tensor * g) -> Napi::Value {
        if (!g) return env.Null();
        if (g->type != GGML_TYPE_F32) throw Napi::Error::New(env, std::string(ggml_get_name(g)) + " is not F32");
        std::vector<float> w((size_t) ggml_nelements(g));
        ggml_backend_tensor_get(g, w.data(), 0, ggml_nbytes(g));
        return to_float32_array(env, w.data(), w.size());
    };
    auto o = Napi::Object::New(env);
    o.Set("weight", read(s->spec.output_norm));
    o.Set("bias", read(s->spec.output_norm_b));
    o.Set("eps", s->spec.norm_eps);
    o.Set("layerNorm", s->spec.arch.norms.kind == NormKind::Layer);
    return o;
}

// ---------------------------------------------------------------------------------------

// linearize(model, tokens: Int32Array | null, embeddings: Float32Array | null,
//           { threads, exact, batchMemoryBytes, blas, contextSize }, onProgress?, abortFlag?) -> Promise<NativeLinearization>
Napi::Value Linearize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw Napi::TypeError::New(env, "linearize(model, tokens, embeddings, options)");
    auto model_obj = info[0].As<Napi::Object>();
    NativeModel * nm = NativeModel::Unwrap(model_obj);
    llama_model * model = nm->get(env);
    auto opts = info[3].IsObject() ? info[3].As<Napi::Object>() : Napi::Object::New(env);
    auto s = std::make_unique<LinState>();
    s->use = std::make_unique<ModelUse>(nm, model_obj);
    s->model = model;
    s->exact = get_bool(opts, "exact", true);
    // Fast mode is llama.cpp's quantized network: ggml's BLAS backend would take the wide
    // products of a quantized weight by dequantizing it (the exact route), so it stays off.
    s->use_blas = get_bool(opts, "blas", true) && s->exact;
    s->tiled = get_bool(opts, "tiled", true);
    s->relevance = get_bool(opts, "relevance", false);
    s->ordinary = get_bool(opts, "ordinary", false) || s->relevance;
    const int n_embd = llama_model_n_embd(model);
    std::vector<float> embeddings;
    if (info[1].IsTypedArray()) {
        s->tokens = checked_tokens(env, info[1], llama_model_get_vocab(model));
        s->n = (int) s->tokens.size();
    } else {
        embeddings = float_array_arg(env, info[2], "embeddings");
        if (embeddings.empty() || embeddings.size() % (size_t) n_embd != 0) {
            throw Napi::RangeError::New(env, "embeddings must hold n·d values with d = " + std::to_string(n_embd));
        }
        s->n = (int) (embeddings.size() / (size_t) n_embd);
    }
    if (s->n < 1) throw Napi::RangeError::New(env, "the prompt is empty: at least one token is needed");
    if (s->n > llama_model_n_ctx_train(model)) {
        throw Napi::RangeError::New(env, "the prompt has " + std::to_string(s->n) + " tokens, more than the model's context of " +
                                          std::to_string(llama_model_n_ctx_train(model)));
    }
    int threads = (int) get_number(opts, "threads", (double) std::max(1u, std::thread::hardware_concurrency()));
    size_t budget = (size_t) get_number(opts, "batchMemoryBytes", 512.0 * 1024 * 1024);
    // The context size llama.cpp would run with (phi3 picks its rope factors by it); default: the prompt.
    const double ctx_opt = get_number(opts, "contextSize", 0);
    if (ctx_opt != 0 && ctx_opt < s->n) throw Napi::RangeError::New(env, "contextSize is smaller than the prompt");
    const uint32_t n_ctx = ctx_opt > 0 ? (uint32_t) ctx_opt : (uint32_t) s->n;
    // The primal pass (progress per layer, abortable mid-graph), then the bias term c.
    std::shared_ptr<LinState> state = std::move(s);
    auto keep = std::make_shared<Napi::ObjectReference>(Napi::Persistent(model_obj));
    auto use = std::make_shared<ModelUse>(nm, model_obj);
    auto e = std::make_shared<std::vector<float>>(std::move(embeddings));
    return queue(env, [state, keep, use, e, threads, budget, n_ctx](const Job & job) {
        LogCapture log;
        try {
            LinState & s = *state;
            const std::vector<float> & embeddings = *e;
            s.spec = resolve_model(s.model, n_ctx);
            s.d = s.spec.n_embd;
            s.runner = std::make_unique<GraphRunner>(s.model, threads, s.use_blas, s.tiled && has_tiled_weights(s.spec));
            AbortScope scope(*s.runner, job.aborted);
            // Batch width from the memory budget: a column costs about its activations in
            // one layer (the scheduler reuses buffers across layers), counted generously.
            // Ordinary passes also hold a few [n, n, H] score tangents per column.
            const size_t col_bytes = sizeof(float) * (size_t) s.n *
                (size_t) (8 * s.d + 4 * s.spec.n_ff + 4 * s.spec.head_dim * s.spec.n_head + (s.ordinary ? 6 * s.n * s.spec.n_head : 0) +
                          // ordinary moe: the k experts' gate tangents and the router rows, per column
                          (s.ordinary ? s.spec.n_expert_used * (4 * s.spec.n_ff_exp + 4 * s.d) : 0));
            s.max_batch = std::max<size_t>(1, std::min<size_t>((size_t) s.d, budget / std::max<size_t>(1, col_bytes)));
            run_primal(s, embeddings.empty() ? nullptr : &embeddings, true, s.hidden, &job.report);
            if (!embeddings.empty()) s.x = embeddings;
            if (s.spec.affine && !s.ordinary) {  // the detached map's constant term (ordinary mode's map is linear)
                std::vector<float> zeros((size_t) s.n * s.d, 0.0f);
                s.bias_term.assign((size_t) s.d, 0.0f);
                run_jvp(s, zeros.data(), 1, false, true, s.bias_term.data());
            }
        } catch (const std::exception & ex) {
            throw error_with_log(ex.what(), log);
        }
    }, [state, keep](Napi::Env env) -> Napi::Value {
        // the JS object takes a new owner of the state (see NativeLinearization's constructor)
        return env.GetInstanceData<AddonData>()->linearization_ctor.New({Napi::External<std::shared_ptr<LinState>>::New(env, new std::shared_ptr<LinState>(state)), keep->Value()});
    }, info[4], info[5]);
}

Napi::Function DefineLinearization(Napi::Env env) {
    return NativeLinearization::Define(env);
}

}  // namespace llj
