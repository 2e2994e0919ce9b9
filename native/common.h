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

// An AsyncWorker that settles a promise: subclasses do Execute() off the JS thread and build
// the result in Result() on it. Exceptions thrown in Execute() reject the promise.
class PromiseWorker : public Napi::AsyncWorker {
  public:
    explicit PromiseWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
    Napi::Promise Promise() { return deferred_.Promise(); }
  protected:
    virtual Napi::Value Result(Napi::Env env) = 0;
    void OnOK() override;
    void OnError(const Napi::Error & e) override { deferred_.Reject(e.Value()); }
  private:
    Napi::Promise::Deferred deferred_;
};

// A PromiseWorker that also reports progress in [0, 1] to an optional JS callback and reads
// an abort flag shared with JS (long operations: loading, linearizing, linear passes).
class ProgressPromiseWorker : public Napi::AsyncProgressWorker<float> {
  public:
    ProgressPromiseWorker(Napi::Env env, Napi::Value on_progress, Napi::Value abort);
    Napi::Promise Promise() { return deferred_.Promise(); }
  protected:
    // Off the JS thread; report(p) sends p to the callback and returns false once aborted.
    virtual void Run(const std::function<bool(float)> & report) = 0;
    virtual Napi::Value Result(Napi::Env env) = 0;
    // On the JS thread after a failure: frees what Run built.
    virtual void Discard() {}
    bool aborted() const { return abort_.aborted(); }
  private:
    void Execute(const ExecutionProgress & progress) final;
    void OnProgress(const float * data, size_t count) final;
    void OnOK() final;
    void OnError(const Napi::Error & e) final;
    Napi::Promise::Deferred deferred_;
    AbortFlag abort_;
    Napi::FunctionReference on_progress_;
};

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
