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

// The wiring of one architecture family, read by the graph builders: each flag mirrors a
// choice of llama.cpp's graph for that architecture (src/models/<arch>.cpp).
enum class QkNorm { None, PerHead, FullWidth };
enum class GateAct { Silu, GeluTanh };

struct ArchSpec {
    std::string name;
    bool embd_scale_sqrt_d = false;  // input embeddings are token_embd rows times sqrt(n_embd) (gemma)
    bool pre_norms = true;           // RMSNorm before attention and FFN (olmo2: none)
    bool post_norms = false;         // RMSNorm of each branch output before its residual add (gemma, olmo2)
    QkNorm qk_norm = QkNorm::None;   // RMSNorm of Q and K before rope (inside the frozen attention)
    bool qkv_bias_scale = true;      // q/k/v biases and per-tensor scales applied (olmo2: ignored)
    bool rope_factors = false;       // rope_freqs.weight divides the rope frequencies
    bool kq_scale_from_file = false; // attention.scale overrides 1/sqrt(head_dim)
    bool q_scale_after_rope = false; // Q times hparams.f_attention_scale after rope, softmax scale 1 (gemma)
    bool q_prescale_head_dim = false;// Q times 1/sqrt(head_dim) after rope, softmax scale 1 (phi3)
    bool partial_rotary = false;     // rope may rotate fewer dims than the head width (phi3)
    bool longrope = false;           // rope_factors_long/short chosen by the context size (phi3)
    bool fused_qkv = true;           // a fused attn_qkv.weight is accepted (olmo2's graph cannot)
    bool fused_gate_up = false;      // ffn_up holds [gate; up] (phi3: first n_ff rows are the gate)
    bool moe = false;                // routed experts: softmax router, top-k, renormalized weights
    bool attn_temperature = false;   // Q times a per-position temperature (mistral3, llama4-style)
    bool attn_softcap = false;       // c·tanh(kq/c) before the softmax when the file asks (gemma2)
    bool sliding_window = false;     // per-layer sliding-window masks as hparams.is_swa(il) says
    bool ffn_bias = false;           // ffn_{gate,up,down}.bias are applied
    bool ffn_scale = false;          // ffn_{gate,up,down}.scale are applied
    bool output_bias = false;        // output.bias is added to the logits
    bool tied_output_always = false; // the LM head is token_embd even if output.weight exists (gemma2)
    bool layer_norm = false;         // LayerNorm with bias ((h - mean)·r·w + b) instead of RMSNorm (gpt2)
    bool rope = true;                // rotary positions (gpt2: learned absolute ones instead)
    bool pos_embd = false;           // position_embd rows added to the token embeddings; x is their sum (gpt2)
    bool parallel_ffn = false;       // the FFN reads the layer input, not h + attn: h + attn + ffn (phi2)
    bool parallel_from_file = false; // ...when the file's use_parallel_residual says so (gptneox)
    bool shared_ffn_norm = false;    // the FFN reads the attention's normed input; no ffn_norm (phi2)
    bool alibi = false;              // ALiBi slopes from attention.max_alibi_bias, inside the frozen softmax (mpt)
    bool act_scales = false;         // ffn.act.scales divide the MLP activation (mpt)
    bool attn_norm_2 = false;        // falcon: an attn_norm_2 in the file (40B) normalizes the attention's
                                     // input and attn_norm then the FFN's; without it both share attn_norm (7B)
    bool gated_ffn = true;           // down(act(gate(m)) ⊙ up(m)); false: down(act(up(m))), act(z) frozen as z·s(z) (gpt2)
    GateAct gate_act = GateAct::Silu;
    int final_softcap = 0;           // 0: none; 1: always (gemma2); 2: when the file's value is non-zero (gemma3)
};

// The architectures our graphs implement; nullptr for any other.
const ArchSpec * find_arch(const std::string & name);

// general.architecture of a loaded model ("" when absent).
std::string model_architecture(const llama_model * m);

struct RopeParams {
    int n_rot = 0;
    int mode = 0;
    int n_ctx_orig = 0;
    float freq_base = 10000.0f, freq_scale = 1.0f, ext_factor = 0.0f, attn_factor = 1.0f;
    float beta_fast = 32.0f, beta_slow = 1.0f;
};

