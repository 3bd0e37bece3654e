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
    /// The unfinished runs this thread's run shares the pool with ([`sharing_the_pool`]).
    static SHARING: std::cell::RefCell<Option<std::sync::Arc<std::sync::atomic::AtomicUsize>>> =
        const { std::cell::RefCell::new(None) };
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

/// Runs `f`, one of `unfinished` runs that share the pool, with ops on one thread while the
/// unfinished runs are at least as many as the pool's threads and split across the pool once
/// they are fewer ([`share_the_pool_now`], at every training step, follows the count down as
/// runs end; the caller decrements it when `f` returns). Without it the last runs of a table
/// kept one thread each to the end while the other cores idled. An op's numbers do not depend
/// on its thread count, so this changes only the time.
pub fn sharing_the_pool<R>(unfinished: &std::sync::Arc<std::sync::atomic::AtomicUsize>, f: impl FnOnce() -> R) -> R {
    let previous = SHARING.with(|s| s.replace(Some(unfinished.clone())));
    let out = with_intra_op_threads(share_of(unfinished), || {
        share_the_pool_now();
        f()
    });
    SHARING.with(|s| *s.borrow_mut() = previous);
    out
}

/// Sets this thread's op threads from the count of unfinished runs it shares the pool with
/// ([`sharing_the_pool`]; nothing outside it). Called between training steps only: a
/// convolution's backward pass reuses the layout its forward pass chose for this count.
pub fn share_the_pool_now() {
    SHARING.with(|s| {
        if let Some(unfinished) = s.borrow().as_ref() {
            INTRA_OP_THREADS.with(|c| c.set(share_of(unfinished)));
        }
    });
}

fn share_of(unfinished: &std::sync::atomic::AtomicUsize) -> usize {
    if unfinished.load(std::sync::atomic::Ordering::Relaxed) >= rayon::current_num_threads() {
        1
    } else {
        0
    }
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

/// Runs `f` on one of the thread pool's threads (inline where it already runs on one) and
/// returns its result. An op split from a thread outside the pool hands its parts to the
/// workers and puts the caller to sleep until they are done, two thread wake-ups an op; from
/// a worker, the op runs one part itself while another worker takes the rest. Measured (the
/// recall task's two-layer transformer, 1000 steps on a 2-vCPU VM): 5.0 s run from the main
/// thread, 3.9 s on the pool, 4.5 s on one thread. The CLI runs every command this way.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}

/// Builds rayon's global pool with `threads` workers (0, or more than the cores: one per
/// core), each flushing denormals; returns the workers it has. Call once, before any op runs;
/// later calls keep the first pool. Workers get the main thread's usual 8 MiB of stack, since
/// whole commands run on them ([`on_pool`]).
pub fn init_thread_pool(threads: usize) -> crate::error::Result<usize> {
    // capped at the machine's cores: more only slows every op down (and 10^5 threads take
    // minutes to start)
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads = if threads == 0 { cores } else { threads.min(cores) };
    let built = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .stack_size(8 << 20)
        .start_handler(|_| flush_denormals())
        .build_global();
    match built {
        Ok(()) => Ok(threads),
        // a pool already exists (a library user built their own): keep it
        Err(_) => Ok(rayon::current_num_threads()),
    }
}

/// Below this many multiply-adds a GEMM runs on one thread. Measured (W3a, 2 threads): with
/// the threshold at 2^18 the MLP's 1M-MAC GEMMs ran threaded and training was 1.5x slower than
/// on one thread; convolutions split the batch across threads instead (`conv2d.rs`). Raised
/// from 2^22 with [`PARALLEL_MIN_ELEMS`] (below).
pub(crate) const PARALLEL_GEMM_MIN_MACS: usize = 1 << 23;
/// Below this many values an element-wise op runs on one thread. Handing an op to a sleeping
/// worker costs more than halving a small one: with 2^15 here and 2^22 above, the recall
/// task's Mixer (tensors of 64×32×32) trained 40% slower on two threads than on one (a 2-vCPU
/// VM, 1000 steps: 3.5 s against 2.5 s); with 2^18 and 2^23, as fast as on one (2.4-2.5 s),
/// and the image and MNIST-1D benchmarks did not move.
pub(crate) const PARALLEL_MIN_ELEMS: usize = 1 << 18;

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

    fn step_starts() {
        share_the_pool_now();
    }

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
    let (c, c_rs) = c;
    // SAFETY: `c` is borrowed exclusively here, so no other thread reads or writes it
    unsafe { sgemm_disjoint(m, n, k, a, b, (&DisjointOut::new(c), 0, c_rs), accumulate) }
}

