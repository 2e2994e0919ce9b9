// Runs our graphs through ggml_backend_sched over the devices holding the model's weights
// (plus the CPU), so that each weight is used where llama.cpp placed it.
#pragma once

#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"

#include <functional>
#include <memory>
#include <vector>

namespace llj {

class GraphRunner {
  public:
    // use_blas: run the large products on ggml's BLAS backend when it is available.
    GraphRunner(const llama_model * model, int n_threads, bool use_blas);
    bool uses_blas() const { return uses_blas_; }
    ~GraphRunner();
    GraphRunner(const GraphRunner &) = delete;
    GraphRunner & operator=(const GraphRunner &) = delete;

    // A fresh graph context sized for `graph_size` nodes; valid until the next call.
    ggml_context * begin(size_t graph_size);
    // Allocates `gf`, lets `set_inputs` fill the input tensors, computes.
    void compute(ggml_cgraph * gf, const std::function<void()> & set_inputs);

  private:
    std::vector<ggml_backend_t> backends_;
    ggml_backend_sched_t sched_ = nullptr;
    ggml_context * ctx_ = nullptr;
    size_t sched_graph_size_ = 0;
    bool uses_blas_ = false;
};

// Copies a host buffer into a graph tensor / back.
void tensor_set(ggml_tensor * t, const void * data, size_t bytes);
void tensor_get(const ggml_tensor * t, void * data, size_t bytes);

}  // namespace llj
