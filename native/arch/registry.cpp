// The registry of model families: the architectures our graphs implement (one file per
// family in this folder), and why the other architectures llama.cpp knows are refused.
#include "../arch.h"

namespace llj {

const std::vector<ArchSpec> & supported_architectures() {
    static const std::vector<ArchSpec> archs = [] {
        std::vector<ArchSpec> v;
        for (auto family : {llama_family, qwen_family, gemma_family, olmo2_family, phi3_family, gpt2_family}) {
            for (auto & a : family()) v.push_back(std::move(a));
        }
        return v;
    }();
    return archs;
}

const ArchSpec * find_arch(const std::string & name) {
    for (const auto & a : supported_architectures()) if (a.name == name) return &a;
    return nullptr;
}

const char * const kNoGraphReason = "no linearization graph is written for it yet";

// "gpt2's, starcoder's, ... and mpt's": the members of one family, for a refusal reason.
static std::string family_members(const std::string & family) {
    std::vector<std::string> names;
    for (const auto & a : supported_architectures()) if (a.family == family) names.push_back(a.name + "'s");
    std::string out;
    for (size_t i = 0; i < names.size(); ++i) out += (i == 0 ? "" : i + 1 == names.size() ? " and " : ", ") + names[i];
    return out;
}

const std::vector<Refusal> & refused_architectures() {
    static const std::vector<Refusal> refusals = {
        {R"(mamba2?|rwkv\d*|arwkv\d*|rwkv\d+qwen|jamba|falcon-h1|granite-?hybrid|lfm2.*|nemotron-h.*|plamo2|qwen3next|qwen35.*|kimi-linear|plamo3)",
         "its layers carry a recurrent state (state-space or RWKV mixing), whose detached form is not implemented"},
        {R"(bert|nomic-bert.*|jina-bert.*|modern-bert|neo-bert|eurobert|t5encoder|gemma-embedding|llama-embed)",
         "it is an encoder (bidirectional attention, pooled outputs), not a decoder-only language model"},
        {"t5", "it is an encoder-decoder model"},
        {"gemma3n", "it adds per-layer inputs (AltUp and per-layer embeddings), not implemented"},
        {"gemma4.*", "its per-layer inputs and shared KV layers are not implemented"},
        {"deepseek2|deepseek3.*|deepseek4|kimi-k3|glm-dsa|minimax-m2", "multi-head latent attention / its routing scheme is not implemented"},
        {"llama4", "chunked attention and shared-expert MoE are not implemented"},
        {"gptj|bloom|refact|codeshell|jais.*",
         "its graph in the LayerNorm and non-gated MLP family is not written yet (" + family_members("gpt2") + " are; the method applies)"},
    };
    return refusals;
}

}  // namespace llj
