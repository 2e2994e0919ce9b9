// Entry point of the llj-gguf native addon: the exports (the typed JS surface is src/native.ts)
// and the bindings of the free functions. The JS classes have their own files: model.cpp
// (NativeModel, loadModel), linearization.cpp (NativeLinearization, linearize), session.cpp
// (NativeSession, eogTokens).
#include <napi.h>

#include "arch.h"
#include "engine/backends.h"
#include "engine/linalg.h"
#include "engine/probes.h"
#include "engine/quantize.h"
#include "gguf_io.h"
#include "napi/common.h"
#include "napi/model.h"

#include "ggml-backend.h"
#include "llama.h"

#include <dlfcn.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

namespace llj {

Napi::Value Linearize(const Napi::CallbackInfo & info);
Napi::Function DefineLinearization(Napi::Env env);
Napi::Value LoadModel(const Napi::CallbackInfo & info);
Napi::Function DefineSession(Napi::Env env);
Napi::Value EogTokens(const Napi::CallbackInfo & info);

// ---------------------------------------------------------------------------------------
// Architectures

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

// ---------------------------------------------------------------------------------------
// Backends

Napi::Value InitBackends(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw Napi::TypeError::New(env, "initBackends expects an options object");
    auto opts = info[0].As<Napi::Object>();
    std::string cpu_dir = get_string(opts, "cpuDir");
    std::string blas_library = get_string(opts, "blasLibrary");
    std::vector<std::string> gpu_libs;
    if (opts.Get("gpuLibraries").IsArray()) {
        auto arr = opts.Get("gpuLibraries").As<Napi::Array>();
        for (uint32_t i = 0; i < arr.Length(); ++i) gpu_libs.push_back(arr.Get(i).As<Napi::String>().Utf8Value());
    }

    BackendsLoaded r;
    try {
        r = init_backends(cpu_dir, gpu_libs, blas_library);
    } catch (const std::exception & e) {
        throw Napi::Error::New(env, e.what());
    }
    auto strings = [&](const std::vector<std::string> & v) {
        auto a = Napi::Array::New(env);
        for (const auto & x : v) a.Set(a.Length(), Napi::String::New(env, x));
        return a;
    };
    auto result = Napi::Object::New(env);
    result.Set("loaded", strings(r.loaded));
    result.Set("failed", strings(r.failed));
    result.Set("log", r.log);
    result.Set("alreadyInitialized", r.already);
    if (!r.already) result.Set("blasError", r.blas_error);
    return result;
}

static const char * dev_type_name(enum ggml_backend_dev_type t) {
    switch (t) {
        case GGML_BACKEND_DEVICE_TYPE_CPU: return "cpu";
        case GGML_BACKEND_DEVICE_TYPE_GPU: return "gpu";
        case GGML_BACKEND_DEVICE_TYPE_IGPU: return "igpu";
        case GGML_BACKEND_DEVICE_TYPE_ACCEL: return "accel";
        default: return "other";
    }
}

static Napi::Object describe_device(Napi::Env env, ggml_backend_dev_t dev) {
    size_t free = 0, total = 0;
    ggml_backend_dev_memory(dev, &free, &total);
    auto d = Napi::Object::New(env);
    d.Set("name", ggml_backend_dev_name(dev));
    d.Set("description", ggml_backend_dev_description(dev));
    d.Set("type", dev_type_name(ggml_backend_dev_type(dev)));
    d.Set("backend", ggml_backend_reg_name(ggml_backend_dev_backend_reg(dev)));
    d.Set("memoryFree", Napi::Number::New(env, (double) free));
    d.Set("memoryTotal", Napi::Number::New(env, (double) total));
    return d;
}

Napi::Value BackendDevices(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto out = Napi::Array::New(env);
    // The BLAS device is listed for information; only our graphs use it (see load_blas).
    if (ggml_backend_reg_t blas = blas_backend_reg()) out.Set(out.Length(), describe_device(env, ggml_backend_reg_dev_get(blas, 0)));
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) out.Set(out.Length(), describe_device(env, ggml_backend_dev_get(i)));
    return out;
}

