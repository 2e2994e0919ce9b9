// The NativeSession JS class (generation; src/generate.ts drives it token by token) and
// eogTokens(): argument checks around the engine's session (native/engine/session.h).
#include "engine/session.h"
#include "napi/common.h"
#include "napi/model.h"

#include "llama.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <thread>

namespace llj {

// A call of a session on a worker thread (serialized by the session's mutex), its result
// built on the JS thread. fn gets the abort check.
using SessionFn = std::function<void(SessionState &, const std::function<bool()> &)>;
static Napi::Promise queue_session(Napi::Env env, std::shared_ptr<SessionState> s, const Napi::Object & self, Napi::Value abort,
                                   SessionFn fn, std::function<Napi::Value(Napi::Env)> out) {
    auto keep = std::make_shared<Napi::ObjectReference>(Napi::Persistent(self));  // the session (and its model) stay alive meanwhile
    return queue(env, [s, keep, fn](const Job & job) {
        LogCapture log;
        std::lock_guard<std::mutex> lock(s->mu);
        try {
            if (job.aborted()) throw Aborted();
            fn(*s, job.aborted);
        } catch (const Aborted &) {
            throw;
        } catch (const std::exception & e) {
            throw error_with_log(e.what(), log);
        }
    }, std::move(out), env.Undefined(), abort);
}

// new NativeSession({ model, engine: "llama" | "graph", nCtx, threads, exact, tiled, blas })
class NativeSession : public Napi::ObjectWrap<NativeSession> {
  public:
    static Napi::Function Define(Napi::Env env) {
        return DefineClass(env, "NativeSession", {
            InstanceMethod("setControlVector", &NativeSession::SetControlVector),
            InstanceMethod("decode", &NativeSession::Decode),
            InstanceMethod("forward", &NativeSession::Forward),
            InstanceMethod("segment", &NativeSession::Segment),
            InstanceMethod("embed", &NativeSession::Embed),
            InstanceMethod("dispose", &NativeSession::Dispose),
        });
    }

    explicit NativeSession(const Napi::CallbackInfo & info) : Napi::ObjectWrap<NativeSession>(info) {
        Napi::Env env = info.Env();
        auto o = options_arg(info, "NativeSession");
        if (!o.Get("model").IsObject()) throw Napi::TypeError::New(env, "NativeSession({ model, engine, nCtx, ... })");
        auto model_obj = o.Get("model").As<Napi::Object>();
        NativeModel * nm = NativeModel::Unwrap(model_obj);
        auto s = std::make_shared<SessionState>();
        s->model = nm->get(env);
        s->use = std::make_unique<ModelUse>(nm, model_obj);
        const std::string engine = get_string(o, "engine", "llama");
        if (engine != "llama" && engine != "graph") throw Napi::RangeError::New(env, "engine must be \"llama\" or \"graph\"");
        s->graph = engine == "graph";
        s->threads = (int) get_number(o, "threads", (double) std::max(1u, std::thread::hardware_concurrency()));
        const double n_ctx = get_number(o, "nCtx", 0);
        if (s->threads < 1) throw Napi::RangeError::New(env, "threads must be at least 1");
        if (n_ctx < 1 || n_ctx > llama_model_n_ctx_train(s->model) || n_ctx != std::floor(n_ctx)) {
            throw Napi::RangeError::New(env, "nCtx must be an integer in [1, " + std::to_string(llama_model_n_ctx_train(s->model)) + "]");
        }
        s->n_ctx = (uint32_t) n_ctx;
        s->exact = get_bool(o, "exact", true);
        s->tiled = get_bool(o, "tiled", true);
        s->blas = get_bool(o, "blas", true);
        state_ = std::move(s);
    }

  private:
    std::shared_ptr<SessionState> state(Napi::Env env) {
        if (!state_) throw Napi::Error::New(env, "[DISPOSED] the generation session has been disposed");
        return state_;
    }

