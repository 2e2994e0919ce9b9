#include "runner.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "engine/backends.h"
#include "llama-ext.h"  // llama_model_n_devices / llama_model_get_device

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

namespace llj {

void set_backend_threads(ggml_backend_t backend, int n_threads) {
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(ggml_backend_get_device(backend));
    auto set_threads = (ggml_backend_set_n_threads_t) ggml_backend_reg_get_proc_address(reg, "ggml_backend_set_n_threads");
    if (set_threads) set_threads(backend, n_threads);
}

ggml_backend_t cpu_backend(int n_threads) {
    ggml_backend_t cpu = ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_CPU, nullptr);
    if (!cpu) throw std::runtime_error("cannot initialize the CPU backend");
    set_backend_threads(cpu, n_threads);
    return cpu;
}

GraphRunner::GraphRunner(const llama_model * model, int n_threads, bool use_blas, bool cpu_products) {
    for (int i = 0; i < llama_model_n_devices(model); ++i) {
        ggml_backend_dev_t dev = llama_model_get_device(model, i);
        if (ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_CPU) continue;
        ggml_backend_t b = ggml_backend_dev_init(dev, nullptr);
        if (!b) throw std::runtime_error(std::string("cannot initialize device ") + ggml_backend_dev_name(dev));
        backends_.push_back(b);
    }
    if (ggml_backend_reg_t blas = use_blas ? blas_backend_reg() : nullptr) {
        ggml_backend_t b = ggml_backend_dev_init(ggml_backend_reg_dev_get(blas, 0), nullptr);
        if (b) {
            set_backend_threads(b, n_threads);
            backends_.push_back(b);
            uses_blas_ = true;
        }
    }
    // With BLAS doing the large products on its own threads, the CPU backend only runs the
    // memory-bound element-wise ops; sharing the cores halves the contention (OpenBLAS
    // threads yield-spin between calls): measured 2.4 s vs 3.1 s for bench/'s Jacobian.
    ggml_backend_t cpu = cpu_backend(uses_blas_ && !cpu_products ? std::max(1, n_threads / 2) : n_threads);
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(ggml_backend_get_device(cpu));
    // The CPU backend polls this between nodes and stops the graph (GGML_STATUS_ABORTED).
    auto set_abort = (void (*)(ggml_backend_t, ggml_abort_callback, void *)) ggml_backend_reg_get_proc_address(reg, "ggml_backend_set_abort_callback");
    if (set_abort) set_abort(cpu, [](void * self) { return static_cast<GraphRunner *>(self)->abort_requested(); }, this);
    backends_.push_back(cpu);  // the scheduler wants the CPU last
}

GraphRunner::~GraphRunner() {
    if (ctx_) ggml_free(ctx_);
    if (sched_) ggml_backend_sched_free(sched_);
    for (auto * b : backends_) ggml_backend_free(b);
}

ggml_context * GraphRunner::begin(size_t graph_size) {
    if (ctx_) ggml_free(ctx_);
    ggml_init_params p = {ggml_tensor_overhead() * graph_size * 2 + ggml_graph_overhead_custom(graph_size, false), nullptr, true};
    ctx_ = ggml_init(p);
    if (!ctx_) throw std::runtime_error("cannot allocate a graph context");
    if (graph_size > sched_graph_size_) {
        if (sched_) ggml_backend_sched_free(sched_);
        sched_ = ggml_backend_sched_new(backends_.data(), nullptr, (int) backends_.size(), graph_size, false, true);
        if (!sched_) throw std::runtime_error("cannot create the graph scheduler");
        sched_graph_size_ = graph_size;
    }
    return ctx_;
}

// The scheduler's eval callback: asks for the observed nodes, reports them once computed,
// and stops the split on an abort (the CPU backend's own abort callback stops the rest).
struct EvalContext {
    GraphRunner * runner;
    const GraphRunner::NodeObserver * observer;
};
static bool eval_callback(ggml_tensor * t, bool ask, void * user) {
    auto * e = static_cast<EvalContext *>(user);
    if (ask) return std::strncmp(ggml_get_name(t), e->observer->prefix.c_str(), e->observer->prefix.size()) == 0;
    e->observer->on_node(t);
    return !e->runner->abort_requested();
}

