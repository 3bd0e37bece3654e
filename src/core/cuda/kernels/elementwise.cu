// Element-wise ops: fill, ReLU, exact-erf GELU, residual add, masks, bias rows.

extern "C" __global__ void fill_f32(float* p, float v, i64 n) {
    GRID_STRIDE(i, n) p[i] = v;
}

// The streaming kernels below take four values at a time where the pointers allow it (see
// `stream4` in common.cuh).
__device__ float relu1(float v) { return fmaxf(v, 0.0f); }

extern "C" __global__ void relu_forward(const float* x, float* y, i64 n) {
    stream4(
        n, AL16(x) && AL16(y),
        [&](i64 i) {
            float4 v = CF4(x)[i];
            F4(y)[i] = make_float4(relu1(v.x), relu1(v.y), relu1(v.z), relu1(v.w));
        },
        [&](i64 i) { y[i] = relu1(x[i]); });
}

__device__ float relu_grad1(float y, float dy) { return y > 0.0f ? dy : 0.0f; }

extern "C" __global__ void relu_backward(const float* y, const float* dy, float* dx, i64 n) {
    stream4(
        n, AL16(y) && AL16(dy) && AL16(dx),
        [&](i64 i) {
            float4 a = CF4(y)[i], g = CF4(dy)[i];
            F4(dx)[i] = make_float4(relu_grad1(a.x, g.x), relu_grad1(a.y, g.y), relu_grad1(a.z, g.z),
                                    relu_grad1(a.w, g.w));
        },
        [&](i64 i) { dx[i] = relu_grad1(y[i], dy[i]); });
}

// y = x·Φ(x) with Φ from erf (PyTorch's exact GELU); keeps dy/dx = Φ(x) + x·φ(x).
__device__ void gelu1(float v, float* y, float* dydx) {
    float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
    float pdf = 0.3989422804014327f * expf(-0.5f * fminf(v * v, 170.0f));
    *y = v * cdf;
    *dydx = cdf + v * pdf;
}

// a[i], b[i] = f(x[i]) for the ops with two outputs a value (GELU: y and dy/dx; the TF32
// split: hi and lo), four values a thread where the pointers allow it. Callers pass a lambda,
// not a function's name: a function pointer cost split_tf32 12 more instructions a loop
// (scripts/kernel_sass.py); the lambda gives the machine code the two copies had.
template <class F>
__device__ void map_to_two(const float* x, float* a, float* b, i64 n, F f) {
    stream4(
        n, AL16(x) && AL16(a) && AL16(b),
        [&](i64 i) {
            float4 v = CF4(x)[i], p, q;
            f(v.x, &p.x, &q.x);
            f(v.y, &p.y, &q.y);
            f(v.z, &p.z, &q.z);
            f(v.w, &p.w, &q.w);
            F4(a)[i] = p;
            F4(b)[i] = q;
        },
        [&](i64 i) { f(x[i], &a[i], &b[i]); });
}

extern "C" __global__ void gelu_forward(const float* x, float* y, float* dydx, i64 n) {
    map_to_two(x, y, dydx, n, [](float v, float* o, float* d) { gelu1(v, o, d); });
}

extern "C" __global__ void mul(const float* a, const float* b, float* y, i64 n) {
    stream4(
        n, AL16(a) && AL16(b) && AL16(y),
        [&](i64 i) {
            float4 u = CF4(a)[i], v = CF4(b)[i];
            F4(y)[i] = make_float4(u.x * v.x, u.y * v.y, u.z * v.z, u.w * v.w);
        },
        [&](i64 i) { y[i] = a[i] * b[i]; });
}

extern "C" __global__ void add(const float* a, const float* b, float* y, i64 n) {
    stream4(
        n, AL16(a) && AL16(b) && AL16(y),
        [&](i64 i) {
            float4 u = CF4(a)[i], v = CF4(b)[i];
            F4(y)[i] = make_float4(u.x + v.x, u.y + v.y, u.z + v.z, u.w + v.w);
        },
        [&](i64 i) { y[i] = a[i] + b[i]; });
}

extern "C" __global__ void mul_inplace(float* p, const float* m, i64 n) {
    GRID_STRIDE(i, n) p[i] *= m[i];
}

