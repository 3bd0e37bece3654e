// Sliding windows over channels-last images and the layout shuffles: im2col / col2im
// (convolutions and the locally-connected layer), pooling, global average pooling, patches,
// batched transposes. Every backward is written as a gather (one thread per input value
// summing what it fed), so results are deterministic without atomics.

struct Geom {
    int n, h, w, c, kh, kw, sh, sw, ph, pw, oh, ow;
};

// im2col and col2im move one value (T float) or four channels (T float4) a thread: four
// where c % 4 == 0 and the pointers are 16-byte aligned (every layer but an RGB input; the
// host then launches a thread per four values). The index arithmetic, divisions by run-time
// sizes at about twenty instructions each on a GPU, is then shared by four values, and loads
// and stores move 16 bytes: one value a thread spent about four times as long on the
// divisions as on its memory (by count: scripts/kernel_sass.py). `cl` is c in Ts, `kl` K in
// Ts. Index arithmetic in 32 bits (64-bit division is emulated): the host launches at most
// 2^31 values at a time.

__device__ void add_to(float& s, float v) { s += v; }
__device__ void add_to(float4& s, float4 v) {
    s.x += v.x;
    s.y += v.y;
    s.z += v.z;
    s.w += v.w;
}

template <class T>
__device__ void im2col_rows(const T* xb, T* cols, i64 n, unsigned cl, unsigned kl, const Geom& g) {
    unsigned P = g.oh * g.ow;
    GRID_STRIDE(i, n) {
        unsigned ii = (unsigned)i;
        unsigned col = ii % kl, row = ii / kl;
        unsigned ch = col % cl, t = col / cl;
        int kj = t % g.kw, ki = t / g.kw;
        unsigned pos = row % P, b = row / P;
        int oy = pos / g.ow, ox = pos % g.ow;
        int iy = oy * g.sh + ki - g.ph, ix = ox * g.sw + kj - g.pw;
        T v{};
        if (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w) v = xb[(((size_t)b * g.h + iy) * g.w + ix) * cl + ch];
        cols[i] = v;
    }
}

// cols[(img·OH·OW + pos)·K + (ki·kw + kj)·c + ch] for images img0..img0+imgs (cols starts
// at image img0).
extern "C" __global__ void im2col(const float* x, float* cols, i64 img0, i64 imgs, Geom g) {
    unsigned K = g.kh * g.kw * g.c, P = g.oh * g.ow;
    const float* xb = x + img0 * g.h * g.w * g.c;
    if (g.c % 4 == 0 && AL16(xb) && AL16(cols)) im2col_rows(CF4(xb), F4(cols), imgs * P * K / 4, g.c / 4, K / 4, g);
    else im2col_rows(xb, cols, imgs * P * K, g.c, K, g);
}

// The window position that tap `k` of an output reads input `at` from, along one axis: -1
// where none does (the tap lands between strides, or outside the output). Stride 1, the
// usual case, needs no division.
__device__ int window_origin(int at, int pad, int k, int stride, int out) {
    int t = at + pad - k;
    if (t < 0) return -1;
    if (stride != 1) {
        if (t % stride) return -1;
        t /= stride;
    }
    return t < out ? t : -1;
}

template <class T>
__device__ void col2im_sums(const T* cols, T* dxb, i64 n, unsigned cl, unsigned kl, const Geom& g) {
    unsigned P = g.oh * g.ow;
    GRID_STRIDE(i, n) {
        unsigned ii = (unsigned)i;
        unsigned ch = ii % cl, t = ii / cl;
        int ix = t % g.w;
        t /= g.w;
        int iy = t % g.h;
        unsigned bl = t / g.h;
        T s{};
        for (int ki = 0; ki < g.kh; ki++) {
            int oy = window_origin(iy, g.ph, ki, g.sh, g.oh);
            if (oy < 0) continue;
            for (int kj = 0; kj < g.kw; kj++) {
                int ox = window_origin(ix, g.pw, kj, g.sw, g.ow);
                if (ox >= 0) add_to(s, cols[((size_t)bl * P + oy * g.ow + ox) * kl + (ki * g.kw + kj) * cl + ch]);
            }
        }
        dxb[i] = s;
    }
}

