// Control-vector GGUF files, in the layout llama.cpp's common loader reads
// (common/common.cpp, common_control_vector_load_one; written by tools/cvector-generator):
// general.architecture = "controlvector", controlvector.model_hint (the model's
// architecture), controlvector.layer_count (i32), and one 1-D F32 tensor "direction.<il>"
// per layer il >= 1, added by llama.cpp to the output of layer il (build_cvec, before
// "l_out-<il>"); there is never a direction for layer 0. src/cvec.ts writes and checks the
// files; this reads one with ggml's gguf reader (the one common's loader uses) so that the
// checks can be made in TypeScript with clear messages.
#include "common.h"

#include "ggml.h"
#include "gguf.h"

#include <dlfcn.h>

#include <memory>
#include <string>
#include <vector>

namespace llj {

struct CvecTensor {
    std::string name, type;
    std::vector<int64_t> dims;
    std::vector<float> data;  // F32 tensors only
};

class ReadCvecWorker : public PromiseWorker {
  public:
    ReadCvecWorker(Napi::Env env, std::string path) : PromiseWorker(env), path_(std::move(path)) {}

    void Execute() override {
        LogCapture log;
        ggml_context * ctx = nullptr;
        gguf_init_params p = {/*no_alloc =*/ false, /*ctx =*/ &ctx};
        gguf_context * g = gguf_init_from_file(path_.c_str(), p);
        if (!g) throw error_with_log("cannot read '" + path_ + "' as GGUF", log);
        std::unique_ptr<gguf_context, void (*)(gguf_context *)> gguard(g, gguf_free);
        std::unique_ptr<ggml_context, void (*)(ggml_context *)> cguard(ctx, ggml_free);
        auto str = [&](const char * key, std::string & out) {
            const int64_t k = gguf_find_key(g, key);
            if (k < 0 || gguf_get_kv_type(g, k) != GGUF_TYPE_STRING) return false;
            out = gguf_get_val_str(g, k);
            return true;
        };
        has_arch_ = str("general.architecture", arch_);
        has_hint_ = str("controlvector.model_hint", hint_);
        const int64_t lc = gguf_find_key(g, "controlvector.layer_count");
        if (lc >= 0) {
            const gguf_type t = gguf_get_kv_type(g, lc);
            if (t == GGUF_TYPE_INT32) layer_count_ = gguf_get_val_i32(g, lc);
            else if (t == GGUF_TYPE_UINT32) layer_count_ = gguf_get_val_u32(g, lc);
            has_layer_count_ = t == GGUF_TYPE_INT32 || t == GGUF_TYPE_UINT32;
        }
        for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) {
            CvecTensor c;
            c.name = gguf_get_tensor_name(g, i);
            ggml_tensor * t = ggml_get_tensor(ctx, c.name.c_str());
            c.type = ggml_type_name(t->type);
            for (int k = 0; k < ggml_n_dims(t); ++k) c.dims.push_back(t->ne[k]);
            if (t->type == GGML_TYPE_F32) {
                const float * src = (const float *) t->data;
                c.data.assign(src, src + ggml_nelements(t));
            }
            tensors_.push_back(std::move(c));
        }
    }

    Napi::Value Result(Napi::Env env) override {
        auto o = Napi::Object::New(env);
        o.Set("architecture", has_arch_ ? (Napi::Value) Napi::String::New(env, arch_) : env.Null());
        o.Set("modelHint", has_hint_ ? (Napi::Value) Napi::String::New(env, hint_) : env.Null());
        o.Set("layerCount", has_layer_count_ ? (Napi::Value) Napi::Number::New(env, (double) layer_count_) : env.Null());
        auto arr = Napi::Array::New(env, tensors_.size());
        for (size_t i = 0; i < tensors_.size(); ++i) {
            const CvecTensor & c = tensors_[i];
            auto t = Napi::Object::New(env);
            t.Set("name", c.name);
            t.Set("type", c.type);
            auto dims = Napi::Array::New(env, c.dims.size());
            for (size_t k = 0; k < c.dims.size(); ++k) dims.Set(k, Napi::Number::New(env, (double) c.dims[k]));
            t.Set("dims", dims);
            t.Set("data", c.type == "f32" ? (Napi::Value) to_float32_array(env, c.data.data(), c.data.size()) : env.Null());
            arr.Set(i, t);
        }
        o.Set("tensors", arr);
        return o;
    }

  private:
    std::string path_, arch_, hint_;
    bool has_arch_ = false, has_hint_ = false, has_layer_count_ = false;
    int64_t layer_count_ = 0;
    std::vector<CvecTensor> tensors_;
};

// readControlVector(path) -> Promise<{ architecture, modelHint, layerCount, tensors: [{ name, type, dims, data }] }>
Napi::Value ReadControlVector(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString()) throw Napi::TypeError::New(env, "readControlVector(path)");
    auto * w = new ReadCvecWorker(env, info[0].As<Napi::String>().Utf8Value());
    w->Queue();
    return w->Promise();
}

// Test support: llama.cpp's own loader, common_control_vector_load from libllama-common
// (shipped by the prebuilt packages; absent from a build with LLAMA_BUILD_COMMON=OFF, hence
// loaded at run time). Declared exactly as in the bundle's common/common.h (C++ linkage).
struct common_control_vector_load_info {
    float strength;
    std::string fname;
};
struct common_control_vector_data {
    int n_embd;
    std::vector<float> data;  // layers [1, n_layer], layer 1 at [0]
};
using CommonCvecLoad = common_control_vector_data (*)(const std::vector<common_control_vector_load_info> &);

// commonControlVectorLoad(libraryPath, path, strength) -> { nEmbd, data } | null when the library is missing
Napi::Value CommonControlVectorLoad(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString() || !info[1].IsString() || !info[2].IsNumber()) {
        throw Napi::TypeError::New(env, "commonControlVectorLoad(libraryPath, path, strength)");
    }
    void * lib = dlopen(info[0].As<Napi::String>().Utf8Value().c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) return env.Null();
    auto load = reinterpret_cast<CommonCvecLoad>(dlsym(lib, "_Z26common_control_vector_loadRKSt6vectorI31common_control_vector_load_infoSaIS0_EE"));
    if (!load) {
        dlclose(lib);
        return env.Null();
    }
    LogCapture log;
    common_control_vector_data r = load({{(float) info[2].As<Napi::Number>().DoubleValue(), info[1].As<Napi::String>().Utf8Value()}});
    // the library stays loaded: its static state may be referenced by what it logged
    auto o = Napi::Object::New(env);
    o.Set("nEmbd", r.n_embd);
    o.Set("data", to_float32_array(env, r.data.data(), r.data.size()));
    o.Set("log", log.text());
    return o;
}

}  // namespace llj
