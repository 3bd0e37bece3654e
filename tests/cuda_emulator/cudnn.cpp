// A CPU stand-in for the cuDNN 9 calls cnnlab makes (NHWC fp32 2-D convolutions through the
// legacy API, and NCHW ones on copies of cnnlab's tensors), for the tests of the CUDA backend
// without a GPU (see emulator.md). Device pointers are host pointers here (the driver
// stand-in allocates in host memory).
//
// Its convolutions are direct loops over NHWC (NCHW calls run them on NHWC copies): what it
// checks is cnnlab's side of the contract — descriptors that agree with each other (one
// layout for all three, channel counts, the output size that the window geometry gives), the
// algorithm asked for being one the heuristic offered, a workspace of the size the heuristic
// said (it is written end to end, so a short one hits the driver's guard page), beta = 0
// never reading the output (fresh memory holds NaN), and a stream set on the handle. The NHWC
// layouts are the ones a real cuDNN was checked against on a GPU (tests/cuda.rs with
// CNNLAB_CUDNN=1): NHWC activations, KRSC filters. NCHW with KCRS filters is cuDNN's
// documented default layout, not yet checked on a GPU.
//
// The heuristic's lists are made up, in the shape of a real one: a non-deterministic entry
// first (cnnlab must pass over it), a TF32 tensor-op entry (strict fp32 passes over it), the
// GEMM-type algorithms with and without workspace, and FFT/Winograd entries. Those round
// unlike a GEMM; here they carry a made-up error (Entry::error) in their results: Winograd a
// small one, FFT one a thousand times larger than an fp32 sum's, which cnnlab's comparison
// with im2col + cuBLAS must catch.
//
// A call whose convolution descriptor allows TF32 (any math type but FMA, as on Ampere and
// newer) reads its two inputs cut to TF32 (10 mantissa bits, truncated), as a tensor core
// would: so a TF32 result is off an fp32 one by about 2⁻¹¹, and three TF32 passes on split
// operands (cnnlab's strict-fp32 split ways) must come back to fp32's rounding.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "library.h"

#define API extern "C" __attribute__((visibility("default")))

typedef int cudnnStatus_t;
enum { SUCCESS = 0, NOT_INITIALIZED = 1001, BAD_PARAM = 2000, NOT_SUPPORTED = 3000 };
enum { DATA_FLOAT = 0 };
enum { FORMAT_NCHW = 0, FORMAT_NHWC = 1 };
enum { CROSS_CORRELATION = 1 };
enum { DEFAULT_MATH = 0, TENSOR_OP_MATH = 1, FMA_MATH = 3 };
enum { NON_DETERMINISTIC = 0, DETERMINISTIC = 1 };

struct Handle {
    void* stream;
};
// a 4-D tensor or filter: n (k for a filter), c, h, w; set == the Set call succeeded
struct Desc4 {
    bool set;
    int format, dtype, n, c, h, w;
};
struct Conv {
    bool set;
    int ph, pw, u, v, dh, dw, mode, compute, math;
};

