// Element-wise ops: fill, ReLU, exact-erf GELU, residual add, masks, bias rows.

extern "C" __global__ void fill_f32(float* p, float v, i64 n) {
    GRID_STRIDE(i, n) p[i] = v;
}

// The streaming kernels below take four values at a time where the pointers allow it (see
// common.cuh), then the last n % 4 one at a time.
__device__ bool aligned16(const void* a, const void* b, const void* c, const void* d) {
    return AL16(a) && AL16(b) && AL16(c) && AL16(d);
}

__device__ float relu1(float v) { return fmaxf(v, 0.0f); }

extern "C" __global__ void relu_forward(const float* x, float* y, i64 n) {
    i64 done = 0;
    if (aligned16(x, y, y, y)) {
        done = n / 4 * 4;
        GRID_STRIDE(i, n / 4) {
            float4 v = ((const float4*)x)[i];
            ((float4*)y)[i] = make_float4(relu1(v.x), relu1(v.y), relu1(v.z), relu1(v.w));
        }
    }
    GRID_STRIDE(i, n - done) y[done + i] = relu1(x[done + i]);
}

__device__ float relu_grad1(float y, float dy) { return y > 0.0f ? dy : 0.0f; }

extern "C" __global__ void relu_backward(const float* y, const float* dy, float* dx, i64 n) {
    i64 done = 0;
    if (aligned16(y, dy, dx, dx)) {
        done = n / 4 * 4;
        GRID_STRIDE(i, n / 4) {
            float4 a = ((const float4*)y)[i], g = ((const float4*)dy)[i];
            ((float4*)dx)[i] = make_float4(relu_grad1(a.x, g.x), relu_grad1(a.y, g.y), relu_grad1(a.z, g.z),
                                           relu_grad1(a.w, g.w));
        }
    }
    GRID_STRIDE(i, n - done) dx[done + i] = relu_grad1(y[done + i], dy[done + i]);
}

// y = x·Φ(x) with Φ from erf (PyTorch's exact GELU); keeps dy/dx = Φ(x) + x·φ(x).
__device__ void gelu1(float v, float* y, float* dydx) {
    float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
    float pdf = 0.3989422804014327f * expf(-0.5f * fminf(v * v, 170.0f));
    *y = v * cdf;
    *dydx = cdf + v * pdf;
}

extern "C" __global__ void gelu_forward(const float* x, float* y, float* dydx, i64 n) {
    i64 done = 0;
    if (aligned16(x, y, dydx, dydx)) {
        done = n / 4 * 4;
        GRID_STRIDE(i, n / 4) {
            float4 v = ((const float4*)x)[i], o, d;
            gelu1(v.x, &o.x, &d.x);
            gelu1(v.y, &o.y, &d.y);
            gelu1(v.z, &o.z, &d.z);
            gelu1(v.w, &o.w, &d.w);
            ((float4*)y)[i] = o;
            ((float4*)dydx)[i] = d;
        }
    }
    GRID_STRIDE(i, n - done) gelu1(x[done + i], &y[done + i], &dydx[done + i]);
}

extern "C" __global__ void mul(const float* a, const float* b, float* y, i64 n) {
    i64 done = 0;
    if (aligned16(a, b, y, y)) {
        done = n / 4 * 4;
        GRID_STRIDE(i, n / 4) {
            float4 u = ((const float4*)a)[i], v = ((const float4*)b)[i];
            ((float4*)y)[i] = make_float4(u.x * v.x, u.y * v.y, u.z * v.z, u.w * v.w);
        }
    }
    GRID_STRIDE(i, n - done) y[done + i] = a[done + i] * b[done + i];
}

extern "C" __global__ void add(const float* a, const float* b, float* y, i64 n) {
    i64 done = 0;
    if (aligned16(a, b, y, y)) {
        done = n / 4 * 4;
        GRID_STRIDE(i, n / 4) {
            float4 u = ((const float4*)a)[i], v = ((const float4*)b)[i];
            ((float4*)y)[i] = make_float4(u.x + v.x, u.y + v.y, u.z + v.z, u.w + v.w);
        }
    }
    GRID_STRIDE(i, n - done) y[done + i] = a[done + i] + b[done + i];
}

extern "C" __global__ void mul_inplace(float* p, const float* m, i64 n) {
    GRID_STRIDE(i, n) p[i] *= m[i];
}

// y[r, j] += bias[j] over `rows` rows of length `n`.
extern "C" __global__ void add_bias_rows(float* y, const float* bias, i64 rows, i64 n) {
    if (n % 4 == 0 && aligned16(y, bias, y, y)) {
        unsigned n4 = (unsigned)(n / 4);
        GRID_STRIDE(i, rows * n4) {
            float4 v = F4(y)[i], b = CF4(bias)[(unsigned)i % n4];
            F4(y)[i] = make_float4(v.x + b.x, v.y + b.y, v.z + b.z, v.w + b.w);
        }
        return;
    }
    GRID_STRIDE(i, rows * n) y[i] += bias[(unsigned)i % (unsigned)n];
}
