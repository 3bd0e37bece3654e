// The token embedding and the row softmax of attention (mirrors core/cpu/attention.rs).
// Uses warp_sum from norm.cu (the files are compiled as one program, in KERNEL_SOURCES order).

// y[t, :] = table[ids[t], :]; an id that is not a row of the table reads as a zero row.
extern "C" __global__ void embedding_forward(const float* ids, const float* table, float* y, i64 tokens, int dim,
                                             int vocab) {
    GRID_STRIDE(i, tokens * dim) {
        float id = ids[i / dim];
        int v = (int)id;
        y[i] = (id >= 0.0f && id < (float)vocab && (float)v == id) ? table[(i64)v * dim + i % dim] : 0.0f;
    }
}

// dtable[v, d] = Σ_t [ids[t] = v] dy[t, d]: one thread a table entry, tokens in order, so the
// sum is deterministic without atomics (O(vocab·dim·tokens) reads of the ids, which the cache
// serves: the vocabularies and batches here are small).
extern "C" __global__ void embedding_backward(const float* ids, const float* dy, float* dtable, i64 tokens, int vocab,
                                              int dim) {
    GRID_STRIDE(i, (i64)vocab * dim) {
        float v = (float)(i / dim);
        int d = i % dim;
        float acc = 0.0f;
        for (i64 t = 0; t < tokens; t++) {
            if (ids[t] == v) acc += dy[t * dim + d];
        }
        dtable[i] = acc;
    }
}

__device__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}

// Softmax of scale·x per row of n, one warp a row; causal: row r keeps its first r % n + 1
// columns, the rest are exactly 0.
extern "C" __global__ void softmax_forward(const float* x, float* y, i64 rows, int n, float scale, int causal) {
    i64 r = (i64)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    int seen = causal ? (int)(r % n) + 1 : n;
    const float* xr = x + r * n;
    float m = -INFINITY;
    for (int j = lane; j < seen; j += 32) m = fmaxf(m, xr[j]);
    m = warp_max(m) * scale;
    float z = 0.0f;
    for (int j = lane; j < seen; j += 32) z += expf(xr[j] * scale - m);
    float inv = 1.0f / warp_sum(z);
    for (int j = lane; j < n; j += 32) y[r * n + j] = j < seen ? expf(xr[j] * scale - m) * inv : 0.0f;
}

// dx = scale · y ⊙ (dy − Σ y·dy) per row, one warp a row.
extern "C" __global__ void softmax_backward(const float* y, const float* dy, float* dx, i64 rows, int n, float scale) {
    i64 r = (i64)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    float dot = 0.0f;
    for (int j = lane; j < n; j += 32) dot += y[r * n + j] * dy[r * n + j];
    dot = warp_sum(dot);
    for (int j = lane; j < n; j += 32) dx[r * n + j] = scale * y[r * n + j] * (dy[r * n + j] - dot);
}