// ---------------------------------------------------------------------------------------
// Linear algebra (native/engine/linalg.h)

// A small dense job run off the JS thread, resolving with a Float32Array.
static Napi::Promise queue_dense(Napi::Env env, std::function<std::vector<double>()> fn) {
    auto out = std::make_shared<std::vector<double>>();
    return queue(env, [fn, out](const Job &) { *out = fn(); }, [out](Napi::Env e) -> Napi::Value {
        auto a = Napi::Float32Array::New(e, out->size());
        for (size_t i = 0; i < out->size(); ++i) a[i] = (float) (*out)[i];
        return a;
    });
}

static std::vector<double> float_matrix_arg(Napi::Env env, const Napi::Value & v, size_t rows, size_t cols, const char * what) {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
        throw Napi::TypeError::New(env, std::string(what) + " must be a Float32Array");
    }
    auto a = v.As<Napi::Float32Array>();
    if (a.ElementLength() != rows * cols) {
        throw Napi::RangeError::New(env, std::string(what) + " must hold " + std::to_string(rows) + "·" + std::to_string(cols) + " values");
    }
    std::vector<double> out(a.Data(), a.Data() + a.ElementLength());
    for (double x : out) if (!std::isfinite(x)) throw Napi::RangeError::New(env, std::string(what) + " holds a non-finite value");
    return out;
}


// orthonormalizeAgainst({ basis: Float32Array [m·w] | null, block: Float32Array [b·w], width: w }) -> Float32Array [r·w]
Napi::Value OrthonormalizeAgainst(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto o = options_arg(info, "orthonormalizeAgainst");
    const Napi::Value basis_v = o.Get("basis");
    const Napi::Value block_v = o.Get("block");
    const Napi::Value width_v = o.Get("width");
    const int64_t w = width_v.As<Napi::Number>().Int64Value();
    if (w < 1) throw Napi::RangeError::New(env, "width must be positive");
    const size_t m = basis_v.IsTypedArray() ? basis_v.As<Napi::TypedArray>().ElementLength() / (size_t) w : 0;
    const size_t b = block_v.IsTypedArray() ? block_v.As<Napi::TypedArray>().ElementLength() / (size_t) w : 0;
    std::vector<double> basis = m ? float_matrix_arg(env, basis_v, m, (size_t) w, "basis") : std::vector<double>();
    std::vector<double> block = float_matrix_arg(env, block_v, b, (size_t) w, "block");
    if (b == 0) throw Napi::RangeError::New(env, "the block is empty");
    auto args = std::make_shared<std::pair<std::vector<double>, std::vector<double>>>(std::move(basis), std::move(block));
    return queue_dense(env, [args, m, b, w]() {
        return orthonormalize_against(args->first, (int64_t) m, std::move(args->second), (int64_t) b, w);
    });
}

// gemm({ a: Float32Array [p·q], b: Float32Array, p, q, w, transposeB }) -> Float32Array [p·w]:
// A B with B [q × w], or A Bᵀ with B [w × q] when transposeB; accumulated in double.
Napi::Value Gemm(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto o = options_arg(info, "gemm");
    const Napi::Value a_v = o.Get("a");
    const Napi::Value b_v = o.Get("b");
    const Napi::Value p_v = o.Get("p");
    const Napi::Value q_v = o.Get("q");
    const Napi::Value w_v = o.Get("w");
    const Napi::Value transposeB_v = o.Get("transposeB");
    const int64_t p = p_v.As<Napi::Number>().Int64Value(), q = q_v.As<Napi::Number>().Int64Value(),
                  w = w_v.As<Napi::Number>().Int64Value();
    const bool tb = transposeB_v.ToBoolean();
    if (p < 1 || q < 1 || w < 1) throw Napi::RangeError::New(env, "gemm: dimensions must be positive");
    std::vector<double> a = float_matrix_arg(env, a_v, (size_t) p, (size_t) q, "a");
    std::vector<double> bm = float_matrix_arg(env, b_v, tb ? (size_t) w : (size_t) q, tb ? (size_t) q : (size_t) w, "b");
    auto ab = std::make_shared<std::pair<std::vector<double>, std::vector<double>>>(std::move(a), std::move(bm));
    return queue_dense(env, [ab, p, q, w, tb]() { return gemm(ab->first, ab->second, p, q, w, tb); });
}

