// llama.cpp's own forward pass, the reference our graphs are checked against
// (docs/math.md §4, invariant 4). Run with an F32 KV cache and flash attention off so that
// llama.cpp's default F16 rounding does not hide errors (docs/llama-cpp.md).
#include "engine/reference_forward.h"
#include "arch.h"
#include "engine/log.h"
#include "llama_internal.h"

#include "ggml-backend.h"
#include "llama.h"

#include <cstdio>
#include <cstring>
#include <set>
#include <thread>

namespace llj {

// Architectures whose llama.cpp graph records per-layer inputs (res->t_layer_inp); enabling
// them for any other graph aborts the process, so this list guards the call.
static const std::set<std::string> k_layer_input_archs = {"llama", "qwen3", "qwen3moe"};

bool records_layer_inputs(const llama_model * m) { return k_layer_input_archs.count(model_architecture(m)) > 0; }

void ReferenceForward::run() {
    LogCapture log;
    const int32_t n = (int32_t) tokens.size();
    const int32_t n_layer = llama_model_n_layer(model);
    n_embd = llama_model_n_embd(model);
    n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) std::max<int64_t>(n, n_ctx);
    cp.n_batch = (uint32_t) n;
    cp.n_ubatch = (uint32_t) n;
    cp.n_seq_max = 1;
    cp.embeddings = true;
    cp.pooling_type = LLAMA_POOLING_TYPE_NONE;
    cp.type_k = GGML_TYPE_F32;
    cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.no_perf = true;
    // Graphs that do not record layer inputs: observe the tensors as they are computed
    // instead (the token_embd row lookup, and the layer outputs every graph names "l_out-<il>").
    layers.assign(layer_inputs && !records_layer_inputs(model) ? (size_t) n_layer : 0, {});
    if (!layers.empty()) {
        cp.cb_eval = [](ggml_tensor * t, bool ask, void * ud) -> bool {
            auto * self = static_cast<ReferenceForward *>(ud);
            int il = self->layer_of(t);
            if (ask) return il >= 0;
            if (il >= 0 && ggml_nelements(t) == (int64_t) self->tokens.size() * self->n_embd && t->type == GGML_TYPE_F32) {
                auto & dst = self->layers[(size_t) il];
                dst.resize((size_t) ggml_nelements(t));
                ggml_backend_tensor_get(t, dst.data(), 0, ggml_nbytes(t));
            }
            return true;
        };
        cp.cb_eval_user_data = this;
    }
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) throw error_with_log("llama.cpp could not create a context", log);
    struct CtxGuard { llama_context * c; ~CtxGuard() { llama_free(c); } } guard{ctx};

    if (layer_inputs && records_layer_inputs(model)) {
        for (int32_t il = 0; il < n_layer; ++il) llama_set_embeddings_layer_inp(ctx, (uint32_t) il, true);
    }

    llama_batch batch = llama_batch_init(n, 0, 1);
    struct BatchGuard { llama_batch b; ~BatchGuard() { llama_batch_free(b); } } bguard{batch};
    for (int32_t i = 0; i < n; ++i) {
        batch.token[i] = tokens[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    batch.n_tokens = n;
    int32_t rc = llama_decode(ctx, batch);
    if (rc != 0) throw error_with_log("llama_decode failed with code " + std::to_string(rc), log);

    hidden.resize((size_t) n * n_embd);
    for (int32_t i = 0; i < n; ++i) {
        const float * e = llama_get_embeddings_ith(ctx, i);
        if (!e) throw error_with_log("llama.cpp returned no embeddings for position " + std::to_string(i), log);
        std::copy(e, e + n_embd, hidden.begin() + (size_t) i * n_embd);
    }
    const float * lg = llama_get_logits_ith(ctx, n - 1);
    if (!lg) throw error_with_log("llama.cpp returned no logits", log);
    logits.assign(lg, lg + n_vocab);
    if (layer_inputs && records_layer_inputs(model)) {
        layers.resize(n_layer);
        for (int32_t il = 0; il < n_layer; ++il) {
            const float * li = llama_get_embeddings_layer_inp(ctx, (uint32_t) il);
            layers[il].assign(li, li + (size_t) n * n_embd);
        }
    }
    for (size_t il = 0; il < layers.size(); ++il) {
        if (layers[il].size() != (size_t) n * n_embd) throw std::runtime_error("llama.cpp did not expose the input of layer " + std::to_string(il));
    }
}

// Layer whose input a tensor is: the token_embd row lookup (or its scaled copy) → 0,
// l_out-<il> → il + 1; else -1.
int ReferenceForward::layer_of(const ggml_tensor * t) const {
    const int n_layer = (int) layers.size();
    if (t->op == GGML_OP_GET_ROWS && t->src[0] && std::strcmp(ggml_get_name(t->src[0]), "token_embd.weight") == 0) return 0;
    if (std::strcmp(ggml_get_name(t), "inp_scaled") == 0) return 0;  // gemma: the scaled lookup, computed after it
    if (std::strcmp(ggml_get_name(t), "inpL") == 0) return 0;        // gpt2: token plus position embeddings
    int il = -1;
    if (std::sscanf(ggml_get_name(t), "l_out-%d", &il) == 1 && il >= 0 && il + 1 < n_layer) return il + 1;
    return -1;
}

}  // namespace llj
