// Dense linear algebra for the analyses, with no N-API (the bindings in native/napi/module.cpp
// run them on worker threads).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace llj {

struct SvdResult {
    std::vector<float> u;  // [m × r] row-major
    std::vector<float> s;  // [r], descending
    std::vector<float> v;  // [n × r] row-major
};


// The SVD of A [m × n] row-major: by LAPACK's dgesdd when asked and available, else by
// one-sided Jacobi sweeps; `routine` names the one used ("dgesdd" | "jacobi"), r = min(m, n).
SvdResult svd(std::vector<double> a, int64_t m, int64_t n, bool use_lapack, std::string & routine);
// The rows of `block` [b × w] made orthonormal and orthogonal to the orthonormal rows of
// `basis` [m × w]; directions exhausted below 1e-6 of the largest row norm dropped: [r·w], r ≤ b.
std::vector<double> orthonormalize_against(const std::vector<double> & basis, int64_t m, std::vector<double> block, int64_t b, int64_t w);
// A B with B [q × w], or A Bᵀ with B [w × q] when tb; row-major, accumulated in double: [p·w].
std::vector<double> gemm(const std::vector<double> & a, const std::vector<double> & bm, int64_t p, int64_t q, int64_t w, bool tb);

}  // namespace llj
