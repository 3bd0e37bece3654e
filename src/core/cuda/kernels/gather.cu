// The batch gather (mirrors core/ops/gather_batch.rs::gather_host), one thread an output
// value: example r's index, crop shift and mirror flag are examples[4r..4r+4]; its position
// permutation (if perms is set) starts at perms + r * perm_stride (stride 0: one shared).
extern "C" __global__ void gather_batch(const float* x_train, const float* y_train, const int* examples,
                                        const int* perms, i64 perm_stride, int h, int w, int c, i64 rows, float* x,
                                        float* y) {
    i64 len = (i64)h * w * c;
    GRID_STRIDE(i, rows * len) {
        i64 r = i / len;
        int j = (int)(i - r * len);
        int q = j / c, ch = j - (j / c) * c;
        const int* e = examples + 4 * r;
        int pos = perms ? perms[r * perm_stride + q] : q;
        int py = pos / w, px = pos - (pos / w) * w;
        int sy = py + e[1];
        int sx = (e[3] ? w - 1 - px : px) + e[2];
        float v = 0.0f;
        if (sy >= 0 && sy < h && sx >= 0 && sx < w) v = x_train[(i64)e[0] * len + ((i64)sy * w + sx) * c + ch];
        x[i] = v;
        if (j == 0) y[r] = y_train[e[0]];
    }
}