    // setControlVector({ data: Float32Array [n_embd·(n_layer − 1)] from layer 1, ilStart, ilEnd }): before the first decode.
    Napi::Value SetControlVector(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        auto o = options_arg(info, "setControlVector");
        auto s = state(env);
        std::lock_guard<std::mutex> lock(s->mu);
        if (s->graph) throw Napi::Error::New(env, "control vectors apply to the llama engine");
        if (s->lctx) throw Napi::Error::New(env, "the control vector must be set before the first decode");
        const int32_t d = llama_model_n_embd(s->model), L = llama_model_n_layer(s->model);
        std::vector<float> data = float_array_arg(env, o.Get("data"), "control vector data");
        if (data.size() != (size_t) d * (size_t) (L - 1)) {
            throw Napi::RangeError::New(env, "control vector data must hold n_embd·(n_layer − 1) = " + std::to_string((size_t) d * (L - 1)) + " values");
        }
        const int32_t start = (int32_t) get_number(o, "ilStart", 0), end = (int32_t) get_number(o, "ilEnd", 0);
        if (start < 1 || end < start || end >= L) throw Napi::RangeError::New(env, "control vector layers must lie in [1, " + std::to_string(L - 1) + "]");
        s->cvec = std::move(data);
        s->cvec_start = start;
        s->cvec_end = end;
        s->has_cvec = true;
        return env.Undefined();
    }

    // decode({ tokens: Int32Array, abortFlag? }) -> Promise<Float32Array> (llama engine): the last token's logits.
    Napi::Value Decode(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        auto o = options_arg(info, "decode");
        auto s = state(env);
        if (s->graph) throw Napi::Error::New(env, "decode is for the llama engine");
        auto tokens = checked_tokens(env, o.Get("tokens"), llama_model_get_vocab(s->model));
        if (tokens.empty()) throw Napi::RangeError::New(env, "no tokens to decode");
        auto out = std::make_shared<std::vector<float>>();
        return queue_session(env, s, Value(), o.Get("abortFlag"),
            [tokens, out](SessionState & st, const std::function<bool()> & aborted) {
                if ((size_t) st.n_past + tokens.size() > st.n_ctx) throw std::runtime_error("the sequence outgrew the session's context");
                llama_step(st, tokens, aborted, *out);
            },
            [out](Napi::Env e) -> Napi::Value { return to_float32_array(e, out->data(), out->size()); });
    }

    // forward({ tokens: Int32Array, inject: Float32Array [n·d] | null, layer, normScaled, abortFlag? })
    //   -> Promise<{ logits, hidden }> (graph engine): the whole sequence through our primal graph.
    Napi::Value Forward(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        auto o = options_arg(info, "forward");
        auto s = state(env);
        if (!s->graph) throw Napi::Error::New(env, "forward is for the graph engine");
        auto tokens = checked_tokens(env, o.Get("tokens"), llama_model_get_vocab(s->model));
        if (tokens.empty() || tokens.size() > s->n_ctx) throw Napi::RangeError::New(env, "forward needs 1 to nCtx tokens");
        const int d = llama_model_n_embd(s->model), L = llama_model_n_layer(s->model);
        std::vector<float> inject;
        const Napi::Value inject_v = o.Get("inject");
        if (!inject_v.IsNull() && !inject_v.IsUndefined()) {
            inject = float_array_arg(env, inject_v, "steering vectors");
            if (inject.size() != tokens.size() * (size_t) d) throw Napi::RangeError::New(env, "steering vectors must hold n·d values");
        }
        const int layer = (int) get_number(o, "layer", -1);
        if (!inject.empty() && (layer < 0 || layer >= L)) throw Napi::RangeError::New(env, "the steering layer must lie in [0, " + std::to_string(L) + ")");
        const bool norm_scaled = get_bool(o, "normScaled", false);
        auto logits = std::make_shared<std::vector<float>>(), hidden = std::make_shared<std::vector<float>>();
        return queue_session(env, s, Value(), o.Get("abortFlag"),
            [tokens, inject, layer, norm_scaled, logits, hidden](SessionState & st, const std::function<bool()> & aborted) {
                ensure_graph(st);
                AbortScope scope(*st.runner, aborted);
                graph_forward(st, tokens, inject, layer, norm_scaled, *logits, *hidden);
            },
            [logits, hidden](Napi::Env e) -> Napi::Value {
                auto o = Napi::Object::New(e);
                o.Set("logits", to_float32_array(e, logits->data(), logits->size()));
                o.Set("hidden", to_float32_array(e, hidden->data(), hidden->size()));
                return o;
            });
    }

