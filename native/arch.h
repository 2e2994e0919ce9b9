// What our graphs need to know about a loaded model: its weights by role (taken from
// llama.cpp's tensor map by GGUF name) and the hyper-parameters llama.cpp's own graph uses
// (read from the llama_model llama.cpp loaded, so that both graphs agree by construction).
// Anything the file asks for that our graphs do not implement is refused here, by name.
#pragma once

#include "ggml.h"
#include "llama.h"

#include <string>
#include <vector>

namespace llj {

// The wiring of one architecture family, read by the graph builders. Only the llama family
// exists today; new families add flags here rather than new copies of the builders.
struct ArchSpec {
    std::string name;
    float embd_scale = 1.0f;         // input embeddings are token_embd rows times this
    bool qk_norm = false;            // per-head RMSNorm of Q and K before rope (attn_q_norm / attn_k_norm)
    bool rope_factors = false;       // rope_freqs.weight divides the rope frequencies
    bool kq_scale_from_file = false; // attention.scale overrides 1/sqrt(head_dim)
    bool ffn_bias = false;           // ffn_{gate,up,down}.bias are applied
    bool ffn_scale = false;          // ffn_{gate,up,down}.scale are applied
    bool output_bias = false;        // output.bias is added to the logits
};

// The architectures our graphs implement; nullptr for any other.
const ArchSpec * find_arch(const std::string & name);

struct LayerWeights {
    ggml_tensor * attn_norm = nullptr;
    ggml_tensor * wq = nullptr, * wk = nullptr, * wv = nullptr, * wo = nullptr;
    ggml_tensor * bq = nullptr, * bk = nullptr, * bv = nullptr, * bo = nullptr;  // optional biases
    ggml_tensor * sq = nullptr, * sk = nullptr, * sv = nullptr, * so = nullptr;  // optional per-tensor scales
    ggml_tensor * ffn_norm = nullptr;
    ggml_tensor * gate = nullptr, * up = nullptr, * down = nullptr;
    ggml_tensor * b_gate = nullptr, * b_up = nullptr, * b_down = nullptr;
    ggml_tensor * s_gate = nullptr, * s_up = nullptr, * s_down = nullptr;
    ggml_tensor * rope_freqs = nullptr;
    ggml_tensor * q_norm = nullptr, * k_norm = nullptr;  // qk_norm architectures
};

struct RopeParams {
    int n_rot = 0;
    int mode = 0;
    int n_ctx_orig = 0;
    float freq_base = 10000.0f, freq_scale = 1.0f, ext_factor = 0.0f, attn_factor = 1.0f;
    float beta_fast = 32.0f, beta_slow = 1.0f;
};

struct ModelSpec {
    ArchSpec arch;
    int n_embd = 0, n_layer = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_ff = 0, n_vocab = 0;
    float norm_eps = 1e-5f;
    float kq_scale = 1.0f;
    RopeParams rope;
    ggml_tensor * tok_embd = nullptr;
    ggml_tensor * output_norm = nullptr;
    ggml_tensor * output = nullptr;  // token_embd when tied
    ggml_tensor * output_scale = nullptr;  // optional `output.scale`: multiplies the logits only
    ggml_tensor * output_bias = nullptr;   // optional `output.bias` (qwen2): added to the logits only
    std::vector<LayerWeights> layers;
    bool affine = false;                 // a bias on the linear path (v, o, up, down): y = L(x) + c
    std::vector<std::string> ignored;    // loaded by llama.cpp, not applied by its graph
};

// Throws std::runtime_error naming the tensor or hyper-parameter our graphs cannot honour.
ModelSpec resolve_model(const llama_model * model);

}  // namespace llj
