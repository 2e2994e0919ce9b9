// The Qwen family: qwen2 (2 / 2.5), qwen3 and qwen3moe.
// Mirrors llama.cpp's src/models/qwen2.cpp, qwen3.cpp and qwen3moe.cpp of the pinned release.
#include "../arch.h"

namespace llj {

std::vector<ArchSpec> qwen_family() {
    ArchSpec qwen2;              // QKV biases; FFN biases and scales loaded but not applied
    qwen2.name = "qwen2";
    qwen2.family = "qwen";
    qwen2.head.output_bias = true;

    ArchSpec qwen3;              // per-head Q/K RMSNorm; FFN scales applied
    qwen3.name = "qwen3";
    qwen3.family = "qwen";
    qwen3.norms.qk = QkNorm::PerHead;
    qwen3.ffn.scale = true;

    ArchSpec qwen3moe = qwen3;   // qwen3 attention, routed experts in every layer
    qwen3moe.name = "qwen3moe";
    qwen3moe.ffn.moe = true;
    return {qwen2, qwen3, qwen3moe};
}

}  // namespace llj
