#include "engine/quantize.h"
#include "engine/log.h"

#include <algorithm>
#include <thread>

namespace llj {

const std::map<std::string, llama_ftype> & quantization_types() {
    static const std::map<std::string, llama_ftype> k_ftypes = {
        {"F32", LLAMA_FTYPE_ALL_F32},          {"F16", LLAMA_FTYPE_MOSTLY_F16},       {"BF16", LLAMA_FTYPE_MOSTLY_BF16},
        {"Q8_0", LLAMA_FTYPE_MOSTLY_Q8_0},
        {"Q4_0", LLAMA_FTYPE_MOSTLY_Q4_0},     {"Q4_K_M", LLAMA_FTYPE_MOSTLY_Q4_K_M},
        {"Q4_K_S", LLAMA_FTYPE_MOSTLY_Q4_K_S}, {"Q6_K", LLAMA_FTYPE_MOSTLY_Q6_K},
        {"Q5_K_M", LLAMA_FTYPE_MOSTLY_Q5_K_M}, {"Q5_0", LLAMA_FTYPE_MOSTLY_Q5_0},
    };
    return k_ftypes;
}

void quantize_model(const std::string & in, const std::string & out, llama_ftype ftype) {
    LogCapture log;
    llama_model_quantize_params qp = llama_model_quantize_default_params();
    qp.ftype = ftype;
    // F32 from a quantized file dequantizes it: the exact network of the quantized weights.
    qp.allow_requantize = ftype == LLAMA_FTYPE_ALL_F32;
    qp.nthread = (int32_t) std::max(1u, std::thread::hardware_concurrency());
    if (llama_model_quantize(in.c_str(), out.c_str(), &qp) != 0) {
        throw error_with_log("quantizing '" + in + "' failed", log);
    }
}

}  // namespace llj
