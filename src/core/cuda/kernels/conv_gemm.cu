// Convolution as an implicit GEMM in 3xTF32 (gemm.cu's arithmetic: fp32's rounding on TF32
// tensor cores): the GEMM of im2col + GEMM, with each tile of A gathered from the image as it
// is loaded instead of from an im2col matrix written first. im2col writes, and the GEMM then
// reads, the columns (rows × K values: 300 MB for a 64→128 layer on 128 CIFAR images), as
// much memory traffic as the GEMM's arithmetic takes time on a Hopper GPU; here A's values come
// from the image (each value read by up to K·K windows, mostly from cache).
//
// C(row, j) = Σ_k A(row, k)·B(k, j), row = (image, oy, ox) of the output, k = (tap, ci) with
// tap = ky·kw + kx and ci < g.c (the image's channels, a multiple of 16, so that each 16-deep
// step of K has one tap):
//   A(row, k) = src[image, oy·sh − ph + ky, ox·sw − pw + kx, ci] (NHWC; 0 outside the image)
//   B(k, j)   = b[tap'·b_tap + ci·b_k + j·b_n], tap' = tap, or kh·kw − 1 − tap where `flip`
//   C(row, j) at c[row·n + j], j < n
// The forward pass is it with src = x, B the filters (KRSC: b_tap = Cin, b_k = 1, b_n = K);
// the input gradient of a stride-1 convolution is it with src = dy, padding kh − 1 − ph, the
// output positions the input's, and B the filters with flipped taps and the channels swapped
// (b_tap = Cin, b_k = K, b_n = 1). The host checks that every offset fits in 32 bits and every
// coordinate in 16 (A's rows keep theirs packed in one register), and launches the tiles of
// C's rows along the grid's x (there may be more than 65,535), its columns along y. The filter
// gradient, a sum over the batch's positions, is conv_filter_tile below.

#ifdef CNNLAB_TENSOR_CORES
// Four neighbouring values in one load: the host launches these kernels only on 16-byte aligned
// tensors (allocations are), with channel counts that keep each four so.
__device__ __forceinline__ float4 load4(const float* p) { return *(const float4*)p; }

template <int MT, int NT, bool PROMOTE>
__device__ void conv_split_tile(const float* __restrict__ src, const float* __restrict__ b, int b_tap, int b_k,
                                int b_n, int flip, float* __restrict__ c, int n, const Geom& g) {
    constexpr int BM = 32 * MT, BN = 32 * NT, BK = 16, ROWS_A = BM / 64;
    __shared__ float as[2][BK][BM + 8];
    __shared__ float bs[2][BK][BN + 8];
    const int rows = g.n * g.oh * g.ow;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g8 = lane >> 2, t = lane & 3;
    const int wm = (warp >> 2) * (BM / 2), wn = (warp & 3) * (BN / 4);

    // A: this thread loads channels ci0 + 4·q to ci0 + 4·q + 3 of rows threadIdx.x / 4 + 64·r
    // of the tile at each step (four neighbouring threads a row's 16 channels). Each row's
    // offset at tap 0, and the image coordinates of its window's corner (y in the high half, x
    // in the low; a row past C's has y far below 0, so that no tap is inside the image).
    const int q = threadIdx.x & 3;
    int base[ROWS_A];
    unsigned corner[ROWS_A];
    #pragma unroll
    for (int r = 0; r < ROWS_A; r++) {
        const int row = m0 + (threadIdx.x >> 2) + 64 * r;
        int y = -0x4000, x = 0;
        base[r] = 0;
        if (row < rows) {
            const int image = row / (g.oh * g.ow), at = row % (g.oh * g.ow);
            y = at / g.ow * g.sh - g.ph;
            x = at % g.ow * g.sw - g.pw;
            base[r] = ((image * g.h + y) * g.w + x) * g.c + 4 * q;
        }
        corner[r] = ((unsigned)y << 16) | ((unsigned)x & 0xffffu);
    }
    TileMap<BN> map_b;
    tile_map(map_b, n0, n, b_n, b_k);
    float4 ra[ROWS_A];
    float rb[TileMap<BN>::PER_THREAD];
    const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    float acc[MT][NT][4];
    zero_tile<MT, NT>(acc);

    const int taps = g.kh * g.kw, steps = taps * (g.c / BK);
    // the step loaded next: its tap (ky, kx) and first channel
    int tap = 0, ky = 0, kx = 0, ci0 = 0;
    for (int kt = 0; kt <= steps; kt++) {
        const int cur = kt & 1;
        if (kt < steps) {
            // this step's tiles into registers (in flight while the last one is multiplied)
            const int offset = (ky * g.w + kx) * g.c + ci0;
            #pragma unroll
            for (int r = 0; r < ROWS_A; r++) {
                const int y = (int)corner[r] >> 16, x = (int)(corner[r] << 16) >> 16;
                const bool inside = (unsigned)(y + ky) < (unsigned)g.h && (unsigned)(x + kx) < (unsigned)g.w;
                ra[r] = inside ? load4(src + base[r] + offset) : zero;
            }
            tile_load(map_b, b + (flip ? taps - 1 - tap : tap) * b_tap + ci0 * b_k, 0, BK, b_k, rb);
            ci0 += BK;
            if (ci0 == g.c) {
                ci0 = 0;
                tap++;
                if (++kx == g.kw) kx = 0, ky++;
            }
        }
        if (kt > 0) split_products<MT, NT, PROMOTE, BM, BN>(as[cur ^ 1], bs[cur ^ 1], wm, wn, g8, t, acc);
        if (kt < steps) {
            #pragma unroll
            for (int r = 0; r < ROWS_A; r++) {
                const int row = (threadIdx.x >> 2) + 64 * r;
                as[cur][4 * q][row] = ra[r].x;
                as[cur][4 * q + 1][row] = ra[r].y;
                as[cur][4 * q + 2][row] = ra[r].z;
                as[cur][4 * q + 3][row] = ra[r].w;
            }
            tile_store(map_b, bs[cur], rb);
        }
        __syncthreads();
    }
    store_tile<MT, NT>(acc, c, n, rows, n, m0 + wm, n0 + wn, g8, t, 0);
}

