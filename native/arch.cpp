#include "arch.h"
#include "llama_internal.h"

#include "llama-model.h"  // llama_model::hparams: the values llama.cpp's graph uses

#include <algorithm>
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

// What llama.cpp's graph of each architecture applies (src/models/<arch>.cpp of the pinned
// release), as flags for our builders.
const ArchSpec * find_arch(const std::string & name) {
    static const std::vector<ArchSpec> archs = [] {
        std::vector<ArchSpec> v;
        ArchSpec llama;
        llama.name = "llama";
        llama.rope_factors = true;
        llama.kq_scale_from_file = true;
        llama.ffn_bias = true;
        llama.ffn_scale = true;
        llama.moe = true;       // Mixtral-style files
        llama.longrope = true;  // rope_factors_long/short when the file says longrope
        v.push_back(llama);
        ArchSpec mistral3 = llama;  // Ministral 3: llama plus an optional per-position Q temperature
        mistral3.name = "mistral3";
        mistral3.attn_temperature = true;
        v.push_back(mistral3);
        ArchSpec qwen2;  // Qwen 2 / 2.5: QKV biases; FFN biases and scales not applied
        qwen2.name = "qwen2";
        qwen2.output_bias = true;
        v.push_back(qwen2);
        ArchSpec qwen3;  // Qwen 3: per-head Q/K RMSNorm; FFN scales applied
        qwen3.name = "qwen3";
        qwen3.qk_norm = QkNorm::PerHead;
        qwen3.ffn_scale = true;
        v.push_back(qwen3);
        ArchSpec qwen3moe = qwen3;  // Qwen 3 MoE: qwen3 attention, routed experts in every layer
        qwen3moe.name = "qwen3moe";
        qwen3moe.moe = true;
        v.push_back(qwen3moe);
        ArchSpec gemma3;  // Gemma 3 (text): sqrt(d) input scale, Q/K norm, post-norms, GELU gate, SWA
        gemma3.name = "gemma3";
        gemma3.embd_scale_sqrt_d = true;
        gemma3.post_norms = true;
        gemma3.qk_norm = QkNorm::PerHead;
        gemma3.q_scale_after_rope = true;
        gemma3.sliding_window = true;
        gemma3.gate_act = GateAct::GeluTanh;
        gemma3.final_softcap = 2;
        v.push_back(gemma3);
        ArchSpec gemma2 = gemma3;  // Gemma 2: no Q/K norm; attention and final logit softcaps; always tied
        gemma2.name = "gemma2";
        gemma2.qk_norm = QkNorm::None;
        gemma2.attn_softcap = true;
        gemma2.final_softcap = 1;
        gemma2.tied_output_always = true;
        v.push_back(gemma2);
        ArchSpec phi3;  // Phi-3 / Phi-4: fused QKV and gate-up, partial rotary, long/short rope factors
        phi3.name = "phi3";
        phi3.q_prescale_head_dim = true;
        phi3.partial_rotary = true;
        phi3.longrope = true;
        phi3.fused_gate_up = true;
        v.push_back(phi3);
        ArchSpec olmo2;  // OLMo 2: no pre-norms, full-width Q/K norm, post-norms, SWA layers
        olmo2.name = "olmo2";
        olmo2.pre_norms = false;
        olmo2.post_norms = true;
        olmo2.qk_norm = QkNorm::FullWidth;
        olmo2.qkv_bias_scale = false;
        olmo2.sliding_window = true;
        olmo2.fused_qkv = false;
        v.push_back(olmo2);
        ArchSpec gpt2;  // GPT-2: LayerNorms with biases, learned positions, fused QKV, GELU MLP, biases everywhere
        gpt2.name = "gpt2";
        gpt2.layer_norm = true;
        gpt2.rope = false;
        gpt2.pos_embd = true;
        gpt2.gated_ffn = false;
        gpt2.gate_act = GateAct::GeluTanh;
        gpt2.ffn_bias = true;
        v.push_back(gpt2);
        ArchSpec gptneox = gpt2;  // GPT-NeoX / Pythia: gpt2's norms and MLP, partial rope, parallel residual per the file
        gptneox.name = "gptneox";
        gptneox.pos_embd = false;
        gptneox.rope = true;
        gptneox.partial_rotary = true;
        gptneox.parallel_from_file = true;
        v.push_back(gptneox);
        ArchSpec phi2 = gptneox;  // Phi-2: always parallel, on one shared norm; Q pre-scaled; output bias
        phi2.name = "phi2";
        phi2.parallel_from_file = false;
        phi2.parallel_ffn = true;
        phi2.shared_ffn_norm = true;
        phi2.q_prescale_head_dim = true;
        phi2.output_bias = true;
        v.push_back(phi2);
        ArchSpec falcon = gptneox;  // Falcon: parallel attention and MLP, no projection biases, one or two norms
        falcon.name = "falcon";
        falcon.parallel_from_file = false;
        falcon.parallel_ffn = true;
        falcon.shared_ffn_norm = true;
        falcon.attn_norm_2 = true;
        falcon.partial_rotary = false;
        falcon.ffn_bias = false;
        v.push_back(falcon);
        ArchSpec mpt = gpt2;  // MPT: gpt2's family without rope, ALiBi; optional positions, biases, activation scales
        mpt.name = "mpt";
        mpt.alibi = true;
        mpt.act_scales = true;
        v.push_back(mpt);
        ArchSpec starcoder2 = gptneox;  // StarCoder 2: the same, always sequential
        starcoder2.name = "starcoder2";
        starcoder2.parallel_from_file = false;
        v.push_back(starcoder2);
        ArchSpec starcoder = gpt2;  // StarCoder (1): the gpt2 graph, with multi-query attention in the files
        starcoder.name = "starcoder";
        v.push_back(starcoder);
        return v;
    }();
    for (const auto & a : archs) if (a.name == name) return &a;
    return nullptr;
}