    // segment({ tokens: Int32Array, stream: Float32Array [n·d] | null, fromLayer, toLayer, abortFlag? })
    //   -> Promise<{ logits, hidden }> (graph engine): layers [fromLayer, toLayer] of our primal
    //   graph on the stream entering fromLayer (null: the tokens' embeddings, fromLayer 0).
    //   toLayer < n_layer − 1: hidden is the stream after it [n·d], logits empty; else as forward.
    Napi::Value Segment(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        auto o = options_arg(info, "segment");
        auto s = state(env);
        if (!s->graph) throw Napi::Error::New(env, "segment is for the graph engine");
        auto tokens = checked_tokens(env, o.Get("tokens"), llama_model_get_vocab(s->model));
        if (tokens.empty() || tokens.size() > s->n_ctx) throw Napi::RangeError::New(env, "segment needs 1 to nCtx tokens");
        const int d = llama_model_n_embd(s->model), L = llama_model_n_layer(s->model);
        const int from = (int) get_number(o, "fromLayer", 0), to = (int) get_number(o, "toLayer", -1);
        if (from < 0 || to < from || to >= L) throw Napi::RangeError::New(env, "segment layers must satisfy 0 ≤ fromLayer ≤ toLayer < " + std::to_string(L));
        std::vector<float> stream;
        if (from > 0) {
            stream = float_array_arg(env, o.Get("stream"), "stream");
            if (stream.size() != tokens.size() * (size_t) d) throw Napi::RangeError::New(env, "the stream must hold n·d values");
        }
        auto logits = std::make_shared<std::vector<float>>(), hidden = std::make_shared<std::vector<float>>();
        return queue_session(env, s, Value(), o.Get("abortFlag"),
            [tokens, stream, from, to, logits, hidden](SessionState & st, const std::function<bool()> & aborted) {
                ensure_graph(st);
                AbortScope scope(*st.runner, aborted);
                graph_forward(st, tokens, {}, -1, false, *logits, *hidden, from, to, &stream);
            },
            [logits, hidden](Napi::Env e) -> Napi::Value {
                auto o = Napi::Object::New(e);
                o.Set("logits", to_float32_array(e, logits->data(), logits->size()));
                o.Set("hidden", to_float32_array(e, hidden->data(), hidden->size()));
                return o;
            });
    }

    // embed({ tokens: Int32Array }) -> Promise<Float32Array [n·d]> (graph engine): the input embeddings.
    Napi::Value Embed(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        auto o = options_arg(info, "embed");
        auto s = state(env);
        if (!s->graph) throw Napi::Error::New(env, "embed is for the graph engine");
        auto tokens = checked_tokens(env, o.Get("tokens"), llama_model_get_vocab(s->model));
        if (tokens.empty() || tokens.size() > s->n_ctx) throw Napi::RangeError::New(env, "embed needs 1 to nCtx tokens");
        auto out = std::make_shared<std::vector<float>>();
        return queue_session(env, s, Value(), env.Undefined(),
            [tokens, out](SessionState & st, const std::function<bool()> &) { graph_embed(st, tokens, *out); },
            [out](Napi::Env e) -> Napi::Value { return to_float32_array(e, out->data(), out->size()); });
    }

    // Frees the session once running calls are done (they hold the state).
    Napi::Value Dispose(const Napi::CallbackInfo & info) {
        state_.reset();
        return info.Env().Undefined();
    }

    std::shared_ptr<SessionState> state_;
};

// eogTokens({ model }) -> Int32Array: the tokens that end a generation (llama_vocab_is_eog).
Napi::Value EogTokens(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto o = options_arg(info, "eogTokens");
    if (!o.Get("model").IsObject()) throw Napi::TypeError::New(env, "eogTokens({ model })");
    const llama_vocab * vocab = llama_model_get_vocab(NativeModel::Unwrap(o.Get("model").As<Napi::Object>())->get(env));
    std::vector<int32_t> ids;
    const int32_t V = llama_vocab_n_tokens(vocab);
    for (int32_t t = 0; t < V; ++t) {
        if (llama_vocab_is_eog(vocab, t)) ids.push_back(t);
    }
    auto a = Napi::Int32Array::New(env, ids.size());
    std::copy(ids.begin(), ids.end(), a.Data());
    return a;
}

Napi::Function DefineSession(Napi::Env env) { return NativeSession::Define(env); }

}  // namespace llj
