// Dense linear algebra for the analyses (the bindings run it on worker threads): the SVD of a
// Jacobian block by one-sided Jacobi rotations (Hestenes), accumulated in double. Exact to working precision,
// O(sweeps · m · n²): the route for blocks up to a few thousand columns; larger problems go
// through the matrix-free top-k route built on jvp/vjp, whose basis work (orthonormalizing
// a block against a basis, small products) is here too.
#include "engine/linalg.h"

#include <dlfcn.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <functional>
#include <numeric>
#include <stdexcept>

namespace llj {

// SVD of A [m × n] row-major with m >= n: A = U diag(s) Vᵀ, r = n.
static SvdResult jacobi_svd_tall(const std::vector<double> & a_in, int64_t m, int64_t n, int max_sweeps = 60) {
    // Work on columns: W = A (column-major copy), V = I.
    std::vector<double> w((size_t) (m * n)), v((size_t) (n * n), 0.0);
    for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) w[(size_t) (j * m + i)] = a_in[(size_t) (i * n + j)];
    for (int64_t j = 0; j < n; ++j) v[(size_t) (j * n + j)] = 1.0;
    const double eps = 1e-15;
    for (int sweep = 0; sweep < max_sweeps; ++sweep) {
        double off = 0.0;
        for (int64_t p = 0; p < n - 1; ++p) {
            for (int64_t q = p + 1; q < n; ++q) {
                double * wp = &w[(size_t) (p * m)], * wq = &w[(size_t) (q * m)];
                double alpha = 0, beta = 0, gamma = 0;
                for (int64_t i = 0; i < m; ++i) {
                    alpha += wp[i] * wp[i];
                    beta += wq[i] * wq[i];
                    gamma += wp[i] * wq[i];
                }
                if (alpha == 0 || beta == 0) continue;
                const double c0 = std::fabs(gamma) / std::sqrt(alpha * beta);
                off = std::max(off, c0);
                if (c0 < eps) continue;
                const double zeta = (beta - alpha) / (2 * gamma);
                const double t = (zeta >= 0 ? 1.0 : -1.0) / (std::fabs(zeta) + std::sqrt(1 + zeta * zeta));
                const double c = 1 / std::sqrt(1 + t * t), s = c * t;
                for (int64_t i = 0; i < m; ++i) {
                    const double x = wp[i], y = wq[i];
                    wp[i] = c * x - s * y;
                    wq[i] = s * x + c * y;
                }
                double * vp = &v[(size_t) (p * n)], * vq = &v[(size_t) (q * n)];
                for (int64_t i = 0; i < n; ++i) {
                    const double x = vp[i], y = vq[i];
                    vp[i] = c * x - s * y;
                    vq[i] = s * x + c * y;
                }
            }
        }
        if (off < eps) break;
    }
    std::vector<double> sig((size_t) n);
    for (int64_t j = 0; j < n; ++j) {
        double s2 = 0;
        for (int64_t i = 0; i < m; ++i) s2 += w[(size_t) (j * m + i)] * w[(size_t) (j * m + i)];
        sig[(size_t) j] = std::sqrt(s2);
    }
    std::vector<int64_t> order((size_t) n);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return sig[(size_t) a] > sig[(size_t) b]; });
    SvdResult r;
    r.u.assign((size_t) (m * n), 0.0f);
    r.s.resize((size_t) n);
    r.v.resize((size_t) (n * n));
    for (int64_t k = 0; k < n; ++k) {
        const int64_t j = order[(size_t) k];
        const double sj = sig[(size_t) j];
        r.s[(size_t) k] = (float) sj;
        for (int64_t i = 0; i < m; ++i) r.u[(size_t) (i * n + k)] = sj > 0 ? (float) (w[(size_t) (j * m + i)] / sj) : 0.0f;
        for (int64_t i = 0; i < n; ++i) r.v[(size_t) (i * n + k)] = (float) v[(size_t) (j * n + i)];
    }
    return r;
}

// LAPACK's divide-and-conquer SVD (dgesdd, blocked BLAS-3) from the OpenBLAS found at build
// time (CMakeLists.txt), loaded at run time so that the addon works without it: ~30x faster
// than the Jacobi sweeps at d = 512, which stay as the fallback. Fortran interface with the
// hidden length of the character argument.
using dgesdd_t = void (*)(const char * jobz, const int * m, const int * n, double * a, const int * lda, double * s, double * u,
                          const int * ldu, double * vt, const int * ldvt, double * work, const int * lwork, int * iwork, int * info,
                          size_t jobz_len);
static dgesdd_t lapack_dgesdd() {
#ifdef LLJ_LAPACK_LIBRARY
    static const dgesdd_t fn = [] {
        void * h = dlopen(LLJ_LAPACK_LIBRARY, RTLD_NOW | RTLD_LOCAL);
        return h ? (dgesdd_t) dlsym(h, "dgesdd_") : nullptr;
    }();
    return fn;
#else
    return nullptr;
#endif
}

