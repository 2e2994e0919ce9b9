// The NativeLinearization JS class and linearize(): argument checks and conversions around
// the engine's linearization (native/engine/linearization.h). Each pass runs on a worker
// thread with the state locked (queue()).
#include "arch.h"
#include "engine/linearization.h"
#include "engine/primal.h"
#include "napi/common.h"
#include "napi/model.h"

#include "llama.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <thread>

namespace llj {


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

// The { firstPosition } of a pass's options: an integer in [0, n), default 0.
static int first_position_arg(Napi::Env env, const Napi::Value & v, int n) {
    const double p = v.IsObject() ? get_number(v.As<Napi::Object>(), "firstPosition", 0) : 0;
    if (p != std::floor(p) || p < 0 || p >= n) throw Napi::RangeError::New(env, "firstPosition must be an integer in [0, " + std::to_string(n) + ")");
    return (int) p;
}

// jvp({ tangents: Float32Array [B·(n - firstPosition)·d], batch: B, allPositions, onProgress?, abortFlag?,
//       fromLayer, tap, tapLayer, firstPosition, affine }) -> [B·d], or [B·(n - firstPosition)·d] with allPositions
Napi::Value NativeLinearization::Jvp(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto o = options_arg(info, "jvp");
    auto s = state(env);
    std::vector<float> v = float_array_arg(env, o.Get("tangents"), "tangents");
    const int B = (int) get_number(o, "batch", 0);
    const bool all = get_bool(o, "allPositions", false);
    BuildOptions opt = tap_options(env, o, *s);
    opt.first_position = first_position_arg(env, o, s->n);
    // The affine map L(v) + c (biases included): the quantity itself at the primal input.
    const bool affine = get_bool(o, "affine", false);
    if (affine && opt.first_position != 0) throw Napi::RangeError::New(env, "the affine map covers every position (no firstPosition)");
    const int nv = s->n - opt.first_position;
    if (B < 1 || v.size() != (size_t) B * nv * s->d) {
        throw Napi::RangeError::New(env, "tangents must hold B·(n − firstPosition)·d = " + std::to_string(B) + "·" + std::to_string(nv) + "·" +
                                             std::to_string(s->d) + " values, got " + std::to_string(v.size()));
    }
    auto vs = std::make_shared<std::vector<float>>(std::move(v));
    auto fn = [vs, B, all, affine, opt](LinState & st, std::vector<float> & out, const std::function<bool(float)> & progress) {
        jvp(st, *vs, B, all, affine, opt, out, progress);
    };
    return queue_pass(env, s, Value(), fn, o.Get("onProgress"), o.Get("abortFlag"));
}

// vjp({ cotangents: Float32Array [B·d] or [B·(n - firstPosition)·d], batch: B, allPositions, onProgress?, abortFlag?,
//       fromLayer, tap, tapLayer, firstPosition }) -> Float32Array [B·(n - firstPosition)·d]
Napi::Value NativeLinearization::Vjp(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto o = options_arg(info, "vjp");
    auto s = state(env);
    std::vector<float> u = float_array_arg(env, o.Get("cotangents"), "cotangents");
    const int B = (int) get_number(o, "batch", 0);
    const bool all = get_bool(o, "allPositions", false);
    BuildOptions opt = tap_options(env, o, *s);
    opt.first_position = first_position_arg(env, o, s->n);
    const size_t per = (size_t) (all ? s->n - opt.first_position : 1) * s->d;
    if (B < 1 || u.size() != (size_t) B * per) {
        throw Napi::RangeError::New(env, "cotangents must hold " + std::string(all ? "B·(n − firstPosition)·d" : "B·d") + " = " +
                                             std::to_string(B * per) + " values, got " + std::to_string(u.size()));
    }
    auto us = std::make_shared<std::vector<float>>(std::move(u));
    auto fn = [us, B, all, opt](LinState & st, std::vector<float> & out, const std::function<bool(float)> & progress) {
        vjp(st, *us, B, all, opt, out, progress);
    };
    return queue_pass(env, s, Value(), fn, o.Get("onProgress"), o.Get("abortFlag"));
}

// jacobian({ onProgress?, abortFlag?, fromLayer, tap, tapLayer, firstPosition }) -> Float32Array
// [(n - p)·d·d], p = firstPosition: block J_i (row-major [d × d], J_i[k][c] = ∂y_k/∂x_{i,c}) at
// offset (i - p)·d·d for i in [p, n). Reverse mode: d VJPs of the unit vectors, each over
// positions [p, n) only (exact by causality; J_last costs one position per VJP).
Napi::Value NativeLinearization::Jacobian(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto o = options_arg(info, "jacobian");
    auto s = state(env);
    BuildOptions opt = tap_options(env, o, *s);
    opt.first_position = first_position_arg(env, o, s->n);
    auto fn = [opt](LinState & st, std::vector<float> & out, const std::function<bool(float)> & progress) { jacobian(st, opt, out, progress); };
    return queue_pass(env, s, Value(), fn, o.Get("onProgress"), o.Get("abortFlag"));
}

// forward({ embeddings [n·d], abortFlag? }) -> hidden [n·d]: the real (non-detached) network at
// other input embeddings, with the same positions; the linearization is unchanged.
Napi::Value NativeLinearization::Forward(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto o = options_arg(info, "forward");
    auto s = state(env);
    std::vector<float> e = float_array_arg(env, o.Get("embeddings"), "embeddings");
    if (e.size() != (size_t) s->n * s->d) throw Napi::RangeError::New(env, "embeddings must hold n·d values");
    auto es = std::make_shared<std::vector<float>>(std::move(e));
    auto fn = [es](LinState & st, std::vector<float> & out, const std::function<bool(float)> &) { run_primal(st, es.get(), false, out); };
    return queue_pass(env, s, Value(), fn, env.Undefined(), o.Get("abortFlag"));
}

// vocabProducts({ vectors [B·d], batch: B, kind: "lmHead" | "embedding" }) -> [B·V]: W_U v for each v, or
// the cosine between v and every token's input embedding (for decoding singular vectors).
Napi::Value NativeLinearization::VocabProducts(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto o = options_arg(info, "vocabProducts");
    auto s = state(env);
    std::vector<float> v = float_array_arg(env, o.Get("vectors"), "vectors");
    const int B = (int) get_number(o, "batch", 0);
    const bool embedding = get_string(o, "kind") == "embedding";
    if (B < 1 || v.size() != (size_t) B * s->d) throw Napi::RangeError::New(env, "vectors must hold B·d values");
    auto vs = std::make_shared<std::vector<float>>(std::move(v));
    auto fn = [vs, B, embedding](LinState & st, std::vector<float> & out, const std::function<bool(float)> &) {
        vocab_products(st, *vs, B, embedding, out);
    };
    return queue_pass(env, s, Value(), fn, env.Undefined(), env.Undefined());
}

// lmHeadRows({ tokens: Int32Array }) -> Float32Array [k·(d + 1)]: for each token the LM head row
// (times output.scale) and, last, its output bias (0 without one): logit_t = row·y + bias.
Napi::Value NativeLinearization::LmHeadRows(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto o = options_arg(info, "lmHeadRows");
    auto s = state(env);
    const Napi::Value t = o.Get("tokens");
    if (!t.IsTypedArray() || t.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
        throw Napi::TypeError::New(env, "tokens must be an Int32Array");
    }
    auto ta = t.As<Napi::Int32Array>();
    std::vector<int32_t> tokens(ta.Data(), ta.Data() + ta.ElementLength());
    for (int32_t t : tokens) {
        if (t < 0 || t >= s->spec.output->ne[1]) throw Napi::RangeError::New(env, "token id " + std::to_string(t) + " is outside the vocabulary");
    }
    if (tokens.empty()) throw Napi::RangeError::New(env, "no tokens");
    auto fn = [tokens](LinState & st, std::vector<float> & out, const std::function<bool(float)> &) { lm_head_rows(st, tokens, out); };
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
        try {
            std::vector<float> w = read_f32(g);
            return to_float32_array(env, w.data(), w.size());
        } catch (const std::exception & e) {
            throw Napi::Error::New(env, e.what());
        }
    };
    auto o = Napi::Object::New(env);
    o.Set("weight", read(s->spec.output_norm));
    o.Set("bias", read(s->spec.output_norm_b));
    o.Set("eps", s->spec.norm_eps);
    o.Set("layerNorm", s->spec.arch.norms.kind == NormKind::Layer);
    return o;
}

