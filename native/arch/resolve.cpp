// The resolution shared by every family: hyper-parameters from the llama_model llama.cpp
// loaded, the file's tensors mapped to their roles by GGUF name, and the checks that refuse,
// by name, anything our graphs do not honour. A family's own differences are its ArchSpec
// (native/arch/<family>.cpp): its choices, its extra tensors and its hooks.
#include "../arch.h"
#include "../llama_internal.h"

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

std::string model_architecture(const llama_model * m) {
    char buf[128];
    int32_t n = llama_model_meta_val_str(m, "general.architecture", buf, sizeof(buf));
    return n < 0 ? "" : std::string(buf);
}

// Dimensions, norms, attention scales and softcaps as llama.cpp's graph reads them.
static void read_hparams(const llama_model * model, ModelSpec & s) {
    const llama_hparams & hp = model->hparams;
    const ArchSpec & arch = s.arch;
    s.n_embd = llama_model_n_embd(model);
    s.n_layer = llama_model_n_layer(model);
    s.n_head = (int) hp.n_head(0);
    s.n_head_kv = (int) hp.n_head_kv(0);
    s.head_dim = (int) hp.n_embd_head_k(0);
    s.n_ff = (int) hp.n_ff(0);
    s.n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    s.norm_eps = arch.norms.kind == NormKind::Layer ? hp.f_norm_eps : hp.f_norm_rms_eps;
    const float inv_sqrt_hd = 1.0f / sqrtf((float) s.head_dim);
    s.kq_scale = arch.attn.kq_scale == KqScale::FromFile && hp.f_attention_scale != 0.0f ? hp.f_attention_scale : inv_sqrt_hd;
    if (arch.attn.scales_q()) {
        s.q_scale = arch.attn.kq_scale == KqScale::QTimesFileScale ? hp.f_attention_scale : inv_sqrt_hd;
        s.kq_scale = 1.0f;
    }
    if (arch.attn.softcap && hp.attn_soft_cap) s.attn_softcap = hp.f_attn_logit_softcapping;
    const FinalSoftcap fc = arch.head.final_softcap;
    if (fc == FinalSoftcap::Always || (fc == FinalSoftcap::WhenSet && hp.f_final_logit_softcapping != 0.0f)) {
        s.final_softcap = hp.f_final_logit_softcapping;
    }
    if (arch.attn.temperature && hp.f_attn_temp_scale != 0.0f) {
        s.attn_temp_scale = hp.f_attn_temp_scale;
        s.attn_temp_offset = hp.f_attn_temp_offset;
        s.attn_temp_floor = (int) hp.n_attn_temp_floor_scale;
    }
    if (arch.attn.alibi) s.max_alibi_bias = hp.f_max_alibi_bias;
    s.parallel = arch.residual.parallel == Parallel::Always || (arch.residual.parallel == Parallel::FromFile && hp.use_par_res);
    s.shared_ffn_norm = arch.residual.shared_ffn_norm;
}

// Hyper-parameters llama.cpp's graph honours that our graphs do not (yet): refuse, by name.
// Takes the expert counts and the sliding window, which are checked here.
static void check_hparams(const llama_model * model, const RopeParams & global_rope, ModelSpec & s) {
    const llama_hparams & hp = model->hparams;
    const ArchSpec & arch = s.arch;
    const std::string & name = arch.name;
    for (int il = 0; il < s.n_layer; ++il) {
        if ((int) hp.n_head(il) != s.n_head || (int) hp.n_head_kv(il) != s.n_head_kv || (int) hp.n_ff(il) != s.n_ff) {
            throw std::runtime_error("per-layer head counts or FFN widths (layer " + std::to_string(il) + ") are not supported yet");
        }
    }
    if (hp.n_embd_head_v(0) != hp.n_embd_head_k(0)) throw std::runtime_error("key and value head widths differ (attention.key_length != attention.value_length)");
    if (arch.attn.rope && global_rope.n_rot != s.head_dim && !arch.attn.partial_rotary) throw std::runtime_error("partial rotary embeddings (rope.dimension_count != head width) are not supported for " + name);
    if (hp.f_clamp_kqv > 0.0f) throw std::runtime_error("attention.clamp_kqv (a nonlinear clamp on Q/K/V) is not supported yet");
    if (hp.use_kq_norm) throw std::runtime_error("Q/K L2 norm (use_kq_norm) is not supported yet");
    if (hp.n_expert > 0) {
        if (!arch.ffn.moe) throw std::runtime_error("mixture-of-experts layers (expert_count " + std::to_string(hp.n_expert) + ") are not supported for " + name);
        if (hp.n_expert_groups > 1) throw std::runtime_error("grouped expert selection (expert_group_count) is not supported");
        for (int il = 0; il < s.n_layer; ++il) {
            if (hp.swiglu_clamp_exp[(size_t) il] > 1e-6f) throw std::runtime_error("clamped expert SwiGLU (swiglu_clamp_exp) is not supported");
        }
        s.n_expert = (int) hp.n_expert;
        s.n_expert_used = (int) hp.n_expert_used(0);
        s.expert_weights_scale = hp.expert_weights_scale;
    }
    if (hp.attn_soft_cap && !arch.attn.softcap) throw std::runtime_error("attention logit softcapping is not supported for " + name);
    if (hp.f_max_alibi_bias != 0.0f && !arch.attn.alibi) throw std::runtime_error("ALiBi (attention.max_alibi_bias) is not supported for " + name);
    if (hp.swa_type != LLAMA_SWA_TYPE_NONE) {
        if (!arch.attn.sliding_window) throw std::runtime_error("sliding-window attention is not supported for " + name + " yet");
        if (hp.swa_type != LLAMA_SWA_TYPE_STANDARD) throw std::runtime_error("only the standard sliding-window mask is supported");
        s.n_swa = (int) hp.n_swa;
    }
    if (hp.rope_scaling_type_train == LLAMA_ROPE_SCALING_TYPE_LONGROPE && !arch.attn.longrope) throw std::runtime_error("LongRoPE scaling is not supported for " + name);
}

