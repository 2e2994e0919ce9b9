// GGUF reading and writing over ggml's gguf API, without N-API (gguf_io.h).
#include "gguf_io.h"

#include "ggml.h"
#include "gguf.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <set>

namespace llj {

// splitmix64: small, fast, and identical on every platform (deterministic test models).
static inline uint64_t splitmix64(uint64_t & s) {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline double uniform01(uint64_t & s) { return ((splitmix64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

static void fill_tensor(const TensorSpec & t, std::vector<float> & out, size_t n) {
    out.resize(n);
    uint64_t s = t.seed;
    if (t.init == "data") {
        std::copy(t.data.begin(), t.data.end(), out.begin());
    } else if (t.init == "constant") {
        std::fill(out.begin(), out.end(), (float) t.a);
    } else if (t.init == "uniform") {
        for (size_t i = 0; i < n; ++i) out[i] = (float) (t.a + (t.b - t.a) * uniform01(s));
    } else {  // normal(mean a, std b), Box-Muller
        for (size_t i = 0; i < n; i += 2) {
            double u1 = uniform01(s), u2 = uniform01(s);
            double r = std::sqrt(-2.0 * std::log(u1));
            out[i] = (float) (t.a + t.b * r * std::cos(2 * M_PI * u2));
            if (i + 1 < n) out[i + 1] = (float) (t.a + t.b * r * std::sin(2 * M_PI * u2));
        }
    }
}

// The bytes a GGUF's tensor data needs past its header, from a metadata-only read: ggml's
// reader with no_alloc false allocates that much before it reads a byte of it, and aborts
// the process when the allocation fails (GGML_ASSERT in ggml_init), so a header claiming
// terabytes must be refused before that read (found by native/fuzz/gguf_fuzz.cpp).
static void check_data_fits(const std::string & path) {
    gguf_init_params p = {/*no_alloc =*/ true, /*ctx =*/ nullptr};
    gguf_context * g = gguf_init_from_file(path.c_str(), p);
    if (!g) throw GgufError("cannot read '" + path + "' as GGUF");
    std::unique_ptr<gguf_context, void (*)(gguf_context *)> gguard(g, gguf_free);
    FILE * f = std::fopen(path.c_str(), "rb");
    if (!f) throw GgufError("cannot open '" + path + "'");
    std::fseek(f, 0, SEEK_END);
    const long file_size = std::ftell(f);
    std::fclose(f);
    const uint64_t start = gguf_get_data_offset(g);
    for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) {
        // ggml's reader skips its element-count overflow check when the (overflowed) count
        // comes out ≤ 0 (gguf.cpp, "total number of elements"), so it is made here
        const int64_t * ne = gguf_get_tensor_ne(g, i);
        int64_t count = 1;
        bool overflow = false;
        for (int k = 0; k < GGML_MAX_DIMS; ++k) overflow |= ne[k] < 0 || __builtin_mul_overflow(count, ne[k], &count);
        if (overflow) throw GgufError("'" + path + "': tensor " + gguf_get_tensor_name(g, i) + " has more elements than ggml can count");
        const uint64_t end = start + gguf_get_tensor_offset(g, i) + gguf_get_tensor_size(g, i);
        if (file_size < 0 || end > (uint64_t) file_size) {
            throw GgufError("'" + path + "': tensor " + gguf_get_tensor_name(g, i) + " ends at byte " + std::to_string(end) +
                            ", beyond the file's " + std::to_string(file_size) + " (is the file truncated?)");
        }
    }
}

CvecFile read_cvec_file(const std::string & path) {
    check_data_fits(path);
    ggml_context * ctx = nullptr;
    gguf_init_params p = {/*no_alloc =*/ false, /*ctx =*/ &ctx};
    gguf_context * g = gguf_init_from_file(path.c_str(), p);
    if (!g) throw GgufError("cannot read '" + path + "' as GGUF");
    std::unique_ptr<gguf_context, void (*)(gguf_context *)> gguard(g, gguf_free);
    std::unique_ptr<ggml_context, void (*)(ggml_context *)> cguard(ctx, ggml_free);
    CvecFile f;
    auto str = [&](const char * key, std::string & out) {
        const int64_t k = gguf_find_key(g, key);
        if (k < 0 || gguf_get_kv_type(g, k) != GGUF_TYPE_STRING) return false;
        out = gguf_get_val_str(g, k);
        return true;
    };
    f.has_arch = str("general.architecture", f.arch);
    f.has_hint = str("controlvector.model_hint", f.hint);
    const int64_t lc = gguf_find_key(g, "controlvector.layer_count");
    if (lc >= 0) {
        const gguf_type t = gguf_get_kv_type(g, lc);
        if (t == GGUF_TYPE_INT32) f.layer_count = gguf_get_val_i32(g, lc);
        else if (t == GGUF_TYPE_UINT32) f.layer_count = gguf_get_val_u32(g, lc);
        f.has_layer_count = t == GGUF_TYPE_INT32 || t == GGUF_TYPE_UINT32;
    }
    std::set<std::string> names;
    for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) {
        CvecTensor c;
        c.name = gguf_get_tensor_name(g, i);
        // the context also holds ggml's unnamed blob of all the data, which a lookup of an
        // empty name would return instead (found by the fuzzer)
        if (c.name.empty()) throw GgufError("'" + path + "': tensor #" + std::to_string(i) + " has an empty name");
        // names that differ only after a NUL byte are one name to ggml's lookup
        if (!names.insert(c.name).second) throw GgufError("'" + path + "': tensor " + c.name + " appears twice (the names differ after a NUL byte)");
        ggml_tensor * t = ggml_get_tensor(ctx, c.name.c_str());
        if (!t) throw GgufError("'" + path + "': tensor " + std::to_string(i) + " is missing from its context");
        c.type = ggml_type_name(t->type);
        // every dimension up to the last that is not 1: ggml_n_dims also drops trailing zeros,
        // which would make an empty tensor look like one with values (found by the fuzzer)
        int nd = GGML_MAX_DIMS;
        while (nd > 1 && t->ne[nd - 1] == 1) --nd;
        for (int k = 0; k < nd; ++k) c.dims.push_back(t->ne[k]);
        if (t->type == GGML_TYPE_F32) {
            const float * src = (const float *) t->data;
            c.data.assign(src, src + ggml_nelements(t));
        }
        f.tensors.push_back(std::move(c));
    }
    return f;
}

static void set_kv(gguf_context * g, const KvEntry & e) {
    const char * k = e.key.c_str();
    if (e.type == "remove") { gguf_remove_key(g, k); return; }
    if (e.type == "str") { gguf_set_val_str(g, k, e.strs.at(0).c_str()); return; }
    if (e.type == "u32") { gguf_set_val_u32(g, k, (uint32_t) e.nums.at(0)); return; }
    if (e.type == "i32") { gguf_set_val_i32(g, k, (int32_t) e.nums.at(0)); return; }
    if (e.type == "f32") { gguf_set_val_f32(g, k, (float) e.nums.at(0)); return; }
    if (e.type == "bool") { gguf_set_val_bool(g, k, e.nums.at(0) != 0); return; }
    if (e.type == "str[]") {
        std::vector<const char *> p;
        for (const auto & s : e.strs) p.push_back(s.c_str());
        gguf_set_arr_str(g, k, p.data(), p.size());
        return;
    }
    if (e.type == "f32[]") {
        std::vector<float> v(e.nums.begin(), e.nums.end());
        gguf_set_arr_data(g, k, GGUF_TYPE_FLOAT32, v.data(), v.size());
        return;
    }
    if (e.type == "i32[]" || e.type == "u32[]") {
        std::vector<int32_t> v(e.nums.begin(), e.nums.end());
        gguf_set_arr_data(g, k, e.type == "i32[]" ? GGUF_TYPE_INT32 : GGUF_TYPE_UINT32, v.data(), v.size());
        return;
    }
    throw std::runtime_error("unknown GGUF value type '" + e.type + "' for key " + e.key);
}

void write_gguf_file(const std::string & path, const std::string & copy_kv_from,
                     const std::vector<KvEntry> & kv, const std::vector<TensorSpec> & tensors) {
    gguf_context * gctx = gguf_init_empty();
    std::unique_ptr<gguf_context, void (*)(gguf_context *)> gguard(gctx, gguf_free);
    if (!copy_kv_from.empty()) {
        gguf_init_params p = {/*no_alloc =*/ true, /*ctx =*/ nullptr};
        gguf_context * src = gguf_init_from_file(copy_kv_from.c_str(), p);
        if (!src) throw GgufError("cannot read GGUF '" + copy_kv_from + "'");
        std::unique_ptr<gguf_context, void (*)(gguf_context *)> sguard(src, gguf_free);
        // ggml's reader accepts an empty key, which its setters abort on, and keys that differ
        // only after a NUL byte, which its setters (taking C strings) would merge into one:
        // both refused here (found by the fuzzer)
        std::set<std::string> keys;
        for (int64_t i = 0; i < gguf_get_n_kv(src); ++i) {
            const char * key = gguf_get_key(src, i);
            if (key[0] == '\0') throw GgufError("'" + copy_kv_from + "': metadata key #" + std::to_string(i) + " is empty");
            if (!keys.insert(key).second) {
                throw GgufError("'" + copy_kv_from + "': metadata key " + key + " appears twice (the keys differ after a NUL byte)");
            }
        }
        gguf_set_kv(gctx, src);
    }
    for (const auto & e : kv) set_kv(gctx, e);

    // Tensor descriptors only (no_alloc): the data is streamed below.
    ggml_init_params ip = {ggml_tensor_overhead() * (tensors.size() + 1), nullptr, /*no_alloc =*/ true};
    ggml_context * tctx = ggml_init(ip);
    std::unique_ptr<ggml_context, void (*)(ggml_context *)> tguard(tctx, ggml_free);
    for (const auto & t : tensors) {
        if (t.shape.empty() || t.shape.size() > 4) throw std::runtime_error("tensor " + t.name + ": 1 to 4 dimensions");
        int64_t ne[4] = {1, 1, 1, 1};
        for (size_t d = 0; d < t.shape.size(); ++d) ne[d] = t.shape[d];
        ggml_tensor * gt = ggml_new_tensor(tctx, GGML_TYPE_F32, (int) t.shape.size(), ne);
        ggml_set_name(gt, t.name.c_str());
        // gguf_add_tensor aborts on a duplicate, ggml_set_name truncates a long name
        if (t.name.size() >= GGML_MAX_NAME) throw std::runtime_error("tensor name " + t.name + " is longer than ggml's " + std::to_string(GGML_MAX_NAME - 1));
        if (gguf_find_tensor(gctx, gt->name) >= 0) throw std::runtime_error("tensor " + t.name + " is listed twice");
        if (t.init == "data" && (int64_t) t.data.size() != ggml_nelements(gt)) {
            throw std::runtime_error("tensor " + t.name + ": data length does not match its shape");
        }
        gguf_add_tensor(gctx, gt);
    }
    if (!gguf_write_to_file(gctx, path.c_str(), /*only_meta =*/ true)) throw GgufError("cannot write '" + path + "'");
    FILE * f = std::fopen(path.c_str(), "r+b");
    if (!f) throw std::runtime_error("cannot reopen '" + path + "'");
    std::unique_ptr<FILE, int (*)(FILE *)> fguard(f, std::fclose);
    const size_t data_start = gguf_get_meta_size(gctx);
    const size_t alignment = gguf_get_alignment(gctx);
    std::vector<float> buf;
    size_t end = data_start;
    for (int64_t i = 0; i < gguf_get_n_tensors(gctx); ++i) {
        const TensorSpec & t = tensors[(size_t) i];
        size_t n = 1;
        for (auto d : t.shape) n *= (size_t) d;
        fill_tensor(t, buf, n);
        size_t off = data_start + gguf_get_tensor_offset(gctx, i);
        if (std::fseek(f, (long) off, SEEK_SET) != 0 || std::fwrite(buf.data(), sizeof(float), n, f) != n) {
            throw std::runtime_error("write error on '" + path + "'");
        }
        end = off + n * sizeof(float);
    }
    // Pad the last tensor to the alignment, as gguf_write_to_file does.
    size_t padded = (end + alignment - 1) / alignment * alignment;
    std::vector<char> zeros(padded - end, 0);
    if (!zeros.empty() && std::fwrite(zeros.data(), 1, zeros.size(), f) != zeros.size()) {
        throw std::runtime_error("write error on '" + path + "'");
    }
}

}  // namespace llj
