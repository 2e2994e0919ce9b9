// Shared helpers of the bindings: queue() (work on a worker thread, settling a promise),
// abort flags shared with JS, array conversions.
#pragma once

#include <napi.h>

#include "engine/log.h"

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

// The one options object every method takes (src/native.ts types it; src/validate.ts and the
// classes check its fields; here only asserted).
Napi::Object options_arg(const Napi::CallbackInfo & info, const char * method);
std::string get_string(const Napi::Object & o, const char * key, const std::string & def = "");
double get_number(const Napi::Object & o, const char * key, double def);
bool get_bool(const Napi::Object & o, const char * key, bool def);
// A Float32Array argument copied out; refused unless every value is finite.
std::vector<float> float_array_arg(Napi::Env env, const Napi::Value & v, const char * what);

}  // namespace llj
