//! The CPU backend: `Vec<f32>` buffers, GEMM from the `gemm` crate (runtime dispatch to
//! AVX2/FMA or AVX-512 kernels), threads from rayon. The kernels are in one file per op
//! family (`elementwise`, `window`, `norm`, `loss`, `optim`, `attention`, `gather`), as in
//! `core/cuda/`.
//!
//! Intra-op parallelism is bounded per thread by [`with_intra_op_threads`]: an experiment that
//! trains many small models runs one model per core and sets 1 inside each, while a single
//! large run uses every thread inside each op. Work is always split the same way for a given
//! thread count, so a seed and a thread count give the same numbers.

mod attention;
mod columns;
pub(crate) mod elementwise;
mod gather;
mod loss;
pub mod math;
mod norm;
mod optim;
mod window;

use crate::core::backend::BackendBase;
use std::cell::Cell;

/// The CPU backend (a marker type: all state lives in the buffers).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

thread_local! {
    static INTRA_OP_THREADS: Cell<usize> = const { Cell::new(0) };
    static IN_GEMM: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread is inside a GEMM call. The `gemm` crate allocates its packing
/// buffer on every call (a thread-cached malloc of a few KB: well under 1% of a step, measured
/// with perf on the MNIST-1D CNN); the allocation test uses this to tell those allocations
/// from any of ours, of which there must be none in a steady-state step.
#[doc(hidden)]
pub fn in_gemm() -> bool {
    IN_GEMM.with(|c| c.get())
}

/// Threads an op may use on the calling thread (0 means: all of rayon's pool).
pub fn intra_op_threads() -> usize {
    let n = INTRA_OP_THREADS.with(|c| c.get());
    if n == 0 {
        rayon::current_num_threads()
    } else {
        n
    }
}

/// Runs `f` with ops on this thread limited to `threads` threads (0: all of the pool).
pub fn with_intra_op_threads<R>(threads: usize, f: impl FnOnce() -> R) -> R {
    let previous = INTRA_OP_THREADS.with(|c| c.replace(threads));
    let out = f();
    INTRA_OP_THREADS.with(|c| c.set(previous));
    out
}

/// Makes the calling thread flush denormal floats to zero (x86 FTZ and DAZ). Late in training
/// gradients shrink into the denormal range, where each operation can cost a hundred cycles:
/// measured on the MNIST-1D CNN, ReLU's backward alone took 24% of the step before this.
pub fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: only sets the FTZ (bit 15) and DAZ (bit 6) flags of this thread's MXCSR.
    #[allow(deprecated)]
    unsafe {
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        _mm_setcsr(_mm_getcsr() | 0x8040);
    }
}

/// Builds rayon's global pool with `threads` workers (0, or more than the cores: one per
/// core), each flushing denormals; returns the workers it has. Call once, before any op runs;
/// later calls keep the first pool.
pub fn init_thread_pool(threads: usize) -> crate::error::Result<usize> {
    // capped at the machine's cores: more only slows every op down (and 10^5 threads take
    // minutes to start)
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads = if threads == 0 { cores } else { threads.min(cores) };
    let built =
        rayon::ThreadPoolBuilder::new().num_threads(threads).start_handler(|_| flush_denormals()).build_global();
    match built {
        Ok(()) => Ok(threads),
        // a pool already exists (a library user built their own): keep it
        Err(_) => Ok(rayon::current_num_threads()),
    }
}

/// Below this many multiply-adds a GEMM runs on one thread. Measured (W3a, 2 threads): with
/// the threshold at 2^18 the MLP's 1M-MAC GEMMs ran threaded and training was 1.5x slower than
/// on one thread; convolutions split the batch across threads instead (`conv2d.rs`).
const PARALLEL_GEMM_MIN_MACS: usize = 1 << 22;
/// Below this many values an element-wise op runs on one thread.
pub(crate) const PARALLEL_MIN_ELEMS: usize = 1 << 15;

/// How many chunks to split `len` items into, and the chunk length (at least `min_chunk`).
pub(crate) fn chunking(len: usize, min_chunk: usize) -> usize {
    let threads = intra_op_threads();
    if threads <= 1 || len <= min_chunk {
        return len.max(1);
    }
    len.div_ceil(threads).max(min_chunk)
}

