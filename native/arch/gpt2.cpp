// The LayerNorm / non-gated MLP family: gpt2, starcoder, phi2, gptneox, starcoder2, falcon, mpt.
// Mirrors llama.cpp's src/models/gpt2.cpp, starcoder.cpp, phi2.cpp, gptneox.cpp,
// starcoder2.cpp, falcon.cpp and mpt.cpp of the pinned release.
#include "../arch.h"

#include <stdexcept>

namespace llj {

// falcon-40B: attn_norm_2 normalizes the attention's input and attn_norm then the FFN's;
// without it (7B) both branches share attn_norm (src/models/falcon.cpp).
static void falcon_adjust(ModelSpec & s) {
    if (!s.layers[0].attn_norm_2) return;
    s.shared_ffn_norm = false;
    for (auto & L : s.layers) {
        if (!L.attn_norm_2) continue;  // refused by the per-layer checks
        L.ffn_norm = L.attn_norm;
        L.ffn_norm_b = L.attn_norm_b;
        L.attn_norm = L.attn_norm_2;
        L.attn_norm_b = L.attn_norm_2_b;
        L.attn_norm_2 = L.attn_norm_2_b = nullptr;
    }
}

std::vector<ArchSpec> gpt2_family() {
    ArchSpec gpt2;                     // LayerNorms with biases, learned positions, fused QKV, GELU MLP, biases
    gpt2.name = "gpt2";
    gpt2.family = "gpt2";
    gpt2.input.learned_positions = true;
    gpt2.norms.kind = NormKind::Layer;
    gpt2.attn.rope = false;
    gpt2.ffn.kind = FfnKind::Plain;
    gpt2.ffn.act = Act::GeluTanh;
    gpt2.ffn.bias = true;

    ArchSpec starcoder = gpt2;         // StarCoder (1): the gpt2 graph, multi-query attention in the files
    starcoder.name = "starcoder";

    ArchSpec gptneox = gpt2;           // GPT-NeoX / Pythia: partial rope, parallel residual per the file
    gptneox.name = "gptneox";
    gptneox.input.learned_positions = false;
    gptneox.attn.rope = true;
    gptneox.attn.partial_rotary = true;
    gptneox.residual.parallel = Parallel::FromFile;

    ArchSpec phi2 = gptneox;           // always parallel, on one shared norm; Q pre-scaled; output bias
    phi2.name = "phi2";
    phi2.attn.kq_scale = KqScale::QTimesInvSqrtHeadDim;
    phi2.residual = {Parallel::Always, true};
    phi2.head.output_bias = true;

    ArchSpec starcoder2 = gptneox;     // StarCoder 2: gptneox's graph, always sequential
    starcoder2.name = "starcoder2";
    starcoder2.residual.parallel = Parallel::Never;

    ArchSpec falcon = gptneox;         // parallel attention and MLP, no projection biases, one or two norms
    falcon.name = "falcon";
    falcon.attn.partial_rotary = false;
    falcon.ffn.bias = false;
    falcon.residual = {Parallel::Always, true};
    falcon.tensors = {{"attn_norm_2.weight", &LayerWeights::attn_norm_2}, {"attn_norm_2.bias", &LayerWeights::attn_norm_2_b}};
    falcon.hooks.adjust = falcon_adjust;

    ArchSpec mpt = gpt2;               // gpt2's family without rope: ALiBi; optional positions, biases, activation scales
    mpt.name = "mpt";
    mpt.attn.alibi = true;
    mpt.tensors = {{"ffn.act.scales", &LayerWeights::ffn_act}};  // divide the MLP activation
    return {gpt2, starcoder, phi2, gptneox, starcoder2, falcon, mpt};
}

}  // namespace llj
