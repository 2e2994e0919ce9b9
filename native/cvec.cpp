// Control-vector GGUF files, in the layout llama.cpp's common loader reads
// (common/common.cpp, common_control_vector_load_one; written by tools/cvector-generator):
// general.architecture = "controlvector", controlvector.model_hint (the model's
// architecture), controlvector.layer_count (i32), and one 1-D F32 tensor "direction.<il>"
// per layer il >= 1, added by llama.cpp to the output of layer il (build_cvec, before
// "l_out-<il>"); there is never a direction for layer 0. src/cvec.ts writes and checks the
// files; this reads one with ggml's gguf reader (the one common's loader uses) so that the
// checks can be made in TypeScript with clear messages.
#include "common.h"
#include "gguf_io.h"

#include "ggml.h"
#include "gguf.h"

#include <dlfcn.h>

#include <memory>
#include <string>
#include <vector>

namespace llj {

// readControlVector(path) -> Promise<{ architecture, modelHint, layerCount, tensors: [{ name, type, dims, data }] }>
Napi::Value ReadControlVector(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString()) throw Napi::TypeError::New(env, "readControlVector(path)");
    const std::string path = info[0].As<Napi::String>().Utf8Value();
    auto file = std::make_shared<CvecFile>();
    return queue(env, [path, file](const Job &) {
        LogCapture log;
        try {
            *file = read_cvec_file(path);
        } catch (const GgufError & e) {
            throw error_with_log(e.what(), log);
        }
    }, [file](Napi::Env env) -> Napi::Value {
        const CvecFile & f = *file;
        auto o = Napi::Object::New(env);
        o.Set("architecture", f.has_arch ? (Napi::Value) Napi::String::New(env, f.arch) : env.Null());
        o.Set("modelHint", f.has_hint ? (Napi::Value) Napi::String::New(env, f.hint) : env.Null());
        o.Set("layerCount", f.has_layer_count ? (Napi::Value) Napi::Number::New(env, (double) f.layer_count) : env.Null());
        auto arr = Napi::Array::New(env, f.tensors.size());
        for (size_t i = 0; i < f.tensors.size(); ++i) {
            const CvecTensor & c = f.tensors[i];
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
    });
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