// One entry of the made-up heuristic (the layout of cudnnConvolution*AlgoPerf_t).
struct Perf {
    int algo;
    cudnnStatus_t status;
    float time;
    size_t memory;
    int determinism;
    int math;
    int reserved[3];
};
struct Entry {
    int algo;
    int determinism;
    int math;
    size_t workspace_per_value;  // bytes per output value (0: none)
    bool supported;
    float error;  // relative RMS error added to the exact result (a transform's rounding)
};
// Winograd's made-up error: within cnnlab's tolerance for every test shape (its smallest,
// the 5-tap conv1d's, is 8·√5·2⁻²⁴ ≈ 1.1e-6); FFT's: far outside it.
static const float WINOGRAD = 3e-7f, FFT = 1e-3f;
// forward: 1 IMPLICIT_PRECOMP_GEMM, 0 IMPLICIT_GEMM, 7 WINOGRAD_NONFUSED, 4 FFT, 2 GEMM,
// 3 DIRECT (in strict fp32 the four GEMM-type algorithms and the two transforms qualify:
// cnnlab times and compares them all)
static const Entry FORWARD[] = {
    {1, DETERMINISTIC, TENSOR_OP_MATH, 4, true, 0},    {7, DETERMINISTIC, DEFAULT_MATH, 8, true, WINOGRAD},
    {1, DETERMINISTIC, DEFAULT_MATH, 4, true, 0},      {0, DETERMINISTIC, FMA_MATH, 0, true, 0},
    {4, DETERMINISTIC, DEFAULT_MATH, 16, true, FFT},   {2, DETERMINISTIC, DEFAULT_MATH, 36, true, 0},
    {3, DETERMINISTIC, DEFAULT_MATH, 0, true, 0},      {6, DETERMINISTIC, DEFAULT_MATH, 0, false, 0},
};
// backward data: 0 ALGO_0 (atomics), 5 WINOGRAD_NONFUSED, 1 ALGO_1, 2 FFT
static const Entry DATA[] = {
    {0, NON_DETERMINISTIC, DEFAULT_MATH, 0, true, 0},
    {5, DETERMINISTIC, DEFAULT_MATH, 8, true, WINOGRAD},
    {1, DETERMINISTIC, DEFAULT_MATH, 4, true, 0},
    {2, DETERMINISTIC, DEFAULT_MATH, 8, true, FFT},
};
// backward filter: 0 ALGO_0 (atomics), 1 ALGO_1, 3 ALGO_3, 5 WINOGRAD_NONFUSED, 2 FFT
static const Entry FILTER[] = {
    {0, NON_DETERMINISTIC, DEFAULT_MATH, 0, true, 0}, {1, DETERMINISTIC, DEFAULT_MATH, 2, true, 0},
    {3, DETERMINISTIC, FMA_MATH, 0, true, 0},         {5, DETERMINISTIC, DEFAULT_MATH, 4, true, WINOGRAD},
    {2, DETERMINISTIC, DEFAULT_MATH, 4, true, FFT},
};

API size_t cudnnGetVersion() { return 91900; }
API const char* cudnnGetErrorString(cudnnStatus_t s) {
    switch (s) {
        case SUCCESS: return "CUDNN_STATUS_SUCCESS";
        case BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM (emulator)";
        case NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED (emulator)";
        default: return "CUDNN_STATUS_NOT_INITIALIZED (emulator)";
    }
}
API cudnnStatus_t cudnnCreate(Handle** h) {
    *h = new Handle{nullptr};
    return SUCCESS;
}
API cudnnStatus_t cudnnDestroy(Handle* h) {
    delete h;
    return SUCCESS;
}
API cudnnStatus_t cudnnSetStream(Handle* h, void* s) {
    if (!h) return NOT_INITIALIZED;
    h->stream = s;
    return SUCCESS;
}

API cudnnStatus_t cudnnCreateTensorDescriptor(Desc4** d) {
    *d = new Desc4{};
    return SUCCESS;
}
API cudnnStatus_t cudnnDestroyTensorDescriptor(Desc4* d) {
    delete d;
    return SUCCESS;
}
API cudnnStatus_t cudnnCreateFilterDescriptor(Desc4** d) {
    *d = new Desc4{};
    return SUCCESS;
}
API cudnnStatus_t cudnnDestroyFilterDescriptor(Desc4* d) {
    delete d;
    return SUCCESS;
}
static cudnnStatus_t set4(Desc4* d, int format, int dtype, int n, int c, int h, int w) {
    if (!d || n <= 0 || c <= 0 || h <= 0 || w <= 0) return BAD_PARAM;
    *d = Desc4{true, format, dtype, n, c, h, w};
    return SUCCESS;
}
API cudnnStatus_t cudnnSetTensor4dDescriptor(Desc4* d, int format, int dtype, int n, int c, int h, int w) {
    return set4(d, format, dtype, n, c, h, w);
}
API cudnnStatus_t cudnnSetFilter4dDescriptor(Desc4* d, int dtype, int format, int k, int c, int h, int w) {
    return set4(d, format, dtype, k, c, h, w);
}
API cudnnStatus_t cudnnCreateConvolutionDescriptor(Conv** c) {
    *c = new Conv{};
    return SUCCESS;
}
API cudnnStatus_t cudnnDestroyConvolutionDescriptor(Conv* c) {
    delete c;
    return SUCCESS;
}
API cudnnStatus_t cudnnSetConvolution2dDescriptor(Conv* c, int ph, int pw, int u, int v, int dh, int dw, int mode,
                                                  int compute) {
    if (!c || ph < 0 || pw < 0 || u <= 0 || v <= 0 || dh <= 0 || dw <= 0) return BAD_PARAM;
    *c = Conv{true, ph, pw, u, v, dh, dw, mode, compute, DEFAULT_MATH};
    return SUCCESS;
}
API cudnnStatus_t cudnnSetConvolutionMathType(Conv* c, int math) {
    if (!c || (math != DEFAULT_MATH && math != TENSOR_OP_MATH && math != 2 && math != FMA_MATH)) return BAD_PARAM;
    c->math = math;
    return SUCCESS;
}