using Role = ggml_tensor * LayerWeights::*;
using RoleTable = std::map<std::string, Role>;

// The layer tensors our graph applies for this model, by name within blk.<il>.: the shared
// table as the spec's choices shape it, then the family's own entries.
static RoleTable role_table(const ModelSpec & s) {
    const ArchSpec & arch = s.arch;
    RoleTable roles = {
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
    };
    auto add = [&](std::initializer_list<std::pair<const char *, Role>> entries) { for (const auto & [n, r] : entries) roles[n] = r; };
    auto erase = [&](std::initializer_list<const char *> names) { for (const char * n : names) roles.erase(n); };
    if (arch.ffn.bias) add({{"ffn_gate.bias", &LayerWeights::b_gate}, {"ffn_up.bias", &LayerWeights::b_up}, {"ffn_down.bias", &LayerWeights::b_down}});
    if (arch.ffn.scale) add({{"ffn_gate.scale", &LayerWeights::s_gate}, {"ffn_up.scale", &LayerWeights::s_up}, {"ffn_down.scale", &LayerWeights::s_down}});
    if (arch.norms.qk != QkNorm::None) add({{"attn_q_norm.weight", &LayerWeights::q_norm}, {"attn_k_norm.weight", &LayerWeights::k_norm}});
    if (arch.attn.fused_qkv) add({{"attn_qkv.weight", &LayerWeights::wqkv}, {"attn_qkv.bias", &LayerWeights::bqkv}, {"attn_qkv.scale", &LayerWeights::sqkv}});
    if (arch.norms.kind == NormKind::Layer) add({{"attn_norm.bias", &LayerWeights::attn_norm_b}, {"ffn_norm.bias", &LayerWeights::ffn_norm_b}});
    if (arch.residual.shared_ffn_norm) erase({"ffn_norm.weight", "ffn_norm.bias"});
    if (arch.ffn.kind == FfnKind::Plain) erase({"ffn_gate.weight", "ffn_gate.bias", "ffn_gate.scale"});
    if (s.n_expert > 0) {
        erase({"ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"});
        add({{"ffn_gate_inp.weight", &LayerWeights::gate_inp}, {"ffn_gate_exps.weight", &LayerWeights::gate_exps},
             {"ffn_up_exps.weight", &LayerWeights::up_exps}, {"ffn_down_exps.weight", &LayerWeights::down_exps},
             {"ffn_gate_exps.scale", &LayerWeights::s_gate_exps}, {"ffn_up_exps.scale", &LayerWeights::s_up_exps},
             {"ffn_down_exps.scale", &LayerWeights::s_down_exps}});
    }
    if (arch.norms.post) add({{"post_attention_norm.weight", &LayerWeights::attn_post_norm}, {"post_ffw_norm.weight", &LayerWeights::ffn_post_norm}});
    if (!arch.norms.pre) erase({"attn_norm.weight", "ffn_norm.weight"});
    for (const TensorRole & t : arch.tensors) {
        if (t.member) roles[t.name] = t.member;
        else roles.erase(t.name);
    }
    return roles;
}

