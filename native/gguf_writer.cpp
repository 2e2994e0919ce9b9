// Writing GGUF files (the synthetic test models) and quantizing them with llama.cpp.
// The architecture-specific part (which keys and tensors a model needs) lives in
// TypeScript (src/synthetic.ts); this file only writes what it is given. Tensor data is
// generated and written one tensor at a time, so large benchmark models need no more
// memory than their largest tensor.
#include "common.h"
#include "gguf_io.h"

#include "ggml.h"
#include "gguf.h"
#include "llama.h"

#include <map>
#include <memory>
#include <thread>

namespace llj {

// writeGguf(path, { copyKvFrom?, kv: [{key, type, value}], tensors: [{name, shape, init}] }) -> Promise<path>
Napi::Value WriteGguf(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString() || !info[1].IsObject()) throw Napi::TypeError::New(env, "writeGguf(path, spec)");
    auto spec = info[1].As<Napi::Object>();
    std::vector<KvEntry> kv;
    if (spec.Get("kv").IsArray()) {
        auto arr = spec.Get("kv").As<Napi::Array>();
        for (uint32_t i = 0; i < arr.Length(); ++i) {
            auto o = arr.Get(i).As<Napi::Object>();
            KvEntry e{get_string(o, "key"), get_string(o, "type"), {}, {}};
            auto v = o.Get("value");
            auto push = [&](const Napi::Value & x) {
                if (x.IsString()) e.strs.push_back(x.As<Napi::String>().Utf8Value());
                else if (x.IsBoolean()) e.nums.push_back(x.As<Napi::Boolean>().Value() ? 1 : 0);
                else if (x.IsNumber()) e.nums.push_back(x.As<Napi::Number>().DoubleValue());
                else if (!x.IsUndefined()) throw Napi::TypeError::New(env, "bad value for GGUF key " + e.key);
            };
            if (v.IsArray()) {
                auto va = v.As<Napi::Array>();
                for (uint32_t j = 0; j < va.Length(); ++j) push(va.Get(j));
            } else {
                push(v);
            }
            kv.push_back(std::move(e));
        }
    }
    std::vector<TensorSpec> tensors;
    auto tarr = spec.Get("tensors").As<Napi::Array>();
    for (uint32_t i = 0; i < tarr.Length(); ++i) {
        auto o = tarr.Get(i).As<Napi::Object>();
        TensorSpec t;
        t.name = get_string(o, "name");
        auto shape = o.Get("shape").As<Napi::Array>();
        for (uint32_t d = 0; d < shape.Length(); ++d) t.shape.push_back((int64_t) shape.Get(d).As<Napi::Number>().Int64Value());
        auto init = o.Get("init").As<Napi::Object>();
        t.init = get_string(init, "kind", "normal");
        t.a = get_number(init, "a", 0);
        t.b = get_number(init, "b", 1);
        t.seed = (uint64_t) get_number(init, "seed", 0);
        if (t.init == "data") {
            auto d = init.Get("data").As<Napi::Float32Array>();
            t.data.assign(d.Data(), d.Data() + d.ElementLength());
        }
        tensors.push_back(std::move(t));
    }
    const std::string path = info[0].As<Napi::String>().Utf8Value(), copy_kv_from = get_string(spec, "copyKvFrom");
    // shared: the work lambda is copyable; the tensor data can be large
    auto kv_all = std::make_shared<std::vector<KvEntry>>(std::move(kv));
    auto tensors_all = std::make_shared<std::vector<TensorSpec>>(std::move(tensors));
    return queue(env, [path, copy_kv_from, kv_all, tensors_all](const Job &) {
        LogCapture log;
        try {
            write_gguf_file(path, copy_kv_from, *kv_all, *tensors_all);
        } catch (const GgufError & e) {
            throw error_with_log(e.what(), log);
        }
    }, [path](Napi::Env e) -> Napi::Value { return Napi::String::New(e, path); });
}

static const std::map<std::string, llama_ftype> k_ftypes = {
    {"F32", LLAMA_FTYPE_ALL_F32},          {"F16", LLAMA_FTYPE_MOSTLY_F16},       {"BF16", LLAMA_FTYPE_MOSTLY_BF16},
    {"Q8_0", LLAMA_FTYPE_MOSTLY_Q8_0},
    {"Q4_0", LLAMA_FTYPE_MOSTLY_Q4_0},     {"Q4_K_M", LLAMA_FTYPE_MOSTLY_Q4_K_M},
    {"Q4_K_S", LLAMA_FTYPE_MOSTLY_Q4_K_S}, {"Q6_K", LLAMA_FTYPE_MOSTLY_Q6_K},
    {"Q5_K_M", LLAMA_FTYPE_MOSTLY_Q5_K_M}, {"Q5_0", LLAMA_FTYPE_MOSTLY_Q5_0},
};

// quantize(inPath, outPath, type: "Q8_0" | "Q4_0" | "Q4_K_M" | ...) -> Promise<outPath>
Napi::Value Quantize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString() || !info[1].IsString() || !info[2].IsString()) throw Napi::TypeError::New(env, "quantize(in, out, type)");
    auto it = k_ftypes.find(info[2].As<Napi::String>().Utf8Value());
    if (it == k_ftypes.end()) {
        std::string names;
        for (const auto & [k, v] : k_ftypes) names += (names.empty() ? "" : ", ") + k;
        throw Napi::RangeError::New(env, "unknown quantization type; one of: " + names);
    }
    const std::string in = info[0].As<Napi::String>().Utf8Value(), out = info[1].As<Napi::String>().Utf8Value();
    const llama_ftype ftype = it->second;
    return queue(env, [in, out, ftype](const Job &) {
        LogCapture log;
        llama_model_quantize_params qp = llama_model_quantize_default_params();
        qp.ftype = ftype;
        // F32 from a quantized file dequantizes it: the exact network of the quantized weights.
        qp.allow_requantize = ftype == LLAMA_FTYPE_ALL_F32;
        qp.nthread = (int32_t) std::max(1u, std::thread::hardware_concurrency());
        if (llama_model_quantize(in.c_str(), out.c_str(), &qp) != 0) {
            throw error_with_log("quantizing '" + in + "' failed", log);
        }
    }, [out](Napi::Env e) -> Napi::Value { return Napi::String::New(e, out); });
}

}  // namespace llj
