// The Gemma family: gemma2 and gemma3 (text).
// Mirrors llama.cpp's src/models/gemma2-iswa.cpp and gemma3-iswa.cpp of the pinned release.
#include "../arch.h"

namespace llj {

std::vector<ArchSpec> gemma_family() {
    ArchSpec gemma3;             // sqrt(d) input scale, Q/K norm, post-norms, GELU gate, SWA layers
    gemma3.name = "gemma3";
    gemma3.family = "gemma";
    gemma3.input.scale_sqrt_d = true;
    gemma3.norms.post = true;
    gemma3.norms.qk = QkNorm::PerHead;
    gemma3.attn.kq_scale = KqScale::QTimesFileScale;
    gemma3.attn.sliding_window = true;
    gemma3.ffn.act = Act::GeluTanh;
    gemma3.head.final_softcap = FinalSoftcap::WhenSet;

    ArchSpec gemma2 = gemma3;    // no Q/K norm; attention and final logit softcaps; always tied
    gemma2.name = "gemma2";
    gemma2.norms.qk = QkNorm::None;
    gemma2.attn.softcap = true;
    gemma2.head.final_softcap = FinalSoftcap::Always;
    gemma2.head.tied_always = true;
    return {gemma2, gemma3};
}

}  // namespace llj