/// Runs `f(chunk_index, chunk)` over `data` in chunks of `chunk` values: inline when there is
/// one chunk (no thread hand-off), on rayon's pool otherwise.
pub(crate) fn for_each_chunk_mut<T: Send>(data: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    use rayon::prelude::*;
    if chunk == 0 || chunk >= data.len() {
        f(0, data);
    } else if intra_op_threads() <= 1 {
        data.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        data.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// Element-wise kernels: `f(offset, out_chunk)` over `out`, split evenly across the op's
/// threads when it is large enough to pay for them, inline otherwise.
pub(crate) fn elementwise(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    use rayon::prelude::*;
    let len = out.len();
    let threads = intra_op_threads();
    if threads <= 1 || len < PARALLEL_MIN_ELEMS {
        f(0, out);
    } else {
        let chunk = len.div_ceil(threads).next_multiple_of(16);
        out.par_chunks_mut(chunk).enumerate().for_each(|(i, o)| f(i * chunk, o));
    }
}

impl BackendBase for Cpu {
    type Buf = Vec<f32>;

    fn zeros(len: usize) -> Vec<f32> {
        vec![0.0; len]
    }

    fn resize(buf: &mut Vec<f32>, len: usize) {
        buf.resize(len, 0.0);
    }

    fn len(buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn upload(buf: &mut Vec<f32>, src: &[f32]) {
        buf.clear();
        buf.extend_from_slice(src);
    }

    fn download(buf: &Vec<f32>, dst: &mut Vec<f32>) {
        dst.clear();
        dst.extend_from_slice(buf);
    }

    fn fill(buf: &mut Vec<f32>, value: f32) {
        buf.iter_mut().for_each(|v| *v = value);
    }

    fn copy(src: &Vec<f32>, dst: &mut Vec<f32>) {
        dst.copy_from_slice(src);
    }

    fn matmul(
        m: usize,
        n: usize,
        k: usize,
        a: (&Vec<f32>, usize, usize, usize),
        b: (&Vec<f32>, usize, usize, usize),
        c: (&mut Vec<f32>, usize, usize),
        accumulate: bool,
    ) {
        sgemm(m, n, k, (&a.0[a.1..], a.2, a.3), (&b.0[b.1..], b.2, b.3), (&mut c.0[c.1..], c.2), accumulate);
    }
}

/// Last index touched by a strided m×n matrix, plus one.
fn extent(m: usize, n: usize, rs: usize, cs: usize) -> usize {
    if m == 0 || n == 0 {
        0
    } else {
        (m - 1) * rs + (n - 1) * cs + 1
    }
}

/// Safe wrapper over `gemm::gemm` for f32 slices: checks every index the call can touch.
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: (&[f32], usize, usize),
    b: (&[f32], usize, usize),
    c: (&mut [f32], usize),
    accumulate: bool,
) {
    let (a, a_rs, a_cs) = a;
    let (b, b_rs, b_cs) = b;
    let (c, c_rs) = c;
    assert!(extent(m, k, a_rs, a_cs) <= a.len(), "gemm: A out of bounds");
    assert!(extent(k, n, b_rs, b_cs) <= b.len(), "gemm: B out of bounds");
    assert!(extent(m, n, c_rs, 1) <= c.len(), "gemm: C out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * c_rs..i * c_rs + n].fill(0.0);
            }
        }
        return;
    }
    let threads = intra_op_threads();
    let parallelism = if threads > 1 && m * n * k >= PARALLEL_GEMM_MIN_MACS {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    IN_GEMM.with(|c| c.set(true));
    // SAFETY: the asserts above bound every element the strided views can address, the
    // output does not alias the inputs (distinct borrows), and all strides fit in isize.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            c_rs as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    IN_GEMM.with(|c| c.set(false));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn sgemm_matches_naive_with_transposes_and_accumulation() {
        let (m, n, k) = (37, 29, 53);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0).collect();
        let want = naive(m, n, k, &a, &b);
        let mut c = vec![0.0; m * n];
        sgemm(m, n, k, (&a, k, 1), (&b, n, 1), (&mut c, n), false);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - y).abs() < 1e-4);
        }
        // B given transposed (n×k row-major) and accumulation on top of the first result
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        sgemm(m, n, k, (&a, k, 1), (&bt, 1, k), (&mut c, n), true);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - 2.0 * y).abs() < 1e-4);
        }
    }
}
