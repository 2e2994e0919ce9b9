// The linearization of one prompt: the primal pass records the frozen coefficients, then
// the linear map L (jvp) and its transpose (vjp) run over batches, and the full detached
// Jacobian is assembled from VJPs. Its passes are serialized by the state's mutex (one graph
// scheduler); the bindings (native/napi/linearization.cpp) run each on a worker thread.
#include "engine/linearization.h"
#include "engine/primal.h"
#include "engine/tiled.h"

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "llama.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

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
// ones for 1/rms, per-position attention temperature); shared with native/engine/session.cpp.
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
void run_primal(LinState & s, const std::vector<float> * embeddings, bool record, std::vector<float> & hidden_out,
                const std::function<bool(float)> * progress) {
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


// L applied to B tangent sequences on positions [f, n) (f = opt.first_position; earlier
// positions are zero), v [B, n - f, d]: the output at those positions [B, n - f, d], or at
// the last one [B, d]. With `bias`, the detached affine map instead (used for c = map(0),
// and at the primal input for the value of a tapped quantity).
void run_jvp(LinState & s, const float * v, int B, bool all_positions, bool bias, float * out, BuildOptions opt) {
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
void run_vjp(LinState & s, const float * u, int B, bool all_positions, float * out, BuildOptions opt) {
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

// Runs `pass` over the B columns in chunks of at most max_batch, reporting progress.
static void chunked(LinState & s, int B, size_t in_stride, size_t out_stride, const float * in, float * out,
                    const std::function<void(const float *, int, float *)> & pass, const std::function<bool(float)> & progress) {
    for (int b0 = 0; b0 < B; b0 += (int) s.max_batch) {
        int nb = std::min(B - b0, (int) s.max_batch);
        pass(in + (size_t) b0 * in_stride, nb, out + (size_t) b0 * out_stride);
        if (!progress((float) (b0 + nb) / (float) B)) throw Aborted();
    }
}

void linearize(LinState & s, const std::vector<float> & embeddings, int threads, size_t budget, uint32_t n_ctx,
               const std::function<bool()> & aborted, const std::function<bool(float)> & progress) {
    s.spec = resolve_model(s.model, n_ctx);
    s.d = s.spec.n_embd;
    s.runner = std::make_unique<GraphRunner>(s.model, threads, s.use_blas, s.tiled && has_tiled_weights(s.spec));
    AbortScope scope(*s.runner, aborted);
    // Batch width from the memory budget: a column costs about its activations in
    // one layer (the scheduler reuses buffers across layers), counted generously.
    // Ordinary passes also hold a few [n, n, H] score tangents per column.
    const size_t col_bytes = sizeof(float) * (size_t) s.n *
        (size_t) (8 * s.d + 4 * s.spec.n_ff + 4 * s.spec.head_dim * s.spec.n_head + (s.ordinary ? 6 * s.n * s.spec.n_head : 0) +
                  // ordinary moe: the k experts' gate tangents and the router rows, per column
                  (s.ordinary ? s.spec.n_expert_used * (4 * s.spec.n_ff_exp + 4 * s.d) : 0));
    s.max_batch = std::max<size_t>(1, std::min<size_t>((size_t) s.d, budget / std::max<size_t>(1, col_bytes)));
    run_primal(s, embeddings.empty() ? nullptr : &embeddings, true, s.hidden, &progress);
    if (!embeddings.empty()) s.x = embeddings;
    if (s.spec.affine && !s.ordinary) {  // the detached map's constant term (ordinary mode's map is linear)
        std::vector<float> zeros((size_t) s.n * s.d, 0.0f);
        s.bias_term.assign((size_t) s.d, 0.0f);
        run_jvp(s, zeros.data(), 1, false, true, s.bias_term.data());
    }
}

void jvp(LinState & s, const std::vector<float> & v, int B, bool all, bool affine, const BuildOptions & opt, std::vector<float> & out,
         const std::function<bool(float)> & progress) {
    const int nv = s.n - opt.first_position;
    const size_t in_stride = (size_t) nv * s.d, out_stride = (size_t) (all ? nv : 1) * s.d;
    out.assign((size_t) B * out_stride, 0.0f);
    chunked(s, B, in_stride, out_stride, v.data(), out.data(),
            [&](const float * in, int nb, float * o) { run_jvp(s, in, nb, all, affine, o, opt); }, progress);
}

void vjp(LinState & s, const std::vector<float> & u, int B, bool all, const BuildOptions & opt, std::vector<float> & out,
         const std::function<bool(float)> & progress) {
    const size_t per = (size_t) (all ? s.n - opt.first_position : 1) * s.d;
    const size_t out_stride = (size_t) (s.n - opt.first_position) * s.d;
    out.assign((size_t) B * out_stride, 0.0f);
    chunked(s, B, per, out_stride, u.data(), out.data(),
            [&](const float * in, int nb, float * o) { run_vjp(s, in, nb, all, o, opt); }, progress);
}

void jacobian(LinState & s, const BuildOptions & opt, std::vector<float> & out, const std::function<bool(float)> & progress) {
    const int m = s.n - opt.first_position, d = s.d;
    out.assign((size_t) m * d * d, 0.0f);
    std::vector<float> rows;
    for (int k0 = 0; k0 < d; k0 += (int) s.max_batch) {
        const int nb = std::min(d - k0, (int) s.max_batch);
        std::vector<float> eye((size_t) nb * d, 0.0f);
        for (int b = 0; b < nb; ++b) eye[(size_t) b * d + k0 + b] = 1.0f;
        rows.assign((size_t) nb * m * d, 0.0f);
        run_vjp(s, eye.data(), nb, false, rows.data(), opt);
        for (int b = 0; b < nb; ++b)
            for (int i = 0; i < m; ++i)
                std::copy(rows.begin() + ((size_t) b * m + i) * d, rows.begin() + ((size_t) b * m + i + 1) * d,
                          out.begin() + (size_t) i * d * d + (size_t) (k0 + b) * d);
        if (!progress((float) (k0 + nb) / (float) d)) throw Aborted();
    }
}

void vocab_products(LinState & s, const std::vector<float> & v, int B, bool embedding, std::vector<float> & out) {
    const int d = s.d;
    ggml_tensor * w_src = embedding ? s.spec.tok_embd : s.spec.output;
    const int64_t V = w_src->ne[1];
    ggml_context * ctx = s.runner->begin(64);
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
    s.runner->compute(gf, [&] { tensor_set(x, v.data(), v.size() * sizeof(float)); });
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
}

void lm_head_rows(LinState & s, const std::vector<int32_t> & tokens, std::vector<float> & out) {
    const int d = s.d;
    const int64_t k = (int64_t) tokens.size();
    ggml_context * ctx = s.runner->begin(64);
    ggml_tensor * ids = new_input(ctx, "inp_token_ids", GGML_TYPE_I32, k);
    ggml_tensor * rows = ggml_get_rows(ctx, s.spec.output, ids);  // dequantized [d, k]
    if (s.spec.output_scale) rows = ggml_mul(ctx, rows, s.spec.output_scale);
    ggml_tensor * bias = s.spec.output_bias ? ggml_get_rows(ctx, ggml_reshape_2d(ctx, s.spec.output_bias, 1, s.spec.output_bias->ne[0]), ids) : nullptr;
    ggml_set_output(rows);
    if (bias) ggml_set_output(bias);
    ggml_cgraph * gf = ggml_new_graph_custom(ctx, 64, false);
    ggml_build_forward_expand(gf, rows);
    if (bias) ggml_build_forward_expand(gf, bias);
    s.runner->compute(gf, [&] { tensor_set(ids, tokens.data(), tokens.size() * sizeof(int32_t)); });
    std::vector<float> r((size_t) (k * d)), b((size_t) k, 0.0f);
    tensor_get(rows, r.data(), r.size() * sizeof(float));
    if (bias) tensor_get(bias, b.data(), b.size() * sizeof(float));
    out.resize((size_t) (k * (d + 1)));
    for (int64_t j = 0; j < k; ++j) {
        std::copy(r.begin() + j * d, r.begin() + (j + 1) * d, out.begin() + j * (d + 1));
        out[(size_t) (j * (d + 1) + d)] = b[(size_t) j];
    }
}

std::vector<float> read_f32(const ggml_tensor * g) {
    if (g->type != GGML_TYPE_F32) throw std::runtime_error(std::string(ggml_get_name(g)) + " is not F32");
    std::vector<float> w((size_t) ggml_nelements(g));
    ggml_backend_tensor_get(g, w.data(), 0, ggml_nbytes(g));
    return w;
}

}  // namespace llj
