#include "napi/common.h"

#include <cmath>

namespace llj {

AbortFlag::AbortFlag(const Napi::Value & v) {
    if (v.IsUndefined() || v.IsNull()) return;
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
        throw Napi::TypeError::New(v.Env(), "abort flag must be an Int32Array");
    }
    auto arr = v.As<Napi::Int32Array>();
    ptr_ = arr.Data();
    ref_ = Napi::Persistent(arr);
}

// The one worker behind queue(): an AsyncProgressWorker whose Execute and Result are lambdas.
class QueuedWorker : public Napi::AsyncProgressWorker<float> {
  public:
    QueuedWorker(Napi::Env env, std::function<void(const Job &)> work, std::function<Napi::Value(Napi::Env)> result,
                 Napi::Value on_progress, Napi::Value abort)
        : Napi::AsyncProgressWorker<float>(env), deferred_(Napi::Promise::Deferred::New(env)), abort_(abort),
          work_(std::move(work)), result_(std::move(result)) {
        if (on_progress.IsFunction()) on_progress_ = Napi::Persistent(on_progress.As<Napi::Function>());
    }
    Napi::Promise Promise() { return deferred_.Promise(); }

  private:
    void Execute(const ExecutionProgress & progress) override {
        Job job;
        job.report = [&](float p) {
            progress.Send(&p, 1);
            return !abort_.aborted();
        };
        job.aborted = [this] { return abort_.aborted(); };
        work_(job);
    }
    void OnProgress(const float * data, size_t count) override {
        if (!on_progress_.IsEmpty() && count > 0) on_progress_.Call({Napi::Number::New(Env(), data[count - 1])});
    }
    void OnOK() override {
        Napi::Env env = Env();
        try {
            deferred_.Resolve(result_(env));
        } catch (const Napi::Error & e) {
            deferred_.Reject(e.Value());
        } catch (const std::exception & e) {
            deferred_.Reject(Napi::Error::New(env, e.what()).Value());
        }
    }
    void OnError(const Napi::Error & e) override { deferred_.Reject(e.Value()); }

    Napi::Promise::Deferred deferred_;
    AbortFlag abort_;
    Napi::FunctionReference on_progress_;
    std::function<void(const Job &)> work_;
    std::function<Napi::Value(Napi::Env)> result_;
};

Napi::Promise queue(Napi::Env env, std::function<void(const Job &)> work, std::function<Napi::Value(Napi::Env)> result,
                    Napi::Value on_progress, Napi::Value abort) {
    auto * w = new QueuedWorker(env, std::move(work), std::move(result), on_progress, abort);
    w->Queue();
    return w->Promise();
}

Napi::Object options_arg(const Napi::CallbackInfo & info, const char * method) {
    if (info.Length() != 1 || !info[0].IsObject()) throw Napi::TypeError::New(info.Env(), std::string(method) + " takes one options object");
    return info[0].As<Napi::Object>();
}

std::string get_string(const Napi::Object & o, const char * key, const std::string & def) {
    auto v = o.Get(key);
    return v.IsString() ? v.As<Napi::String>().Utf8Value() : def;
}
double get_number(const Napi::Object & o, const char * key, double def) {
    auto v = o.Get(key);
    return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : def;
}
bool get_bool(const Napi::Object & o, const char * key, bool def) {
    auto v = o.Get(key);
    return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : def;
}

// A Float32Array argument copied out, refused (TypeError / RangeError naming it) unless every value is finite.
std::vector<float> float_array_arg(Napi::Env env, const Napi::Value & v, const char * what) {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
        throw Napi::TypeError::New(env, std::string(what) + " must be a Float32Array");
    }
    auto a = v.As<Napi::Float32Array>();
    std::vector<float> out(a.Data(), a.Data() + a.ElementLength());
    for (size_t i = 0; i < out.size(); ++i) {
        if (!std::isfinite(out[i])) throw Napi::RangeError::New(env, std::string(what) + " holds a non-finite value at index " + std::to_string(i));
    }
    return out;
}

}  // namespace llj
