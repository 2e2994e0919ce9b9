#include "napi/model.h"
#include "arch.h"
#include "engine/backends.h"
#include "engine/reference_forward.h"
#include "llama_internal.h"
#include "napi/common.h"

#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"

#include <climits>
#include <string>
#include <thread>

namespace llj {

Napi::Function NativeModel::Define(Napi::Env env) {
    Napi::Function ctor = DefineClass(env, "NativeModel", {
        InstanceMethod("info", &NativeModel::Info),
        InstanceMethod("tensors", &NativeModel::Tensors),
        InstanceMethod("tokenize", &NativeModel::Tokenize),
        InstanceMethod("detokenize", &NativeModel::Detokenize),
        InstanceMethod("tokenPieces", &NativeModel::TokenPieces),
        InstanceMethod("referenceForward", &NativeModel::ReferenceForward),
        InstanceMethod("graphSupport", &NativeModel::GraphSupport),
        InstanceMethod("dispose", &NativeModel::Dispose),
    });
    env.GetInstanceData<AddonData>()->model_ctor = Napi::Persistent(ctor);
    return ctor;
}

NativeModel::NativeModel(const Napi::CallbackInfo & info) : Napi::ObjectWrap<NativeModel>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) {
        throw Napi::TypeError::New(info.Env(), "NativeModel is created by loadModel()");
    }
    model_ = info[0].As<Napi::External<llama_model>>().Data();
}

NativeModel::~NativeModel() {
    free_model();
}

void NativeModel::free_model() {
    if (model_) llama_model_free(model_);
    model_ = nullptr;
}

Napi::Object NativeModel::Wrap(Napi::Env env, llama_model * model) {
    return env.GetInstanceData<AddonData>()->model_ctor.New({Napi::External<llama_model>::New(env, model)});
}

llama_model * NativeModel::get(Napi::Env env) const {
    if (!model_ || disposed_) throw Napi::Error::New(env, "[DISPOSED] the model has been disposed");
    return model_;
}

Napi::Value NativeModel::Dispose(const Napi::CallbackInfo & info) {
    disposed_ = true;
    if (in_use_ == 0) free_model();
    return info.Env().Undefined();
}

static std::string meta_string(const llama_model * m, int32_t i, bool key) {
    std::string buf(256, '\0');
    int32_t n = key ? llama_model_meta_key_by_index(m, i, buf.data(), buf.size())
                    : llama_model_meta_val_str_by_index(m, i, buf.data(), buf.size());
    if (n < 0) return "";
    if ((size_t) n >= buf.size()) {
        buf.assign((size_t) n + 1, '\0');
        key ? llama_model_meta_key_by_index(m, i, buf.data(), buf.size())
            : llama_model_meta_val_str_by_index(m, i, buf.data(), buf.size());
    }
    buf.resize((size_t) n);
    return buf;
}

Napi::Value NativeModel::Info(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    llama_model * m = get(env);
    const llama_vocab * vocab = llama_model_get_vocab(m);
    auto o = Napi::Object::New(env);
    char desc[256];
    llama_model_desc(m, desc, sizeof(desc));
    o.Set("description", desc);
    o.Set("nEmbd", llama_model_n_embd(m));
    o.Set("nLayer", llama_model_n_layer(m));
    o.Set("nHead", llama_model_n_head(m));
    o.Set("nHeadKv", llama_model_n_head_kv(m));
    o.Set("nCtxTrain", llama_model_n_ctx_train(m));
    o.Set("nVocab", llama_vocab_n_tokens(vocab));
    o.Set("nParams", Napi::Number::New(env, (double) llama_model_n_params(m)));
    o.Set("sizeBytes", Napi::Number::New(env, (double) llama_model_size(m)));
    o.Set("vocabType", (int) llama_vocab_type(vocab));
    o.Set("bos", llama_vocab_bos(vocab));
    o.Set("eos", llama_vocab_eos(vocab));
    o.Set("layerInputsSupported", records_layer_inputs(m));
    auto meta = Napi::Object::New(env);
    for (int32_t i = 0; i < llama_model_meta_count(m); ++i) meta.Set(meta_string(m, i, true), meta_string(m, i, false));
    o.Set("metadata", meta);
    return o;
}

