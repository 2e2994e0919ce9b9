#pragma once
#include <napi.h>

namespace llj {
// initBackends({ cpuDir, gpuLibraries: string[] }) -> { loaded: string[], failed: string[] }
Napi::Value InitBackends(const Napi::CallbackInfo & info);
// backendDevices() -> [{ name, description, type, memoryFree, memoryTotal, backend }]
Napi::Value BackendDevices(const Napi::CallbackInfo & info);
bool backends_ready();
}
