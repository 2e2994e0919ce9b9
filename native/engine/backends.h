// Loading ggml backends, once per process: the CPU variant and GPU backends the prebuilt
// libggml loads as shared libraries, and ggml's BLAS backend (ours only).
#pragma once

#include "ggml-backend.h"

#include <string>
#include <vector>

namespace llj {

struct BackendsLoaded {
    bool already = false;             // another JS context of this process initialized them
    std::vector<std::string> loaded;  // the GPU backends that brought a device
    std::vector<std::string> failed;  // the GPU libraries tried in vain
    std::string log;                  // llama.cpp's warnings meanwhile
    std::string blas_error;           // why the BLAS backend did not load ("" when it did or was not asked)
};
// Throws when no CPU backend loads from cpu_dir.
BackendsLoaded init_backends(const std::string & cpu_dir, const std::vector<std::string> & gpu_libs, const std::string & blas_library);
bool backends_ready();
// ggml's BLAS backend when it was built and loaded, else null (used by GraphRunner).
ggml_backend_reg_t blas_backend_reg();

}  // namespace llj