// Whether our graphs implement this model exactly: { ok, affine, ignored } or { ok: false, reason }.
Napi::Value NativeModel::GraphSupport(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto o = Napi::Object::New(env);
    try {
        ModelSpec s = resolve_model(get(env), (uint32_t) llama_model_n_ctx_train(get(env)));
        o.Set("ok", true);
        o.Set("affine", s.affine);
        auto ignored = Napi::Array::New(env);
        for (const auto & n : s.ignored) ignored.Set(ignored.Length(), n);
        o.Set("ignored", ignored);
    } catch (const std::runtime_error & e) {
        o.Set("ok", false);
        o.Set("reason", e.what());
        o.Set("ignored", Napi::Array::New(env));
    }
    return o;
}

Napi::Value NativeModel::Tensors(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    llama_model * m = get(env);
    auto out = Napi::Array::New(env);
    for (const auto & [name, t] : llama_internal_get_tensor_map(m)) {
        auto o = Napi::Object::New(env);
        o.Set("name", name);
        o.Set("type", ggml_type_name(t->type));
        auto shape = Napi::Array::New(env);
        for (int d = 0; d < ggml_n_dims(t); ++d) shape.Set(d, Napi::Number::New(env, (double) t->ne[d]));
        o.Set("shape", shape);
        o.Set("bytes", Napi::Number::New(env, (double) ggml_nbytes(t)));
        std::string buffer = "none", device = "none";
        if (t->buffer) {
            buffer = ggml_backend_buffer_name(t->buffer);
            ggml_backend_dev_t dev = ggml_backend_buft_get_device(ggml_backend_buffer_get_type(t->buffer));
            if (dev) device = ggml_backend_dev_name(dev);
            else if (ggml_backend_buffer_is_host(t->buffer)) device = "CPU";
        }
        o.Set("buffer", buffer);
        o.Set("device", device);
        out.Set(out.Length(), o);
    }
    return out;
}

// tokenize({ text, addSpecial, parseSpecial }) -> Int32Array
Napi::Value NativeModel::Tokenize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto o = options_arg(info, "tokenize");
    llama_model * m = get(env);
    const llama_vocab * vocab = llama_model_get_vocab(m);
    if (!o.Get("text").IsString()) throw Napi::TypeError::New(env, "tokenize expects a string");
    if (llama_vocab_type(vocab) == LLAMA_VOCAB_TYPE_NONE) throw Napi::Error::New(env, "this model has no vocabulary (tokenizer.ggml.model is no_vocab): pass token ids or embeddings instead of text");
    std::string text = o.Get("text").As<Napi::String>().Utf8Value();
    bool add_special = get_bool(o, "addSpecial", true);
    bool parse_special = get_bool(o, "parseSpecial", false);
    if (text.size() > (size_t) INT32_MAX / 2) throw Napi::RangeError::New(env, "text too long to tokenize");
    std::vector<llama_token> tokens(text.size() + 8);
    int32_t n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), tokens.data(), (int32_t) tokens.size(), add_special, parse_special);
    if (n < 0) {
        tokens.resize((size_t) -n);
        n = llama_tokenize(vocab, text.data(), (int32_t) text.size(), tokens.data(), (int32_t) tokens.size(), add_special, parse_special);
    }
    if (n < 0) throw Napi::Error::New(env, "tokenization failed");
    auto arr = Napi::Int32Array::New(env, (size_t) n);
    std::copy(tokens.begin(), tokens.begin() + n, arr.Data());
    return arr;
}