struct LayerWeights {
    ggml_tensor * attn_norm = nullptr;
    ggml_tensor * wq = nullptr, * wk = nullptr, * wv = nullptr, * wo = nullptr;
    ggml_tensor * bq = nullptr, * bk = nullptr, * bv = nullptr, * bo = nullptr;  // optional biases
    ggml_tensor * sq = nullptr, * sk = nullptr, * sv = nullptr, * so = nullptr;  // optional per-tensor scales
    ggml_tensor * ffn_norm = nullptr;
    ggml_tensor * attn_norm_b = nullptr, * ffn_norm_b = nullptr;  // LayerNorm biases (layer_norm)
    ggml_tensor * attn_norm_2 = nullptr, * attn_norm_2_b = nullptr;  // falcon-40B (moved to attn_norm at load)
    ggml_tensor * gate = nullptr, * up = nullptr, * down = nullptr;
    ggml_tensor * b_gate = nullptr, * b_up = nullptr, * b_down = nullptr;
    ggml_tensor * s_gate = nullptr, * s_up = nullptr, * s_down = nullptr;
    ggml_tensor * wqkv = nullptr, * bqkv = nullptr, * sqkv = nullptr;  // fused Q/K/V (instead of wq, wk, wv)
    ggml_tensor * up_gate = nullptr;  // fused [gate; up] (fused_gate_up; instead of gate and up)
    ggml_tensor * rope_freqs = nullptr;
    ggml_tensor * q_norm = nullptr, * k_norm = nullptr;  // qk_norm architectures
    ggml_tensor * ffn_act = nullptr;  // per-channel divisor of the MLP activation (`ffn_act.scales`, mpt)
    ggml_tensor * attn_post_norm = nullptr, * ffn_post_norm = nullptr;  // post_norms architectures
    // routed experts (moe): router [d, E] and expert weights [in, out, E], per-expert scales [E]
    ggml_tensor * gate_inp = nullptr, * gate_exps = nullptr, * up_exps = nullptr, * down_exps = nullptr;
    ggml_tensor * s_gate_exps = nullptr, * s_up_exps = nullptr, * s_down_exps = nullptr;
    bool swa = false;   // this layer attends through a sliding window
    RopeParams rope;    // this layer's rope (sliding-window layers may differ)
};


struct ModelSpec {
    ArchSpec arch;
    int n_embd = 0, n_layer = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_ff = 0, n_vocab = 0;
    float norm_eps = 1e-5f;             // of every RMSNorm, or of every LayerNorm (layer_norm)
    float kq_scale = 1.0f;              // softmax scale
    float q_scale = 1.0f;               // Q multiplier after rope (q_scale_after_rope)
    float attn_softcap = 0.0f;          // 0: none
    float max_alibi_bias = 0.0f;        // alibi: 0 = none
    float final_softcap = 0.0f;         // 0: none; acts on the logits only
    int n_swa = 0;                      // sliding window (keys p0 with p1 - p0 >= n_swa are masked)
    float attn_temp_scale = 0.0f, attn_temp_offset = 0.0f;  // attn_temperature: 0 = off
    int attn_temp_floor = 0;
    int n_expert = 0, n_expert_used = 0, n_ff_exp = 0;  // moe
    float expert_weights_scale = 0.0f;                  // moe: 0 or 1 = none
    ggml_tensor * tok_embd = nullptr;
    ggml_tensor * output_norm = nullptr;
    ggml_tensor * output_norm_b = nullptr;  // layer_norm: the final LayerNorm's bias
    ggml_tensor * pos_embd = nullptr;       // pos_embd: [n_embd, n_ctx_train] learned positions
    ggml_tensor * output = nullptr;  // token_embd when tied
    ggml_tensor * output_scale = nullptr;  // optional `output.scale`: multiplies the logits only
    ggml_tensor * output_bias = nullptr;   // optional `output.bias` (qwen2): added to the logits only
    std::vector<LayerWeights> layers;
    bool parallel = false;               // attention and FFN in parallel (parallel_ffn, or the file's choice)
    bool shared_ffn_norm = false;        // the FFN reads the attention's normed input (phi2, falcon-7B)
    bool affine = false;                 // a bias on the linear path (v, o, up, down): y = L(x) + c
    std::vector<std::string> ignored;    // loaded by llama.cpp, not applied by its graph
};

// Throws std::runtime_error naming the tensor or hyper-parameter our graphs cannot honour.
// n_ctx: the context size llama.cpp would run with (it picks phi3's long or short rope factors).
ModelSpec resolve_model(const llama_model * model, uint32_t n_ctx);

}  // namespace llj
