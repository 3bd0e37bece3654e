// Shared by every kernel file: 64-bit indices and grid-stride loops, so one launch shape
// serves any size.
typedef long long i64;
#define GRID_STRIDE(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (i64)(n); i += (i64)gridDim.x * blockDim.x)
// NVRTC has no <math.h> constants
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
// Streaming kernels move four values a thread (16-byte loads and stores) where their pointers
// are 16-byte aligned (allocations are; a view into one may not be), else one at a time; the
// host launches one thread per four values either way (grid-stride loops cover the rest).
#define AL16(p) ((((size_t)(p)) & 15) == 0)
#define F4(p) ((float4*)(p))
#define CF4(p) ((const float4*)(p))

// The loop of a streaming kernel over n values: vec(i) for each float4 i < n / 4 where
// `aligned`, then one(i) for each value the float4s did not cover.
template <class Vec, class One>
__device__ void stream4(i64 n, bool aligned, Vec vec, One one) {
    i64 done = 0;
    if (aligned) {
        done = n / 4 * 4;
        GRID_STRIDE(i, n / 4) vec(i);
    }
    GRID_STRIDE(i, n - done) one(done + i);
}
