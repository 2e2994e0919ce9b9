// Generation (src/generate.ts drives it token by token; sampling and steering math live in
// TypeScript). A NativeSession runs one of two engines over a loaded model:
//   "llama" — llama.cpp's own decode with its KV cache (F32 cache, flash attention off, as
//             the reference forward), optionally with a control vector set through
//             llama_set_adapter_cvec: this IS llama.cpp's continuation;
//   "graph" — our own primal graph (graphs.cpp build_forward, the network every
//             linearization is built on), recomputing the whole sequence per token, with an
//             optional per-position vector added to the residual stream after one layer
//             (the steering operator, which llama.cpp's fixed per-layer control vector cannot
//             express: it is scaled by each position's ‖h_k‖ and changes with k).
// The bindings (native/napi/session.cpp) run every call on a worker thread; calls of one
// session are serialized by its mutex.
#include "engine/session.h"
#include "engine/log.h"
#include "engine/primal.h"

#include <algorithm>
#include <cmath>

namespace llj {

static ggml_tensor * named_input(ggml_context * ctx, const char * name, ggml_type type, int64_t ne0, int64_t ne1 = 1) {
    ggml_tensor * t = ggml_new_tensor_2d(ctx, type, ne0, ne1);
    ggml_set_name(t, name);
    ggml_set_input(t);
    return t;
}

// Our graph's model description and runner, made on first use (off the JS thread).
void ensure_graph(SessionState & s) {
    if (s.resolved) return;
    s.spec = resolve_model(s.model, s.n_ctx);
    s.runner = std::make_unique<GraphRunner>(s.model, s.threads, s.blas && s.exact, s.tiled && has_tiled_weights(s.spec));
    s.resolved = true;
}

// The primal network on `tokens`, with inject [n·d] (empty: none) added after layer `layer`:
// the last position's logits (after any final softcap) and its final-norm output.
// A segment of it: layers [from, to] on `hidden` (the stream entering layer `from`, [n·d];
// the token embeddings when from is 0); when `to` is not the last layer, `hidden` receives
// the stream after layer `to` at every position and no logits are made. The lens
// interventions (src/lens-interventions.ts) edit the stream between segments on the host;
// a stream read back in F32 and fed on is the same value, so split runs equal whole ones.
void graph_forward(SessionState & s, const std::vector<int32_t> & tokens, const std::vector<float> & inject, int layer,
                   bool norm_scaled, std::vector<float> & logits, std::vector<float> & hidden, int from, int to,
                   const std::vector<float> * stream) {
    ensure_graph(s);
    const ModelSpec & sp = s.spec;
    const int n = (int) tokens.size(), d = sp.n_embd;
    if (to < 0) to = sp.n_layer - 1;
    const bool full = to == sp.n_layer - 1;
    ggml_context * ctx = s.runner->begin(s.graph_size());
    GraphInputs in = primal_inputs(ctx, sp, n);
    ggml_tensor * ids = nullptr, * x = nullptr;
    if (from == 0) {
        ids = named_input(ctx, "inp_tokens", GGML_TYPE_I32, n);
        x = token_embeddings(ctx, sp, ids, in);
    } else {
        x = named_input(ctx, "inp_stream", GGML_TYPE_F32, d, n);
    }
    BuildOptions opt;
    opt.primal = true;
    opt.bias = true;
    opt.exact = s.exact;
    opt.tiled = s.tiled;
    opt.keep_frozen = false;  // only the logits (or the stream) are read
    opt.from_layer = from;
    if (!full) {
        opt.tap = Tap::Residual;
        opt.tap_layer = to;
    }
    if (!inject.empty()) {
        in.inject = named_input(ctx, "inp_steering", GGML_TYPE_F32, d, n);
        opt.inject_layer = layer;
        opt.inject_norm_scaled = norm_scaled;
    }
    FrozenTensors fz;
    ggml_tensor * y = build_forward(ctx, sp, fz, in, x, opt, nullptr);
    ggml_tensor * last = nullptr, * lg = nullptr;
    ggml_cgraph * gf = ggml_new_graph_custom(ctx, s.graph_size(), false);
    if (full) {
        last = ggml_cont(ctx, ggml_view_2d(ctx, y, d, 1, y->nb[1], y->nb[1] * (n - 1)));
        ggml_set_output(last);
        ggml_tensor * capped = nullptr;
        lg = lm_head(ctx, sp, last, s.exact, s.tiled, &capped);
        if (capped) lg = capped;
        ggml_set_output(lg);
        ggml_build_forward_expand(gf, lg);
    } else {
        last = ggml_cont(ctx, y);
        ggml_set_output(last);
    }
    ggml_build_forward_expand(gf, last);
    s.runner->compute(gf, [&] {
        set_primal_inputs(in, sp, n);
        if (ids) tensor_set(ids, tokens.data(), tokens.size() * sizeof(int32_t));
        else tensor_set(x, stream->data(), stream->size() * sizeof(float));
        if (in.inject) tensor_set(in.inject, inject.data(), inject.size() * sizeof(float));
    });
    logits.resize(lg ? (size_t) ggml_nelements(lg) : 0);
    if (lg) tensor_get(lg, logits.data(), logits.size() * sizeof(float));
    hidden.resize((size_t) ggml_nelements(last));
    tensor_get(last, hidden.data(), hidden.size() * sizeof(float));
}

// The input embeddings x [n·d] of `tokens`, exactly as the primal pass forms them.
void graph_embed(SessionState & s, const std::vector<int32_t> & tokens, std::vector<float> & out) {
    ensure_graph(s);
    const ModelSpec & sp = s.spec;
    const int n = (int) tokens.size();
    ggml_context * ctx = s.runner->begin(64);
    GraphInputs in = primal_inputs(ctx, sp, n);
    ggml_tensor * ids = named_input(ctx, "inp_tokens", GGML_TYPE_I32, n);
    ggml_tensor * x = ggml_cont(ctx, token_embeddings(ctx, sp, ids, in));
    ggml_set_output(x);
    ggml_cgraph * gf = ggml_new_graph_custom(ctx, 64, false);
    ggml_build_forward_expand(gf, x);
    s.runner->compute(gf, [&] {
        set_primal_inputs(in, sp, n);
        tensor_set(ids, tokens.data(), tokens.size() * sizeof(int32_t));
    });
    out.resize((size_t) ggml_nelements(x));
    tensor_get(x, out.data(), out.size() * sizeof(float));
}

// llama.cpp's decode of the next tokens (positions n_past on): the last one's logits.
void llama_step(SessionState & s, const std::vector<int32_t> & tokens, const std::function<bool()> & aborted, std::vector<float> & logits) {
    LogCapture log;
    if (!s.lctx) {
        llama_context_params cp = llama_context_default_params();
        cp.n_ctx = s.n_ctx;
        cp.n_batch = s.n_ctx;   // the prompt in one llama_decode call, as referenceForward decodes it
        cp.n_ubatch = std::min<uint32_t>(s.n_ctx, 512);  // llama.cpp's default: compute buffers stay bounded
        cp.n_seq_max = 1;
        cp.type_k = GGML_TYPE_F32;  // F32 cache and no flash attention: llama.cpp's forward at
        cp.type_v = GGML_TYPE_F32;  // float32 rounding (docs/llama-cpp.md), as the reference forward
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
        cp.n_threads = s.threads;
        cp.n_threads_batch = s.threads;
        cp.no_perf = true;
        s.lctx = llama_init_from_model(const_cast<llama_model *>(s.model), cp);
        if (!s.lctx) throw error_with_log("llama.cpp could not create a context", log);
        if (s.has_cvec &&
            llama_set_adapter_cvec(s.lctx, s.cvec.data(), s.cvec.size(), llama_model_n_embd(s.model), s.cvec_start, s.cvec_end) != 0) {
            throw error_with_log("llama.cpp refused the control vector", log);
        }
    }
    llama_set_abort_callback(s.lctx, [](void * data) { return (*static_cast<const std::function<bool()> *>(data))(); },
                             const_cast<std::function<bool()> *>(&aborted));
    const int32_t m = (int32_t) tokens.size();
    llama_batch batch = llama_batch_init(m, 0, 1);
    struct BatchGuard { llama_batch b; ~BatchGuard() { llama_batch_free(b); } } guard{batch};
    for (int32_t i = 0; i < m; ++i) {
        batch.token[i] = tokens[(size_t) i];
        batch.pos[i] = s.n_past + i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = i == m - 1;
    }
    batch.n_tokens = m;
    const int32_t rc = llama_decode(s.lctx, batch);
    llama_set_abort_callback(s.lctx, nullptr, nullptr);
    if (rc == 2) throw Aborted();
    if (rc != 0) throw error_with_log("llama_decode failed with code " + std::to_string(rc), log);
    s.n_past += m;
    const float * lg = llama_get_logits_ith(s.lctx, -1);
    if (!lg) throw error_with_log("llama.cpp returned no logits", log);
    logits.assign(lg, lg + llama_vocab_n_tokens(llama_model_get_vocab(s.model)));
}

}  // namespace llj
