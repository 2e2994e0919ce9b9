// libFuzzer target over the addon's GGUF reading and writing paths (native/gguf_io.cpp) and
// ggml's GGUF reader under them, built with AddressSanitizer and UBSan by scripts/fuzz.mjs
// (not part of the addon). Each input is a candidate GGUF file. What must hold:
// - reading it as a control vector never crashes; what comes back is self-consistent;
// - a file ggml's reader accepts is either refused by our writer by name (GgufError) or
//   rewritten with its metadata copied (the copyKvFrom path) plus F32 tensors of its shapes,
//   and reading that file back gives the same metadata, key by key and value by value, and
//   the same tensors.
// A violation aborts with the reason on stderr, which libFuzzer records as a finding.
// Built with -DLLJ_FUZZ_REPLAY it is instead a plain program over files named on the command
// line, printing one JSON line per file with ggml's verdict (scripts/fuzz.mjs compares it
// with the TypeScript header checks).
#include "../gguf_io.h"

#include "ggml.h"
#include "gguf.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <unistd.h>

using llj::CvecFile;
using llj::TensorSpec;

static std::string g_in, g_out;

static void quiet(ggml_log_level, const char *, void *) {}

[[noreturn]] static void fail(const std::string & why) {
    std::fprintf(stderr, "gguf_fuzz: %s\n", why.c_str());
    std::abort();
}

static void write_input(const uint8_t * data, size_t size) {
    FILE * f = std::fopen(g_in.c_str(), "wb");
    if (!f || (size && std::fwrite(data, 1, size, f) != size)) fail("cannot write the input file");
    std::fclose(f);
}

using Gguf = std::unique_ptr<gguf_context, void (*)(gguf_context *)>;

static Gguf open_meta(const std::string & path) {
    gguf_init_params p = {/*no_alloc =*/ true, /*ctx =*/ nullptr};
    return Gguf(gguf_init_from_file(path.c_str(), p), gguf_free);
}

static size_t fixed_size(gguf_type t) {
    switch (t) {
        case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_BOOL: return 1;
        case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16: return 2;
        case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_FLOAT32: return 4;
        case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: case GGUF_TYPE_FLOAT64: return 8;
        default: return 0;
    }
}

// The same key, type and value in both files; strings compared by their bytes.
static void same_value(const gguf_context * a, int64_t i, const gguf_context * b, int64_t j, const std::string & key) {
    const gguf_type t = gguf_get_kv_type(a, i);
    if (gguf_get_kv_type(b, j) != t) fail("key " + key + ": type changed in the rewrite");
    if (t == GGUF_TYPE_STRING) {
        if (std::string(gguf_get_val_str(a, i)) != gguf_get_val_str(b, j)) fail("key " + key + ": string value changed");
        return;
    }
    if (t != GGUF_TYPE_ARRAY) {
        if (std::memcmp(gguf_get_val_data(a, i), gguf_get_val_data(b, j), fixed_size(t)) != 0) fail("key " + key + ": value changed");
        return;
    }
    const gguf_type at = gguf_get_arr_type(a, i);
    const size_t n = gguf_get_arr_n(a, i);
    if (gguf_get_arr_type(b, j) != at || gguf_get_arr_n(b, j) != n) fail("key " + key + ": array type or length changed");
    if (at == GGUF_TYPE_STRING) {
        for (size_t k = 0; k < n; ++k) {
            if (std::string(gguf_get_arr_str(a, i, k)) != gguf_get_arr_str(b, j, k)) fail("key " + key + ": array string changed");
        }
    } else if (n && std::memcmp(gguf_get_arr_data(a, i), gguf_get_arr_data(b, j), n * fixed_size(at)) != 0) {
        fail("key " + key + ": array data changed");
    }
}

// ggml's verdict on a file: accepted, and its key and tensor counts.
struct Verdict { bool accepted = false; int64_t n_kv = 0, n_tensors = 0; };

