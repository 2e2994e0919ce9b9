// GGUF reading and writing with no N-API in sight: the control-vector reader and the GGUF
// writer behind the addon's readControlVector / writeGguf, which the fuzz harness
// (native/fuzz/gguf_fuzz.cpp) drives directly. Errors are exceptions; GgufError marks the
// ones where ggml's reader or writer refused, so that callers can attach ggml's logged reason.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace llj {

struct GgufError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// One metadata entry to set: type is str | u32 | i32 | f32 | bool | str[] | f32[] | i32[] | u32[] | remove.
struct KvEntry {
    std::string key, type;
    std::vector<std::string> strs;
    std::vector<double> nums;
};

// One F32 tensor to write; init is normal(a, b) | uniform(a, b) | constant(a) | data.
struct TensorSpec {
    std::string name;
    std::vector<int64_t> shape;
    std::string init;
    double a = 0, b = 0;
    uint64_t seed = 0;
    std::vector<float> data;
};

struct CvecTensor {
    std::string name, type;
    std::vector<int64_t> dims;
    std::vector<float> data;  // F32 tensors only
};

// What a control-vector file holds, unchecked: src/cvec.ts checks it with clear messages.
struct CvecFile {
    std::string arch, hint;
    bool has_arch = false, has_hint = false, has_layer_count = false;
    int64_t layer_count = 0;
    std::vector<CvecTensor> tensors;
};

// Reads any GGUF with ggml's reader (the one llama.cpp's control-vector loader uses).
CvecFile read_cvec_file(const std::string & path);

// Writes a GGUF: metadata copied from copy_kv_from (when not empty), then kv applied in
// order, then the F32 tensors, generated and written one at a time.
void write_gguf_file(const std::string & path, const std::string & copy_kv_from,
                     const std::vector<KvEntry> & kv, const std::vector<TensorSpec> & tensors);

}  // namespace llj