// Loaded by llama.cpp for this architecture, never applied by its graph (docs/llama-cpp.md).
static bool loaded_not_applied(const ArchSpec & arch, const std::string & name, const std::string & role) {
    if (role.size() > 12 && role.compare(role.size() - 12, 12, ".input_scale") == 0) return true;
    // reranker heads (qwen3's cls.output.weight): applied only in rank pooling, never in the LM logits
    if (name == "cls_out.weight" || name == "cls_out.bias" || name == "cls.output.weight" || name == "cls.output.bias") return true;
    if (!arch.ffn.scale && (role == "ffn_gate.scale" || role == "ffn_up.scale" || role == "ffn_down.scale")) return true;
    if (!arch.attn.qkv_bias_scale && (role == "attn_q.bias" || role == "attn_k.bias" || role == "attn_v.bias" ||
                                      role == "attn_q.scale" || role == "attn_k.scale" || role == "attn_v.scale")) return true;
    if (arch.head.tied_always && name == "output.weight") return true;
    return false;
}

// A tensor outside the layers, taken into s; false when it is not one of those.
static bool take_model_tensor(const llama_model * model, uint32_t n_ctx, const std::string & name, ggml_tensor * t, ModelSpec & s) {
    const ArchSpec & arch = s.arch;
    if (name == "token_embd.weight") { s.tok_embd = t; return true; }
    if (name == "output_norm.weight") { s.output_norm = t; return true; }
    if (name == "output_norm.bias" && arch.norms.kind == NormKind::Layer) { s.output_norm_b = t; return true; }
    if (name == "position_embd.weight" && arch.input.learned_positions) { s.pos_embd = t; return true; }
    if (name == "output.weight" && !arch.head.tied_always) { s.output = t; return true; }
    if (name == "output.scale") { s.output_scale = t; return true; }
    if (name == "output.bias" && arch.head.output_bias) { s.output_bias = t; return true; }
    if (name == "rope_freqs.weight" && arch.attn.rope_factors) { for (auto & l : s.layers) l.rope_freqs = t; return true; }
    if (arch.attn.longrope && (name == "rope_factors_long.weight" || name == "rope_factors_short.weight")) {
        // llama_model::get_rope_factors: long when the per-sequence context (padded to 256)
        // exceeds the original training context
        const uint32_t n_ctx_seq = (n_ctx + 255) / 256 * 256;
        const bool want_long = n_ctx_seq > model->hparams.n_ctx_orig_yarn;
        if ((name == "rope_factors_long.weight") == want_long) for (auto & l : s.layers) l.rope_freqs = t;
        return true;
    }
    return false;
}

// Every tensor of the file must be one our graph applies, or one llama.cpp loads but never
// applies for this architecture (recorded in s.ignored).
static void map_tensors(const llama_model * model, uint32_t n_ctx, ModelSpec & s) {
    std::map<std::string, ggml_tensor *> byname;
    for (const auto & [name, t] : llama_internal_get_tensor_map(model)) byname[name] = t;
    const RoleTable roles = role_table(s);
    static const std::regex layer_re(R"(^blk\.(\d+)\.(.+)$)");
    s.layers.resize((size_t) s.n_layer);
    for (const auto & [name, t] : byname) {
        if (take_model_tensor(model, n_ctx, name, t, s)) continue;
        std::smatch m;
        const bool in_layer = std::regex_match(name, m, layer_re);
        const std::string role = in_layer ? m[2].str() : name;
        if (loaded_not_applied(s.arch, name, role)) { s.ignored.push_back(name); continue; }
        auto it = in_layer ? roles.find(role) : roles.end();
        if (it == roles.end()) {
            throw std::runtime_error("tensor '" + name + "' is not applied by llj-gguf's " + s.arch.name +
                                     " graph (refusing to linearize silently wrong)");
        }
        int il = std::stoi(m[1].str());
        if (il < 0 || il >= s.n_layer) throw std::runtime_error("tensor '" + name + "' names a layer outside the model");
        s.layers[(size_t) il].*(it->second) = t;
    }
    if (!s.tok_embd || !s.output_norm) throw std::runtime_error("token_embd.weight or output_norm.weight is missing");
    if (s.output_norm_b) s.affine = true;
    if (!s.output) s.output = s.tok_embd;  // tied LM head, as llama.cpp does
}

