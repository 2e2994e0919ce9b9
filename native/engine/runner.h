// Runs our graphs through ggml_backend_sched over the devices holding the model's weights
// (plus the CPU), so that each weight is used where llama.cpp placed it.
#pragma once

#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace llj {

// Sets a backend's thread count through its registry (the CPU and BLAS backends are loaded
// at run time, so the setter is looked up, not linked); a backend without one is left as is.
void set_backend_threads(ggml_backend_t backend, int n_threads);
// A CPU backend running n_threads, for the standalone probes (bench, kernel tests); the caller frees it.
ggml_backend_t cpu_backend(int n_threads);

class GraphRunner {
  public:
    // use_blas: run the large products on ggml's BLAS backend when it is available.
    // cpu_products: the weight products run on the CPU backend (the tiled kernel), which
    // then gets every thread even with BLAS.
    GraphRunner(const llama_model * model, int n_threads, bool use_blas, bool cpu_products = false);
    bool uses_blas() const { return uses_blas_; }
    ~GraphRunner();
    GraphRunner(const GraphRunner &) = delete;
    GraphRunner & operator=(const GraphRunner &) = delete;

    // A fresh graph context sized for `graph_size` nodes; valid until the next call.
    ggml_context * begin(size_t graph_size);
    // Called after each computed node whose name starts with `prefix` (progress reports).
    struct NodeObserver {
        std::string prefix;
        std::function<void(const ggml_tensor *)> on_node;
    };
    // Allocates `gf`, lets `set_inputs` fill the input tensors, computes. Throws Aborted when
    // the abort check fired during the computation.
    void compute(ggml_cgraph * gf, const std::function<void()> & set_inputs, const NodeObserver * observer = nullptr);

    // Polled while graphs compute: between nodes on the CPU backend and at observed nodes.
    // Set for the duration of one operation (AbortScope); empty means never abort.
    void set_abort_check(std::function<bool()> check) { abort_check_ = std::move(check); }
    bool abort_requested() const { return abort_check_ && abort_check_(); }

  private:
    std::vector<ggml_backend_t> backends_;
    ggml_backend_sched_t sched_ = nullptr;
    ggml_context * ctx_ = nullptr;
    size_t sched_graph_size_ = 0;
    bool uses_blas_ = false;
    std::function<bool()> abort_check_;
};

// Thrown when a computation stops on the abort check.
struct Aborted : std::runtime_error {
    Aborted() : std::runtime_error("aborted") {}
};

// Installs an abort check on a runner for the lifetime of the scope.
class AbortScope {
  public:
    AbortScope(GraphRunner & r, std::function<bool()> check) : r_(r) { r_.set_abort_check(std::move(check)); }
    ~AbortScope() { r_.set_abort_check({}); }
    AbortScope(const AbortScope &) = delete;
    AbortScope & operator=(const AbortScope &) = delete;
  private:
    GraphRunner & r_;
};

// Copies a host buffer into a graph tensor / back.
void tensor_set(ggml_tensor * t, const void * data, size_t bytes);
void tensor_get(const ggml_tensor * t, void * data, size_t bytes);

}  // namespace llj
