// Writing GGUF files (the synthetic test models) and quantizing them with llama.cpp.
// The architecture-specific part (which keys and tensors a model needs) lives in
// TypeScript (src/synthetic.ts); this file only writes what it is given. Tensor data is
// generated and written one tensor at a time, so large benchmark models need no more
// memory than their largest tensor.
#include "common.h"

#include "ggml.h"
#include "gguf.h"
#include "llama.h"

#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <thread>

namespace llj {

struct KvEntry {
    std::string key, type;
    std::vector<std::string> strs;
    std::vector<double> nums;
};

struct TensorSpec {
    std::string name;
    std::vector<int64_t> shape;
    std::string init;  // normal | uniform | constant | data
    double a = 0, b = 0;
    uint64_t seed = 0;
    std::vector<float> data;
};

// splitmix64: small, fast, and identical on every platform (deterministic test models).
static inline uint64_t splitmix64(uint64_t & s) {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline double uniform01(uint64_t & s) { return ((splitmix64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

static void fill_tensor(const TensorSpec & t, std::vector<float> & out, size_t n) {
    out.resize(n);
    uint64_t s = t.seed;
    if (t.init == "data") {
        std::copy(t.data.begin(), t.data.end(), out.begin());
    } else if (t.init == "constant") {
        std::fill(out.begin(), out.end(), (float) t.a);
    } else if (t.init == "uniform") {
        for (size_t i = 0; i < n; ++i) out[i] = (float) (t.a + (t.b - t.a) * uniform01(s));
    } else {  // normal(mean a, std b), Box-Muller
        for (size_t i = 0; i < n; i += 2) {
            double u1 = uniform01(s), u2 = uniform01(s);
            double r = std::sqrt(-2.0 * std::log(u1));
            out[i] = (float) (t.a + t.b * r * std::cos(2 * M_PI * u2));
            if (i + 1 < n) out[i + 1] = (float) (t.a + t.b * r * std::sin(2 * M_PI * u2));
        }
    }
}

class WriteGgufWorker : public PromiseWorker {
  public:
    WriteGgufWorker(Napi::Env env, std::string path, std::string copy_kv_from, std::vector<KvEntry> kv,
                    std::vector<TensorSpec> tensors)
        : PromiseWorker(env), path_(std::move(path)), copy_kv_from_(std::move(copy_kv_from)),
          kv_(std::move(kv)), tensors_(std::move(tensors)) {}

    void Execute() override {
        LogCapture log;
        gguf_context * gctx = gguf_init_empty();
        std::unique_ptr<gguf_context, void (*)(gguf_context *)> gguard(gctx, gguf_free);
        if (!copy_kv_from_.empty()) {
            gguf_init_params p = {/*no_alloc =*/ true, /*ctx =*/ nullptr};
            gguf_context * src = gguf_init_from_file(copy_kv_from_.c_str(), p);
            if (!src) throw error_with_log("cannot read GGUF '" + copy_kv_from_ + "'", log);
            gguf_set_kv(gctx, src);
            gguf_free(src);
        }
        for (const auto & e : kv_) set_kv(gctx, e);

        // Tensor descriptors only (no_alloc): the data is streamed below.
        ggml_init_params ip = {ggml_tensor_overhead() * (tensors_.size() + 1), nullptr, /*no_alloc =*/ true};
        ggml_context * tctx = ggml_init(ip);
        std::unique_ptr<ggml_context, void (*)(ggml_context *)> tguard(tctx, ggml_free);
        for (const auto & t : tensors_) {
            if (t.shape.empty() || t.shape.size() > 4) throw std::runtime_error("tensor " + t.name + ": 1 to 4 dimensions");
            int64_t ne[4] = {1, 1, 1, 1};
            for (size_t d = 0; d < t.shape.size(); ++d) ne[d] = t.shape[d];
            ggml_tensor * gt = ggml_new_tensor(tctx, GGML_TYPE_F32, (int) t.shape.size(), ne);
            ggml_set_name(gt, t.name.c_str());
            if (t.init == "data" && (int64_t) t.data.size() != ggml_nelements(gt)) {
                throw std::runtime_error("tensor " + t.name + ": data length does not match its shape");
            }
            gguf_add_tensor(gctx, gt);
        }
        if (!gguf_write_to_file(gctx, path_.c_str(), /*only_meta =*/ true)) {
            throw error_with_log("cannot write '" + path_ + "'", log);
        }
        FILE * f = std::fopen(path_.c_str(), "r+b");
        if (!f) throw std::runtime_error("cannot reopen '" + path_ + "'");
        std::unique_ptr<FILE, int (*)(FILE *)> fguard(f, std::fclose);
        const size_t data_start = gguf_get_meta_size(gctx);
        const size_t alignment = gguf_get_alignment(gctx);
        std::vector<float> buf;
        size_t end = data_start;
        for (int64_t i = 0; i < gguf_get_n_tensors(gctx); ++i) {
            const TensorSpec & t = tensors_[(size_t) i];
            size_t n = 1;
            for (auto d : t.shape) n *= (size_t) d;
            fill_tensor(t, buf, n);
            size_t off = data_start + gguf_get_tensor_offset(gctx, i);
            if (std::fseek(f, (long) off, SEEK_SET) != 0 || std::fwrite(buf.data(), sizeof(float), n, f) != n) {
                throw std::runtime_error("write error on '" + path_ + "'");
            }
            end = off + n * sizeof(float);
        }
        // Pad the last tensor to the alignment, as gguf_write_to_file does.
        size_t padded = (end + alignment - 1) / alignment * alignment;
        std::vector<char> zeros(padded - end, 0);
        if (!zeros.empty() && std::fwrite(zeros.data(), 1, zeros.size(), f) != zeros.size()) {
            throw std::runtime_error("write error on '" + path_ + "'");
        }
    }

    Napi::Value Result(Napi::Env env) override { return Napi::String::New(env, path_); }

  private:
    static void set_kv(gguf_context * g, const KvEntry & e) {
        const char * k = e.key.c_str();
        if (e.type == "remove") { gguf_remove_key(g, k); return; }
        if (e.type == "str") { gguf_set_val_str(g, k, e.strs.at(0).c_str()); return; }
        if (e.type == "u32") { gguf_set_val_u32(g, k, (uint32_t) e.nums.at(0)); return; }
        if (e.type == "i32") { gguf_set_val_i32(g, k, (int32_t) e.nums.at(0)); return; }
        if (e.type == "f32") { gguf_set_val_f32(g, k, (float) e.nums.at(0)); return; }
        if (e.type == "bool") { gguf_set_val_bool(g, k, e.nums.at(0) != 0); return; }
        if (e.type == "str[]") {
            std::vector<const char *> p;
            for (const auto & s : e.strs) p.push_back(s.c_str());
            gguf_set_arr_str(g, k, p.data(), p.size());
            return;
        }
        if (e.type == "f32[]") {
            std::vector<float> v(e.nums.begin(), e.nums.end());
            gguf_set_arr_data(g, k, GGUF_TYPE_FLOAT32, v.data(), v.size());
            return;
        }
        if (e.type == "i32[]" || e.type == "u32[]") {
            std::vector<int32_t> v(e.nums.begin(), e.nums.end());
            gguf_set_arr_data(g, k, e.type == "i32[]" ? GGUF_TYPE_INT32 : GGUF_TYPE_UINT32, v.data(), v.size());
            return;
        }
        throw std::runtime_error("unknown GGUF value type '" + e.type + "' for key " + e.key);
    }

    std::string path_, copy_kv_from_;
    std::vector<KvEntry> kv_;
    std::vector<TensorSpec> tensors_;
};

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
    auto * w = new WriteGgufWorker(env, info[0].As<Napi::String>().Utf8Value(), get_string(spec, "copyKvFrom"),
                                   std::move(kv), std::move(tensors));
    w->Queue();
    return w->Promise();
}

static const std::map<std::string, llama_ftype> k_ftypes = {
    {"F32", LLAMA_FTYPE_ALL_F32},          {"F16", LLAMA_FTYPE_MOSTLY_F16},       {"BF16", LLAMA_FTYPE_MOSTLY_BF16},
    {"Q8_0", LLAMA_FTYPE_MOSTLY_Q8_0},
    {"Q4_0", LLAMA_FTYPE_MOSTLY_Q4_0},     {"Q4_K_M", LLAMA_FTYPE_MOSTLY_Q4_K_M},
    {"Q4_K_S", LLAMA_FTYPE_MOSTLY_Q4_K_S}, {"Q6_K", LLAMA_FTYPE_MOSTLY_Q6_K},
    {"Q5_K_M", LLAMA_FTYPE_MOSTLY_Q5_K_M}, {"Q5_0", LLAMA_FTYPE_MOSTLY_Q5_0},
};

class QuantizeWorker : public PromiseWorker {
  public:
    QuantizeWorker(Napi::Env env, std::string in, std::string out, llama_ftype ftype)
        : PromiseWorker(env), in_(std::move(in)), out_(std::move(out)), ftype_(ftype) {}
    void Execute() override {
        LogCapture log;
        llama_model_quantize_params qp = llama_model_quantize_default_params();
        qp.ftype = ftype_;
        // F32 from a quantized file dequantizes it: the exact network of the quantized weights.
        qp.allow_requantize = ftype_ == LLAMA_FTYPE_ALL_F32;
        qp.nthread = (int32_t) std::max(1u, std::thread::hardware_concurrency());
        if (llama_model_quantize(in_.c_str(), out_.c_str(), &qp) != 0) {
            throw error_with_log("quantizing '" + in_ + "' failed", log);
        }
    }
    Napi::Value Result(Napi::Env env) override { return Napi::String::New(env, out_); }
  private:
    std::string in_, out_;
    llama_ftype ftype_;
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
    auto * w = new QuantizeWorker(env, info[0].As<Napi::String>().Utf8Value(), info[1].As<Napi::String>().Utf8Value(), it->second);
    w->Queue();
    return w->Promise();
}

}  // namespace llj
