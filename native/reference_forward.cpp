// llama.cpp's own forward pass, the reference our graphs are checked against
// (docs/math.md §4, invariant 4). Run with an F32 KV cache and flash attention off so that
// llama.cpp's default F16 rounding does not hide errors (docs/llama-cpp.md).
#include "arch.h"
#include "common.h"
#include "llama_internal.h"
#include "model.h"

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

class ReferenceForwardRun {
  public:
    ReferenceForwardRun(NativeModel * nm, const Napi::Object & obj, llama_model * model,
                        std::vector<llama_token> tokens, bool layer_inputs, int threads, uint32_t n_ctx)
        : use_(nm, obj), model_(model), tokens_(std::move(tokens)),
          layer_inputs_(layer_inputs), threads_(threads), n_ctx_(n_ctx) {}

    void run() {
        LogCapture log;
        const int32_t n = (int32_t) tokens_.size();
        const int32_t n_layer = llama_model_n_layer(model_);
        n_embd_ = llama_model_n_embd(model_);
        n_vocab_ = llama_vocab_n_tokens(llama_model_get_vocab(model_));

        llama_context_params cp = llama_context_default_params();
        cp.n_ctx = (uint32_t) std::max<int64_t>(n, n_ctx_);
        cp.n_batch = (uint32_t) n;
        cp.n_ubatch = (uint32_t) n;
        cp.n_seq_max = 1;
        cp.embeddings = true;
        cp.pooling_type = LLAMA_POOLING_TYPE_NONE;
        cp.type_k = GGML_TYPE_F32;
        cp.type_v = GGML_TYPE_F32;
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
        cp.n_threads = threads_;
        cp.n_threads_batch = threads_;
        cp.no_perf = true;
        // Graphs that do not record layer inputs: observe the tensors as they are computed
        // instead (the token_embd row lookup, and the layer outputs every graph names "l_out-<il>").
        layers_.assign(layer_inputs_ && !records_layer_inputs(model_) ? (size_t) n_layer : 0, {});
        if (!layers_.empty()) {
            cp.cb_eval = [](ggml_tensor * t, bool ask, void * ud) -> bool {
                auto * self = static_cast<ReferenceForwardRun *>(ud);
                int il = self->layer_of(t);
                if (ask) return il >= 0;
                if (il >= 0 && ggml_nelements(t) == (int64_t) self->tokens_.size() * self->n_embd_ && t->type == GGML_TYPE_F32) {
                    auto & dst = self->layers_[(size_t) il];
                    dst.resize((size_t) ggml_nelements(t));
                    ggml_backend_tensor_get(t, dst.data(), 0, ggml_nbytes(t));
                }
                return true;
            };
            cp.cb_eval_user_data = this;
        }
        llama_context * ctx = llama_init_from_model(model_, cp);
        if (!ctx) throw error_with_log("llama.cpp could not create a context", log);
        struct CtxGuard { llama_context * c; ~CtxGuard() { llama_free(c); } } guard{ctx};

        if (layer_inputs_ && records_layer_inputs(model_)) {
            for (int32_t il = 0; il < n_layer; ++il) llama_set_embeddings_layer_inp(ctx, (uint32_t) il, true);
        }

        llama_batch batch = llama_batch_init(n, 0, 1);
        struct BatchGuard { llama_batch b; ~BatchGuard() { llama_batch_free(b); } } bguard{batch};
        for (int32_t i = 0; i < n; ++i) {
            batch.token[i] = tokens_[i];
            batch.pos[i] = i;
            batch.n_seq_id[i] = 1;
            batch.seq_id[i][0] = 0;
            batch.logits[i] = 1;
        }
        batch.n_tokens = n;
        int32_t rc = llama_decode(ctx, batch);
        if (rc != 0) throw error_with_log("llama_decode failed with code " + std::to_string(rc), log);

        hidden_.resize((size_t) n * n_embd_);
        for (int32_t i = 0; i < n; ++i) {
            const float * e = llama_get_embeddings_ith(ctx, i);
            if (!e) throw error_with_log("llama.cpp returned no embeddings for position " + std::to_string(i), log);
            std::copy(e, e + n_embd_, hidden_.begin() + (size_t) i * n_embd_);
        }
        const float * lg = llama_get_logits_ith(ctx, n - 1);
        if (!lg) throw error_with_log("llama.cpp returned no logits", log);
        logits_.assign(lg, lg + n_vocab_);
        if (layer_inputs_ && records_layer_inputs(model_)) {
            layers_.resize(n_layer);
            for (int32_t il = 0; il < n_layer; ++il) {
                const float * li = llama_get_embeddings_layer_inp(ctx, (uint32_t) il);
                layers_[il].assign(li, li + (size_t) n * n_embd_);
            }
        }
        for (size_t il = 0; il < layers_.size(); ++il) {
            if (layers_[il].size() != (size_t) n * n_embd_) throw std::runtime_error("llama.cpp did not expose the input of layer " + std::to_string(il));
        }
    }

