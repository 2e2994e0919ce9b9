// llama.cpp's own forward pass, the reference our graphs are checked against (with no N-API;
// NativeModel.referenceForward binds it).
#pragma once

#include "ggml.h"
#include "llama.h"

#include <cstdint>
#include <vector>

namespace llj {

// Whether llama.cpp's graph for this model's architecture records per-layer inputs.
bool records_layer_inputs(const llama_model * m);

// One forward of `tokens` (checked against the vocabulary by the caller): every position's
// final-norm output, the last position's logits and, with layer_inputs, each layer's input.
struct ReferenceForward {
    llama_model * model = nullptr;
    std::vector<llama_token> tokens;
    bool layer_inputs = true;
    int threads = 1;
    uint32_t n_ctx = 0;  // 0: the prompt's length

    std::vector<float> hidden, logits;       // [n·d], [n_vocab]
    std::vector<std::vector<float>> layers;  // [n·d] each, when layer_inputs
    int32_t n_embd = 0, n_vocab = 0;

    void run();
    int layer_of(const ggml_tensor * t) const;
};

}  // namespace llj