// dx of images img0..img0+imgs = the sum of every cols entry that read each value, added in
// window order (ki, then kj) from zero: each channel's sum in the same order on both paths,
// so they give the same bits.
extern "C" __global__ void col2im(const float* cols, float* dx, i64 img0, i64 imgs, Geom g) {
    unsigned K = g.kh * g.kw * g.c, img_len = g.h * g.w * g.c;
    float* dxb = dx + img0 * img_len;
    if (g.c % 4 == 0 && AL16(cols) && AL16(dxb)) col2im_sums(CF4(cols), F4(dxb), imgs * img_len / 4, g.c / 4, K / 4, g);
    else col2im_sums(cols, dxb, imgs * img_len, g.c, K, g);
}

// A channels-last index split into image, row, column and channel (32-bit arithmetic: the
// launches stay under 2^31 values).
struct Pixel {
    size_t b;
    int y, x, ch;
};

__device__ Pixel split_index(i64 i, int h, int w, int c) {
    unsigned t = (unsigned)i;
    Pixel p;
    p.ch = t % c;
    t /= c;
    p.x = t % w;
    t /= w;
    p.y = t % h;
    p.b = t / h;
    return p;
}

// kind: 0 max, 1 average, 2 L2 (windows without padding, as the CPU kernels).
extern "C" __global__ void pool_forward(int kind, const float* x, float* y, Geom g) {
    i64 total = (i64)g.n * g.oh * g.ow * g.c;
    GRID_STRIDE(i, total) {
        Pixel o = split_index(i, g.oh, g.ow, g.c);
        size_t b = o.b;
        int oy = o.y, ox = o.x, ch = o.ch;
        float acc = kind == 0 ? -INFINITY : 0.0f;
        for (int ki = 0; ki < g.kh; ki++) {
            for (int kj = 0; kj < g.kw; kj++) {
                float v = x[((b * g.h + oy * g.sh + ki) * g.w + ox * g.sw + kj) * g.c + ch];
                if (kind == 0) acc = fmaxf(acc, v);
                else if (kind == 1) acc += v;
                else acc += v * v;
            }
        }
        if (kind == 1) acc *= 1.0f / (g.kh * g.kw);
        if (kind == 2) acc = sqrtf(acc);
        y[i] = acc;
    }
}

// Max routes each window's gradient to the first position (in window order) holding the max.
extern "C" __global__ void pool_backward(int kind, const float* x, const float* y, const float* dy, float* dx, Geom g) {
    i64 total = (i64)g.n * g.h * g.w * g.c;
    float inv = 1.0f / (g.kh * g.kw);
    GRID_STRIDE(i, total) {
        Pixel at = split_index(i, g.h, g.w, g.c);
        size_t b = at.b;
        int iy = at.y, ix = at.x, ch = at.ch;
        float s = 0.0f;
        int oy0 = iy >= g.kh ? (iy - g.kh) / g.sh + 1 : 0;
        int ox0 = ix >= g.kw ? (ix - g.kw) / g.sw + 1 : 0;
        for (int oy = oy0; oy < g.oh && oy * g.sh <= iy; oy++) {
            if (iy - oy * g.sh >= g.kh) continue;
            for (int ox = ox0; ox < g.ow && ox * g.sw <= ix; ox++) {
                if (ix - ox * g.sw >= g.kw) continue;
                i64 o = ((b * g.oh + oy) * g.ow + ox) * g.c + ch;
                if (kind == 0) {
                    float m = y[o];
                    int first = -1;
                    for (int ki = 0; ki < g.kh && first < 0; ki++)
                        for (int kj = 0; kj < g.kw; kj++)
                            if (x[((b * g.h + oy * g.sh + ki) * g.w + ox * g.sw + kj) * g.c + ch] == m) {
                                first = ki * g.kw + kj;
                                break;
                            }
                    if (first == (iy - oy * g.sh) * g.kw + (ix - ox * g.sw)) s += dy[o];
                } else if (kind == 1) {
                    s += dy[o] * inv;
                } else {
                    float nrm = y[o];
                    if (nrm > 0.0f) s += dy[o] * x[i] / nrm;
                }
            }
        }
        dx[i] = s;
    }
}

