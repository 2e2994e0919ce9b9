// Quantizing a GGUF model with llama.cpp (the synthetic and benchmark models).
#pragma once

#include "llama.h"

#include <map>
#include <string>

namespace llj {

// The quantization types offered, by name ("Q8_0", "Q4_K_M", ...).
const std::map<std::string, llama_ftype> & quantization_types();
// Writes `out`, the model `in` quantized to `ftype`; throws with llama.cpp's reason.
void quantize_model(const std::string & in, const std::string & out, llama_ftype ftype);

}  // namespace llj
