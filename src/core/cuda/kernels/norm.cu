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

// The second stage: one warp a column, eight columns a block. Lane l adds slabs l, l+32, ...
// in order, then the lanes meet in a fixed butterfly: deterministic, and 32 loads in flight
// where one thread a column waited on each slab in turn (256 of them for a CIFAR batch:
// tens of microseconds a sum).
__device__ double warp_sum_f64(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

__device__ double slab_sum(const double* part, int slabs, int c, int j, int lane) {
    double a = 0.0;
    for (int s = lane; s < slabs; s += 32) a += part[(i64)s * c + j];
    return warp_sum_f64(a);
}

// out[j] = scale · Σ_s part[s, j] (out1 too when given).
extern "C" __global__ void column_sums_finish(const double* part0, const double* part1, int slabs, int c, double scale,
                                              float* out0, float* out1) {
    int j = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (j >= c) return;  // a whole warp leaves together: j is the same for its lanes
    double a0 = slab_sum(part0, slabs, c, j, lane);
    double a1 = slab_sum(part1, slabs, c, j, lane);
    if (lane == 0) {
        out0[j] = (float)(a0 * scale);
        if (out1) out1[j] = (float)(a1 * scale);
    }
}

// From the sum of squared deviations: rstd, and the running statistics (unbiased variance).
extern "C" __global__ void batch_norm_finish_var(const double* part0, int slabs, int c, i64 rows, const float* mean,
                                                 float* rstd, float* running_mean, float* running_var, float eps,
                                                 float momentum) {
    int j = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (j >= c) return;
    double ss = slab_sum(part0, slabs, c, j, lane);
    if (lane == 0) {
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

__device__ float bn_apply1(float x, float m, float r, float g, float b) { return (x - m) * r * g + b; }

// Four channels at a time where c % 4 == 0 and every pointer is aligned (see common.cuh).
extern "C" __global__ void batch_norm_apply(const float* x, float* y, const float* mean, const float* rstd,
                                            const float* gamma, const float* beta, i64 rows, int c) {
    if (c % 4 == 0 && AL16(x) && AL16(y) && AL16(mean) && AL16(rstd) && AL16(gamma) && AL16(beta)) {
        unsigned c4 = c / 4;
        GRID_STRIDE(i, rows * c4) {
            unsigned j = (unsigned)i % c4;
            float4 v = CF4(x)[i], m = CF4(mean)[j], r = CF4(rstd)[j], g = CF4(gamma)[j], b = CF4(beta)[j];
            F4(y)[i] = make_float4(bn_apply1(v.x, m.x, r.x, g.x, b.x), bn_apply1(v.y, m.y, r.y, g.y, b.y),
                                   bn_apply1(v.z, m.z, r.z, g.z, b.z), bn_apply1(v.w, m.w, r.w, g.w, b.w));
        }
        return;
    }
    GRID_STRIDE(i, rows * c) {
        int j = (unsigned)i % c;
        y[i] = bn_apply1(x[i], mean[j], rstd[j], gamma[j], beta[j]);
    }
}

__device__ float bn_grad1(float x, float dy, float gamma, float mean, float rstd, float dgamma, float dbeta, float n,
                          int batch_stats) {
    if (!batch_stats) return dy * gamma * rstd;
    float xhat = (x - mean) * rstd;
    return gamma * rstd / n * (n * dy - dbeta - xhat * dgamma);
}

// dgamma, dbeta already summed; batch_stats: the statistics depend on x.
extern "C" __global__ void batch_norm_input_grad(const float* x, const float* dy, const float* gamma, const float* mean,
                                                 const float* rstd, const float* dgamma, const float* dbeta, float* dx,
                                                 i64 rows, int c, int batch_stats) {
    float n = (float)rows;
    if (c % 4 == 0 && AL16(x) && AL16(dy) && AL16(gamma) && AL16(mean) && AL16(rstd) && AL16(dgamma) &&
        AL16(dbeta) && AL16(dx)) {
        unsigned c4 = c / 4;
        GRID_STRIDE(i, rows * c4) {
            unsigned j = (unsigned)i % c4;
            float4 v = CF4(x)[i], d = CF4(dy)[i], g = CF4(gamma)[j], m = CF4(mean)[j], r = CF4(rstd)[j];
            float4 dg = CF4(dgamma)[j], db = CF4(dbeta)[j];
            F4(dx)[i] = make_float4(bn_grad1(v.x, d.x, g.x, m.x, r.x, dg.x, db.x, n, batch_stats),
                                    bn_grad1(v.y, d.y, g.y, m.y, r.y, dg.y, db.y, n, batch_stats),
                                    bn_grad1(v.z, d.z, g.z, m.z, r.z, dg.z, db.z, n, batch_stats),
                                    bn_grad1(v.w, d.w, g.w, m.w, r.w, dg.w, db.w, n, batch_stats));
        }
        return;
    }
    GRID_STRIDE(i, rows * c) {
        int j = (unsigned)i % c;
        dx[i] = bn_grad1(x[i], dy[i], gamma[j], mean[j], rstd[j], dgamma[j], dbeta[j], n, batch_stats);
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