// The three descriptors describe one fp32 NHWC cross-correlation with the output size that
// the window geometry gives (cnnlab supports neither dilation nor groups).
static bool consistent(const Desc4* x, const Desc4* w, const Conv* c, const Desc4* y) {
    if (!x || !w || !c || !y || !x->set || !w->set || !c->set || !y->set) return false;
    // one layout for all three: NHWC activations with KRSC filters, or NCHW with KCRS
    for (const Desc4* d : {x, w, y})
        if ((d->format != FORMAT_NHWC && d->format != FORMAT_NCHW) || d->format != x->format ||
            d->dtype != DATA_FLOAT)
            return false;
    if (c->mode != CROSS_CORRELATION || c->compute != DATA_FLOAT || c->dh != 1 || c->dw != 1) return false;
    int oh = (x->h + 2 * c->ph - w->h) / c->u + 1, ow = (x->w + 2 * c->pw - w->w) / c->v + 1;
    return x->c == w->c && y->n == x->n && y->c == w->n && y->h == oh && y->w == ow && oh > 0 && ow > 0;
}

static size_t values(const Desc4* d) { return (size_t)d->n * d->c * d->h * d->w; }

template <int entries>
static cudnnStatus_t list(const Entry (&table)[entries], size_t outputs, int requested, int* returned, Perf* perf) {
    if (!returned || !perf || requested <= 0) return BAD_PARAM;
    int n = std::min(requested, entries);
    for (int i = 0; i < n; i++) {
        const Entry& e = table[i];
        perf[i] = Perf{e.algo, e.supported ? SUCCESS : NOT_SUPPORTED, -1.0f, e.workspace_per_value * outputs,
                       e.determinism, e.math, {0, 0, 0}};
    }
    *returned = n;
    return SUCCESS;
}

API cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(Handle* h, Desc4* x, Desc4* w, Conv* c, Desc4* y,
                                                          int requested, int* returned, Perf* perf) {
    if (!h) return NOT_INITIALIZED;
    if (!consistent(x, w, c, y)) return BAD_PARAM;
    return list(FORWARD, values(y), requested, returned, perf);
}
API cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(Handle* h, Desc4* w, Desc4* dy, Conv* c, Desc4* dx,
                                                               int requested, int* returned, Perf* perf) {
    if (!h) return NOT_INITIALIZED;
    if (!consistent(dx, w, c, dy)) return BAD_PARAM;
    return list(DATA, values(dx), requested, returned, perf);
}
API cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(Handle* h, Desc4* x, Desc4* dy, Conv* c, Desc4* dw,
                                                                 int requested, int* returned, Perf* perf) {
    if (!h) return NOT_INITIALIZED;
    if (!consistent(x, dw, c, dy)) return BAD_PARAM;
    return list(FILTER, values(dw), requested, returned, perf);
}

