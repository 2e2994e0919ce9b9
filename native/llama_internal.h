// Declarations of the C++-linkage parts of the pinned llama.cpp that the public C API lacks.
// The prototype must match src/llama-model.h of the bundle exactly (mangled symbol).
#pragma once
#include "llama.h"
#include "llama-ext.h"  // llama_set_embeddings_layer_inp / llama_get_embeddings_layer_inp

#include <string>
#include <utility>
#include <vector>

struct ggml_tensor;
const std::vector<std::pair<std::string, ggml_tensor *>> & llama_internal_get_tensor_map(const llama_model * model);