// pool_backward for windows that do not overlap (stride >= window, as 2x2 max-pooling): one
// thread a window writes the gradient of each of its values, each found once, where the
// gather above searched a window again for every value in it. Values that no window covers
// are zeroed beforehand by the host.
extern "C" __global__ void pool_backward_disjoint(int kind, const float* x, const float* y, const float* dy, float* dx,
                                                  Geom g) {
    i64 total = (i64)g.n * g.oh * g.ow * g.c;
    float inv = 1.0f / (g.kh * g.kw);
    GRID_STRIDE(i, total) {
        Pixel o = split_index(i, g.oh, g.ow, g.c);
        size_t b = o.b;
        int oy = o.y, ox = o.x, ch = o.ch;
        float m = y[i], d = dy[i];
        bool found = false;
        for (int ki = 0; ki < g.kh; ki++) {
            for (int kj = 0; kj < g.kw; kj++) {
                size_t at = ((b * g.h + oy * g.sh + ki) * g.w + ox * g.sw + kj) * g.c + ch;
                float v = 0.0f;
                if (kind == 0) {
                    // the first value (in window order) holding the max takes the gradient
                    if (!found && x[at] == m) {
                        found = true;
                        v = d;
                    }
                } else if (kind == 1) {
                    v = d * inv;
                } else if (m > 0.0f) {
                    v = d * x[at] / m;
                }
                dx[at] = v;
            }
        }
    }
}

// y[b, ch] = mean over positions of x[b, p, ch] (summed in position order, as on the CPU).
extern "C" __global__ void global_avg_pool_forward(const float* x, float* y, i64 batch, i64 positions, i64 channels) {
    float inv = 1.0f / positions;
    GRID_STRIDE(i, batch * channels) {
        unsigned ii = (unsigned)i;
        size_t b = ii / (unsigned)channels;
        unsigned ch = ii % (unsigned)channels;
        float s = 0.0f;
        for (i64 p = 0; p < positions; p++) s += x[(b * positions + p) * channels + ch];
        y[i] = s * inv;
    }
}

extern "C" __global__ void global_avg_pool_backward(const float* dy, float* dx, i64 batch, i64 positions, i64 channels) {
    float inv = 1.0f / positions;
    GRID_STRIDE(i, batch * positions * channels) {
        unsigned ii = (unsigned)i;
        unsigned ch = ii % (unsigned)channels, b = ii / (unsigned)(positions * channels);
        dx[i] = dy[b * channels + ch] * inv;
    }
}

// Images [n, h, w, c] <-> tokens [n, (h/p)·(w/p), p·p·c] (inverse: tokens to images).
extern "C" __global__ void patchify(const float* x, float* y, i64 n, int h, int w, int c, int p, int inverse) {
    i64 len = (i64)h * w * c;
    int tw = w / p;
    GRID_STRIDE(i, n * len) {
        unsigned ii = (unsigned)i;
        size_t b = ii / (unsigned)len;
        unsigned d = ii % (unsigned)len;
        int ch = d % c;
        unsigned t = d / c;
        int dx = t % p;
        t /= p;
        int dy = t % p;
        unsigned token = t / p;
        int ty = token / tw, tx = token % tw;
        i64 src = ((i64)(ty * p + dy) * w + tx * p + dx) * c + ch;
        if (inverse) y[b * len + src] = x[b * len + d];
        else y[b * len + d] = x[b * len + src];
    }
}

// y[b, j, i] = x[b, i, j] through a shared-memory tile (both sides coalesced).
extern "C" __global__ void transpose_batched(const float* x, float* y, int rows, int cols, i64 b0) {
    __shared__ float tile[32][33];
    i64 b = b0 + blockIdx.z;
    const float* xb = x + b * rows * cols;
    float* yb = y + b * rows * cols;
    int i0 = blockIdx.y * 32, j0 = blockIdx.x * 32;
    for (int k = threadIdx.y; k < 32; k += blockDim.y) {
        int i = i0 + k, j = j0 + threadIdx.x;
        if (i < rows && j < cols) tile[k][threadIdx.x] = xb[(i64)i * cols + j];
    }
    __syncthreads();
    for (int k = threadIdx.y; k < 32; k += blockDim.y) {
        int j = j0 + k, i = i0 + threadIdx.x;
        if (i < rows && j < cols) yb[(i64)j * rows + i] = tile[threadIdx.x][k];
    }
}
