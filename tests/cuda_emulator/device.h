// CUDA C's device-side vocabulary for the CPU emulator (see emulator.md): the kernels in
// src/core/cuda/kernels/ compile unchanged as C++ and run one emulated thread at a time.
// Thread and block indices are globals set by the scheduler (driver.cpp); __shared__ arrays
// are statics (one block runs at a time in the process);
// barriers and warp shuffles switch between the block's threads (fibers).
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

struct dim3 {
    unsigned x, y, z;
};

// CUDA's vector type for 16-byte loads and stores
struct alignas(16) float4 {
    float x, y, z, w;
};
static inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

namespace emu {
// plain globals (not thread-locals, which a loaded library reads through a call): one
// launch runs at a time in the process (driver.cpp holds a lock around each)
extern dim3 thread_idx, block_idx, block_dim, grid_dim;
// __syncthreads: waits for every thread of the block still running
void sync_block();
// __shfl_xor_sync with a full mask: the value of lane (lane ^ mask) of the same warp
uint64_t shfl_xor_bits(uint64_t bits, int mask);
template <class T>
T shfl_xor(T v, int mask) {
    static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    bits = shfl_xor_bits(bits, mask);
    T out;
    memcpy(&out, &bits, sizeof(T));
    return out;
}
}  // namespace emu

#define threadIdx (emu::thread_idx)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)
#define __global__
#define __device__ static inline
#define __forceinline__
#define __restrict__
#define __shared__ static
#define __syncthreads() emu::sync_block()

template <class T>
static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
    (void)mask;
    return emu::shfl_xor(v, lane_mask);
}

static inline float __int_as_float(int i) {
    float f;
    memcpy(&f, &i, 4);
    return f;
}
static inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
