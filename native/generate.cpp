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
// Every call runs on a worker thread; calls of one session are serialized by its mutex.
#include "arch.h"
#include "common.h"
#include "graphs.h"
#include "model.h"
#include "primal.h"
#include "runner.h"

#include "llama.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <thread>

namespace llj {

struct SessionState {
    const llama_model * model = nullptr;
    std::unique_ptr<ModelUse> use;  // holds the model while the session lives (released last)
    bool graph = false;             // engine: our graph (true) or llama.cpp's decode (false)
    int threads = 1;
    uint32_t n_ctx = 0;             // the most positions this session will see
    std::mutex mu;

    // llama engine
    llama_context * lctx = nullptr;
    int32_t n_past = 0;
    std::vector<float> cvec;        // n_embd × (n_layer − 1), from layer 1 (llama_set_adapter_cvec's layout)
    int32_t cvec_start = 0, cvec_end = 0;
    bool has_cvec = false;

    // graph engine
    bool exact = true, tiled = true, blas = true;
    bool resolved = false;
    ModelSpec spec;
    std::unique_ptr<GraphRunner> runner;

    ~SessionState() {
        if (lctx) llama_free(lctx);
        runner.reset();
        use.reset();
    }
    size_t graph_size() const {  // as LinState::graph_size
        return (size_t) (200 * spec.n_layer + 8 * spec.n_layer * (spec.n_head / spec.n_head_kv + spec.n_expert_used) + 512);
    }
};

static ggml_tensor * named_input(ggml_context * ctx, const char * name, ggml_type type, int64_t ne0, int64_t ne1 = 1) {
    ggml_tensor * t = ggml_new_tensor_2d(ctx, type, ne0, ne1);
    ggml_set_name(t, name);
    ggml_set_input(t);
    return t;
}

// Our graph's model description and runner, made on first use (off the JS thread).
static void ensure_graph(SessionState & s) {
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
static void graph_forward(SessionState & s, const std::vector<int32_t> & tokens, const std::vector<float> & inject, int layer,
                          bool norm_scaled, std::vector<float> & logits, std::vector<float> & hidden, int from = 0, int to = -1,
                          const std::vector<float> * stream = nullptr) {
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
static void graph_embed(SessionState & s, const std::vector<int32_t> & tokens, std::vector<float> & out) {
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
static void llama_step(SessionState & s, const std::vector<int32_t> & tokens, const std::function<bool()> & aborted, std::vector<float> & logits) {
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

// new NativeSession(model, { engine: "llama" | "graph", nCtx, threads, exact, tiled, blas })
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
        if (!info[0].IsObject() || !info[1].IsObject()) throw Napi::TypeError::New(env, "NativeSession(model, options)");
        auto model_obj = info[0].As<Napi::Object>();
        NativeModel * nm = NativeModel::Unwrap(model_obj);
        auto o = info[1].As<Napi::Object>();
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

    // setControlVector(data: Float32Array [n_embd·(n_layer − 1)] from layer 1, ilStart, ilEnd): before the first decode.
    Napi::Value SetControlVector(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        auto s = state(env);
        std::lock_guard<std::mutex> lock(s->mu);
        if (s->graph) throw Napi::Error::New(env, "control vectors apply to the llama engine");
        if (s->lctx) throw Napi::Error::New(env, "the control vector must be set before the first decode");
        const int32_t d = llama_model_n_embd(s->model), L = llama_model_n_layer(s->model);
        std::vector<float> data = float_array_arg(env, info[0], "control vector data");
        if (data.size() != (size_t) d * (size_t) (L - 1)) {
            throw Napi::RangeError::New(env, "control vector data must hold n_embd·(n_layer − 1) = " + std::to_string((size_t) d * (L - 1)) + " values");
        }
        const int32_t start = info[1].As<Napi::Number>().Int32Value(), end = info[2].As<Napi::Number>().Int32Value();
        if (start < 1 || end < start || end >= L) throw Napi::RangeError::New(env, "control vector layers must lie in [1, " + std::to_string(L - 1) + "]");
        s->cvec = std::move(data);
        s->cvec_start = start;
        s->cvec_end = end;
        s->has_cvec = true;
        return env.Undefined();
    }

    // decode(tokens: Int32Array, abortFlag?) -> Promise<Float32Array> (llama engine): the last token's logits.
    Napi::Value Decode(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        auto s = state(env);
        if (s->graph) throw Napi::Error::New(env, "decode is for the llama engine");
        auto tokens = checked_tokens(env, info[0], llama_model_get_vocab(s->model));
        if (tokens.empty()) throw Napi::RangeError::New(env, "no tokens to decode");
        auto out = std::make_shared<std::vector<float>>();
        return queue_session(env, s, Value(), info[1],
            [tokens, out](SessionState & st, const std::function<bool()> & aborted) {
                if ((size_t) st.n_past + tokens.size() > st.n_ctx) throw std::runtime_error("the sequence outgrew the session's context");
                llama_step(st, tokens, aborted, *out);
            },
            [out](Napi::Env e) -> Napi::Value { return to_float32_array(e, out->data(), out->size()); });
    }

    // forward(tokens: Int32Array, inject: Float32Array [n·d] | null, layer, normScaled, abortFlag?)
    //   -> Promise<{ logits, hidden }> (graph engine): the whole sequence through our primal graph.
    Napi::Value Forward(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        auto s = state(env);
        if (!s->graph) throw Napi::Error::New(env, "forward is for the graph engine");
        auto tokens = checked_tokens(env, info[0], llama_model_get_vocab(s->model));
        if (tokens.empty() || tokens.size() > s->n_ctx) throw Napi::RangeError::New(env, "forward needs 1 to nCtx tokens");
        const int d = llama_model_n_embd(s->model), L = llama_model_n_layer(s->model);
        std::vector<float> inject;
        if (!info[1].IsNull() && !info[1].IsUndefined()) {
            inject = float_array_arg(env, info[1], "steering vectors");
            if (inject.size() != tokens.size() * (size_t) d) throw Napi::RangeError::New(env, "steering vectors must hold n·d values");
        }
        const int layer = info[2].IsNumber() ? info[2].As<Napi::Number>().Int32Value() : -1;
        if (!inject.empty() && (layer < 0 || layer >= L)) throw Napi::RangeError::New(env, "the steering layer must lie in [0, " + std::to_string(L) + ")");
        const bool norm_scaled = info[3].ToBoolean();
        auto logits = std::make_shared<std::vector<float>>(), hidden = std::make_shared<std::vector<float>>();
        return queue_session(env, s, Value(), info[4],
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

    // segment(tokens: Int32Array, stream: Float32Array [n·d] | null, fromLayer, toLayer, abortFlag?)
    //   -> Promise<{ logits, hidden }> (graph engine): layers [fromLayer, toLayer] of our primal
    //   graph on the stream entering fromLayer (null: the tokens' embeddings, fromLayer 0).
    //   toLayer < n_layer − 1: hidden is the stream after it [n·d], logits empty; else as forward.
    Napi::Value Segment(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        auto s = state(env);
        if (!s->graph) throw Napi::Error::New(env, "segment is for the graph engine");
        auto tokens = checked_tokens(env, info[0], llama_model_get_vocab(s->model));
        if (tokens.empty() || tokens.size() > s->n_ctx) throw Napi::RangeError::New(env, "segment needs 1 to nCtx tokens");
        const int d = llama_model_n_embd(s->model), L = llama_model_n_layer(s->model);
        const int from = info[2].As<Napi::Number>().Int32Value(), to = info[3].As<Napi::Number>().Int32Value();
        if (from < 0 || to < from || to >= L) throw Napi::RangeError::New(env, "segment layers must satisfy 0 ≤ fromLayer ≤ toLayer < " + std::to_string(L));
        std::vector<float> stream;
        if (from > 0) {
            stream = float_array_arg(env, info[1], "stream");
            if (stream.size() != tokens.size() * (size_t) d) throw Napi::RangeError::New(env, "the stream must hold n·d values");
        }
        auto logits = std::make_shared<std::vector<float>>(), hidden = std::make_shared<std::vector<float>>();
        return queue_session(env, s, Value(), info[4],
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

    // embed(tokens: Int32Array) -> Promise<Float32Array [n·d]> (graph engine): the input embeddings.
    Napi::Value Embed(const Napi::CallbackInfo & info) {
        Napi::Env env = info.Env();
        auto s = state(env);
        if (!s->graph) throw Napi::Error::New(env, "embed is for the graph engine");
        auto tokens = checked_tokens(env, info[0], llama_model_get_vocab(s->model));
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

// eogTokens(model) -> Int32Array: the tokens that end a generation (llama_vocab_is_eog).
Napi::Value EogTokens(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw Napi::TypeError::New(env, "eogTokens(model)");
    const llama_vocab * vocab = llama_model_get_vocab(NativeModel::Unwrap(info[0].As<Napi::Object>())->get(env));
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
