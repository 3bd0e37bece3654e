// A CPU stand-in for cuBLAS's single-precision GEMMs (column-major, as cuBLAS), for the
// tests of cnnlab's CUDA backend without a GPU (see emulator.md). Device pointers are host
// pointers here (the driver stand-in allocates in host memory). Arguments are checked as
// cuBLAS checks them: an invalid leading dimension is CUBLAS_STATUS_INVALID_VALUE.
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "library.h"

#define API extern "C" __attribute__((visibility("default")))

typedef int cublasStatus_t;
enum { SUCCESS = 0, NOT_INITIALIZED = 1, INVALID_VALUE = 7 };
enum { OP_N = 0, OP_T = 1, OP_C = 2 };
enum { TF32_TENSOR_OP_MATH = 3 };

struct Handle {
    void* stream;
    int math_mode;
};

API cublasStatus_t cublasCreate_v2(Handle** h) {
    *h = new Handle{nullptr, 0};
    return SUCCESS;
}
API cublasStatus_t cublasDestroy_v2(Handle* h) {
    delete h;
    return SUCCESS;
}
API cublasStatus_t cublasSetStream_v2(Handle* h, void* s) {
    if (!h) return NOT_INITIALIZED;
    h->stream = s;
    return SUCCESS;
}
API cublasStatus_t cublasGetStream_v2(Handle* h, void** s) {
    if (!h) return NOT_INITIALIZED;
    *s = h->stream;
    return SUCCESS;
}
API cublasStatus_t cublasSetMathMode(Handle* h, int mode) {
    if (!h) return NOT_INITIALIZED;
    h->math_mode = mode;  // TF32: the GEMMs' inputs are cut to TF32 (see gemm)
    return SUCCESS;
}
API cublasStatus_t cublasGetMathMode(Handle* h, int* mode) {
    if (!h) return NOT_INITIALIZED;
    *mode = h->math_mode;
    return SUCCESS;
}

// A value as a TF32 tensor core reads it: the low 13 of the 23 mantissa bits dropped
// (truncation: a stand-in for the GPU's own conversion, the less exact choice).
static inline float tf32(float v) {
    uint32_t b;
    memcpy(&b, &v, 4);
    b &= 0xffffe000u;
    memcpy(&v, &b, 4);
    return v;
}

// op(X) as a rows×cols column-major matrix, copied into `out` (cut to TF32 where `tf32_inputs`).
static void pack(int op, const float* x, int ld, int rows, int cols, std::vector<float>& out, bool tf32_inputs) {
    out.resize((size_t)rows * cols);
    for (int j = 0; j < cols; j++)
        for (int i = 0; i < rows; i++)
            out[(size_t)j * rows + i] = op == OP_N ? x[(size_t)j * ld + i] : x[(size_t)i * ld + j];
    if (tf32_inputs)
        for (float& v : out) v = tf32(v);
}

// C = alpha·op(A)·op(B) + beta·C, m×n, inner dimension k. With beta = 0, C is not read.
// Blocked so that each value of A read serves four columns of C (an emulator, not a BLAS:
// fast enough for the tests' shapes).
static void gemm(bool tf32_inputs, int ta, int tb, int m, int n, int k, float alpha, const float* a, int lda,
                 const float* b, int ldb, float beta, float* c, int ldc) {
    std::vector<float> pa, pb;
    pack(ta, a, lda, m, k, pa, tf32_inputs);
    pack(tb, b, ldb, k, n, pb, tf32_inputs);
    const int MB = 256, NB = 4;
    float acc[NB][MB];
    for (int j0 = 0; j0 < n; j0 += NB) {
        int nb = std::min(NB, n - j0);
        for (int i0 = 0; i0 < m; i0 += MB) {
            int mb = std::min(MB, m - i0);
            for (int t = 0; t < NB; t++) std::fill(acc[t], acc[t] + mb, 0.0f);
            for (int p = 0; p < k; p++) {
                const float* __restrict__ col = &pa[(size_t)p * m + i0];
                float bv[NB];
                for (int t = 0; t < NB; t++) bv[t] = t < nb ? pb[(size_t)(j0 + t) * k + p] : 0.0f;
                for (int t = 0; t < NB; t++) {
                    float* __restrict__ at = acc[t];
                    for (int i = 0; i < mb; i++) at[i] += col[i] * bv[t];
                }
            }
            for (int t = 0; t < nb; t++) {
                float* cj = c + (size_t)(j0 + t) * ldc + i0;
                for (int i = 0; i < mb; i++) cj[i] = beta == 0.0f ? alpha * acc[t][i] : alpha * acc[t][i] + beta * cj[i];
            }
        }
    }
}

static bool valid(int ta, int tb, int m, int n, int k, int lda, int ldb, int ldc) {
    auto max1 = [](int v) { return v > 1 ? v : 1; };
    bool ops = (ta == OP_N || ta == OP_T) && (tb == OP_N || tb == OP_T);
    return ops && m >= 0 && n >= 0 && k >= 0 && lda >= max1(ta == OP_N ? m : k) && ldb >= max1(tb == OP_N ? k : n) &&
           ldc >= max1(m);
}

API cublasStatus_t cublasSgemm_v2(Handle* h, int ta, int tb, int m, int n, int k, const float* alpha, const float* a,
                                  int lda, const float* b, int ldb, const float* beta, float* c, int ldc) {
    if (!h) return NOT_INITIALIZED;
    if (!valid(ta, tb, m, n, k, lda, ldb, ldc)) return INVALID_VALUE;
    if (m == 0 || n == 0) return SUCCESS;
    stream_op(h->stream, "cublasSgemm_v2", {a, b, *beta == 0.0f ? nullptr : c}, {c});
    gemm(h->math_mode == TF32_TENSOR_OP_MATH, ta, tb, m, n, k, *alpha, a, lda, b, ldb, *beta, c, ldc);
    return SUCCESS;
}

API cublasStatus_t cublasSgemmStridedBatched(Handle* h, int ta, int tb, int m, int n, int k, const float* alpha,
                                             const float* a, int lda, long long sa, const float* b, int ldb,
                                             long long sb, const float* beta, float* c, int ldc, long long sc,
                                             int count) {
    if (!h) return NOT_INITIALIZED;
    if (!valid(ta, tb, m, n, k, lda, ldb, ldc) || count < 0) return INVALID_VALUE;
    if (m == 0 || n == 0) return SUCCESS;
    stream_op(h->stream, "cublasSgemmStridedBatched", {a, b, *beta == 0.0f ? nullptr : c}, {c});
    bool tf32_inputs = h->math_mode == TF32_TENSOR_OP_MATH;
    for (int i = 0; i < count; i++)
        gemm(tf32_inputs, ta, tb, m, n, k, *alpha, a + i * sa, lda, b + i * sb, ldb, *beta, c + i * sc, ldc);
    return SUCCESS;
}
