// The llama family: llama (and Mixtral-style MoE files of it) and mistral3.
// Mirrors llama.cpp's src/models/llama.cpp (mistral3: src/models/mistral3.cpp) of the pinned release.
#include "../arch.h"

namespace llj {

std::vector<ArchSpec> llama_family() {
    ArchSpec llama;
    llama.name = "llama";
    llama.family = "llama";
    llama.attn.kq_scale = KqScale::FromFile;
    llama.attn.rope_factors = true;
    llama.attn.longrope = true;  // rope_factors_long/short when the file says longrope
    llama.ffn.moe = true;        // Mixtral-style files
    llama.ffn.bias = true;
    llama.ffn.scale = true;

    ArchSpec mistral3 = llama;   // Ministral 3: llama plus an optional per-position Q temperature
    mistral3.name = "mistral3";
    mistral3.attn.temperature = true;
    return {llama, mistral3};
}

}  // namespace llj