/// An output buffer whose parts are written by several threads at once where slices cannot
/// split it: a locally-connected layer's positions each own every p-th row of the batch's
/// output, interleaved with the others' ([`sgemm`] passes its exclusive output the same way).
/// Only [`sgemm_disjoint`] writes through it.
pub(crate) struct DisjointOut<'a> {
    ptr: *mut f32,
    len: usize,
    _borrow: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: the pointer comes from an exclusive borrow held for 'a; the callers of
// `sgemm_disjoint` promise that concurrent calls write disjoint elements.
unsafe impl Send for DisjointOut<'_> {}
unsafe impl Sync for DisjointOut<'_> {}

impl<'a> DisjointOut<'a> {
    pub(crate) fn new(out: &'a mut [f32]) -> Self {
        DisjointOut { ptr: out.as_mut_ptr(), len: out.len(), _borrow: std::marker::PhantomData }
    }
}

/// [`sgemm`] into `c = (out, offset, row stride)`, for ops that run many independent GEMMs
/// into one buffer side by side ([`for_each_gemm`]).
///
/// # Safety
/// No other thread may read or write, during the call, any of the m×n elements this call
/// writes (`out[offset + i·rs + j]`); every index is bounds-checked here.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm_disjoint(
    m: usize,
    n: usize,
    k: usize,
    (a, a_rs, a_cs): (&[f32], usize, usize),
    (b, b_rs, b_cs): (&[f32], usize, usize),
    (out, offset, c_rs): (&DisjointOut, usize, usize),
    accumulate: bool,
) {
    // (internal invariants: every caller passes the shapes of buffers it sized for them)
    assert!(extent(m, k, a_rs, a_cs) <= a.len(), "gemm: A out of bounds");
    assert!(extent(k, n, b_rs, b_cs) <= b.len(), "gemm: B out of bounds");
    assert!(offset + extent(m, n, c_rs, 1) <= out.len, "gemm: C out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY (both blocks): the asserts above bound every element the strided views can
    // address; the caller promises no concurrent access to C's elements; the inputs are
    // shared borrows that C (an exclusive borrow) cannot alias; all strides fit in isize.
    let c = unsafe { out.ptr.add(offset) };
    if k == 0 {
        // an empty sum: C is zero, or unchanged when accumulating
        if !accumulate {
            (0..m).for_each(|i| unsafe { std::ptr::write_bytes(c.add(i * c_rs), 0, n) });
        }
        return;
    }
    IN_GEMM.with(|f| f.set(true));
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
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
            parallelism_for(m * n * k),
        );
    }
    IN_GEMM.with(|f| f.set(false));
}

/// How a GEMM of `macs` multiply-adds splits across the op's threads.
fn parallelism_for(macs: usize) -> gemm::Parallelism {
    let threads = intra_op_threads();
    if threads > 1 && macs >= PARALLEL_GEMM_MIN_MACS {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    }
}

/// Runs `f(item)` for the `len` independent GEMMs of an op (`macs_per_gemm` each). Where they
/// take at least `PARALLEL_GEMM_MIN_MACS` together, they run side by side in tasks of
/// consecutive items, about four a thread for balance, each GEMM on one thread (as the
/// convolutions' batch blocks do): one such GEMM is too small to split well (the full LCN's
/// second layer, one GEMM per position: 137 ms a forward pass on one thread, 128 ms split two
/// ways, 74 ms side by side). Otherwise they run in order on the calling thread, each split
/// as [`sgemm`] splits it. Which thread computes an output does not change how it is summed,
/// so the numbers are the same either way.
pub(crate) fn for_each_gemm(len: usize, macs_per_gemm: usize, f: impl Fn(usize) + Sync + Send) {
    use rayon::prelude::*;
    let threads = intra_op_threads();
    if threads <= 1 || len < 2 || len.saturating_mul(macs_per_gemm) < PARALLEL_GEMM_MIN_MACS {
        (0..len).for_each(f);
        return;
    }
    let per_task = len.div_ceil(threads * 4);
    (0..len.div_ceil(per_task))
        .into_par_iter()
        .for_each(|t| with_intra_op_threads(1, || (t * per_task..((t + 1) * per_task).min(len)).for_each(&f)));
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