// svd({ a: Float32Array [m·n] row-major, m, n, lapack? }) -> Promise<{ u [m·r], s [r], v [n·r], rank r = min(m, n),
//     routine: "dgesdd" | "jacobi" }>; lapack: false forces the Jacobi route.
Napi::Value Svd(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto o = options_arg(info, "svd");
    const Napi::Value a_v = o.Get("a");
    const Napi::Value m_v = o.Get("m");
    const Napi::Value n_v = o.Get("n");
    if (!a_v.IsTypedArray() || a_v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
        throw Napi::TypeError::New(env, "svd expects a Float32Array");
    }
    auto arr = a_v.As<Napi::Float32Array>();
    const int64_t m = m_v.As<Napi::Number>().Int64Value(), n = n_v.As<Napi::Number>().Int64Value();
    if (m < 1 || n < 1 || (size_t) (m * n) != arr.ElementLength()) throw Napi::RangeError::New(env, "svd: the array must hold m·n values");
    std::vector<double> a(arr.Data(), arr.Data() + arr.ElementLength());
    for (double x : a) if (!std::isfinite(x)) throw Napi::RangeError::New(env, "svd: the matrix holds a non-finite value");
    const bool use_lapack = get_bool(o, "lapack", true);
    auto in = std::make_shared<std::vector<double>>(std::move(a));
    auto r = std::make_shared<SvdResult>();
    auto routine = std::make_shared<std::string>();
    return queue(env, [in, m, n, use_lapack, r, routine](const Job &) { *r = svd(std::move(*in), m, n, use_lapack, *routine); },
                 [r, routine](Napi::Env e) -> Napi::Value {
        auto o = Napi::Object::New(e);
        o.Set("u", to_float32_array(e, r->u.data(), r->u.size()));
        o.Set("s", to_float32_array(e, r->s.data(), r->s.size()));
        o.Set("v", to_float32_array(e, r->v.data(), r->v.size()));
        o.Set("rank", Napi::Number::New(e, (double) r->s.size()));
        o.Set("routine", *routine);
        return o;
    });
}


// ---------------------------------------------------------------------------------------
// Control-vector GGUF files, in the layout llama.cpp's common loader reads
// (common/common.cpp, common_control_vector_load_one; written by tools/cvector-generator):
// general.architecture = "controlvector", controlvector.model_hint (the model's
// architecture), controlvector.layer_count (i32), and one 1-D F32 tensor "direction.<il>"
// per layer il >= 1, added by llama.cpp to the output of layer il (build_cvec, before
// "l_out-<il>"); there is never a direction for layer 0. src/cvec.ts writes and checks the
// files; this reads one with ggml's gguf reader (the one common's loader uses) so that the
// checks can be made in TypeScript with clear messages.