// Rope of layer il: sliding-window layers of gemma use the file's SWA base and scale; OLMo 2's
// use the global base with no scaling (src/models/olmo2.cpp).
static RopeParams layer_rope(const llama_model * model, const ArchSpec & arch, const RopeParams & global, bool swa) {
    if (!swa) return global;
    const llama_hparams & hp = model->hparams;
    RopeParams r = global;
    if (arch.name == "olmo2") {
        r.freq_scale = 1.0f;
        r.ext_factor = 0.0f;
        r.attn_factor = 1.0f;
    } else {
        r.freq_base = hp.rope_freq_base_train_swa;
        r.freq_scale = hp.rope_freq_scale_train_swa;
    }
    return r;
}

ModelSpec resolve_model(const llama_model * model, uint32_t n_ctx) {
    const llama_hparams & hp = model->hparams;
    ModelSpec s;
    const std::string arch_name = model_architecture(model);
    const ArchSpec * arch = find_arch(arch_name);
    if (!arch) throw std::runtime_error("architecture '" + arch_name + "' has no linearization graph");
    s.arch = *arch;

    s.n_embd = llama_model_n_embd(model);
    s.n_layer = llama_model_n_layer(model);
    s.n_head = (int) hp.n_head(0);
    s.n_head_kv = (int) hp.n_head_kv(0);
    s.head_dim = (int) hp.n_embd_head_k(0);
    s.n_ff = (int) hp.n_ff(0);
    s.n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    s.norm_eps = s.arch.layer_norm ? hp.f_norm_eps : hp.f_norm_rms_eps;
    s.kq_scale = s.arch.kq_scale_from_file && hp.f_attention_scale != 0.0f ? hp.f_attention_scale : 1.0f / sqrtf((float) s.head_dim);
    if (s.arch.q_scale_after_rope || s.arch.q_prescale_head_dim) {
        s.q_scale = s.arch.q_scale_after_rope ? hp.f_attention_scale : 1.0f / sqrtf((float) s.head_dim);
        s.kq_scale = 1.0f;
    }
    if (s.arch.attn_softcap && hp.attn_soft_cap) s.attn_softcap = hp.f_attn_logit_softcapping;
    if (s.arch.final_softcap == 1 || (s.arch.final_softcap == 2 && hp.f_final_logit_softcapping != 0.0f)) s.final_softcap = hp.f_final_logit_softcapping;
    if (s.arch.attn_temperature && hp.f_attn_temp_scale != 0.0f) {
        s.attn_temp_scale = hp.f_attn_temp_scale;
        s.attn_temp_offset = hp.f_attn_temp_offset;
        s.attn_temp_floor = (int) hp.n_attn_temp_floor_scale;
    }
    const RopeParams global_rope = rope_params(model);

    // Hyper-parameters the llama graph honours that our graphs do not (yet): refuse.
    for (int il = 0; il < s.n_layer; ++il) {
        if ((int) hp.n_head(il) != s.n_head || (int) hp.n_head_kv(il) != s.n_head_kv || (int) hp.n_ff(il) != s.n_ff) {
            throw std::runtime_error("per-layer head counts or FFN widths (layer " + std::to_string(il) + ") are not supported yet");
        }
    }
    if (hp.n_embd_head_v(0) != hp.n_embd_head_k(0)) throw std::runtime_error("key and value head widths differ (attention.key_length != attention.value_length)");
    if (s.arch.rope && global_rope.n_rot != s.head_dim && !s.arch.partial_rotary) throw std::runtime_error("partial rotary embeddings (rope.dimension_count != head width) are not supported for " + arch_name);
    if (hp.f_clamp_kqv > 0.0f) throw std::runtime_error("attention.clamp_kqv (a nonlinear clamp on Q/K/V) is not supported yet");
    if (hp.use_kq_norm) throw std::runtime_error("Q/K L2 norm (use_kq_norm) is not supported yet");
    if (hp.n_expert > 0) {
        if (!s.arch.moe) throw std::runtime_error("mixture-of-experts layers (expert_count " + std::to_string(hp.n_expert) + ") are not supported for " + arch_name);
        if (hp.n_expert_groups > 1) throw std::runtime_error("grouped expert selection (expert_group_count) is not supported");
        for (int il = 0; il < s.n_layer; ++il) {
            if (hp.swiglu_clamp_exp[(size_t) il] > 1e-6f) throw std::runtime_error("clamped expert SwiGLU (swiglu_clamp_exp) is not supported");
        }
        s.n_expert = (int) hp.n_expert;
        s.n_expert_used = (int) hp.n_expert_used(0);
        s.expert_weights_scale = hp.expert_weights_scale;
    }
    if (hp.attn_soft_cap && !s.arch.attn_softcap) throw std::runtime_error("attention logit softcapping is not supported for " + arch_name);
    if (hp.f_max_alibi_bias != 0.0f && !s.arch.alibi) throw std::runtime_error("ALiBi (attention.max_alibi_bias) is not supported for " + arch_name);
    if (s.arch.alibi) s.max_alibi_bias = hp.f_max_alibi_bias;
    if (hp.swa_type != LLAMA_SWA_TYPE_NONE) {
        if (!s.arch.sliding_window) throw std::runtime_error("sliding-window attention is not supported for " + arch_name + " yet");
        if (hp.swa_type != LLAMA_SWA_TYPE_STANDARD) throw std::runtime_error("only the standard sliding-window mask is supported");
        s.n_swa = (int) hp.n_swa;
    }
    if (hp.rope_scaling_type_train == LLAMA_ROPE_SCALING_TYPE_LONGROPE && !s.arch.longrope) throw std::runtime_error("LongRoPE scaling is not supported for " + arch_name);

    // Every tensor of the file must be one our graph applies, or one llama.cpp loads but
    // never applies for this architecture.
    std::map<std::string, ggml_tensor *> byname;
    for (const auto & [name, t] : llama_internal_get_tensor_map(model)) byname[name] = t;
    using Role = ggml_tensor * LayerWeights::*;
    std::map<std::string, Role> roles = {
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
    if (s.arch.ffn_bias) {
        roles["ffn_gate.bias"] = &LayerWeights::b_gate;
        roles["ffn_up.bias"] = &LayerWeights::b_up;
        roles["ffn_down.bias"] = &LayerWeights::b_down;
    }
    if (s.arch.ffn_scale) {
        roles["ffn_gate.scale"] = &LayerWeights::s_gate;
        roles["ffn_up.scale"] = &LayerWeights::s_up;
        roles["ffn_down.scale"] = &LayerWeights::s_down;
    }
    if (s.arch.qk_norm != QkNorm::None) {
        roles["attn_q_norm.weight"] = &LayerWeights::q_norm;
        roles["attn_k_norm.weight"] = &LayerWeights::k_norm;
    }
    if (s.arch.act_scales) roles["ffn.act.scales"] = &LayerWeights::ffn_act;
    if (s.arch.fused_qkv) {
        roles["attn_qkv.weight"] = &LayerWeights::wqkv;
        roles["attn_qkv.bias"] = &LayerWeights::bqkv;
        roles["attn_qkv.scale"] = &LayerWeights::sqkv;
    }
    if (s.arch.layer_norm) {
        roles["attn_norm.bias"] = &LayerWeights::attn_norm_b;
        roles["ffn_norm.bias"] = &LayerWeights::ffn_norm_b;
    }
    s.parallel = s.arch.parallel_ffn || (s.arch.parallel_from_file && hp.use_par_res);
    if (s.arch.shared_ffn_norm) {
        roles.erase("ffn_norm.weight");
        roles.erase("ffn_norm.bias");
    }
    if (s.arch.attn_norm_2) {
        roles["attn_norm_2.weight"] = &LayerWeights::attn_norm_2;
        roles["attn_norm_2.bias"] = &LayerWeights::attn_norm_2_b;
    }
    if (!s.arch.gated_ffn) {
        for (const char * r : {"ffn_gate.weight", "ffn_gate.bias", "ffn_gate.scale"}) roles.erase(r);
    }
    if (s.arch.fused_gate_up) {
        roles.erase("ffn_gate.weight");
        roles["ffn_up.weight"] = &LayerWeights::up_gate;
    }
    if (s.n_expert > 0) {
        for (const char * r : {"ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"}) roles.erase(r);
        roles["ffn_gate_inp.weight"] = &LayerWeights::gate_inp;
        roles["ffn_gate_exps.weight"] = &LayerWeights::gate_exps;
        roles["ffn_up_exps.weight"] = &LayerWeights::up_exps;
        roles["ffn_down_exps.weight"] = &LayerWeights::down_exps;
        roles["ffn_gate_exps.scale"] = &LayerWeights::s_gate_exps;
        roles["ffn_up_exps.scale"] = &LayerWeights::s_up_exps;
        roles["ffn_down_exps.scale"] = &LayerWeights::s_down_exps;
    }
    if (s.arch.post_norms) {
        roles["post_attention_norm.weight"] = &LayerWeights::attn_post_norm;
        roles["post_ffw_norm.weight"] = &LayerWeights::ffn_post_norm;
    }
    if (!s.arch.pre_norms) {
        roles.erase("attn_norm.weight");
        roles.erase("ffn_norm.weight");
    }
    // Loaded by llama.cpp for this architecture, never applied by its graph (docs/llama-cpp.md).
    auto loaded_not_applied = [&](const std::string & name, const std::string & role) {
        if (role.size() > 12 && role.compare(role.size() - 12, 12, ".input_scale") == 0) return true;
        // reranker heads (qwen3's cls.output.weight): applied only in rank pooling, never in the LM logits
        if (name == "cls_out.weight" || name == "cls_out.bias" || name == "cls.output.weight" || name == "cls.output.bias") return true;
        if (!s.arch.ffn_scale && (role == "ffn_gate.scale" || role == "ffn_up.scale" || role == "ffn_down.scale")) return true;
        if (!s.arch.qkv_bias_scale && (role == "attn_q.bias" || role == "attn_k.bias" || role == "attn_v.bias" ||
                                       role == "attn_q.scale" || role == "attn_k.scale" || role == "attn_v.scale")) return true;
        if (s.arch.tied_output_always && name == "output.weight") return true;
        return false;
    };
    static const std::regex layer_re(R"(^blk\.(\d+)\.(.+)$)");
    s.layers.resize((size_t) s.n_layer);
    for (const auto & [name, t] : byname) {
        if (name == "token_embd.weight") { s.tok_embd = t; continue; }
        if (name == "output_norm.weight") { s.output_norm = t; continue; }
        if (name == "output_norm.bias" && s.arch.layer_norm) { s.output_norm_b = t; continue; }
        if (name == "position_embd.weight" && s.arch.pos_embd) { s.pos_embd = t; continue; }
        if (name == "output.weight" && !s.arch.tied_output_always) { s.output = t; continue; }
        if (name == "output.scale") { s.output_scale = t; continue; }
        if (name == "output.bias" && s.arch.output_bias) { s.output_bias = t; continue; }
        if (name == "rope_freqs.weight" && s.arch.rope_factors) { for (auto & l : s.layers) l.rope_freqs = t; continue; }
        if (s.arch.longrope && (name == "rope_factors_long.weight" || name == "rope_factors_short.weight")) {
            // llama_model::get_rope_factors: long when the per-sequence context (padded to 256)
            // exceeds the original training context
            const uint32_t n_ctx_seq = (n_ctx + 255) / 256 * 256;
            const bool want_long = n_ctx_seq > hp.n_ctx_orig_yarn;
            if ((name == "rope_factors_long.weight") == want_long) for (auto & l : s.layers) l.rope_freqs = t;
            continue;
        }
        std::smatch m;
        const bool in_layer = std::regex_match(name, m, layer_re);
        const std::string role = in_layer ? m[2].str() : name;
        if (loaded_not_applied(name, role)) { s.ignored.push_back(name); continue; }
        auto it = in_layer ? roles.find(role) : roles.end();
        if (it == roles.end()) {
            throw std::runtime_error("tensor '" + name + "' is not applied by llj-gguf's " + arch_name +
                                     " graph (refusing to linearize silently wrong)");
        }
        int il = std::stoi(m[1].str());
        if (il < 0 || il >= s.n_layer) throw std::runtime_error("tensor '" + name + "' names a layer outside the model");
        s.layers[(size_t) il].*(it->second) = t;
    }
    if (!s.tok_embd || !s.output_norm) throw std::runtime_error("token_embd.weight or output_norm.weight is missing");
    if (s.output_norm_b) s.affine = true;
    if (!s.output) s.output = s.tok_embd;  // tied LM head, as llama.cpp does
    // falcon-40B: attn_norm_2 normalizes the attention's input, attn_norm the FFN's (src/models/falcon.cpp)
    s.shared_ffn_norm = s.arch.shared_ffn_norm && !(s.arch.attn_norm_2 && s.layers[0].attn_norm_2);
    for (auto & L : s.layers) {
        if (s.shared_ffn_norm || !L.attn_norm_2) continue;
        L.ffn_norm = L.attn_norm;
        L.ffn_norm_b = L.attn_norm_b;
        L.attn_norm = L.attn_norm_2;
        L.attn_norm_b = L.attn_norm_2_b;
        L.attn_norm_2 = L.attn_norm_2_b = nullptr;
    }
    for (int il = 0; il < s.n_layer; ++il) {
        const LayerWeights & L = s.layers[(size_t) il];
        LayerWeights & Lm = s.layers[(size_t) il];
        const bool has_qkv = L.wqkv ? !(L.wq || L.wk || L.wv) : (L.wq && L.wk && L.wv);
        if (s.n_expert > 0 && L.up_exps && !L.gate_exps) {
            throw std::runtime_error("layer " + std::to_string(il) + " has no ffn_gate_exps.weight: ungated experts (silu(up)) are not supported");
        }
        const bool has_ffn = s.n_expert > 0 ? (L.gate_inp && L.gate_exps && L.up_exps && L.down_exps)
                                            : (L.up_gate ? !(L.gate || L.up) : ((L.gate || !s.arch.gated_ffn) && L.up)) && L.down;
        if ((s.arch.pre_norms && (!L.attn_norm || (!L.ffn_norm && !s.shared_ffn_norm))) || !has_qkv || !L.wo || !has_ffn) {
            throw std::runtime_error("layer " + std::to_string(il) + " lacks a required tensor");
        }
        if (L.attn_norm_2) throw std::runtime_error("layer " + std::to_string(il) + ": attn_norm_2 in some layers only");
        if (s.arch.qk_norm != QkNorm::None && (!L.q_norm || !L.k_norm)) throw std::runtime_error("layer " + std::to_string(il) + " lacks its Q/K norm weights");
        if (s.arch.post_norms && (!L.attn_post_norm || !L.ffn_post_norm)) throw std::runtime_error("layer " + std::to_string(il) + " lacks its post-norm weights");
        Lm.swa = s.n_swa > 0 && hp.is_swa((uint32_t) il);
        Lm.rope = layer_rope(model, s.arch, global_rope, Lm.swa);
        // Biases of Q, K and the gate act inside the frozen coefficients; the others add a constant.
        if (L.bv || L.bqkv || L.bo || L.b_up || L.b_down || L.attn_norm_b || L.ffn_norm_b) s.affine = true;
        if (s.n_expert > 0) {  // the experts' width as the loaded tensors have it (llama: n_ff; qwen3moe: n_ff_exp)
            if (il == 0) s.n_ff_exp = (int) L.up_exps->ne[1];
            const bool ok = L.up_exps->ne[1] == s.n_ff_exp && L.gate_exps->ne[1] == s.n_ff_exp && L.down_exps->ne[0] == s.n_ff_exp &&
                            L.up_exps->ne[2] == s.n_expert && L.gate_inp->ne[1] == s.n_expert;
            if (!ok) throw std::runtime_error("expert tensors of layer " + std::to_string(il) + " have unexpected shapes");
        }
        if (L.up_gate && L.up_gate->ne[1] != 2 * s.n_ff) throw std::runtime_error("fused ffn_up of layer " + std::to_string(il) + " is not [gate; up]");
        if (L.wqkv && L.wqkv->ne[1] != (int64_t) (s.n_head + 2 * s.n_head_kv) * s.head_dim) throw std::runtime_error("fused attn_qkv of layer " + std::to_string(il) + " has an unexpected shape");
    }
    return s;
}

}  // namespace llj
