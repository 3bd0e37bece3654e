// GEMM in "3xTF32": fp32's rounding on TF32 tensor cores (compute capability 8.0 and newer).
// Each fp32 operand is split in registers into two TF32 values, x = hi + lo (hi: x rounded
// to TF32's 11 significant bits; lo: the rest, rounded again, so x - hi - lo is under 2^-22 of
// x), and a·b = a_lo·b_hi + a_hi·b_lo + a_hi·b_hi on the tensor core, whose TF32 products are
// exact and sum in fp32; the left-out a_lo·b_lo is under 2^-22 of the product. CUTLASS calls it
// 3xTF32; it rounds like an fp32 GEMM give or take a small factor. The host times it against
// cuBLAS's fp32 GEMM per shape and takes it only where its result agrees (see gemm.rs).
//
// Row-major C = A·B (+ C): A(i, k) at a[i·sam + k·sak], B(k, j) at b[k·sbk + j·sbn] (any
// strides; loads are coalesced along whichever is 1), C(i, j) at c[i·ldc + j]; blockIdx.z
// picks a matrix of a batch (strides stride_a/b/c). Offsets within one matrix are 32-bit (the
// host checks); a block computes a (32·MT)×(32·NT) tile of C with 8 warps (2 along M, 4 along
// N), each warp MT×NT tensor-core tiles of 16×8, taking K 16 at a time through shared memory
// (two buffers: one sync a step). Where C has too few tiles to fill the GPU and K is long, K is
// cut into slices whose partial sums gemm_sum_slices adds (split-K, in a fixed order).

#if defined(CNNLAB_EMULATOR) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800)
#define CNNLAB_TENSOR_CORES 1
#endif

#ifdef CNNLAB_TENSOR_CORES
// d = a·b for one warp (the same fragments, the sums starting from zero)
__device__ __forceinline__ void mma_tf32_from_zero(float* d, const unsigned* a, const unsigned* b) {
#ifdef CNNLAB_EMULATOR
    d[0] = d[1] = d[2] = d[3] = 0.0f;
    emu::mma_m16n8k8(d, a, b);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(0.0f));
#endif
}

// x as hi + lo, both TF32 (as fp32 bits). hi is x rounded to TF32's 11 significant bits by
// Veltkamp's split (c = x·(2^13 + 1), hi = c − (c − x): three fp32 operations, against about four
// a conversion, cvt.rna.tf32, for each of hi and lo); x − hi is then exact, and lo is it rounded
// to TF32 on its bits (its exponent is 11 below x's, so the carry never reaches the sign). A NaN
// stays one in hi; so do an infinity and a value above 2^115, whose c overflows (the GEMM's sums
// would be no better). The _rn operations are never fused into an FMA, which would break the split.
__device__ __forceinline__ void split_to_tf32(float x, unsigned& hi, unsigned& lo) {
    const float c = __fmul_rn(x, 8193.0f);
    const float h = __fsub_rn(c, __fsub_rn(c, x));
    hi = __float_as_uint(h);
    lo = (__float_as_uint(__fsub_rn(x, h)) + 0x1000u) & 0xffffe000u;
}