// readControlVector({ path }) -> Promise<{ architecture, modelHint, layerCount, tensors: [{ name, type, dims, data }] }>
Napi::Value ReadControlVector(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto o = options_arg(info, "readControlVector");
    const Napi::Value path_v = o.Get("path");
    if (!path_v.IsString()) throw Napi::TypeError::New(env, "readControlVector(path)");
    const std::string path = path_v.As<Napi::String>().Utf8Value();
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

// commonControlVectorLoad({ libraryPath, path, strength }) -> { nEmbd, data, log } | null when the library is missing
Napi::Value CommonControlVectorLoad(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto o = options_arg(info, "commonControlVectorLoad");
    const Napi::Value libraryPath_v = o.Get("libraryPath");
    const Napi::Value path_v = o.Get("path");
    const Napi::Value strength_v = o.Get("strength");
    if (!libraryPath_v.IsString() || !path_v.IsString() || !strength_v.IsNumber()) {
        throw Napi::TypeError::New(env, "commonControlVectorLoad({ libraryPath, path, strength })");
    }
    void * lib = dlopen(libraryPath_v.As<Napi::String>().Utf8Value().c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) return env.Null();
    auto load = reinterpret_cast<CommonCvecLoad>(dlsym(lib, "_Z26common_control_vector_loadRKSt6vectorI31common_control_vector_load_infoSaIS0_EE"));
    if (!load) {
        dlclose(lib);
        return env.Null();
    }
    LogCapture log;
    common_control_vector_data r = load({{(float) strength_v.As<Napi::Number>().DoubleValue(), path_v.As<Napi::String>().Utf8Value()}});
    // the library stays loaded: its static state may be referenced by what it logged
    auto out = Napi::Object::New(env);
    out.Set("nEmbd", r.n_embd);
    out.Set("data", to_float32_array(env, r.data.data(), r.data.size()));
    out.Set("log", log.text());
    return out;
}

// ---------------------------------------------------------------------------------------
// Writing GGUF files (the synthetic test models) and quantizing them with llama.cpp.
// The architecture-specific part (which keys and tensors a model needs) lives in
// TypeScript (src/synthetic.ts); this file only writes what it is given. Tensor data is
// generated and written one tensor at a time, so large benchmark models need no more
// memory than their largest tensor.

// writeGguf({ path, copyKvFrom?, kv: [{key, type, value}], tensors: [{name, shape, init}] }) -> Promise<path>
Napi::Value WriteGguf(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto o = options_arg(info, "writeGguf");
    const Napi::Value path_v = o.Get("path");
    if (!path_v.IsString()) throw Napi::TypeError::New(env, "writeGguf({ path, copyKvFrom?, kv, tensors })");
    const Napi::Object & spec = o;
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
    const std::string path = path_v.As<Napi::String>().Utf8Value(), copy_kv_from = get_string(spec, "copyKvFrom");
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

// quantize({ input, output, type: "Q8_0" | "Q4_0" | "Q4_K_M" | ... }) -> Promise<output>
Napi::Value Quantize(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto o = options_arg(info, "quantize");
    const Napi::Value input_v = o.Get("input");
    const Napi::Value output_v = o.Get("output");
    const Napi::Value type_v = o.Get("type");
    if (!input_v.IsString() || !output_v.IsString() || !type_v.IsString()) throw Napi::TypeError::New(env, "quantize({ input, output, type })");
    const auto & types = quantization_types();
    auto it = types.find(type_v.As<Napi::String>().Utf8Value());
    if (it == types.end()) {
        std::string names;
        for (const auto & [k, v] : types) names += (names.empty() ? "" : ", ") + k;
        throw Napi::RangeError::New(env, "unknown quantization type; one of: " + names);
    }
    const std::string in = input_v.As<Napi::String>().Utf8Value(), out = output_v.As<Napi::String>().Utf8Value();
    const llama_ftype ftype = it->second;
    return queue(env, [in, out, ftype](const Job &) { quantize_model(in, out, ftype); }, [out](Napi::Env e) -> Napi::Value { return Napi::String::New(e, out); });
}

// ---------------------------------------------------------------------------------------
// Probes (native/engine/probes.h)

// benchGemm({ m, k, n, threads, reps }) -> Promise<{ seconds, gflops }>: Y[m×n] = W[m×k] X[k×n] in F32.
Napi::Value BenchGemm(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto o = options_arg(info, "benchGemm");
    auto num = [&](const char * key) { return o.Get(key).As<Napi::Number>().Int64Value(); };
    const int64_t m = num("m"), k = num("k"), n = num("n");
    const int threads = (int) num("threads"), reps = (int) num("reps");
    auto seconds = std::make_shared<double>(0);
    return queue(env, [=](const Job &) { *seconds = bench_gemm(m, k, n, threads, reps); }, [=](Napi::Env e) -> Napi::Value {
        auto o = Napi::Object::New(e);
        o.Set("seconds", *seconds);
        o.Set("gflops", 2.0 * m * k * n / *seconds / 1e9);
        return o;
    });
}

// benchForward({ model, tokens: Int32Array, threads, reps }) -> Promise<seconds per llama.cpp forward>
Napi::Value BenchForward(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto o = options_arg(info, "benchForward");
    const Napi::Value model_v = o.Get("model");
    const Napi::Value tokens_v = o.Get("tokens");
    const Napi::Value threads_v = o.Get("threads");
    const Napi::Value reps_v = o.Get("reps");
    auto t = tokens_v.As<Napi::Int32Array>();
    std::vector<llama_token> tokens(t.Data(), t.Data() + t.ElementLength());
    if (tokens.empty()) throw Napi::RangeError::New(env, "no tokens");
    auto obj = model_v.As<Napi::Object>();
    auto use = std::make_shared<ModelUse>(NativeModel::Unwrap(obj), obj);
    llama_model * model = NativeModel::Unwrap(obj)->get(env);
    const int threads = threads_v.As<Napi::Number>().Int32Value(), reps = reps_v.As<Napi::Number>().Int32Value();
    auto seconds = std::make_shared<double>(0);
    return queue(env, [use, model, tokens, threads, reps, seconds](const Job &) { *seconds = bench_forward(model, tokens, threads, reps); },
                 [seconds](Napi::Env e) -> Napi::Value { return Napi::Number::New(e, *seconds); });
}

Napi::Value TiledTypes(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto a = Napi::Array::New(env);
    for (int t = 0; t < GGML_TYPE_COUNT; ++t) {
        if (!tiled_type((ggml_type) t)) continue;
        auto o = Napi::Object::New(env);
        o.Set("name", ggml_type_name((ggml_type) t));
        o.Set("quantizable", quantizable((ggml_type) t));  // the self-test can make data of this type
        a.Set(a.Length(), o);
    }
    return a;
}

// tiledSelfTest({ type, rows, n, threads }) -> Promise<{ type, cols, eligible, ...mismatch counts, relative errors }>
Napi::Value TiledSelfTest(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto o = options_arg(info, "tiledSelfTest");
    const Napi::Value type_v = o.Get("type");
    const Napi::Value rows_v = o.Get("rows");
    const Napi::Value n_v = o.Get("n");
    const Napi::Value threads_v = o.Get("threads");
    const std::string name = type_v.As<Napi::String>().Utf8Value();
    int type = -1;
    for (int t = 0; t < GGML_TYPE_COUNT; ++t) {
        if (tiled_type((ggml_type) t) && name == ggml_type_name((ggml_type) t)) type = t;
    }
    if (type < 0) throw Napi::RangeError::New(env, "not a type of the tiled kernel: " + name);
    if (!quantizable((ggml_type) type)) throw Napi::RangeError::New(env, "ggml_quantize_chunk cannot make " + name);
    const int64_t m = rows_v.As<Napi::Number>().Int64Value(), n = n_v.As<Napi::Number>().Int64Value();
    if (m < 1 || n < 1 || m > 4096 || n > 4096) throw Napi::RangeError::New(env, "rows and columns must lie in [1, 4096]");
    auto t = std::make_shared<TiledKernelCheck>();
    t->type = (ggml_type) type;
    t->m = m;
    t->n = n;
    t->threads = threads_v.As<Napi::Number>().Int32Value();
    return queue(env, [t](const Job &) { t->run(); }, [t](Napi::Env e) -> Napi::Value {
        auto o = Napi::Object::New(e);
        o.Set("type", ggml_type_name(t->type));
        o.Set("cols", (double) t->k);
        o.Set("eligible", t->eligible);
        o.Set("tileMismatchRows", (double) t->tile_mismatch_rows);          // tile rows whose bits differ from to_float
        o.Set("randomBitsMismatchRows", (double) t->random_mismatch_rows);  // likewise, blocks of random bits
        o.Set("forwardMismatches", (double) t->forward_mismatch);           // W·I ≠ to_float, element count
        o.Set("transposeMismatches", (double) t->transpose_mismatch);       // Wᵀ·I ≠ to_float
        o.Set("castMismatches", (double) t->cast_mismatch);                 // ggml_cast ≠ to_float
        o.Set("forwardRelError", t->forward_rel);                           // ‖tiled − cast+mul_mat‖/‖·‖
        o.Set("transposeRelError", t->transpose_rel);                       // ‖tiled − cast+out_prod‖/‖·‖
        return o;
    });
}

}  // namespace llj


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