// The algorithm is one the heuristic offers as supported and deterministic, and the
// workspace is as large as it said (written end to end: a short allocation meets the driver's guard page).
// *error: the error the algorithm's results carry.
template <int entries>
static cudnnStatus_t check_call(Handle* h, const Entry (&table)[entries], int algo, size_t outputs, void* ws,
                                size_t ws_bytes, float* error) {
    if (!h) return NOT_INITIALIZED;
    if (!h->stream) return BAD_PARAM;  // cnnlab runs every handle on its thread's stream
    for (int i = 0; i < entries; i++) {
        const Entry& e = table[i];
        if (e.algo != algo || !e.supported) continue;
        // cnnlab's policy, checked here: a seed gives the same numbers every run
        if (e.determinism != DETERMINISTIC) return NOT_SUPPORTED;
        size_t need = e.workspace_per_value * outputs;
        if (ws_bytes < need || (need > 0 && !ws)) return BAD_PARAM;
        if (ws && ws_bytes > 0) memset(ws, 0x5a, ws_bytes);
        *error = e.error;
        return SUCCESS;
    }
    return NOT_SUPPORTED;
}

// A tensor (or filter) of desc's shape in the other layout: channels moved last (to_nhwc) or
// back to second (from NHWC); [n, c, h, w] logical dims either way.
static std::vector<float> relayout(const Desc4* d, const float* src, bool to_nhwc) {
    std::vector<float> out(values(d));
    const size_t hw = (size_t)d->h * d->w;
    for (int n = 0; n < d->n; n++)
        for (int c = 0; c < d->c; c++)
            for (size_t p = 0; p < hw; p++) {
                size_t nchw = ((size_t)n * d->c + c) * hw + p, nhwc = ((size_t)n * hw + p) * d->c + c;
                if (to_nhwc) out[nhwc] = src[nchw];
                else out[nchw] = src[nhwc];
            }
    return out;
}

static const float ZERO = 0.0f;
static inline void blend(float* out, float sum, float alpha, float beta);

// The call's input `v` (n values) as its convolution reads it: cut to TF32 where the math type
// allows TF32 (a copy in `keep`), else as it is.
static std::atomic<long long> tf32_reads{0};  // (the tests' threads call in at once)
static const float* as_read(const Conv* c, const float* v, size_t n, std::vector<float>& keep) {
    if (c->math == FMA_MATH) return v;
    tf32_reads++;
    keep.assign(v, v + n);
    for (float& x : keep) {
        uint32_t b;
        memcpy(&b, &x, 4);
        b &= 0xffffe000u;
        memcpy(&x, &b, 4);
    }
    return keep.data();
}
// How many inputs were read cut to TF32 so far (tests/cuda.rs: the split route ran under TF32).
API long long cnnlab_emulator_tf32_reads() { return tf32_reads.load(); }

static Desc4 as_nhwc(const Desc4* d) {
    Desc4 out = *d;
    out.format = FORMAT_NHWC;
    return out;
}

// An NCHW call (KCRS filters) as its NHWC self on copies: inputs a and b copied to NHWC,
// call(a, b, out) computing into a fresh NHWC output with beta 0 (alpha applied there), the
// result copied back and blended into out with beta.
template <class F>
static cudnnStatus_t on_nhwc_copies(const Desc4* ad, const float* a, const Desc4* bd, const float* b,
                                    const Desc4* outd, float* out, float beta, F call) {
    Desc4 a2 = as_nhwc(ad), b2 = as_nhwc(bd), out2 = as_nhwc(outd);
    std::vector<float> as = relayout(ad, a, true), bs = relayout(bd, b, true), outs(values(outd));
    cudnnStatus_t s = call(&a2, as.data(), &b2, bs.data(), &out2, outs.data());
    if (s != SUCCESS) return s;
    std::vector<float> back = relayout(outd, outs.data(), false);
    for (size_t i = 0; i < back.size(); i++) blend(out + i, back[i], 1.0f, beta);
    return SUCCESS;
}

// out = alpha·sum + beta·out, without reading out when beta is 0 (as cuDNN)
static inline void blend(float* out, float sum, float alpha, float beta) {
    *out = beta == 0.0f ? alpha * sum : alpha * sum + beta * *out;
}

// Adds a relative RMS error of `error` to the n values at out: ±error·RMS, alternating.
static void add_error(float* out, size_t n, float error) {
    if (error == 0.0f || n == 0) return;
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) ss += (double)out[i] * out[i];
    float step = error * (float)sqrt(ss / n);
    for (size_t i = 0; i < n; i++) out[i] += i % 2 ? step : -step;
}