// d += a·b for one warp: a 16×8 tile of A (row-major), an 8×8 tile of B (column-major), a
// 16×8 tile of d, each lane holding the values the PTX ISA's m16n8k8 fragment layout gives it
__device__ __forceinline__ void mma_tf32(float* d, const unsigned* a, const unsigned* b) {
#ifdef CNNLAB_EMULATOR
    emu::mma_m16n8k8(d, a, b);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// Where each thread's values of one operand's tile (ROWS × 16 of K) come from: element
// e = threadIdx.x + 256·r of the tile sits at (row, kk) = (e / 16, e % 16) where the operand is
// contiguous along K, else at (e % ROWS, e / ROWS), so that neighbouring threads read
// neighbouring addresses either way.
template <int ROWS>
struct TileMap {
    static constexpr int PER_THREAD = ROWS * 16 / 256;
    int offset[PER_THREAD];  // within the matrix, at K = 0
    unsigned char kk[PER_THREAD], row[PER_THREAD];
    bool in_rows[PER_THREAD];
};

template <int ROWS>
__device__ void tile_map(TileMap<ROWS>& map, int first_row, int rows, int s_row, int s_k) {
    const bool k_unit = s_k == 1;
    #pragma unroll
    for (int r = 0; r < TileMap<ROWS>::PER_THREAD; r++) {
        const int e = threadIdx.x + 256 * r;
        map.row[r] = k_unit ? e / 16 : e % ROWS;
        map.kk[r] = k_unit ? e % 16 : e / ROWS;
        map.in_rows[r] = first_row + map.row[r] < rows;
        map.offset[r] = map.in_rows[r] ? (first_row + map.row[r]) * s_row + map.kk[r] * s_k : 0;
    }
}

// the tile at K = k0 into registers, zero outside the matrix
template <int ROWS>
__device__ void tile_load(const TileMap<ROWS>& map, const float* __restrict__ x, int k0, int k, int s_k, float* v) {
    const float* __restrict__ at_k0 = x + (i64)k0 * s_k;
    #pragma unroll
    for (int r = 0; r < TileMap<ROWS>::PER_THREAD; r++)
        v[r] = map.in_rows[r] && k0 + map.kk[r] < k ? at_k0[map.offset[r]] : 0.0f;
}

template <int ROWS>
__device__ void tile_store(const TileMap<ROWS>& map, float (*tile)[ROWS + 8], const float* v) {
    #pragma unroll
    for (int r = 0; r < TileMap<ROWS>::PER_THREAD; r++) tile[map.kk[r]][map.row[r]] = v[r];
}

// acc += the 16-deep step of A's and B's tiles in shared memory (K-major, as gemm_split_tile
// keeps them) for this warp's MT×NT tensor-core tiles at (wm, wn) of the block's tile. PROMOTE:
// each 8-deep step's three products go to a sum of their own, added to C's sums with an fp32
// addition (rounded to nearest) rather than inside the tensor core, whose fp32 sums are reported
// to truncate (Fasi et al., "Numerical behavior of NVIDIA tensor cores", 2021: round toward zero
// on V100, T4 and A100), an error that grows with K along one sum. Four more additions a tile
// and step; which variant runs, and whether either passes the comparison with cuBLAS, is
// measured per shape.
template <int MT, int NT, bool PROMOTE, int BM, int BN>
__device__ __forceinline__ void split_products(const float (*as)[BM + 8], const float (*bs)[BN + 8], int wm, int wn,
                                               int g, int t, float (&acc)[MT][NT][4]) {
    // this lane's first value of each fragment; the others at constant offsets from it
    const float* a_frag = &as[t][wm + g];
    const float* b_frag = &bs[t][wn + g];
    #pragma unroll
    for (int ks = 0; ks < 16; ks += 8) {
        unsigned ahi[MT][4], alo[MT][4], bhi[NT][2], blo[NT][2];
        #pragma unroll
        for (int i = 0; i < MT; i++) {
            const float* at = a_frag + ks * (BM + 8) + 16 * i;
            split_to_tf32(at[0], ahi[i][0], alo[i][0]);
            split_to_tf32(at[8], ahi[i][1], alo[i][1]);
            split_to_tf32(at[4 * (BM + 8)], ahi[i][2], alo[i][2]);
            split_to_tf32(at[4 * (BM + 8) + 8], ahi[i][3], alo[i][3]);
        }
        #pragma unroll
        for (int j = 0; j < NT; j++) {
            const float* at = b_frag + ks * (BN + 8) + 8 * j;
            split_to_tf32(at[0], bhi[j][0], blo[j][0]);
            split_to_tf32(at[4 * (BN + 8)], bhi[j][1], blo[j][1]);
        }
        // the small terms first, into the same fp32 sums
        #pragma unroll
        for (int i = 0; i < MT; i++)
            #pragma unroll
            for (int j = 0; j < NT; j++) {
                if (PROMOTE) {
                    float step[4];
                    mma_tf32_from_zero(step, alo[i], bhi[j]);
                    mma_tf32(step, ahi[i], blo[j]);
                    mma_tf32(step, ahi[i], bhi[j]);
                    #pragma unroll
                    for (int r = 0; r < 4; r++) acc[i][j][r] += step[r];
                } else {
                    mma_tf32(acc[i][j], alo[i], bhi[j]);
                    mma_tf32(acc[i][j], ahi[i], blo[j]);
                    mma_tf32(acc[i][j], ahi[i], bhi[j]);
                }
            }
    }
}

// This warp's sums, from zero.
template <int MT, int NT>
__device__ __forceinline__ void zero_tile(float (&acc)[MT][NT][4]) {
    #pragma unroll
    for (int i = 0; i < MT; i++)
        #pragma unroll
        for (int j = 0; j < NT; j++)
            #pragma unroll
            for (int r = 0; r < 4; r++) acc[i][j][r] = 0.0f;
}

// This warp's MT×NT tensor-core tiles of C, whose first row and column are (row0, col0): C = acc
// (+ C), inside m×n only. d's fragment: rows g and g + 8, columns 2t and 2t + 1 of each 16×8 tile.
template <int MT, int NT>
__device__ __forceinline__ void store_tile(const float (&acc)[MT][NT][4], float* __restrict__ c, int ldc, int m, int n,
                                           int row0, int col0, int g, int t, int accumulate) {
    #pragma unroll
    for (int i = 0; i < MT; i++)
        #pragma unroll
        for (int j = 0; j < NT; j++)
            #pragma unroll
            for (int r = 0; r < 4; r++) {
                const int row = row0 + 16 * i + g + 8 * (r >> 1), col = col0 + 8 * j + 2 * t + (r & 1);
                if (row < m && col < n) {
                    float* at = c + row * ldc + col;
                    *at = accumulate ? *at + acc[i][j][r] : acc[i][j][r];
                }
            }
}

// The block's (32·MT)×(32·NT) tile of C (see the top of the file; PROMOTE: see split_products).
template <int MT, int NT, bool PROMOTE>
__device__ void gemm_split_tile(int m, int n, int k, const float* __restrict__ a, int sam, int sak,
                                const float* __restrict__ b, int sbk, int sbn, float* __restrict__ c, int ldc,
                                i64 stride_a, i64 stride_b, i64 stride_c, int accumulate, int slices, int slice_k) {
    constexpr int BM = 32 * MT, BN = 32 * NT, BK = 16;
    // K-major tiles; the padding of 8 puts a fragment's 32 loads in 32 banks
    __shared__ float as[2][BK][BM + 8];
    __shared__ float bs[2][BK][BN + 8];
    // blockIdx.z: a matrix of the batch, and a slice of K (slice_k values, a multiple of 16)
    // whose sum goes to C's own matrix of partial sums (stride_c apart, one per z) where
    // there are several slices
    const int batch = blockIdx.z / slices, slice = blockIdx.z % slices;
    a += batch * stride_a + (i64)slice * slice_k * sak;
    b += batch * stride_b + (i64)slice * slice_k * sbk;
    c += blockIdx.z * stride_c;
    k = k - slice * slice_k < slice_k ? k - slice * slice_k : slice_k;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int wm = (warp >> 2) * (BM / 2), wn = (warp & 3) * (BN / 4);
    TileMap<BM> map_a;
    TileMap<BN> map_b;
    tile_map(map_a, m0, m, sam, sak);
    tile_map(map_b, n0, n, sbn, sbk);
    float ra[TileMap<BM>::PER_THREAD], rb[TileMap<BN>::PER_THREAD];
    float acc[MT][NT][4];
    zero_tile<MT, NT>(acc);

    const int tiles = k > 0 ? (k + BK - 1) / BK : 0;
    tile_load(map_a, a, 0, k, sak, ra);
    tile_load(map_b, b, 0, k, sbk, rb);
    tile_store(map_a, as[0], ra);
    tile_store(map_b, bs[0], rb);
    __syncthreads();
    for (int kt = 0; kt < tiles; kt++) {
        const int cur = kt & 1;
        // the next tile's loads are in flight while this one is multiplied
        if (kt + 1 < tiles) {
            tile_load(map_a, a, (kt + 1) * BK, k, sak, ra);
            tile_load(map_b, b, (kt + 1) * BK, k, sbk, rb);
        }
        split_products<MT, NT, PROMOTE, BM, BN>(as[cur], bs[cur], wm, wn, g, t, acc);
        if (kt + 1 < tiles) {
            tile_store(map_a, as[cur ^ 1], ra);
            tile_store(map_b, bs[cur ^ 1], rb);
        }
        __syncthreads();
    }
    store_tile<MT, NT>(acc, c, ldc, m, n, m0 + wm, n0 + wn, g, t, accumulate);
}
#endif

// 128×128 tiles (large GEMMs) and 64×64 (GEMMs with few tiles of the larger size), each with
// the tensor core's own sums or promoted ones; empty below compute capability 8.0, where the
// host never launches them
#define GEMM_SPLIT_ARGS                                                                                     \
    int m, int n, int k, const float *a, int sam, int sak, const float *b, int sbk, int sbn, float *c, int ldc, \
        i64 stride_a, i64 stride_b, i64 stride_c, int accumulate, int slices, int slice_k
#define GEMM_SPLIT_PASS m, n, k, a, sam, sak, b, sbk, sbn, c, ldc, stride_a, stride_b, stride_c, accumulate, slices, slice_k

extern "C" __global__ void gemm_split_128(GEMM_SPLIT_ARGS) {
#ifdef CNNLAB_TENSOR_CORES
    gemm_split_tile<4, 4, false>(GEMM_SPLIT_PASS);
#endif
}

extern "C" __global__ void gemm_split_64(GEMM_SPLIT_ARGS) {
#ifdef CNNLAB_TENSOR_CORES
    gemm_split_tile<2, 2, false>(GEMM_SPLIT_PASS);
#endif
}

extern "C" __global__ void gemm_split_128_promoted(GEMM_SPLIT_ARGS) {
#ifdef CNNLAB_TENSOR_CORES
    gemm_split_tile<4, 4, true>(GEMM_SPLIT_PASS);
#endif
}

extern "C" __global__ void gemm_split_64_promoted(GEMM_SPLIT_ARGS) {
#ifdef CNNLAB_TENSOR_CORES
    gemm_split_tile<2, 2, true>(GEMM_SPLIT_PASS);
#endif
}

// C = the sum of a split-K GEMM's partial sums (+ C): matrix z of `partials` (m×n, contiguous)
// is slice z % slices of batch matrix z / slices; the slices are added in order, so the sum does
// not depend on timing. All the partial sums number under 2^31 (the host checks): 32-bit
// divisions, a third of 64-bit ones' instructions.
extern "C" __global__ void gemm_sum_slices(const float* partials, int slices, int m, int n, float* c, int ldc,
                                           i64 stride_c, i64 count, int accumulate) {
    const unsigned per = (unsigned)m * (unsigned)n;
    GRID_STRIDE(idx, count * per) {
        const unsigned batch = (unsigned)idx / per, at = (unsigned)idx % per;
        const float* p = partials + (i64)batch * slices * per + at;
        float sum = p[0];
        for (int s = 1; s < slices; s++) sum += p[(i64)s * per];
        float* dst = c + batch * stride_c + (i64)(at / (unsigned)n) * ldc + at % (unsigned)n;
        *dst = accumulate ? *dst + sum : sum;
    }
}