// SVD of A [m × n] row-major by dgesdd. In column-major terms the buffer is Aᵀ [n × m]:
// Aᵀ = U' S V'ᵀ gives A = V' S U'ᵀ, so U = V' and V = U'.
static SvdResult lapack_svd(dgesdd_t dgesdd, std::vector<double> a, int64_t m64, int64_t n64) {
    if (m64 * n64 > INT_MAX) throw std::runtime_error("svd: the matrix is too large for the exact route; use the randomized one");
    const int m = (int) n64, n = (int) m64, r = std::min(m, n);  // of Aᵀ
    std::vector<double> s((size_t) r), u((size_t) m * r), vt((size_t) r * n);
    std::vector<int> iwork((size_t) 8 * r);
    int info = 0, lwork = -1;
    double query = 0;
    dgesdd("S", &m, &n, a.data(), &m, s.data(), u.data(), &m, vt.data(), &r, &query, &lwork, iwork.data(), &info, 1);
    if (info != 0) throw std::runtime_error("svd: dgesdd workspace query failed (info " + std::to_string(info) + ")");
    lwork = (int) query;
    std::vector<double> work((size_t) std::max(1, lwork));
    dgesdd("S", &m, &n, a.data(), &m, s.data(), u.data(), &m, vt.data(), &r, work.data(), &lwork, iwork.data(), &info, 1);
    if (info != 0) throw std::runtime_error("svd: dgesdd did not converge (info " + std::to_string(info) + ")");
    SvdResult out;
    out.s.assign(s.begin(), s.end());
    out.u.resize((size_t) (m64 * r));
    out.v.resize((size_t) (n64 * r));
    for (int64_t i = 0; i < m64; ++i)
        for (int k = 0; k < r; ++k) out.u[(size_t) (i * r + k)] = (float) vt[(size_t) k + (size_t) i * r];
    for (int64_t j = 0; j < n64; ++j)
        for (int k = 0; k < r; ++k) out.v[(size_t) (j * r + k)] = (float) u[(size_t) j + (size_t) k * m];
    return out;
}

// The SVD by dgesdd when asked and available, else by Jacobi sweeps; `routine` names the one used.
SvdResult svd(std::vector<double> a, int64_t m, int64_t n, bool use_lapack, std::string & routine) {
    dgesdd_t dgesdd = use_lapack ? lapack_dgesdd() : nullptr;
    routine = dgesdd ? "dgesdd" : "jacobi";
    if (dgesdd) return lapack_svd(dgesdd, std::move(a), m, n);
    if (m >= n) return jacobi_svd_tall(a, m, n);
    // A = U S Vᵀ  ⇔  Aᵀ = V S Uᵀ
    std::vector<double> at((size_t) (m * n));
    for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) at[(size_t) (j * m + i)] = a[(size_t) (i * n + j)];
    SvdResult t = jacobi_svd_tall(at, n, m);
    SvdResult r;
    r.u = std::move(t.v);
    r.v = std::move(t.u);
    r.s = std::move(t.s);
    return r;
}


// The rows of `block` [b × w] made orthonormal and orthogonal to the orthonormal rows of
// `basis` [m × w]: two rounds of classical Gram–Schmidt against the basis (in double), then
// the left singular vectors of what remains. Directions whose remaining norm falls below
// 1e-6 of the block's largest row norm are dropped (the Krylov space is exhausted there), so
// the result has r ≤ b rows.
std::vector<double> orthonormalize_against(const std::vector<double> & basis, int64_t m, std::vector<double> block, int64_t b, int64_t w) {
    double scale = 0;
    for (int64_t i = 0; i < b; ++i) {
        double s2 = 0;
        for (int64_t c = 0; c < w; ++c) s2 += block[(size_t) (i * w + c)] * block[(size_t) (i * w + c)];
        scale = std::max(scale, std::sqrt(s2));
    }
    for (int round = 0; round < 2; ++round) {
        for (int64_t i = 0; i < b; ++i) {
            double * x = &block[(size_t) (i * w)];
            for (int64_t j = 0; j < m; ++j) {
                const double * q = &basis[(size_t) (j * w)];
                double p = 0;
                for (int64_t c = 0; c < w; ++c) p += q[c] * x[c];
                for (int64_t c = 0; c < w; ++c) x[c] -= p * q[c];
            }
        }
    }
    // block = U S Vᵀ through its transpose [w × b] (tall): the new rows are U's columns.
    std::vector<double> t((size_t) (w * b));
    for (int64_t i = 0; i < b; ++i)
        for (int64_t c = 0; c < w; ++c) t[(size_t) (c * b + i)] = block[(size_t) (i * w + c)];
    SvdResult r = jacobi_svd_tall(t, w, b);
    std::vector<double> out;
    for (int64_t k = 0; k < b; ++k) {
        if (!(r.s[(size_t) k] > 1e-6 * scale)) break;  // descending
        for (int64_t c = 0; c < w; ++c) out.push_back(r.u[(size_t) (c * b + k)]);
    }
    return out;
}


// A B with B [q × w], or A Bᵀ with B [w × q] when tb; row-major, accumulated in double.
std::vector<double> gemm(const std::vector<double> & a, const std::vector<double> & bm, int64_t p, int64_t q, int64_t w, bool tb) {
    std::vector<double> c((size_t) (p * w), 0.0);
    for (int64_t i = 0; i < p; ++i) {
        double * ci = &c[(size_t) (i * w)];
        for (int64_t k = 0; k < q; ++k) {
            const double aik = a[(size_t) (i * q + k)];
            if (tb) {
                for (int64_t j = 0; j < w; ++j) ci[j] += aik * bm[(size_t) (j * q + k)];
            } else {
                const double * bk = &bm[(size_t) (k * w)];
                for (int64_t j = 0; j < w; ++j) ci[j] += aik * bk[j];
            }
        }
    }
    return c;
}

}  // namespace llj
