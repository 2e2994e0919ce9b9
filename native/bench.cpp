// Measurements for bench/ (not used by the library): ggml's own F32 matmul rate for given
// shapes, and the time of one llama.cpp forward, the unit of the naive finite-difference
// route to a Jacobian. Both run on worker threads.
#include "common.h"
#include "model.h"
#include "runner.h"

#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "llama.h"

#include <chrono>
#include <random>

namespace llj {

class GemmBenchWorker : public PromiseWorker {
  public:
    GemmBenchWorker(Napi::Env env, int64_t m, int64_t k, int64_t n, int threads, int reps)
        : PromiseWorker(env), m_(m), k_(k), n_(n), threads_(threads), reps_(reps) {}
    void Execute() override {
        ggml_backend_t cpu = cpu_backend(threads_);
        ggml_init_params p = {ggml_tensor_overhead() * 8 + ggml_graph_overhead(), nullptr, true};
        ggml_context * ctx = ggml_init(p);
        ggml_tensor * w = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k_, m_);
        ggml_tensor * x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k_, n_);
        ggml_tensor * y = ggml_mul_mat(ctx, w, x);
        ggml_cgraph * gf = ggml_new_graph(ctx);
        ggml_build_forward_expand(gf, y);
        ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(ctx, cpu);
        std::mt19937 rng(1);
        std::normal_distribution<float> nd;
        std::vector<float> wd((size_t) (k_ * m_)), xd((size_t) (k_ * n_));
        for (auto & v : wd) v = nd(rng);
        for (auto & v : xd) v = nd(rng);
        ggml_backend_tensor_set(w, wd.data(), 0, ggml_nbytes(w));
        ggml_backend_tensor_set(x, xd.data(), 0, ggml_nbytes(x));
        ggml_backend_graph_compute(cpu, gf);  // warm-up
        auto t0 = std::chrono::steady_clock::now();
        for (int r = 0; r < reps_; ++r) ggml_backend_graph_compute(cpu, gf);
        seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps_;
        ggml_backend_buffer_free(buf);
        ggml_free(ctx);
        ggml_backend_free(cpu);
    }
    Napi::Value Result(Napi::Env env) override {
        auto o = Napi::Object::New(env);
        o.Set("seconds", seconds_);
        o.Set("gflops", 2.0 * m_ * k_ * n_ / seconds_ / 1e9);
        return o;
    }
  private:
    int64_t m_, k_, n_;
    int threads_, reps_;
    double seconds_ = 0;
};

// benchGemm(m, k, n, threads, reps) -> Promise<{ seconds, gflops }>: Y[m×n] = W[m×k] X[k×n] in F32.
Napi::Value BenchGemm(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto num = [&](int i) { return info[i].As<Napi::Number>().Int64Value(); };
    auto * w = new GemmBenchWorker(env, num(0), num(1), num(2), (int) num(3), (int) num(4));
    w->Queue();
    return w->Promise();
}

class ForwardBenchWorker : public PromiseWorker {
  public:
    ForwardBenchWorker(Napi::Env env, const Napi::Object & obj, std::vector<llama_token> tokens, int threads, int reps)
        : PromiseWorker(env), use_(NativeModel::Unwrap(obj), obj), model_(NativeModel::Unwrap(obj)->get(env)),
          tokens_(std::move(tokens)), threads_(threads), reps_(reps) {}
    void Execute() override {
        LogCapture log;
        const int n = (int) tokens_.size();
        llama_context_params cp = llama_context_default_params();
        cp.n_ctx = cp.n_batch = cp.n_ubatch = (uint32_t) n;
        cp.n_seq_max = 1;
        cp.type_k = cp.type_v = GGML_TYPE_F32;
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
        cp.n_threads = cp.n_threads_batch = threads_;
        cp.no_perf = true;
        llama_context * ctx = llama_init_from_model(model_, cp);
        if (!ctx) throw error_with_log("cannot create a context", log);
        llama_batch batch = llama_batch_init(n, 0, 1);
        for (int i = 0; i < n; ++i) {
            batch.token[i] = tokens_[(size_t) i];
            batch.pos[i] = i;
            batch.n_seq_id[i] = 1;
            batch.seq_id[i][0] = 0;
            batch.logits[i] = i == n - 1;
        }
        batch.n_tokens = n;
        double total = 0;
        for (int r = 0; r <= reps_; ++r) {
            llama_memory_clear(llama_get_memory(ctx), true);
            auto t0 = std::chrono::steady_clock::now();
            if (llama_decode(ctx, batch) != 0) { llama_batch_free(batch); llama_free(ctx); throw std::runtime_error("decode failed"); }
            if (r > 0) total += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();  // r = 0 warms up
        }
        seconds_ = total / reps_;
        llama_batch_free(batch);
        llama_free(ctx);
    }
    Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, seconds_); }
  private:
    ModelUse use_;
    llama_model * model_;
    std::vector<llama_token> tokens_;
    int threads_, reps_;
    double seconds_ = 0;
};

// benchForward(model, tokens: Int32Array, threads, reps) -> Promise<seconds per llama.cpp forward>
Napi::Value BenchForward(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto t = info[1].As<Napi::Int32Array>();
    std::vector<llama_token> tokens(t.Data(), t.Data() + t.ElementLength());
    if (tokens.empty()) throw Napi::RangeError::New(env, "no tokens");
    auto * w = new ForwardBenchWorker(env, info[0].As<Napi::Object>(), std::move(tokens),
                                      info[2].As<Napi::Number>().Int32Value(), info[3].As<Napi::Number>().Int32Value());
    w->Queue();
    return w->Promise();
}

}  // namespace llj
