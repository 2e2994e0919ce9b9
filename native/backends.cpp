// Loading ggml backends. The prebuilt libggml loads its CPU variant and GPU backends as
// shared libraries; which GPU libraries to try is decided in TypeScript (src/backends.ts),
// like node-llama-cpp's gpu option. Loading happens once per process.
#include "backends.h"
#include "common.h"

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

Napi::Value InitBackends(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw Napi::TypeError::New(env, "initBackends expects an options object");
    auto opts = info[0].As<Napi::Object>();
    std::string cpu_dir = get_string(opts, "cpuDir");
    std::string blas_library = get_string(opts, "blasLibrary");
    std::vector<std::string> gpu_libs;
    if (opts.Get("gpuLibraries").IsArray()) {
        auto arr = opts.Get("gpuLibraries").As<Napi::Array>();
        for (uint32_t i = 0; i < arr.Length(); ++i) gpu_libs.push_back(arr.Get(i).As<Napi::String>().Utf8Value());
    }

    std::lock_guard<std::mutex> lock(g_mutex);
    auto loaded = Napi::Array::New(env);
    auto failed = Napi::Array::New(env);
    if (g_ready) {
        // Another JS context of this process (a worker, a test file) initialized them: the
        // registered devices are the state; the caller reads them with backendDevices().
        auto result = Napi::Object::New(env);
        result.Set("loaded", loaded);
        result.Set("failed", failed);
        result.Set("log", "");
        result.Set("alreadyInitialized", true);
        return result;
    }

    LogCapture log;
    if (!cpu_dir.empty()) ggml_backend_load_all_from_path(cpu_dir.c_str());
    // GPU libraries in order of preference: the first one that brings a device wins, so
    // that one GPU is not driven by two backends (CUDA and Vulkan) at once.
    for (const auto & lib : gpu_libs) {
        ggml_backend_reg_t reg = ggml_backend_load(lib.c_str());
        if (reg && ggml_backend_reg_dev_count(reg) > 0) {
            loaded.Set(loaded.Length(), Napi::String::New(env, ggml_backend_reg_name(reg)));
            break;
        }
        failed.Set(failed.Length(), Napi::String::New(env, lib));
    }
    if (ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU) == nullptr) {
        throw Napi::Error::New(env, error_with_log("no CPU backend could be loaded from '" + cpu_dir + "'", log).what());
    }
    llama_backend_init();
    std::string blas_error = load_blas(blas_library);
    g_ready = true;

    auto result = Napi::Object::New(env);
    result.Set("loaded", loaded);
    result.Set("failed", failed);
    result.Set("log", log.text());
    result.Set("alreadyInitialized", false);
    result.Set("blasError", blas_error);
    return result;
}

static const char * dev_type_name(enum ggml_backend_dev_type t) {
    switch (t) {
        case GGML_BACKEND_DEVICE_TYPE_CPU: return "cpu";
        case GGML_BACKEND_DEVICE_TYPE_GPU: return "gpu";
        case GGML_BACKEND_DEVICE_TYPE_IGPU: return "igpu";
        case GGML_BACKEND_DEVICE_TYPE_ACCEL: return "accel";
        default: return "other";
    }
}

static Napi::Object describe_device(Napi::Env env, ggml_backend_dev_t dev) {
    size_t free = 0, total = 0;
    ggml_backend_dev_memory(dev, &free, &total);
    auto d = Napi::Object::New(env);
    d.Set("name", ggml_backend_dev_name(dev));
    d.Set("description", ggml_backend_dev_description(dev));
    d.Set("type", dev_type_name(ggml_backend_dev_type(dev)));
    d.Set("backend", ggml_backend_reg_name(ggml_backend_dev_backend_reg(dev)));
    d.Set("memoryFree", Napi::Number::New(env, (double) free));
    d.Set("memoryTotal", Napi::Number::New(env, (double) total));
    return d;
}

Napi::Value BackendDevices(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    auto out = Napi::Array::New(env);
    // The BLAS device is listed for information; only our graphs use it (see load_blas).
    if (ggml_backend_reg_t blas = blas_backend_reg()) out.Set(out.Length(), describe_device(env, ggml_backend_reg_dev_get(blas, 0)));
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) out.Set(out.Length(), describe_device(env, ggml_backend_dev_get(i)));
    return out;
}

}  // namespace llj