// Rope of a layer: sliding-window layers use the file's SWA base and scale unless the family says otherwise.
static RopeParams layer_rope(const llama_model * model, const ArchSpec & arch, const RopeParams & global, bool swa) {
    if (!swa) return global;
    if (arch.hooks.swa_rope) return arch.hooks.swa_rope(global, model);
    RopeParams r = global;
    r.freq_base = model->hparams.rope_freq_base_train_swa;
    r.freq_scale = model->hparams.rope_freq_scale_train_swa;
    return r;
}

// Shapes the graph relies on, per layer (the tensor map does not check them).
static void check_layer_shapes(const ModelSpec & s, int il) {
    const LayerWeights & L = s.layers[(size_t) il];
    const std::string layer = std::to_string(il);
    if (s.n_expert > 0) {  // the experts' width as the loaded tensors have it (llama: n_ff; qwen3moe: n_ff_exp)
        const bool ok = L.up_exps->ne[1] == s.n_ff_exp && L.gate_exps->ne[1] == s.n_ff_exp && L.down_exps->ne[0] == s.n_ff_exp &&
                        L.up_exps->ne[2] == s.n_expert && L.gate_inp->ne[1] == s.n_expert;
        if (!ok) throw std::runtime_error("expert tensors of layer " + layer + " have unexpected shapes");
    }
    if (L.up_gate && L.up_gate->ne[1] != 2 * s.n_ff) throw std::runtime_error("fused ffn_up of layer " + layer + " is not [gate; up]");
    if (L.wqkv && L.wqkv->ne[1] != (int64_t) (s.n_head + 2 * s.n_head_kv) * s.head_dim) throw std::runtime_error("fused attn_qkv of layer " + layer + " has an unexpected shape");
}

// Every layer has what its graph needs; each gets its window and rope, and the model's
// affinity is decided.
static void check_layers(const llama_model * model, const RopeParams & global_rope, ModelSpec & s) {
    const ArchSpec & arch = s.arch;
    for (int il = 0; il < s.n_layer; ++il) {
        LayerWeights & L = s.layers[(size_t) il];
        const std::string layer = std::to_string(il);
        const bool has_qkv = L.wqkv ? !(L.wq || L.wk || L.wv) : (L.wq && L.wk && L.wv);
        if (s.n_expert > 0 && L.up_exps && !L.gate_exps) {
            throw std::runtime_error("layer " + layer + " has no ffn_gate_exps.weight: ungated experts (silu(up)) are not supported");
        }
        const bool gated = arch.ffn.kind == FfnKind::Gated;
        const bool has_ffn = s.n_expert > 0 ? (L.gate_inp && L.gate_exps && L.up_exps && L.down_exps)
                                            : (L.up_gate ? !(L.gate || L.up) : ((L.gate || !gated) && L.up)) && L.down;
        if ((arch.norms.pre && (!L.attn_norm || (!L.ffn_norm && !s.shared_ffn_norm))) || !has_qkv || !L.wo || !has_ffn) {
            throw std::runtime_error("layer " + layer + " lacks a required tensor");
        }
        if (L.attn_norm_2) throw std::runtime_error("layer " + layer + ": attn_norm_2 in some layers only");
        if (arch.norms.qk != QkNorm::None && (!L.q_norm || !L.k_norm)) throw std::runtime_error("layer " + layer + " lacks its Q/K norm weights");
        if (arch.norms.post && (!L.attn_post_norm || !L.ffn_post_norm)) throw std::runtime_error("layer " + layer + " lacks its post-norm weights");
        L.swa = s.n_swa > 0 && model->hparams.is_swa((uint32_t) il);
        L.rope = layer_rope(model, arch, global_rope, L.swa);
        // Biases of Q, K and the gate act inside the frozen coefficients; the others add a constant.
        if (L.bv || L.bqkv || L.bo || L.b_up || L.b_down || L.attn_norm_b || L.ffn_norm_b) s.affine = true;
        if (s.n_expert > 0 && il == 0) s.n_ff_exp = (int) L.up_exps->ne[1];
        check_layer_shapes(s, il);
    }
}

ModelSpec resolve_model(const llama_model * model, uint32_t n_ctx) {
    const std::string arch_name = model_architecture(model);
    const ArchSpec * arch = find_arch(arch_name);
    if (!arch) throw std::runtime_error("architecture '" + arch_name + "' has no linearization graph");
    ModelSpec s;
    s.arch = *arch;
    read_hparams(model, s);
    const RopeParams global_rope = rope_params(model);
    check_hparams(model, global_rope, s);
    map_tensors(model, n_ctx, s);
    if (arch->hooks.adjust) arch->hooks.adjust(s);
    check_layers(model, global_rope, s);
    return s;
}

}  // namespace llj
