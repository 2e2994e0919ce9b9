// Phi-3 / Phi-4: fused QKV and gate-up, partial rotary, long/short rope factors.
// Mirrors llama.cpp's src/models/phi3.cpp of the pinned release.
#include "../arch.h"

namespace llj {

std::vector<ArchSpec> phi3_family() {
    ArchSpec phi3;
    phi3.name = "phi3";
    phi3.family = "phi3";
    phi3.attn.kq_scale = KqScale::QTimesInvSqrtHeadDim;
    phi3.attn.partial_rotary = true;
    phi3.attn.longrope = true;
    // ffn_up holds [gate; up]: the first n_ff rows are the gate
    phi3.tensors = {{"ffn_gate.weight", nullptr}, {"ffn_up.weight", &LayerWeights::up_gate}};
    return {phi3};
}

}  // namespace llj