// y[r, j] += bias[j] over `rows` rows of length `n`.
extern "C" __global__ void add_bias_rows(float* y, const float* bias, i64 rows, i64 n) {
    if (n % 4 == 0 && AL16(y) && AL16(bias)) {
        unsigned n4 = (unsigned)(n / 4);
        GRID_STRIDE(i, rows * n4) {
            float4 v = F4(y)[i], b = CF4(bias)[(unsigned)i % n4];
            F4(y)[i] = make_float4(v.x + b.x, v.y + b.y, v.z + b.z, v.w + b.w);
        }
        return;
    }
    GRID_STRIDE(i, rows * n) y[i] += bias[(unsigned)i % (unsigned)n];
}

// An fp32 value rounded to TF32 (10 mantissa bits: the low 13 of 23 zero), to nearest with ties
// to even; where rounding up would overflow, truncated instead; infinities and NaN as they are.
// A TF32 tensor core reads such a value exactly, whether it rounds or truncates its inputs.
__device__ float tf32_round(float v) {
    unsigned b = __float_as_uint(v);
    if ((b & 0x7f800000u) == 0x7f800000u) return v;
    unsigned r = (b + 0xfffu + ((b >> 13) & 1u)) & 0xffffe000u;
    if ((r & 0x7f800000u) == 0x7f800000u) r = b & 0xffffe000u;
    return __uint_as_float(r);
}

// x = hi + lo as two TF32 values: hi = x rounded to TF32, lo = the rest (exact in fp32)
// rounded to TF32, so hi + lo is within 2⁻²² of x (relative). A product of two fp32 values
// is then three TF32 products, hi·hi + hi·lo + lo·hi, each exact in fp32, leaving out
// lo·lo (under 2⁻²² of it): fp32 products on tensor cores (cudnn.rs's split ways).
__device__ void split1(float v, float* hi, float* lo) {
    float h = tf32_round(v);
    *hi = h;
    // an infinite or NaN value is all in hi (inf - inf would be NaN)
    *lo = (__float_as_uint(h) & 0x7f800000u) == 0x7f800000u ? 0.0f : tf32_round(v - h);
}

extern "C" __global__ void split_tf32(const float* x, float* hi, float* lo, i64 n) {
    map_to_two(x, hi, lo, n, [](float v, float* h, float* l) { split1(v, h, l); });
}

// x, as `rows` rows of `cols` values, split (split1) and stacked three times along each row:
// y's row r is [p0 | p1 | p2], each part the row's hi values except part `lo_part`, which
// holds its lo values. Stacked along the axis a convolution sums over, such operands make one
// TF32 convolution sum lo·hi + hi·lo + hi·hi (cudnn.rs, Split::Stacked). Four values a thread
// with 32-bit row arithmetic where the rows allow it (channel counts are multiples of four).
__device__ void stack3(float* o, i64 stride, float h, float l, int lo_part) {
    o[0] = lo_part == 0 ? l : h;
    o[stride] = lo_part == 1 ? l : h;
    o[2 * stride] = lo_part == 2 ? l : h;
}

extern "C" __global__ void split_tf32_stacked(const float* x, float* y, i64 rows, i64 cols, int lo_part) {
    i64 n = rows * cols;
    if (cols % 4 == 0 && AL16(x) && AL16(y) && 3 * n / 4 < 0x7fffffff) {
        unsigned c4 = (unsigned)(cols / 4);
        GRID_STRIDE(i, n / 4) {
            unsigned r = (unsigned)i / c4, c = (unsigned)i - r * c4;
            float4 v = CF4(x)[i], h, l;
            split1(v.x, &h.x, &l.x);
            split1(v.y, &h.y, &l.y);
            split1(v.z, &h.z, &l.z);
            split1(v.w, &h.w, &l.w);
            float4* o = F4(y) + 3u * r * c4 + c;
            o[0] = lo_part == 0 ? l : h;
            o[c4] = lo_part == 1 ? l : h;
            o[2u * c4] = lo_part == 2 ? l : h;
        }
        return;
    }
    GRID_STRIDE(i, n) {
        i64 r = i / cols, c = i - r * cols;
        float h, l;
        split1(x[i], &h, &l);
        stack3(y + r * 3 * cols + c, cols, h, l, lo_part);
    }
}