    // Layer whose input a tensor is: the token_embd row lookup (or its scaled copy) → 0,
    // l_out-<il> → il + 1; else -1.
    int layer_of(const ggml_tensor * t) const {
        const int n_layer = (int) layers_.size();
        if (t->op == GGML_OP_GET_ROWS && t->src[0] && std::strcmp(ggml_get_name(t->src[0]), "token_embd.weight") == 0) return 0;
        if (std::strcmp(ggml_get_name(t), "inp_scaled") == 0) return 0;  // gemma: the scaled lookup, computed after it
        if (std::strcmp(ggml_get_name(t), "inpL") == 0) return 0;        // gpt2: token plus position embeddings
        int il = -1;
        if (std::sscanf(ggml_get_name(t), "l_out-%d", &il) == 1 && il >= 0 && il + 1 < n_layer) return il + 1;
        return -1;
    }

    Napi::Value result(Napi::Env env) const {
        auto o = Napi::Object::New(env);
        o.Set("hidden", to_float32_array(env, hidden_.data(), hidden_.size()));
        o.Set("logits", to_float32_array(env, logits_.data(), logits_.size()));
        if (layer_inputs_) {
            auto arr = Napi::Array::New(env, layers_.size());
            for (size_t i = 0; i < layers_.size(); ++i) arr.Set(i, to_float32_array(env, layers_[i].data(), layers_[i].size()));
            o.Set("layerInputs", arr);
        } else {
            o.Set("layerInputs", env.Null());
        }
        return o;
    }

  private:
    ModelUse use_;
    llama_model * model_;
    std::vector<llama_token> tokens_;
    bool layer_inputs_;
    int threads_;
    uint32_t n_ctx_;
    int32_t n_embd_ = 0, n_vocab_ = 0;
    std::vector<float> hidden_, logits_;
    std::vector<std::vector<float>> layers_;
};

// referenceForward(tokens: Int32Array, { layerInputs?: boolean, threads?: number }) -> Promise
Napi::Value NativeModel::ReferenceForward(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    llama_model * m = get(env);
    const llama_vocab * vocab = llama_model_get_vocab(m);
    std::vector<llama_token> tokens = checked_tokens(env, info[0], vocab);
    if (tokens.empty()) throw Napi::RangeError::New(env, "the prompt is empty: at least one token is needed");
    const int32_t n_ctx_train = llama_model_n_ctx_train(m);
    if ((int64_t) tokens.size() > n_ctx_train) {
        throw Napi::RangeError::New(env, "the prompt has " + std::to_string(tokens.size()) +
                                          " tokens, more than the model's context of " + std::to_string(n_ctx_train));
    }
    auto opts = info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
    bool layer_inputs = get_bool(opts, "layerInputs", true);
    int threads = (int) get_number(opts, "threads", (double) std::max(1u, std::thread::hardware_concurrency()));
    if (threads < 1) throw Napi::RangeError::New(env, "threads must be at least 1");
    const double ctx_opt = get_number(opts, "contextSize", 0);
    if (ctx_opt != 0 && (ctx_opt < (double) tokens.size() || ctx_opt > n_ctx_train)) {
        throw Napi::RangeError::New(env, "contextSize must lie between the prompt length and the model's context");
    }
    auto r = std::make_shared<ReferenceForwardRun>(this, Value(), m, std::move(tokens), layer_inputs, threads, (uint32_t) ctx_opt);
    return queue(env, [r](const Job &) { r->run(); }, [r](Napi::Env e) { return r->result(e); });
}

}  // namespace llj