// The filter gradient as an implicit GEMM: dW(co, k) = Σ_pos dy(pos, co)·A(pos, k), with
// A(pos, k) as above (pos = (image, oy, ox) of the output, k = (tap, ci), g the forward's
// geometry), summed over the positions of blockIdx.z's slice (slice_k of them, a multiple of
// 16) into its own matrix of partial sums at c + z·cout·K where there are several slices
// (gemm_sum_slices adds them in order), else into dW (KRSC, cout × K). Both operands are
// contiguous along C's rows and columns (dy's output channels, the image's channels), so each
// thread moves four of them at once (load4), which needs both channel counts in fours.
template <int MT, int NT, bool PROMOTE>
__device__ void conv_filter_tile(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ c,
                                 int cout, int slice_k, const Geom& g) {
    constexpr int BM = 32 * MT, BN = 32 * NT, BK = 16;
    // four-value groups along a tile's row, and the K steps' rows each thread loads
    constexpr int GA = BM / 4, GB = BN / 4, RA = BM * BK / 4 / 256, RB = BN * BK / 4 / 256;
    alignas(16) __shared__ float as[2][BK][BM + 8];
    alignas(16) __shared__ float bs[2][BK][BN + 8];
    const int rows = g.n * g.oh * g.ow, k = g.kh * g.kw * g.c;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g8 = lane >> 2, t = lane & 3;
    const int wm = (warp >> 2) * (BM / 2), wn = (warp & 3) * (BN / 4);
    const int first = blockIdx.z * slice_k, end = first + slice_k < rows ? first + slice_k : rows;
    c += (i64)blockIdx.z * cout * k;

    // A (dy): output channels co..co + 3 at positions first + a_kk + (BK / RA)·r of each step
    const int co = m0 + 4 * (threadIdx.x % GA), a_kk = threadIdx.x / GA;
    // B (the image): this thread's columns j..j + 3 (one tap, channels ci..ci + 3) at positions
    // first + b_kk + (BK / RB)·r of each step, each tracked as (image, oy, ox)
    const int j = n0 + 4 * (threadIdx.x % GB), b_kk = threadIdx.x / GB;
    const int tap = j / g.c, ci = j % g.c, ky = tap / g.kw - g.ph, kx = tap % g.kw - g.pw;
    int image[RB], oy[RB], ox[RB];
    #pragma unroll
    for (int r = 0; r < RB; r++) {
        const int pos = first + b_kk + (BK / RB) * r;
        image[r] = pos / (g.oh * g.ow);
        oy[r] = pos % (g.oh * g.ow) / g.ow;
        ox[r] = pos % g.ow;
    }
    float4 ra[RA], rb[RB];
    float acc[MT][NT][4];
    zero_tile<MT, NT>(acc);

    const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const int steps = end > first ? (end - first + BK - 1) / BK : 0;
    for (int kt = 0; kt <= steps; kt++) {
        const int cur = kt & 1, pos0 = first + kt * BK;
        if (kt < steps) {
            #pragma unroll
            for (int r = 0; r < RA; r++) {
                const int pos = pos0 + a_kk + (BK / RA) * r;
                ra[r] = pos < end && co < cout ? load4(dy + (i64)pos * cout + co) : zero;
            }
            #pragma unroll
            for (int r = 0; r < RB; r++) {
                const int pos = pos0 + b_kk + (BK / RB) * r;
                const int y = oy[r] * g.sh + ky, xx = ox[r] * g.sw + kx;
                const bool inside = pos < end && j < k && (unsigned)y < (unsigned)g.h && (unsigned)xx < (unsigned)g.w;
                rb[r] = inside ? load4(x + (((i64)image[r] * g.h + y) * g.w + xx) * g.c + ci) : zero;
                // the position BK further on
                ox[r] += BK;
                while (ox[r] >= g.ow) {
                    ox[r] -= g.ow;
                    if (++oy[r] == g.oh) oy[r] = 0, image[r]++;
                }
            }
        }
        if (kt > 0) split_products<MT, NT, PROMOTE, BM, BN>(as[cur ^ 1], bs[cur ^ 1], wm, wn, g8, t, acc);
        if (kt < steps) {
            #pragma unroll
            for (int r = 0; r < RA; r++) *(float4*)&as[cur][a_kk + (BK / RA) * r][4 * (threadIdx.x % GA)] = ra[r];
            #pragma unroll
            for (int r = 0; r < RB; r++) *(float4*)&bs[cur][b_kk + (BK / RB) * r][4 * (threadIdx.x % GB)] = rb[r];
        }
        __syncthreads();
    }
    store_tile<MT, NT>(acc, c, k, cout, k, m0 + wm, n0 + wn, g8, t, 0);
}
#endif