// Calls f(r, q, xp) for each tap (r, q) of the window of output position (n, oy, ox) that
// falls inside the image, xp pointing at the input's channels there.
template <class F>
static void for_each_tap(const Desc4* xd, const Conv* c, int R, int S, const float* x, int n, int oy, int ox, F f) {
    for (int r = 0; r < R; r++) {
        int iy = oy * c->u - c->ph + r;
        if (iy < 0 || iy >= xd->h) continue;
        for (int q = 0; q < S; q++) {
            int ix = ox * c->v - c->pw + q;
            if (ix < 0 || ix >= xd->w) continue;
            f(r, q, x + (((size_t)n * xd->h + iy) * xd->w + ix) * xd->c);
        }
    }
}

API cudnnStatus_t cudnnConvolutionForward(Handle* h, const float* alpha, Desc4* xd, const float* x, Desc4* wd,
                                          const float* w, Conv* c, int algo, void* ws, size_t ws_bytes,
                                          const float* beta, Desc4* yd, float* y) {
    if (!consistent(xd, wd, c, yd)) return BAD_PARAM;
    stream_op(h ? h->stream : nullptr, "cudnnConvolutionForward", {x, w, *beta == 0.0f ? nullptr : y}, {y, ws});
    if (xd->format == FORMAT_NCHW)
        return on_nhwc_copies(xd, x, wd, w, yd, y, *beta, [&](Desc4* x2, const float* xs, Desc4* w2, const float* wk,
                                                             Desc4* y2, float* ys) {
            return cudnnConvolutionForward(h, alpha, x2, xs, w2, wk, c, algo, ws, ws_bytes, &ZERO, y2, ys);
        });
    float error = 0.0f;
    cudnnStatus_t s = check_call(h, FORWARD, algo, values(yd), ws, ws_bytes, &error);
    if (s != SUCCESS) return s;
    std::vector<float> xk, wk;
    x = as_read(c, x, values(xd), xk);
    w = as_read(c, w, values(wd), wk);
    const int C = xd->c, K = wd->n, R = wd->h, S = wd->w;
    std::vector<float> acc(K);
    for (int n = 0; n < xd->n; n++)
        for (int oy = 0; oy < yd->h; oy++)
            for (int ox = 0; ox < yd->w; ox++) {
                std::fill(acc.begin(), acc.end(), 0.0f);
                for_each_tap(xd, c, R, S, x, n, oy, ox, [&](int r, int q, const float* xp) {
                    for (int k = 0; k < K; k++) {
                        const float* wp = w + (((size_t)k * R + r) * S + q) * C;
                        for (int ch = 0; ch < C; ch++) acc[k] += xp[ch] * wp[ch];
                    }
                });
                float* out = y + (((size_t)n * yd->h + oy) * yd->w + ox) * K;
                for (int k = 0; k < K; k++) blend(out + k, acc[k], *alpha, *beta);
            }
    add_error(y, values(yd), error);
    return SUCCESS;
}

