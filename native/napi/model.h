// The NativeModel JS class: a llama.cpp model loaded with llama.cpp's loader (mmap, device
// placement), plus the operations that read it. Heavy operations run in workers (queue());
// they hold a reference to the JS object and count as "in use", so that dispose() frees the
// model only once the last of them is done.
#pragma once
#include <napi.h>

#include <atomic>
#include <vector>

#include "engine/hold.h"
#include "llama.h"

namespace llj {

class NativeModel : public Napi::ObjectWrap<NativeModel> {
  public:
    static Napi::Function Define(Napi::Env env);
    explicit NativeModel(const Napi::CallbackInfo & info);
    ~NativeModel() override;

    // Wraps an already loaded model in a new JS object (takes ownership).
    static Napi::Object Wrap(Napi::Env env, llama_model * model);

    llama_model * get(Napi::Env env) const;  // throws if disposed
    // Users (workers, linearizations) hold the model; dispose() while one holds it defers
    // the free to the last release (all on the JS thread), so no worker runs on freed weights.
    void acquire() { in_use_++; }
    void release() {
        if (--in_use_ == 0 && disposed_) free_model();
    }

  private:
    Napi::Value Info(const Napi::CallbackInfo & info);
    Napi::Value Tensors(const Napi::CallbackInfo & info);
    Napi::Value Tokenize(const Napi::CallbackInfo & info);
    Napi::Value Detokenize(const Napi::CallbackInfo & info);
    const llama_vocab * vocab_of(Napi::Env env);
    Napi::Value TokenPieces(const Napi::CallbackInfo & info);
    Napi::Value ReferenceForward(const Napi::CallbackInfo & info);
    Napi::Value GraphSupport(const Napi::CallbackInfo & info);
    Napi::Value Dispose(const Napi::CallbackInfo & info);

    void free_model();

    llama_model * model_ = nullptr;
    std::atomic<int> in_use_{0};
    bool disposed_ = false;
};

// Token ids from an Int32Array, each checked against the vocabulary (never let a bad id reach
// llama.cpp's asserts); throws a JS RangeError naming the first bad one.
std::vector<llama_token> checked_tokens(Napi::Env env, const Napi::Value & v, const llama_vocab * vocab);

// loadModel({ path, gpuLayers, useMmap, cpuOnly, onProgress?, abortFlag? }) -> Promise<NativeModel>
Napi::Value LoadModel(const Napi::CallbackInfo & info);

// Holds the model in use for the lifetime of a worker.
class ModelUse : public ModelHold {
  public:
    ModelUse(NativeModel * m, const Napi::Object & obj) : m_(m), ref_(Napi::Persistent(obj)) { m_->acquire(); }
    ~ModelUse() override { m_->release(); }
    ModelUse(const ModelUse &) = delete;
    ModelUse & operator=(const ModelUse &) = delete;
  private:
    NativeModel * m_;
    Napi::ObjectReference ref_;
};

}  // namespace llj
