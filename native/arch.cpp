#include "arch.h"
#include "llama_internal.h"

#include "llama-model.h"  // llama_model::hparams: the values llama.cpp's graph uses

#include <cmath>
#include <map>
#include <regex>
#include <stdexcept>

namespace llj {

// Mirrors the rope parameters llama_context derives from hparams with default context
// parameters (src/llama-context.cpp of the pinned release).
static RopeParams rope_params(const llama_model * model) {
    const llama_hparams & hp = model->hparams;
    RopeParams r;
    r.n_rot = (int) hp.n_rot();
    r.mode = (int) llama_model_rope_type(model);
    r.freq_base = hp.rope_freq_base_train;
    r.freq_scale = hp.rope_freq_scale_train;
    r.n_ctx_orig = (int) (hp.n_ctx_orig_yarn != 0 ? hp.n_ctx_orig_yarn : hp.n_ctx_train);
    r.ext_factor = hp.yarn_ext_factor;
    r.attn_factor = hp.yarn_attn_factor;
    r.beta_fast = hp.yarn_beta_fast;
    r.beta_slow = hp.yarn_beta_slow;
    const auto scaling = hp.rope_scaling_type_train;
    if (scaling == LLAMA_ROPE_SCALING_TYPE_NONE) r.freq_scale = 1.0f;
    if (r.ext_factor < 0.0f) r.ext_factor = scaling == LLAMA_ROPE_SCALING_TYPE_YARN ? 1.0f : 0.0f;
    if (r.ext_factor != 0.0f) {
        auto get_mscale = [](float scale, float mscale) { return scale <= 1.0f ? 1.0f : (0.1f * mscale * logf(scale) + 1.0f); };
        const float factor = 1.0f / r.freq_scale;
        if (hp.rope_yarn_log_mul != 0.0f) r.attn_factor = get_mscale(factor, 1.0f) / get_mscale(factor, hp.rope_yarn_log_mul);
        else r.attn_factor = get_mscale(factor, 1.0f);
        r.attn_factor *= 1.0f / (1.0f + 0.1f * logf(factor));
    }
    r.attn_factor *= hp.rope_attn_factor;
    return r;
}

static std::string model_arch(const llama_model * m) {
    char buf[128];
    int32_t n = llama_model_meta_val_str(m, "general.architecture", buf, sizeof(buf));
    return n < 0 ? "" : std::string(buf);
}

ModelSpec resolve_model(const llama_model * model) {
    const llama_hparams & hp = model->hparams;
    ModelSpec s;
    s.arch.name = model_arch(model);
    if (s.arch.name != "llama") throw std::runtime_error("architecture '" + s.arch.name + "' has no linearization graph");

    s.n_embd = llama_model_n_embd(model);
    s.n_layer = llama_model_n_layer(model);
    s.n_head = (int) hp.n_head(0);
    s.n_head_kv = (int) hp.n_head_kv(0);
    s.head_dim = (int) hp.n_embd_head_k(0);
    s.n_ff = (int) hp.n_ff(0);
    s.n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    s.norm_eps = hp.f_norm_rms_eps;
    s.kq_scale = hp.f_attention_scale == 0.0f ? 1.0f / sqrtf((float) s.head_dim) : hp.f_attention_scale;
    s.rope = rope_params(model);

    // Hyper-parameters the llama graph honours that our graphs do not (yet): refuse.
    for (int il = 0; il < s.n_layer; ++il) {
        if ((int) hp.n_head(il) != s.n_head || (int) hp.n_head_kv(il) != s.n_head_kv || (int) hp.n_ff(il) != s.n_ff) {
            throw std::runtime_error("per-layer head counts or FFN widths (layer " + std::to_string(il) + ") are not supported yet");
        }
    }
    if (hp.n_embd_head_v(0) != hp.n_embd_head_k(0)) throw std::runtime_error("key and value head widths differ (attention.key_length != attention.value_length)");
    if (s.rope.n_rot != s.head_dim) throw std::runtime_error("partial rotary embeddings (rope.dimension_count != head width) are not supported for llama");
    if (hp.f_clamp_kqv > 0.0f) throw std::runtime_error("attention.clamp_kqv (a nonlinear clamp on Q/K/V) is not supported yet");
    if (hp.use_kq_norm) throw std::runtime_error("Q/K L2 norm (use_kq_norm) is not supported yet");
    if (hp.n_expert > 0) throw std::runtime_error("mixture-of-experts layers (expert_count " + std::to_string(hp.n_expert) + ") are not supported yet");
    if (hp.attn_soft_cap) throw std::runtime_error("attention logit softcapping is not supported for llama");
    if (hp.f_max_alibi_bias != 0.0f) throw std::runtime_error("ALiBi (attention.max_alibi_bias) is not supported");
    if (hp.swa_type != LLAMA_SWA_TYPE_NONE) throw std::runtime_error("sliding-window attention is not supported for llama yet");
    if (hp.rope_scaling_type_train == LLAMA_ROPE_SCALING_TYPE_LONGROPE) throw std::runtime_error("LongRoPE scaling is not supported for llama");

    // Every tensor of the file must be one our graph applies, or one llama.cpp loads but
    // never applies for this architecture.
    std::map<std::string, ggml_tensor *> byname;
    for (const auto & [name, t] : llama_internal_get_tensor_map(model)) byname[name] = t;
    static const std::regex layer_re(R"(^blk\.(\d+)\.(.+)$)");
    static const std::regex ignored_re(R"(.*\.input_scale$)");
    s.layers.resize((size_t) s.n_layer);
    for (const auto & [name, t] : byname) {
        if (name == "token_embd.weight") { s.tok_embd = t; continue; }
        if (name == "output_norm.weight") { s.output_norm = t; continue; }
        if (name == "output.weight") { s.output = t; continue; }
        if (name == "output.scale") { s.output_scale = t; continue; }
        if (name == "rope_freqs.weight") { for (auto & l : s.layers) l.rope_freqs = t; continue; }
        if (std::regex_match(name, ignored_re)) { s.ignored.push_back(name); continue; }
        std::smatch m;
        if (!std::regex_match(name, m, layer_re)) throw std::runtime_error("tensor '" + name + "' is not applied by llj-gguf's llama graph");
        int il = std::stoi(m[1].str());
        if (il < 0 || il >= s.n_layer) throw std::runtime_error("tensor '" + name + "' names a layer outside the model");
        LayerWeights & L = s.layers[(size_t) il];
        static const std::map<std::string, ggml_tensor * LayerWeights::*> roles = {
            {"attn_norm.weight", &LayerWeights::attn_norm},
            {"attn_q.weight", &LayerWeights::wq}, {"attn_k.weight", &LayerWeights::wk},
            {"attn_v.weight", &LayerWeights::wv}, {"attn_output.weight", &LayerWeights::wo},
            {"attn_q.bias", &LayerWeights::bq}, {"attn_k.bias", &LayerWeights::bk},
            {"attn_v.bias", &LayerWeights::bv}, {"attn_output.bias", &LayerWeights::bo},
            {"attn_q.scale", &LayerWeights::sq}, {"attn_k.scale", &LayerWeights::sk},
            {"attn_v.scale", &LayerWeights::sv}, {"attn_output.scale", &LayerWeights::so},
            {"ffn_norm.weight", &LayerWeights::ffn_norm},
            {"ffn_gate.weight", &LayerWeights::gate}, {"ffn_up.weight", &LayerWeights::up},
            {"ffn_down.weight", &LayerWeights::down},
            {"ffn_gate.bias", &LayerWeights::b_gate}, {"ffn_up.bias", &LayerWeights::b_up},
            {"ffn_down.bias", &LayerWeights::b_down},
            {"ffn_gate.scale", &LayerWeights::s_gate}, {"ffn_up.scale", &LayerWeights::s_up},
            {"ffn_down.scale", &LayerWeights::s_down},
            {"rope_freqs.weight", &LayerWeights::rope_freqs},
        };
        auto it = roles.find(m[2].str());
        if (it == roles.end()) throw std::runtime_error("tensor '" + name + "' is not applied by llj-gguf's llama graph (refusing to linearize silently wrong)");
        L.*(it->second) = t;
    }
    if (!s.tok_embd || !s.output_norm) throw std::runtime_error("token_embd.weight or output_norm.weight is missing");
    if (!s.output) s.output = s.tok_embd;  // tied LM head, as llama.cpp does
    for (int il = 0; il < s.n_layer; ++il) {
        const LayerWeights & L = s.layers[(size_t) il];
        if (!L.attn_norm || !L.wq || !L.wk || !L.wv || !L.wo || !L.ffn_norm || !L.gate || !L.up || !L.down) {
            throw std::runtime_error("layer " + std::to_string(il) + " lacks a required tensor");
        }
        if (L.bq || L.bk || L.bv || L.bo || L.b_gate || L.b_up || L.b_down) s.affine = true;
    }
    return s;
}

}  // namespace llj
