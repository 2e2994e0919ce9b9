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
    ggml_tensor * attn_norm_b = nullptr, * ffn_norm_b = nullptr;  // LayerNorm biases
    ggml_tensor * attn_norm_2 = nullptr, * attn_norm_2_b = nullptr;  // falcon-40B (moved to attn_norm at load)
    ggml_tensor * gate = nullptr, * up = nullptr, * down = nullptr;
    ggml_tensor * b_gate = nullptr, * b_up = nullptr, * b_down = nullptr;
    ggml_tensor * s_gate = nullptr, * s_up = nullptr, * s_down = nullptr;
    ggml_tensor * wqkv = nullptr, * bqkv = nullptr, * sqkv = nullptr;  // fused Q/K/V (instead of wq, wk, wv)
    ggml_tensor * up_gate = nullptr;  // fused [gate; up] (phi3; instead of gate and up)
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


// What llama.cpp's graph of one architecture applies (src/models/<arch>.cpp of the pinned
// release), grouped by part of the network. Each family's specs are in native/arch/<family>.cpp;
// native/arch/registry.cpp lists them. The graph builders read only these choices.
enum class NormKind { Rms, Layer };                 // RMSNorm h·r·w, or LayerNorm (h - mean)·r·w + b
enum class QkNorm { None, PerHead, FullWidth };     // RMSNorm of Q and K before rope (inside the frozen attention)
enum class Act { Silu, GeluTanh };
enum class KqScale {
    InvSqrtHeadDim,       // softmax scale 1/sqrt(head_dim)
    FromFile,             // attention.scale when the file sets it, else 1/sqrt(head_dim) (llama)
    QTimesFileScale,      // Q times attention.scale after rope, softmax scale 1 (gemma)
    QTimesInvSqrtHeadDim, // Q times 1/sqrt(head_dim) after rope, softmax scale 1 (phi3, phi2)
};
enum class FfnKind { Gated, Plain };                // down(act(gate(m)) ⊙ up(m)), or down(act(up(m)))
enum class Parallel { Never, Always, FromFile };    // h + attn(h) + ffn(h) instead of the sequential pair
enum class FinalSoftcap { None, Always, WhenSet };  // c·tanh(logits/c): always (gemma2), when non-zero (gemma3)

struct InputSpec {
    bool scale_sqrt_d = false;        // token_embd rows times sqrt(n_embd) (gemma)
    bool learned_positions = false;   // position_embd rows added; x is their sum (gpt2)
};
struct NormSpec {
    NormKind kind = NormKind::Rms;    // of every pre-norm and the final norm
    bool pre = true;                  // a norm before attention and FFN (olmo2: none)
    bool post = false;                // RMSNorm of each branch output before its residual add (gemma, olmo2)
    QkNorm qk = QkNorm::None;
};
struct AttentionSpec {
    bool fused_qkv = true;            // a fused attn_qkv.weight is accepted (olmo2's graph cannot)
    bool qkv_bias_scale = true;       // q/k/v biases and per-tensor scales applied (olmo2: ignored)
    KqScale kq_scale = KqScale::InvSqrtHeadDim;
    bool rope = true;                 // rotary positions (gpt2, mpt: none)
    bool partial_rotary = false;      // rope may rotate fewer dims than the head width
    bool rope_factors = false;        // rope_freqs.weight divides the rope frequencies
    bool longrope = false;            // rope_factors_long/short chosen by the context size
    bool alibi = false;               // ALiBi slopes from attention.max_alibi_bias, inside the frozen softmax (mpt)
    bool softcap = false;             // c·tanh(kq/c) before the softmax when the file asks (gemma2)
    bool sliding_window = false;      // per-layer sliding-window masks as hparams.is_swa(il) says
    bool temperature = false;         // Q times a per-position temperature (mistral3)
    bool scales_q() const { return kq_scale == KqScale::QTimesFileScale || kq_scale == KqScale::QTimesInvSqrtHeadDim; }
};
struct FfnSpec {
    FfnKind kind = FfnKind::Gated;    // Plain: act(z) frozen as z·s(z)
    Act act = Act::Silu;
    bool moe = false;                 // routed experts: softmax router, top-k, renormalized weights
    bool bias = false;                // ffn_{gate,up,down}.bias are applied
    bool scale = false;               // ffn_{gate,up,down}.scale are applied
};
struct ResidualSpec {
    Parallel parallel = Parallel::Never;
    bool shared_ffn_norm = false;     // the FFN reads the attention's normed input; no ffn_norm (phi2, falcon)
};
struct HeadSpec {
    bool output_bias = false;         // output.bias is added to the logits
    bool tied_always = false;         // the LM head is token_embd even if output.weight exists (gemma2)
    FinalSoftcap final_softcap = FinalSoftcap::None;
};

