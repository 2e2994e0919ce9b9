// Loading ggml backends. The prebuilt libggml loads its CPU variant and GPU backends as
// shared libraries; which GPU libraries to try is decided in TypeScript (src/backends.ts),
// like node-llama-cpp's gpu option. Loading happens once per process.
#include "engine/backends.h"
#include "engine/log.h"

#include "ggml-backend.h"
#include "llama.h"

#include <dlfcn.h>
#include <mutex>

namespace llj {

static std::mutex g_mutex;
static bool g_ready = false;
static ggml_backend_reg_t g_blas_reg = nullptr;

ggml_backend_reg_t blas_backend_reg() {
    std::lock_guard<std::mutex> lock(g_mutex);
    return g_blas_reg;
}

// ggml's BLAS backend built beside the addon (CMakeLists.txt). Loaded with dlopen and kept
// out of ggml's registry, so that llama.cpp's own forward does not start using it.
static std::string load_blas(const std::string & path) {
    if (path.empty()) return "";
    void * handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) return std::string("cannot load ") + path + ": " + dlerror();
    auto init = (ggml_backend_reg_t (*)(void)) dlsym(handle, "ggml_backend_init");
    if (!init) return path + " is not a ggml backend";
    ggml_backend_reg_t reg = init();
    if (!reg || ggml_backend_reg_dev_count(reg) == 0) return path + " provides no device";
    g_blas_reg = reg;
    return "";
}

bool backends_ready() {
    std::lock_guard<std::mutex> lock(g_mutex);
    return g_ready;
}

BackendsLoaded init_backends(const std::string & cpu_dir, const std::vector<std::string> & gpu_libs, const std::string & blas_library) {
    std::lock_guard<std::mutex> lock(g_mutex);
    BackendsLoaded r;
    if (g_ready) {
        // Another JS context of this process (a worker, a test file) initialized them: the
        // registered devices are the state; the caller reads them with backendDevices().
        r.already = true;
        return r;
    }

    LogCapture log;
    if (!cpu_dir.empty()) ggml_backend_load_all_from_path(cpu_dir.c_str());
    // GPU libraries in order of preference: the first one that brings a device wins, so
    // that one GPU is not driven by two backends (CUDA and Vulkan) at once.
    for (const auto & lib : gpu_libs) {
        ggml_backend_reg_t reg = ggml_backend_load(lib.c_str());
        if (reg && ggml_backend_reg_dev_count(reg) > 0) {
            r.loaded.push_back(ggml_backend_reg_name(reg));
            break;
        }
        r.failed.push_back(lib);
    }
    if (ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU) == nullptr) {
        throw error_with_log("no CPU backend could be loaded from '" + cpu_dir + "'", log);
    }
    llama_backend_init();
    r.blas_error = load_blas(blas_library);
    g_ready = true;
    r.log = log.text();
    return r;
}

}  // namespace llj