// LLJ_PROFILE=1 (a development aid): every node computed on its own and timed, the time per
// op kind (and the slowest nodes) printed to stderr after each graph. Slower than a plain run.
struct Profile {
    std::chrono::steady_clock::time_point last;
    std::map<std::string, std::pair<int, double>> by_op;  // op → (count, ms)
    std::vector<std::pair<double, std::string>> nodes;
};
static bool profile_callback(ggml_tensor * t, bool ask, void * user) {
    auto * p = static_cast<Profile *>(user);
    if (ask) return true;
    const auto now = std::chrono::steady_clock::now();
    const double ms = std::chrono::duration<double, std::milli>(now - p->last).count();
    p->last = now;
    std::string op = ggml_op_desc(t);
    auto & e = p->by_op[op];
    e.first += 1;
    e.second += ms;
    char shape[160];
    std::snprintf(shape, sizeof shape, "%s %s [%lld %lld %lld %lld]", op.c_str(), ggml_get_name(t), (long long) t->ne[0], (long long) t->ne[1],
                  (long long) t->ne[2], (long long) t->ne[3]);
    p->nodes.emplace_back(ms, shape);
    return true;
}
static void print_profile(Profile & p) {
    std::vector<std::pair<double, std::string>> ops;
    double total = 0;
    for (auto & [op, e] : p.by_op) {
        ops.emplace_back(e.second, op + " ×" + std::to_string(e.first));
        total += e.second;
    }
    std::sort(ops.rbegin(), ops.rend());
    std::sort(p.nodes.rbegin(), p.nodes.rend());
    std::fprintf(stderr, "LLJ_PROFILE graph: %.1f ms in %zu nodes\n", total, p.nodes.size());
    for (auto & [ms, what] : ops) if (ms >= total * 0.005) std::fprintf(stderr, "  %9.1f ms %5.1f%%  %s\n", ms, 100 * ms / total, what.c_str());
    for (size_t i = 0; i < std::min<size_t>(8, p.nodes.size()); ++i) std::fprintf(stderr, "  slowest %8.1f ms  %s\n", p.nodes[i].first, p.nodes[i].second.c_str());
}

void GraphRunner::compute(ggml_cgraph * gf, const std::function<void()> & set_inputs, const NodeObserver * observer) {
    if (abort_requested()) throw Aborted();
    ggml_backend_sched_reset(sched_);
    EvalContext eval = {this, observer};
    static const bool profiling = std::getenv("LLJ_PROFILE") != nullptr;
    Profile profile;
    if (profiling && !observer) {
        ggml_backend_sched_set_eval_callback(sched_, profile_callback, &profile);
        if (!ggml_backend_sched_alloc_graph(sched_, gf)) throw std::runtime_error("cannot allocate the graph (out of memory?)");
        set_inputs();
        profile.last = std::chrono::steady_clock::now();
        ggml_status st = ggml_backend_sched_graph_compute(sched_, gf);
        ggml_backend_sched_synchronize(sched_);
        ggml_backend_sched_set_eval_callback(sched_, nullptr, nullptr);
        print_profile(profile);
        if (st != GGML_STATUS_SUCCESS) throw std::runtime_error("graph computation failed (status " + std::to_string((int) st) + ")");
        return;
    }
    ggml_backend_sched_set_eval_callback(sched_, observer ? eval_callback : nullptr, observer ? &eval : nullptr);
    if (!ggml_backend_sched_alloc_graph(sched_, gf)) throw std::runtime_error("cannot allocate the graph (out of memory?)");
    set_inputs();
    ggml_status st = ggml_backend_sched_graph_compute(sched_, gf);
    ggml_backend_sched_synchronize(sched_);
    ggml_backend_sched_set_eval_callback(sched_, nullptr, nullptr);
    if (abort_requested()) throw Aborted();
    if (st != GGML_STATUS_SUCCESS) throw std::runtime_error("graph computation failed (status " + std::to_string((int) st) + ")");
}

// (ggml asserts, aborting the process, on a tensor the graph never allocated: refuse instead)
static std::string tensor_label(const ggml_tensor * t) {
    const char * name = ggml_get_name(t);
    return name && *name ? std::string("tensor '") + name + "'" : std::string("an unnamed ") + ggml_type_name(t->type) + " tensor";
}

void tensor_set(ggml_tensor * t, const void * data, size_t bytes) {
    if (!t->buffer) throw std::logic_error(tensor_label(t) + " is not part of the graph");
    if (bytes != ggml_nbytes(t)) throw std::logic_error("size mismatch setting " + tensor_label(t));
    ggml_backend_tensor_set(t, data, 0, bytes);
}

void tensor_get(const ggml_tensor * t, void * data, size_t bytes) {
    if (!t->buffer) throw std::logic_error(tensor_label(t) + " is not part of the graph");
    if (bytes != ggml_nbytes(t)) throw std::logic_error("size mismatch reading " + tensor_label(t));
    ggml_backend_tensor_get(t, data, 0, bytes);
}

}  // namespace llj
