// Entry point of the llj-gguf native addon. The typed JS surface is src/native.ts.
#include <napi.h>

#include "arch.h"
#include "backends.h"
#include "common.h"
#include "model.h"

namespace llj {
Napi::Value WriteGguf(const Napi::CallbackInfo & info);
Napi::Value Quantize(const Napi::CallbackInfo & info);
Napi::Value Linearize(const Napi::CallbackInfo & info);
Napi::Function DefineLinearization(Napi::Env env);
Napi::Value BenchGemm(const Napi::CallbackInfo & info);
Napi::Value BenchForward(const Napi::CallbackInfo & info);
Napi::Value Svd(const Napi::CallbackInfo & info);
Napi::Value OrthonormalizeAgainst(const Napi::CallbackInfo & info);
Napi::Value Gemm(const Napi::CallbackInfo & info);
Napi::Value TiledTypes(const Napi::CallbackInfo & info);
Napi::Value TiledSelfTest(const Napi::CallbackInfo & info);
Napi::Function DefineSession(Napi::Env env);
Napi::Value EogTokens(const Napi::CallbackInfo & info);
Napi::Value ReadControlVector(const Napi::CallbackInfo & info);
Napi::Value CommonControlVectorLoad(const Napi::CallbackInfo & info);

// The registry of model families (native/arch/registry.cpp):
// { supported: [name], families: [{ family, names }], refused: [{ pattern, reason }], otherReason }.
static Napi::Value Architectures(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto supported = Napi::Array::New(env);
    auto families = Napi::Array::New(env);
    for (const ArchSpec & a : supported_architectures()) {
        supported.Set(supported.Length(), a.name);
        const uint32_t last = families.Length();
        if (last == 0 || families.Get(last - 1).As<Napi::Object>().Get("family").As<Napi::String>().Utf8Value() != a.family) {
            auto f = Napi::Object::New(env);
            f.Set("family", a.family);
            f.Set("names", Napi::Array::New(env));
            families.Set(last, f);
        }
        auto names = families.Get(families.Length() - 1).As<Napi::Object>().Get("names").As<Napi::Array>();
        names.Set(names.Length(), a.name);
    }
    auto refused = Napi::Array::New(env);
    for (const Refusal & r : refused_architectures()) {
        auto o = Napi::Object::New(env);
        o.Set("pattern", r.pattern);
        o.Set("reason", r.reason);
        refused.Set(refused.Length(), o);
    }
    auto out = Napi::Object::New(env);
    out.Set("supported", supported);
    out.Set("families", families);
    out.Set("refused", refused);
    out.Set("otherReason", kNoGraphReason);
    return out;
}
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
    llj::install_log_callback();
    env.SetInstanceData<llj::AddonData>(new llj::AddonData());
    exports.Set("llamaCppTag", LLJ_LLAMA_CPP_TAG);
    exports.Set("architectures", Napi::Function::New(env, llj::Architectures));
    exports.Set("initBackends", Napi::Function::New(env, llj::InitBackends));
    exports.Set("backendDevices", Napi::Function::New(env, llj::BackendDevices));
    exports.Set("loadModel", Napi::Function::New(env, llj::LoadModel));
    exports.Set("writeGguf", Napi::Function::New(env, llj::WriteGguf));
    exports.Set("quantize", Napi::Function::New(env, llj::Quantize));
    exports.Set("NativeModel", llj::NativeModel::Define(env));
    exports.Set("NativeLinearization", llj::DefineLinearization(env));
    exports.Set("linearize", Napi::Function::New(env, llj::Linearize));
    exports.Set("svd", Napi::Function::New(env, llj::Svd));
    exports.Set("orthonormalizeAgainst", Napi::Function::New(env, llj::OrthonormalizeAgainst));
    exports.Set("gemm", Napi::Function::New(env, llj::Gemm));
    exports.Set("benchGemm", Napi::Function::New(env, llj::BenchGemm));
    exports.Set("benchForward", Napi::Function::New(env, llj::BenchForward));
    exports.Set("tiledTypes", Napi::Function::New(env, llj::TiledTypes));
    exports.Set("tiledSelfTest", Napi::Function::New(env, llj::TiledSelfTest));
    exports.Set("NativeSession", llj::DefineSession(env));  // generation (generate.cpp)
    exports.Set("eogTokens", Napi::Function::New(env, llj::EogTokens));
    exports.Set("readControlVector", Napi::Function::New(env, llj::ReadControlVector));  // cvec.cpp
    exports.Set("commonControlVectorLoad", Napi::Function::New(env, llj::CommonControlVectorLoad));
    return exports;
}

NODE_API_MODULE(llj_gguf, Init)
