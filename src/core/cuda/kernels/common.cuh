// Shared by every kernel file: 64-bit indices and grid-stride loops, so one launch shape
// serves any size.
typedef long long i64;
#define GRID_STRIDE(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (i64)(n); i += (i64)gridDim.x * blockDim.x)
// NVRTC has no <math.h> constants
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