static Verdict check(const std::string & path) {
    // 1. the control-vector reader: an exception is a refusal, anything else must add up
    try {
        CvecFile f = llj::read_cvec_file(path);
        for (const auto & t : f.tensors) {
            int64_t n = 1;
            bool overflow = false;
            for (int64_t d : t.dims) overflow |= __builtin_mul_overflow(n, d, &n);
            if (t.type == "f32" && (overflow || (int64_t) t.data.size() != n)) {
                std::string shape;
                for (int64_t d : t.dims) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
                fail("tensor " + t.name + ": " + std::to_string(t.data.size()) + " values for shape [" + shape + "]");
            }
        }
    } catch (const std::exception &) {
    }
    // 2. the writer's copy path, then a read-back
    Gguf src = open_meta(path);
    Verdict v;
    if (!src) return v;
    v = {true, gguf_get_n_kv(src.get()), gguf_get_n_tensors(src.get())};
    std::vector<TensorSpec> tensors;
    int64_t budget = 1 << 16;  // elements written in all: the rewrite stays small
    for (int64_t i = 0; i < v.n_tensors; ++i) {
        const int64_t * ne = gguf_get_tensor_ne(src.get(), i);
        TensorSpec t;
        t.name = gguf_get_tensor_name(src.get(), i);
        int64_t n = 1;
        int dims = 1;
        for (int k = 0; k < GGML_MAX_DIMS; ++k) {
            if (ne[k] != 1) dims = k + 1;
            n = ne[k] > 0 && n <= budget / ne[k] ? n * ne[k] : budget + 1;
        }
        if (n > budget) continue;  // too large to rewrite here; its header was read all the same
        budget -= n;
        t.shape.assign(ne, ne + dims);
        t.init = "uniform";
        t.a = -1, t.b = 1, t.seed = (uint64_t) i;
        tensors.push_back(std::move(t));
    }
    try {
        llj::write_gguf_file(g_out, path, {}, tensors);
    } catch (const llj::GgufError &) {
        return v;  // refused by name (e.g. an empty key, which ggml's setters would abort on)
    } catch (const std::exception & e) {
        fail(std::string("the writer failed on a file ggml's reader accepts: ") + e.what());
    }
    Gguf back = open_meta(g_out);
    if (!back) fail("ggml's reader refuses the rewrite of a file it accepts");
    if (gguf_get_n_kv(back.get()) != v.n_kv) fail("the rewrite has a different number of keys");
    for (int64_t i = 0; i < v.n_kv; ++i) {
        const std::string key = gguf_get_key(src.get(), i);
        const int64_t j = gguf_find_key(back.get(), key.c_str());
        if (j < 0) fail("key " + key + " is missing from the rewrite");
        same_value(src.get(), i, back.get(), j, key);
    }
    if (gguf_get_n_tensors(back.get()) != (int64_t) tensors.size()) fail("the rewrite has a different number of tensors");
    for (size_t i = 0; i < tensors.size(); ++i) {
        const int64_t j = gguf_find_tensor(back.get(), tensors[i].name.c_str());
        if (j < 0) fail("tensor " + tensors[i].name + " is missing from the rewrite");
        const int64_t * ne = gguf_get_tensor_ne(back.get(), j);
        for (size_t k = 0; k < tensors[i].shape.size(); ++k) {
            if (ne[k] != tensors[i].shape[k]) fail("tensor " + tensors[i].name + ": shape changed in the rewrite");
        }
        if (gguf_get_tensor_type(back.get(), j) != GGML_TYPE_F32) fail("tensor " + tensors[i].name + ": type changed");
    }
    return v;
}

static void init_paths() {
    const char * dir = std::getenv("LLJ_FUZZ_TMP");
    const std::string base = std::string(dir ? dir : "/tmp") + "/llj-fuzz-" + std::to_string(getpid());
    g_in = base + "-in.gguf";
    g_out = base + "-out.gguf";
    ggml_log_set(quiet, nullptr);
}

#ifndef LLJ_FUZZ_REPLAY
extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    init_paths();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    write_input(data, size);
    check(g_in);
    return 0;
}
#else
int main(int argc, char ** argv) {
    init_paths();
    for (int a = 1; a < argc; ++a) {
        const Verdict v = check(argv[a]);
        std::printf("{\"file\":\"%s\",\"accepted\":%s,\"nKv\":%lld,\"nTensors\":%lld}\n", argv[a],
                    v.accepted ? "true" : "false", (long long) v.n_kv, (long long) v.n_tensors);
    }
    std::remove(g_out.c_str());
    return 0;
}
#endif
