// A generation session's state and its steps (llama.cpp's decode, our primal graph), with no
// N-API: native/napi/session.cpp binds them to the NativeSession JS class.
#pragma once

#include "arch.h"
#include "engine/hold.h"
#include "engine/runner.h"

#include "llama.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace llj {

struct SessionState {
    const llama_model * model = nullptr;
    std::unique_ptr<ModelHold> use;  // holds the model while the session lives (released last)
    bool graph = false;             // engine: our graph (true) or llama.cpp's decode (false)
    int threads = 1;
    uint32_t n_ctx = 0;             // the most positions this session will see
    std::mutex mu;

    // llama engine
    llama_context * lctx = nullptr;
    int32_t n_past = 0;
    std::vector<float> cvec;        // n_embd × (n_layer − 1), from layer 1 (llama_set_adapter_cvec's layout)
    int32_t cvec_start = 0, cvec_end = 0;
    bool has_cvec = false;

    // graph engine
    bool exact = true, tiled = true, blas = true;
    bool resolved = false;
    ModelSpec spec;
    std::unique_ptr<GraphRunner> runner;

    ~SessionState() {
        if (lctx) llama_free(lctx);
        runner.reset();
        use.reset();
    }
    size_t graph_size() const {  // as LinState::graph_size
        return (size_t) (200 * spec.n_layer + 8 * spec.n_layer * (spec.n_head / spec.n_head_kv + spec.n_expert_used) + 512);
    }
};

// Our graph's model description and runner, made on first use (off the JS thread).
void ensure_graph(SessionState & s);
// The primal network on `tokens`, with inject [n·d] (empty: none) added after layer `layer`:
// the last position's logits (after any final softcap) and its final-norm output. Layers
// [from, to] only on `stream` (the stream entering `from`) when from > 0; when `to` is not
// the last layer, `hidden` receives the stream after it at every position and no logits.
void graph_forward(SessionState & s, const std::vector<int32_t> & tokens, const std::vector<float> & inject, int layer,
                   bool norm_scaled, std::vector<float> & logits, std::vector<float> & hidden, int from = 0, int to = -1,
                   const std::vector<float> * stream = nullptr);
// The input embeddings x [n·d] of `tokens`, exactly as the primal pass forms them.
void graph_embed(SessionState & s, const std::vector<int32_t> & tokens, std::vector<float> & out);
// llama.cpp's decode of the next tokens (positions n_past on): the last one's logits.
void llama_step(SessionState & s, const std::vector<int32_t> & tokens, const std::function<bool()> & aborted, std::vector<float> & logits);

}  // namespace llj
