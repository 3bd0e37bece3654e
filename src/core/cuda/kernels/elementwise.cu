// Element-wise ops: fill, ReLU, exact-erf GELU, residual add, masks, bias rows.

extern "C" __global__ void fill_f32(float* p, float v, i64 n) {
    GRID_STRIDE(i, n) p[i] = v;
}

extern "C" __global__ void relu_forward(const float* x, float* y, i64 n) {
    GRID_STRIDE(i, n) y[i] = fmaxf(x[i], 0.0f);
}

extern "C" __global__ void relu_backward(const float* y, const float* dy, float* dx, i64 n) {
    GRID_STRIDE(i, n) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

// y = x·Φ(x) with Φ from erf (PyTorch's exact GELU); keeps dy/dx = Φ(x) + x·φ(x).
extern "C" __global__ void gelu_forward(const float* x, float* y, float* dydx, i64 n) {
    GRID_STRIDE(i, n) {
        float v = x[i];
        float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
        float pdf = 0.3989422804014327f * expf(-0.5f * fminf(v * v, 170.0f));
        y[i] = v * cdf;
        dydx[i] = cdf + v * pdf;
    }
}

extern "C" __global__ void mul(const float* a, const float* b, float* y, i64 n) {
    GRID_STRIDE(i, n) y[i] = a[i] * b[i];
}

extern "C" __global__ void add(const float* a, const float* b, float* y, i64 n) {
    GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}

extern "C" __global__ void mul_inplace(float* p, const float* m, i64 n) {
    GRID_STRIDE(i, n) p[i] *= m[i];
}

// y[r, j] += bias[j] over `rows` rows of length `n`.
extern "C" __global__ void add_bias_rows(float* y, const float* bias, i64 rows, i64 n) {
    GRID_STRIDE(i, rows * n) y[i] += bias[(unsigned)i % (unsigned)n];
}