std::vector<llama_token> checked_tokens(Napi::Env env, const Napi::Value & v, const llama_vocab * vocab) {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
        throw Napi::TypeError::New(env, "tokens must be an Int32Array");
    }
    auto arr = v.As<Napi::Int32Array>();
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    std::vector<llama_token> tokens(arr.Data(), arr.Data() + arr.ElementLength());
    for (size_t i = 0; i < tokens.size(); ++i) {
        if (tokens[i] < 0 || tokens[i] >= n_vocab) {
            throw Napi::RangeError::New(env, "token id " + std::to_string(tokens[i]) + " at position " + std::to_string(i) +
                                              " is outside the vocabulary [0, " + std::to_string(n_vocab) + ")");
        }
    }
    return tokens;
}

// The vocabulary, for calls that turn ids into text.
const llama_vocab * NativeModel::vocab_of(Napi::Env env) {
    const llama_vocab * vocab = llama_model_get_vocab(get(env));
    if (llama_vocab_type(vocab) == LLAMA_VOCAB_TYPE_NONE) throw Napi::Error::New(env, "this model has no vocabulary");
    return vocab;
}

// detokenize({ tokens, removeSpecial, unparseSpecial }) -> string
Napi::Value NativeModel::Detokenize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto o = options_arg(info, "detokenize");
    const llama_vocab * vocab = vocab_of(env);
    auto tokens = checked_tokens(env, o.Get("tokens"), vocab);
    bool remove_special = get_bool(o, "removeSpecial", false);
    bool unparse_special = get_bool(o, "unparseSpecial", false);
    std::string text(tokens.size() * 8 + 16, '\0');
    int32_t n = llama_detokenize(vocab, tokens.data(), (int32_t) tokens.size(), text.data(), (int32_t) text.size(), remove_special, unparse_special);
    if (n < 0) {
        text.resize((size_t) -n);
        n = llama_detokenize(vocab, tokens.data(), (int32_t) tokens.size(), text.data(), (int32_t) text.size(), remove_special, unparse_special);
    }
    if (n < 0) throw Napi::Error::New(env, "detokenization failed");
    text.resize((size_t) n);
    return Napi::String::New(env, text);
}

// tokenPieces({ tokens }) -> string[]: the text of each token on its own (special tokens
// rendered), for tables of decoded tokens.
Napi::Value NativeModel::TokenPieces(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto o = options_arg(info, "tokenPieces");
    const llama_vocab * vocab = vocab_of(env);
    auto tokens = checked_tokens(env, o.Get("tokens"), vocab);
    auto out = Napi::Array::New(env, tokens.size());
    std::string buf(64, '\0');
    for (size_t i = 0; i < tokens.size(); ++i) {
        int32_t n = llama_token_to_piece(vocab, tokens[i], buf.data(), (int32_t) buf.size(), 0, true);
        if (n < 0) {
            buf.resize((size_t) -n);
            n = llama_token_to_piece(vocab, tokens[i], buf.data(), (int32_t) buf.size(), 0, true);
        }
        out.Set(i, Napi::String::New(env, buf.data(), n < 0 ? 0 : (size_t) n));
    }
    return out;
}

// ---------------------------------------------------------------------------------------
// Loading

// The loaded model until it is wrapped; freed here when the load fails or is aborted.
struct LoadedModel {
    llama_model * model = nullptr;
    ~LoadedModel() {
        if (model) llama_model_free(model);
    }
};

