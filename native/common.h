// Shared helpers of the native addon: promise-returning workers, captured llama.cpp log
// lines (so that failures carry llama.cpp's own reason), abort flags shared with JS.
#pragma once

#include <napi.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace llj {

// Per-JS-context state of the addon (constructors of the wrapped classes).
struct AddonData {
    Napi::FunctionReference model_ctor;
    Napi::FunctionReference linearization_ctor;
};

// Collects llama.cpp/ggml warnings and errors logged on the current thread while alive,
// so that an operation that fails can say why in its exception.
class LogCapture {
  public:
    LogCapture();
    ~LogCapture();
    LogCapture(const LogCapture &) = delete;
    LogCapture & operator=(const LogCapture &) = delete;
    // The captured lines, joined: errors first (the reason), then at most a few warnings;
    // empty when there were none.
    std::string text() const;
    void append(const std::string & line, bool continuation, bool error = false);
  private:
    std::vector<std::string> lines_;
    std::vector<bool> is_error_;
    LogCapture * prev_;
};

// Installs the log callback (quiet unless LLJ_GGUF_VERBOSE is set). Called once at init.
void install_log_callback();

// Error that carries llama.cpp's logged reason when there is one.
std::runtime_error error_with_log(const std::string & what, const LogCapture & log);

// An abort flag shared with JS: an Int32Array over a SharedArrayBuffer that JS sets to 1.
class AbortFlag {
  public:
    AbortFlag() = default;
    explicit AbortFlag(const Napi::Value & v);
    bool aborted() const { return ptr_ != nullptr && __atomic_load_n(ptr_, __ATOMIC_RELAXED) != 0; }
  private:
    int32_t * ptr_ = nullptr;
    Napi::Reference<Napi::Int32Array> ref_;  // keeps the buffer alive while a worker reads it
};

// What queued work sees off the JS thread: report(p) sends progress p in [0, 1] to the JS
// callback (when one was given) and returns false once aborted; aborted() reads the flag.
struct Job {
    std::function<bool(float)> report;
    std::function<bool()> aborted;
};

// Runs work(job) on a worker thread and settles the returned promise on the JS thread: with
// result(env) when work returned, rejected with the message of what work or result threw.
// on_progress: an optional JS function; abort: an optional Int32Array flag (AbortFlag).
// What the lambdas capture is released on the JS thread once the promise is settled.
Napi::Promise queue(Napi::Env env, std::function<void(const Job &)> work, std::function<Napi::Value(Napi::Env)> result,
                    Napi::Value on_progress = Napi::Value(), Napi::Value abort = Napi::Value());

inline Napi::Float32Array to_float32_array(Napi::Env env, const float * data, size_t n) {
    auto arr = Napi::Float32Array::New(env, n);
    if (n) std::copy(data, data + n, arr.Data());
    return arr;
}

std::string get_string(const Napi::Object & o, const char * key, const std::string & def = "");
double get_number(const Napi::Object & o, const char * key, double def);
bool get_bool(const Napi::Object & o, const char * key, bool def);
// A Float32Array argument copied out; refused unless every value is finite.
std::vector<float> float_array_arg(Napi::Env env, const Napi::Value & v, const char * what);

}  // namespace llj
