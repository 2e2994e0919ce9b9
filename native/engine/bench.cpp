// Measurements for bench/ (not used by the library): ggml's own F32 matmul rate for given
// shapes, and the time of one llama.cpp forward, the unit of the naive finite-difference
// route to a Jacobian. The bindings run both on worker threads.
#include "engine/log.h"
#include "engine/probes.h"
#include "engine/runner.h"

#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "llama.h"

#include <chrono>
#include <random>

namespace llj {

double bench_gemm(int64_t m, int64_t k, int64_t n, int threads, int reps) {
    ggml_backend_t cpu = cpu_backend(threads);
    ggml_init_params p = {ggml_tensor_overhead() * 8 + ggml_graph_overhead(), nullptr, true};
    ggml_context * ctx = ggml_init(p);
    ggml_tensor * w = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, m);
    ggml_tensor * x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, n);
    ggml_tensor * y = ggml_mul_mat(ctx, w, x);
    ggml_cgraph * gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, y);
    ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(ctx, cpu);
    std::mt19937 rng(1);
    std::normal_distribution<float> nd;
    std::vector<float> wd((size_t) (k * m)), xd((size_t) (k * n));
    for (auto & v : wd) v = nd(rng);
    for (auto & v : xd) v = nd(rng);
    ggml_backend_tensor_set(w, wd.data(), 0, ggml_nbytes(w));
    ggml_backend_tensor_set(x, xd.data(), 0, ggml_nbytes(x));
    ggml_backend_graph_compute(cpu, gf);  // warm-up
    auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) ggml_backend_graph_compute(cpu, gf);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
    ggml_backend_buffer_free(buf);
    ggml_free(ctx);
    ggml_backend_free(cpu);
    return seconds;
}

double bench_forward(llama_model * model, const std::vector<llama_token> & tokens, int threads, int reps) {
    LogCapture log;
    const int n = (int) tokens.size();
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = cp.n_batch = cp.n_ubatch = (uint32_t) n;
    cp.n_seq_max = 1;
    cp.type_k = cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.n_threads = cp.n_threads_batch = threads;
    cp.no_perf = true;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) throw error_with_log("cannot create a context", log);
    llama_batch batch = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; ++i) {
        batch.token[i] = tokens[(size_t) i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = i == n - 1;
    }
    batch.n_tokens = n;
    double total = 0;
    for (int r = 0; r <= reps; ++r) {
        llama_memory_clear(llama_get_memory(ctx), true);
        auto t0 = std::chrono::steady_clock::now();
        if (llama_decode(ctx, batch) != 0) { llama_batch_free(batch); llama_free(ctx); throw std::runtime_error("decode failed"); }
        if (r > 0) total += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();  // r = 0 warms up
    }
    const double seconds = total / reps;
    llama_batch_free(batch);
    llama_free(ctx);
    return seconds;
}

}  // namespace llj