struct ModelSpec;

// A family-specific tensor of a layer: its GGUF name within blk.<il>. and where it goes
// (nullptr: the family's graph has no such tensor, though the shared table does).
struct TensorRole {
    const char * name;
    ggml_tensor * LayerWeights::* member;
};

// What a family does differently from the shared resolution (native/arch/resolve.cpp).
struct ArchHooks {
    // After the tensors are mapped, before the per-layer checks (falcon: attn_norm_2).
    void (*adjust)(ModelSpec & s) = nullptr;
    // The rope of a sliding-window layer (default: the file's SWA base and scale).
    RopeParams (*swa_rope)(const RopeParams & global, const llama_model * model) = nullptr;
};

struct ArchSpec {
    std::string name;                 // general.architecture
    std::string family;               // the native/arch/<family>.cpp it is defined in
    InputSpec input;
    NormSpec norms;
    AttentionSpec attn;
    FfnSpec ffn;
    ResidualSpec residual;
    HeadSpec head;
    std::vector<TensorRole> tensors;  // layer tensors beyond the shared table
    ArchHooks hooks;
};

// The registry (native/arch/registry.cpp): every architecture our graphs implement, in a
// fixed order; lookup by name (nullptr for any other).
const std::vector<ArchSpec> & supported_architectures();
const ArchSpec * find_arch(const std::string & name);

// Architectures known to llama.cpp that we refuse, by what stands in the way: an ECMAScript
// regex over the whole name, and the reason.
struct Refusal {
    std::string pattern;
    std::string reason;
};
const std::vector<Refusal> & refused_architectures();
extern const char * const kNoGraphReason;  // any other architecture

// One function per family file (native/arch/<family>.cpp), each returning its specs.
std::vector<ArchSpec> llama_family();
std::vector<ArchSpec> qwen_family();
std::vector<ArchSpec> gemma_family();
std::vector<ArchSpec> olmo2_family();
std::vector<ArchSpec> phi3_family();
std::vector<ArchSpec> gpt2_family();

// general.architecture of a loaded model ("" when absent).
std::string model_architecture(const llama_model * m);

struct ModelSpec {
    ArchSpec arch;
    int n_embd = 0, n_layer = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_ff = 0, n_vocab = 0;
    float norm_eps = 1e-5f;             // of every RMSNorm, or of every LayerNorm
    float kq_scale = 1.0f;              // softmax scale
    float q_scale = 1.0f;               // Q multiplier after rope (KqScale::QTimes*)
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
    ggml_tensor * output_norm_b = nullptr;  // the final LayerNorm's bias
    ggml_tensor * pos_embd = nullptr;       // [n_embd, n_ctx_train] learned positions
    ggml_tensor * output = nullptr;  // token_embd when tied
    ggml_tensor * output_scale = nullptr;  // optional `output.scale`: multiplies the logits only
    ggml_tensor * output_bias = nullptr;   // optional `output.bias` (qwen2): added to the logits only
    std::vector<LayerWeights> layers;
    bool parallel = false;               // attention and FFN in parallel (always, or the file's choice)
    bool shared_ffn_norm = false;        // the FFN reads the attention's normed input (phi2, falcon-7B)
    bool affine = false;                 // a bias on the linear path (v, o, up, down): y = L(x) + c
    std::vector<std::string> ignored;    // loaded by llama.cpp, not applied by its graph
};

// Throws std::runtime_error naming the tensor or hyper-parameter our graphs cannot honour.
// n_ctx: the context size llama.cpp would run with (it picks phi3's long or short rope factors).
ModelSpec resolve_model(const llama_model * model, uint32_t n_ctx);

}  // namespace llj
