// The linearization's state (the primal record, the frozen store, the pass configuration)
// and its passes, with no N-API: native/napi/linearization.cpp binds them to JS.
#pragma once

#include "arch.h"
#include "engine/graphs.h"
#include "engine/hold.h"
#include "engine/runner.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace llj {

struct LinState {
    const llama_model * model = nullptr;
    ModelSpec spec;
    std::unique_ptr<GraphRunner> runner;
    bool exact = true;
    bool use_blas = true;
    bool tiled = true;  // the tiled dequantize-and-multiply kernel for quantized CPU weights (native/engine/tiled.h)
    bool ordinary = false;  // the true derivative, not the detached map (BuildOptions::ordinary)
    bool relevance = false;  // with ordinary: the R-lens's relevance rules (BuildOptions::relevance)
    int n = 0, d = 0;
    size_t max_batch = 1;
    std::mutex mu;

    std::vector<int32_t> tokens;           // empty when built from embeddings
    std::vector<float> x;                  // [n, d] input embeddings
    std::vector<float> hidden;             // [n, d] output of the final norm, every position
    std::vector<float> final_residual;     // [n, d] the residual stream entering the final norm
    std::vector<float> logits;             // [n_vocab], last position (after a final softcap)
    std::vector<float> logits_raw;         // [n_vocab], before the final softcap (same when none)
    std::vector<std::vector<float>> layer_inputs;  // [n, d] each
    std::vector<float> bias_term;          // [d], empty for a linear (bias-free) model
    // The frozen coefficients, kept in one host backend buffer for the life of the
    // linearization and read in place by every linear pass (no per-pass copies).
    FrozenTensors frozen;
    std::vector<std::vector<int32_t>> moe_ids;  // host copy of the chosen experts [k·n] per moe layer
    ggml_context * frozen_ctx = nullptr;
    ggml_backend_buffer_t frozen_buf = nullptr;
    // Holds the model for as long as any worker holds this state (released last, below).
    std::unique_ptr<ModelHold> use;

    ~LinState() {
        if (frozen_buf) ggml_backend_buffer_free(frozen_buf);
        if (frozen_ctx) ggml_free(frozen_ctx);
        runner.reset();
        use.reset();
    }

    size_t graph_size() const {
        // ordinary moe layers sum their k experts three more times (the gate term, the routing term)
        const size_t per_layer = (size_t) ((ordinary ? 400 : 200) + 8 * (spec.n_head / spec.n_head_kv + spec.n_expert_used) +
                                           (ordinary ? 8 * spec.n_expert_used : 0));
        return per_layer * (size_t) spec.n_layer + 512;
    }
};

// The primal pass: the real network on the prompt. With `record`, stores the frozen
// coefficients, the embeddings, the per-layer inputs and the logits into `s`; otherwise
// only returns the final hidden states of the given embeddings (the non-detached forward).
// `progress` (optional) gets the fraction of layers computed.
void run_primal(LinState & s, const std::vector<float> * embeddings, bool record, std::vector<float> & hidden_out,
                const std::function<bool(float)> * progress = nullptr);
// L applied to B tangent sequences on positions [f, n) (f = opt.first_position; earlier
// positions are zero), v [B, n - f, d]: the output at those positions [B, n - f, d], or at
// the last one [B, d]. With `bias`, the detached affine map instead.
void run_jvp(LinState & s, const float * v, int B, bool all_positions, bool bias, float * out, BuildOptions opt = {});
// Lᵀ applied to B cotangents u ([B, d] on the last position, or [B, n - p0, d] with
// all_positions; p0 = opt.first_position): the cotangent on the input embeddings at [p0, n).
void run_vjp(LinState & s, const float * u, int B, bool all_positions, float * out, BuildOptions opt = {});

// The primal pass of a fresh state (s.model, s.n, the mode flags and s.tokens or the
// embeddings set), then the bias term c. aborted() also stops a graph mid-computation.
void linearize(LinState & s, const std::vector<float> & embeddings, int threads, size_t budget, uint32_t n_ctx,
               const std::function<bool()> & aborted, const std::function<bool(float)> & progress);

// The passes over a linearized state, each in chunks of at most max_batch columns; progress
// gets the fraction done and returns false to stop (Aborted). Inputs are valid (the bindings check).
// jvp: v [B·(n - f)·d] -> [B·d], or [B·(n - f)·d] with all (f = opt.first_position).
void jvp(LinState & s, const std::vector<float> & v, int B, bool all, bool affine, const BuildOptions & opt, std::vector<float> & out,
         const std::function<bool(float)> & progress);
// vjp: u [B·d], or [B·(n - f)·d] with all -> [B·(n - f)·d].
void vjp(LinState & s, const std::vector<float> & u, int B, bool all, const BuildOptions & opt, std::vector<float> & out,
         const std::function<bool(float)> & progress);
// The blocks J_i for i in [f, n), [(n - f)·d·d]: d VJPs of the unit vectors.
void jacobian(LinState & s, const BuildOptions & opt, std::vector<float> & out, const std::function<bool(float)> & progress);
// W_U v for each of the B vectors [B·d] -> [B·V], or (embedding) their cosines with every
// token's input embedding.
void vocab_products(LinState & s, const std::vector<float> & v, int B, bool embedding, std::vector<float> & out);
// For each token the LM head row (times output.scale) and its output bias: [k·(d + 1)].
void lm_head_rows(LinState & s, const std::vector<int32_t> & tokens, std::vector<float> & out);
// An F32 model tensor read back (the final norm's weights); throws for another type.
std::vector<float> read_f32(const ggml_tensor * t);

}  // namespace llj