// Tiles of C of 128×128, 128×64 (64 columns: a 64-channel input's gradient) and 64×64 (few
// rows or columns), each with the tensor core's own sums or promoted ones (see split_products);
// empty below compute capability 8.0, where the host never launches them
#define CONV_SPLIT_ARGS                                                                              \
    const float *src, const float *b, int b_tap, int b_k, int b_n, int flip, float *c, int n, Geom g
#define CONV_SPLIT_PASS src, b, b_tap, b_k, b_n, flip, c, n, g
#define CONV_FILTER_ARGS const float *x, const float *dy, float *c, int cout, int slice_k, Geom g
#define CONV_FILTER_PASS x, dy, c, cout, slice_k, g

extern "C" __global__ void conv_split_128(CONV_SPLIT_ARGS) {
#ifdef CNNLAB_TENSOR_CORES
    conv_split_tile<4, 4, false>(CONV_SPLIT_PASS);
#endif
}

extern "C" __global__ void conv_split_64(CONV_SPLIT_ARGS) {
#ifdef CNNLAB_TENSOR_CORES
    conv_split_tile<2, 2, false>(CONV_SPLIT_PASS);
#endif
}

extern "C" __global__ void conv_split_128_promoted(CONV_SPLIT_ARGS) {
#ifdef CNNLAB_TENSOR_CORES
    conv_split_tile<4, 4, true>(CONV_SPLIT_PASS);
#endif
}

extern "C" __global__ void conv_split_64_promoted(CONV_SPLIT_ARGS) {
#ifdef CNNLAB_TENSOR_CORES
    conv_split_tile<2, 2, true>(CONV_SPLIT_PASS);
#endif
}

extern "C" __global__ void conv_filter_128(CONV_FILTER_ARGS) {
#ifdef CNNLAB_TENSOR_CORES
    conv_filter_tile<4, 4, false>(CONV_FILTER_PASS);
#endif
}

extern "C" __global__ void conv_filter_64(CONV_FILTER_ARGS) {
#ifdef CNNLAB_TENSOR_CORES
    conv_filter_tile<2, 2, false>(CONV_FILTER_PASS);
#endif
}

extern "C" __global__ void conv_filter_128_promoted(CONV_FILTER_ARGS) {
#ifdef CNNLAB_TENSOR_CORES
    conv_filter_tile<4, 4, true>(CONV_FILTER_PASS);
#endif
}

extern "C" __global__ void conv_filter_64_promoted(CONV_FILTER_ARGS) {
#ifdef CNNLAB_TENSOR_CORES
    conv_filter_tile<2, 2, true>(CONV_FILTER_PASS);
#endif
}

extern "C" __global__ void conv_split_128x64(CONV_SPLIT_ARGS) {
#ifdef CNNLAB_TENSOR_CORES
    conv_split_tile<4, 2, false>(CONV_SPLIT_PASS);
#endif
}

extern "C" __global__ void conv_split_128x64_promoted(CONV_SPLIT_ARGS) {
#ifdef CNNLAB_TENSOR_CORES
    conv_split_tile<4, 2, true>(CONV_SPLIT_PASS);
#endif
}

extern "C" __global__ void conv_filter_128x64(CONV_FILTER_ARGS) {
#ifdef CNNLAB_TENSOR_CORES
    conv_filter_tile<4, 2, false>(CONV_FILTER_PASS);
#endif
}

extern "C" __global__ void conv_filter_128x64_promoted(CONV_FILTER_ARGS) {
#ifdef CNNLAB_TENSOR_CORES
    conv_filter_tile<4, 2, true>(CONV_FILTER_PASS);
#endif
}