API cudnnStatus_t cudnnConvolutionBackwardData(Handle* h, const float* alpha, Desc4* wd, const float* w, Desc4* dyd,
                                               const float* dy, Conv* c, int algo, void* ws, size_t ws_bytes,
                                               const float* beta, Desc4* dxd, float* dx) {
    if (!consistent(dxd, wd, c, dyd)) return BAD_PARAM;
    stream_op(h ? h->stream : nullptr, "cudnnConvolutionBackwardData", {w, dy, *beta == 0.0f ? nullptr : dx}, {dx, ws});
    if (dxd->format == FORMAT_NCHW)
        return on_nhwc_copies(wd, w, dyd, dy, dxd, dx, *beta, [&](Desc4* w2, const float* wk, Desc4* dy2,
                                                                  const float* dys, Desc4* dx2, float* dxs) {
            return cudnnConvolutionBackwardData(h, alpha, w2, wk, dy2, dys, c, algo, ws, ws_bytes, &ZERO, dx2, dxs);
        });
    float error = 0.0f;
    cudnnStatus_t s = check_call(h, DATA, algo, values(dxd), ws, ws_bytes, &error);
    if (s != SUCCESS) return s;
    std::vector<float> wk, dyk;
    w = as_read(c, w, values(wd), wk);
    dy = as_read(c, dy, values(dyd), dyk);
    const int C = dxd->c, K = wd->n, R = wd->h, S = wd->w;
    std::vector<float> acc(C);
    for (int n = 0; n < dxd->n; n++)
        for (int iy = 0; iy < dxd->h; iy++)
            for (int ix = 0; ix < dxd->w; ix++) {
                std::fill(acc.begin(), acc.end(), 0.0f);
                for (int r = 0; r < R; r++) {
                    int ty = iy + c->ph - r;  // = oy·u
                    if (ty < 0 || ty % c->u != 0 || ty / c->u >= dyd->h) continue;
                    for (int q = 0; q < S; q++) {
                        int tx = ix + c->pw - q;
                        if (tx < 0 || tx % c->v != 0 || tx / c->v >= dyd->w) continue;
                        const float* g = dy + (((size_t)n * dyd->h + ty / c->u) * dyd->w + tx / c->v) * K;
                        for (int k = 0; k < K; k++) {
                            const float* wp = w + (((size_t)k * R + r) * S + q) * C;
                            for (int ch = 0; ch < C; ch++) acc[ch] += g[k] * wp[ch];
                        }
                    }
                }
                float* out = dx + (((size_t)n * dxd->h + iy) * dxd->w + ix) * C;
                for (int ch = 0; ch < C; ch++) blend(out + ch, acc[ch], *alpha, *beta);
            }
    add_error(dx, values(dxd), error);
    return SUCCESS;
}

API cudnnStatus_t cudnnConvolutionBackwardFilter(Handle* h, const float* alpha, Desc4* xd, const float* x,
                                                 Desc4* dyd, const float* dy, Conv* c, int algo, void* ws,
                                                 size_t ws_bytes, const float* beta, Desc4* dwd, float* dw) {
    if (!consistent(xd, dwd, c, dyd)) return BAD_PARAM;
    stream_op(h ? h->stream : nullptr, "cudnnConvolutionBackwardFilter", {x, dy, *beta == 0.0f ? nullptr : dw}, {dw, ws});
    if (xd->format == FORMAT_NCHW)
        return on_nhwc_copies(xd, x, dyd, dy, dwd, dw, *beta, [&](Desc4* x2, const float* xs, Desc4* dy2,
                                                                  const float* dys, Desc4* dw2, float* dws) {
            return cudnnConvolutionBackwardFilter(h, alpha, x2, xs, dy2, dys, c, algo, ws, ws_bytes, &ZERO, dw2, dws);
        });
    float error = 0.0f;
    cudnnStatus_t s = check_call(h, FILTER, algo, values(dwd), ws, ws_bytes, &error);
    if (s != SUCCESS) return s;
    std::vector<float> xk, dyk;
    x = as_read(c, x, values(xd), xk);
    dy = as_read(c, dy, values(dyd), dyk);
    const int C = xd->c, K = dwd->n, R = dwd->h, S = dwd->w;
    std::vector<float> acc((size_t)K * R * S * C, 0.0f);
    for (int n = 0; n < xd->n; n++)
        for (int oy = 0; oy < dyd->h; oy++)
            for (int ox = 0; ox < dyd->w; ox++) {
                const float* g = dy + (((size_t)n * dyd->h + oy) * dyd->w + ox) * K;
                for_each_tap(xd, c, R, S, x, n, oy, ox, [&](int r, int q, const float* xp) {
                    for (int k = 0; k < K; k++) {
                        float* a = &acc[(((size_t)k * R + r) * S + q) * C];
                        for (int ch = 0; ch < C; ch++) a[ch] += g[k] * xp[ch];
                    }
                });
            }
    for (size_t i = 0; i < acc.size(); i++) blend(dw + i, acc[i], *alpha, *beta);
    add_error(dw, values(dwd), error);
    return SUCCESS;
}
