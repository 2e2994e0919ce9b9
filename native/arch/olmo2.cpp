// OLMo 2: no pre-norms, full-width Q/K norm, post-norms, sliding-window layers.
// Mirrors llama.cpp's src/models/olmo2.cpp of the pinned release.
#include "../arch.h"

namespace llj {

// Sliding-window layers use the global rope base with no scaling.
static RopeParams olmo2_swa_rope(const RopeParams & global, const llama_model *) {
    RopeParams r = global;
    r.freq_scale = 1.0f;
    r.ext_factor = 0.0f;
    r.attn_factor = 1.0f;
    return r;
}

std::vector<ArchSpec> olmo2_family() {
    ArchSpec olmo2;
    olmo2.name = "olmo2";
    olmo2.family = "olmo2";
    olmo2.norms.pre = false;           // q/k/v and the FFN read the residual stream
    olmo2.norms.post = true;
    olmo2.norms.qk = QkNorm::FullWidth;
    olmo2.attn.fused_qkv = false;      // its graph has no fused QKV
    olmo2.attn.qkv_bias_scale = false; // loaded, ignored by its graph
    olmo2.attn.sliding_window = true;
    olmo2.hooks.swa_rope = olmo2_swa_rope;
    return {olmo2};
}

}  // namespace llj
