// CUDA C's device-side vocabulary for the CPU emulator (see emulator.md): the kernels in
// src/core/cuda/kernels/ compile unchanged as C++ and run one emulated thread at a time.
// Thread and block indices are globals set by the scheduler (driver.cpp); __shared__ arrays
// are statics (one block runs at a time in the process);
// barriers and warp shuffles switch between the block's threads (fibers).
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

// the kernels take their emulator branches (tensor-core instructions, written in PTX on a GPU)
#define CNNLAB_EMULATOR 1

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
// each lane's `count` values (at most 8) to every lane of its warp: all[lane · count + i];
// the warp's live threads all take part, as in a tensor-core instruction
void warp_gather(const float* mine, int count, float* all);
// the calling thread's lane in its warp
int lane();
// Called by each thread where a __shared__ array is declared: the block's first thread to
// come there fills it with NaN bytes, so that a value read before the block wrote it shows,
// as a fresh allocation's does (a GPU would hand over what its last block left there).
void shared_fill(void* array, size_t bytes);

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32, d += a·b, in the PTX ISA's fragment
// layout (g = lane / 4, t = lane % 4): a holds A(g, t), A(g + 8, t), A(g, t + 4), A(g + 8, t + 4);
// b holds B(t, g), B(t + 4, g); d holds D(g, 2t), D(g, 2t + 1), D(g + 8, 2t), D(g + 8, 2t + 1).
// The tensor core reads only the TF32 bits of a and b; the eight products are summed in
// fp32 in K order (a stand-in for the hardware's own order and rounding).
static inline void mma_m16n8k8(float* d, const unsigned* a, const unsigned* b) {
    float mine[6], all[32 * 6];
    for (int i = 0; i < 4; i++) {
        unsigned v = a[i] & 0xffffe000u;
        memcpy(&mine[i], &v, 4);
    }
    for (int i = 0; i < 2; i++) {
        unsigned v = b[i] & 0xffffe000u;
        memcpy(&mine[4 + i], &v, 4);
    }
    warp_gather(mine, 6, all);
    const int g = lane() >> 2, t = lane() & 3;
    for (int r = 0; r < 4; r++) {
        const int row = g + 8 * (r >> 1), col = 2 * t + (r & 1);
        float s = d[r];
        for (int kk = 0; kk < 8; kk++) {
            const float av = all[(4 * (row & 7) + (kk & 3)) * 6 + (row >> 3) + 2 * (kk >> 2)];
            const float bv = all[(4 * col + (kk & 3)) * 6 + 4 + (kk >> 2)];
            s = fmaf(av, bv, s);
        }
        d[r] = s;
    }
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
// A __shared__ array is a static, and tests/cuda_emulator/mod.rs writes a call of
// emu::shared_fill after each declaration in the emulator's copy of the kernels.
#define __shared__ static
#define __syncthreads() emu::sync_block()

template <class T>
static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
    (void)mask;
    return emu::shfl_xor(v, lane_mask);
}

// fp32 operations rounded on their own, never fused into an FMA (the empty asm keeps the
// compiler from contracting them, as CUDA's _rn intrinsics are never contracted)
static inline float __fmul_rn(float a, float b) {
    float r = a * b;
    asm("" : "+x"(r));
    return r;
}
static inline float __fsub_rn(float a, float b) {
    float r = a - b;
    asm("" : "+x"(r));
    return r;
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