// ---------------------------------------------------------------------------------------

// linearize({ model, tokens: Int32Array | null, embeddings: Float32Array | null, threads, exact, ordinary,
//             relevance, batchMemoryBytes, blas, tiled, contextSize, onProgress?, abortFlag? }) -> Promise<NativeLinearization>
Napi::Value Linearize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto opts = options_arg(info, "linearize");
    if (!opts.Get("model").IsObject()) throw Napi::TypeError::New(env, "linearize({ model, tokens, embeddings, ... })");
    auto model_obj = opts.Get("model").As<Napi::Object>();
    NativeModel * nm = NativeModel::Unwrap(model_obj);
    llama_model * model = nm->get(env);
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
    if (opts.Get("tokens").IsTypedArray()) {
        s->tokens = checked_tokens(env, opts.Get("tokens"), llama_model_get_vocab(model));
        s->n = (int) s->tokens.size();
    } else {
        embeddings = float_array_arg(env, opts.Get("embeddings"), "embeddings");
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
            linearize(*state, *e, threads, budget, n_ctx, job.aborted, job.report);
        } catch (const std::exception & ex) {
            throw error_with_log(ex.what(), log);
        }
    }, [state, keep](Napi::Env env) -> Napi::Value {
        // the JS object takes a new owner of the state (see NativeLinearization's constructor)
        return env.GetInstanceData<AddonData>()->linearization_ctor.New({Napi::External<std::shared_ptr<LinState>>::New(env, new std::shared_ptr<LinState>(state)), keep->Value()});
    }, opts.Get("onProgress"), opts.Get("abortFlag"));
}

Napi::Function DefineLinearization(Napi::Env env) {
    return NativeLinearization::Define(env);
}

}  // namespace llj