// LayerNorm (one warp a row) and BatchNorm (per-channel statistics over rows). Column sums
// run in two deterministic stages: each block reduces a slab of rows for 32 columns in f64,
// then one thread a column adds the slabs in order.

#define COL_THREADS_Y 8

// mode 0: Σx; 1: Σ(x−mean[j])²; 2: Σdy, Σdy·(x−mean[j])·rstd[j]; 3: Σdy·(x−mean[r])·rstd[r], Σdy.
extern "C" __global__ void column_sums(int mode, const float* x, const float* dy, const float* mean, const float* rstd,
                                       i64 rows, int c, double* part0, double* part1) {
    __shared__ double s0[COL_THREADS_Y][32];
    __shared__ double s1[COL_THREADS_Y][32];
    int j = blockIdx.x * 32 + threadIdx.x;
    double a0 = 0.0, a1 = 0.0;
    if (j < c) {
        for (i64 r = (i64)blockIdx.y * COL_THREADS_Y + threadIdx.y; r < rows; r += (i64)gridDim.y * COL_THREADS_Y) {
            float v = x[r * c + j];
            if (mode == 0) {
                a0 += v;
            } else if (mode == 1) {
                float d = v - mean[j];
                a0 += (double)d * d;
            } else if (mode == 2) {
                float g = dy[r * c + j];
                a0 += g;
                a1 += (double)(g * ((v - mean[j]) * rstd[j]));
            } else {
                float g = dy[r * c + j];
                a0 += (double)(g * ((v - mean[r]) * rstd[r]));
                a1 += g;
            }
        }
    }
    s0[threadIdx.y][threadIdx.x] = a0;
    s1[threadIdx.y][threadIdx.x] = a1;
    __syncthreads();
    if (threadIdx.y == 0 && j < c) {
        for (int k = 1; k < COL_THREADS_Y; k++) {
            a0 += s0[k][threadIdx.x];
            a1 += s1[k][threadIdx.x];
        }
        part0[(i64)blockIdx.y * c + j] = a0;
        part1[(i64)blockIdx.y * c + j] = a1;
    }
}

// out[j] = scale · Σ_s part[s, j] (out1 too when given).
extern "C" __global__ void column_sums_finish(const double* part0, const double* part1, int slabs, int c, double scale,
                                              float* out0, float* out1) {
    GRID_STRIDE(j, c) {
        double a0 = 0.0, a1 = 0.0;
        for (int s = 0; s < slabs; s++) {
            a0 += part0[(i64)s * c + j];
            a1 += part1[(i64)s * c + j];
        }
        out0[j] = (float)(a0 * scale);
        if (out1) out1[j] = (float)(a1 * scale);
    }
}

// From the sum of squared deviations: rstd, and the running statistics (unbiased variance).
extern "C" __global__ void batch_norm_finish_var(const double* part0, int slabs, int c, i64 rows, const float* mean,
                                                 float* rstd, float* running_mean, float* running_var, float eps,
                                                 float momentum) {
    GRID_STRIDE(j, c) {
        double ss = 0.0;
        for (int s = 0; s < slabs; s++) ss += part0[(i64)s * c + j];
        float var = (float)ss;
        float biased = var / rows;
        float unbiased = rows > 1 ? var / (rows - 1) : biased;
        running_mean[j] = (1.0f - momentum) * running_mean[j] + momentum * mean[j];
        running_var[j] = (1.0f - momentum) * running_var[j] + momentum * unbiased;
        rstd[j] = 1.0f / sqrtf(biased + eps);
    }
}

extern "C" __global__ void batch_norm_eval_stats(const float* running_mean, const float* running_var, float* mean,
                                                 float* rstd, int c, float eps) {
    GRID_STRIDE(j, c) {
        mean[j] = running_mean[j];
        rstd[j] = 1.0f / sqrtf(running_var[j] + eps);
    }
}

extern "C" __global__ void batch_norm_apply(const float* x, float* y, const float* mean, const float* rstd,
                                            const float* gamma, const float* beta, i64 rows, int c) {
    GRID_STRIDE(i, rows * c) {
        int j = (unsigned)i % (unsigned)c;
        y[i] = (x[i] - mean[j]) * rstd[j] * gamma[j] + beta[j];
    }
}

// dgamma, dbeta already summed; batch_stats: the statistics depend on x.
extern "C" __global__ void batch_norm_input_grad(const float* x, const float* dy, const float* gamma, const float* mean,
                                                 const float* rstd, const float* dgamma, const float* dbeta, float* dx,
                                                 i64 rows, int c, int batch_stats) {
    float n = (float)rows;
    GRID_STRIDE(i, rows * c) {
        int j = (unsigned)i % (unsigned)c;
        if (!batch_stats) {
            dx[i] = dy[i] * gamma[j] * rstd[j];
        } else {
            float xhat = (x[i] - mean[j]) * rstd[j];
            dx[i] = gamma[j] * rstd[j] / n * (n * dy[i] - dbeta[j] - xhat * dgamma[j]);
        }
    }
}

__device__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

// One warp a row.
extern "C" __global__ void layer_norm_forward(const float* x, const float* gamma, const float* beta, float* y,
                                              float* mean, float* rstd, i64 rows, int d, float eps) {
    i64 r = (i64)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    const float* xr = x + r * d;
    float s = 0.0f;
    for (int j = lane; j < d; j += 32) s += xr[j];
    float m = warp_sum(s) / d;
    float v = 0.0f;
    for (int j = lane; j < d; j += 32) v += (xr[j] - m) * (xr[j] - m);
    float inv = 1.0f / sqrtf(warp_sum(v) / d + eps);
    if (lane == 0) {
        mean[r] = m;
        rstd[r] = inv;
    }
    for (int j = lane; j < d; j += 32) y[r * d + j] = (xr[j] - m) * inv * gamma[j] + beta[j];
}

// dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) with g = dy·γ, one warp a row.
extern "C" __global__ void layer_norm_input_grad(const float* x, const float* dy, const float* gamma, const float* mean,
                                                 const float* rstd, float* dx, i64 rows, int d) {
    i64 r = (i64)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    float m = mean[r], s = rstd[r];
    float mg = 0.0f, mgx = 0.0f;
    for (int j = lane; j < d; j += 32) {
        float g = dy[r * d + j] * gamma[j];
        mg += g;
        mgx += g * (x[r * d + j] - m) * s;
    }
    mg = warp_sum(mg) / d;
    mgx = warp_sum(mgx) / d;
    for (int j = lane; j < d; j += 32) {
        float g = dy[r * d + j] * gamma[j];
        dx[r * d + j] = s * (g - mg - (x[r * d + j] - m) * s * mgx);
    }
}
