#include "common.h"

#include "ggml.h"
#include "llama.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace llj {

static thread_local LogCapture * t_capture = nullptr;
static thread_local ggml_log_level t_last_level = GGML_LOG_LEVEL_NONE;
static bool g_verbose = false;

LogCapture::LogCapture() : prev_(t_capture) { t_capture = this; }
LogCapture::~LogCapture() { t_capture = prev_; }

std::string LogCapture::text() const {
    // llama.cpp logs warnings about optional keys before the error that matters: lead with it
    std::string out;
    int warnings = 0;
    for (int pass = 0; pass < 2; ++pass) {
        for (size_t i = 0; i < lines_.size(); ++i) {
            if (is_error_[i] != (pass == 0)) continue;
            if (pass == 1 && ++warnings > 3) {
                out += "; …";
                return out;
            }
            if (!out.empty()) out += "; ";
            out += lines_[i];
        }
    }
    return out;
}

static void log_callback(ggml_log_level level, const char * text, void *) {
    if (level != GGML_LOG_LEVEL_CONT) t_last_level = level;
    if (g_verbose) fputs(text, stderr);
    if (t_capture == nullptr) return;
    if (t_last_level != GGML_LOG_LEVEL_ERROR && t_last_level != GGML_LOG_LEVEL_WARN) return;
    std::string line(text);
    while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
    if (line.empty()) return;
    t_capture->append(line, level == GGML_LOG_LEVEL_CONT, t_last_level == GGML_LOG_LEVEL_ERROR);
}

void LogCapture::append(const std::string & line, bool continuation, bool error) {
    if (continuation && !lines_.empty()) {
        lines_.back() += line;
    } else if (lines_.size() < 32) {
        lines_.push_back(line);
        is_error_.push_back(error);
    }
}

void install_log_callback() {
    const char * v = std::getenv("LLJ_GGUF_VERBOSE");
    g_verbose = v != nullptr && *v != '\0' && std::string(v) != "0";
    llama_log_set(log_callback, nullptr);
    ggml_log_set(log_callback, nullptr);
}

std::runtime_error error_with_log(const std::string & what, const LogCapture & log) {
    std::string t = log.text();
    return std::runtime_error(t.empty() ? what : what + " (llama.cpp: " + t + ")");
}

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