// loadModel({ path, gpuLayers, useMmap, cpuOnly, onProgress?, abortFlag? }) -> Promise<NativeModel>
Napi::Value LoadModel(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto opts = options_arg(info, "loadModel");
    if (!backends_ready()) throw Napi::Error::New(env, "backends are not initialized (call initBackends first)");
    if (!opts.Get("path").IsString()) throw Napi::TypeError::New(env, "loadModel expects a path");
    const std::string path = opts.Get("path").As<Napi::String>().Utf8Value();
    const int32_t gpu_layers = (int32_t) get_number(opts, "gpuLayers", 0);
    const bool use_mmap = get_bool(opts, "useMmap", true), cpu_only = get_bool(opts, "cpuOnly", false);
    auto loaded = std::make_shared<LoadedModel>();
    return queue(env, [=](const Job & job) {
        LogCapture log;
        llama_model_params mp = llama_model_default_params();
        mp.n_gpu_layers = gpu_layers;
        // An empty device list keeps every weight and op on the CPU even when GPUs are loaded.
        ggml_backend_dev_t no_devices[1] = {nullptr};
        if (cpu_only) mp.devices = no_devices;
        mp.load_mode = use_mmap ? LLAMA_LOAD_MODE_MMAP : LLAMA_LOAD_MODE_NONE;
        // Lazily read tensors are only materialized by llama.cpp's own graphs.
        mp.lazy_mode = LLAMA_LAZY_MODE_OFF;
        // Repacked CPU buffers are only readable by llama.cpp's own matmul (docs/llama-cpp.md).
        mp.use_extra_bufts = false;
        mp.progress_callback = [](float p, void * report) -> bool {
            return (*static_cast<const std::function<bool(float)> *>(report))(p);
        };
        mp.progress_callback_user_data = const_cast<std::function<bool(float)> *>(&job.report);
        loaded->model = llama_model_load_from_file(path.c_str(), mp);
        if (!loaded->model) {
            if (job.aborted()) throw std::runtime_error("model loading was aborted");
            throw error_with_log("llama.cpp could not load '" + path + "'", log);
        }
    }, [loaded](Napi::Env e) -> Napi::Value {
        llama_model * m = loaded->model;
        loaded->model = nullptr;
        return NativeModel::Wrap(e, m);
    }, opts.Get("onProgress"), opts.Get("abortFlag"));
}

// referenceForward({ tokens: Int32Array, layerInputs?, threads?, contextSize? }) -> Promise
Napi::Value NativeModel::ReferenceForward(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto opts = options_arg(info, "referenceForward");
    llama_model * m = get(env);
    const llama_vocab * vocab = llama_model_get_vocab(m);
    std::vector<llama_token> tokens = checked_tokens(env, opts.Get("tokens"), vocab);
    if (tokens.empty()) throw Napi::RangeError::New(env, "the prompt is empty: at least one token is needed");
    const int32_t n_ctx_train = llama_model_n_ctx_train(m);
    if ((int64_t) tokens.size() > n_ctx_train) {
        throw Napi::RangeError::New(env, "the prompt has " + std::to_string(tokens.size()) +
                                          " tokens, more than the model's context of " + std::to_string(n_ctx_train));
    }
    bool layer_inputs = get_bool(opts, "layerInputs", true);
    int threads = (int) get_number(opts, "threads", (double) std::max(1u, std::thread::hardware_concurrency()));
    if (threads < 1) throw Napi::RangeError::New(env, "threads must be at least 1");
    const double ctx_opt = get_number(opts, "contextSize", 0);
    if (ctx_opt != 0 && (ctx_opt < (double) tokens.size() || ctx_opt > n_ctx_train)) {
        throw Napi::RangeError::New(env, "contextSize must lie between the prompt length and the model's context");
    }
    auto r = std::make_shared<llj::ReferenceForward>();
    r->model = m;
    r->tokens = std::move(tokens);
    r->layer_inputs = layer_inputs;
    r->threads = threads;
    r->n_ctx = (uint32_t) ctx_opt;
    auto use = std::make_shared<ModelUse>(this, Value());
    return queue(env, [r, use](const Job &) { r->run(); }, [r](Napi::Env e) -> Napi::Value {
        auto o = Napi::Object::New(e);
        o.Set("hidden", to_float32_array(e, r->hidden.data(), r->hidden.size()));
        o.Set("logits", to_float32_array(e, r->logits.data(), r->logits.size()));
        if (r->layer_inputs) {
            auto arr = Napi::Array::New(e, r->layers.size());
            for (size_t i = 0; i < r->layers.size(); ++i) arr.Set(i, to_float32_array(e, r->layers[i].data(), r->layers[i].size()));
            o.Set("layerInputs", arr);
        } else {
            o.Set("layerInputs", e.Null());
        }
        return o;
    });
}

}  // namespace llj
