#pragma once
#include <napi.h>

#include "ggml-backend.h"

namespace llj {
// initBackends({ cpuDir, gpuLibraries: string[] }) -> { loaded: string[], failed: string[] }
Napi::Value InitBackends(const Napi::CallbackInfo & info);
// backendDevices() -> [{ name, description, type, memoryFree, memoryTotal, backend }]
Napi::Value BackendDevices(const Napi::CallbackInfo & info);
bool backends_ready();
// ggml's BLAS backend when it was built and loaded, else null (used by GraphRunner).
ggml_backend_reg_t blas_backend_reg();
}
