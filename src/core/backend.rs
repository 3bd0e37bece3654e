//! The seam between models/training and the hardware.
//!
//! [`BackendBase`] owns buffers and the one primitive everything leans on, GEMM. Each op file
//! in [`crate::core::ops`] adds its own trait (its kernels' forward and backward); each backend
//! implements them in its folder (`core/cpu/`, `core/cuda/`), and [`Backend`] is the sum.

use crate::core::ops;
use crate::core::optim;

/// Buffers and GEMM.
pub trait BackendBase: Sized + Send + Sync + 'static {
    /// A flat f32 buffer in this backend's memory.
    type Buf: Send + Sync;

    /// A zero-filled buffer of `len` values.
    fn zeros(len: usize) -> Self::Buf;
    /// Makes `buf` hold `len` values, reusing its memory when it is large enough. New values
    /// are unspecified; callers overwrite them.
    fn resize(buf: &mut Self::Buf, len: usize);
    /// Number of values in `buf`.
    fn len(buf: &Self::Buf) -> usize;
    /// Copies host values into `buf` (resized to fit).
    fn upload(buf: &mut Self::Buf, src: &[f32]);
    /// Copies `buf` to the host (into `dst`, resized to fit).
    fn download(buf: &Self::Buf, dst: &mut Vec<f32>);
    /// Sets every value to `value`.
    fn fill(buf: &mut Self::Buf, value: f32);
    /// `dst = src` (same length).
    fn copy(src: &Self::Buf, dst: &mut Self::Buf);

    /// Whether training keeps the training split in this backend's memory and gathers each
    /// batch there ([`crate::core::ops::gather_batch`]) instead of making it on the host and
    /// uploading it: a GPU's choice (no upload, no wait per step); the CPU's data is already
    /// in its memory.
    const KEEPS_DATA_RESIDENT: bool = false;

    /// Bytes of layer outputs one evaluation chunk may hold: the trainer evaluates a model
    /// whose outputs for 1000 examples would exceed it in smaller chunks (never fewer examples
    /// than a training batch). On the CPU, where a table trains one run per core in the
    /// host's memory, 256 MiB: evaluating CIFAR-10's networks 1000 at a time made the quick
    /// table peak at 6.0 GB (2.5 GB in chunks) and a full-preset CNN run at 8.5 GB (2.2 GB),
    /// and touching that memory cost more time than the smaller chunks lose. An example's
    /// outputs do not depend on its chunk's size there.
    fn eval_chunk_bytes() -> f64 {
        256.0 * 1024.0 * 1024.0
    }

    /// Admits a run (`what`) whose buffers need about `need` bytes, for as long as the
    /// returned reservation lives, or refuses it. The CPU keeps a ledger of the host memory
    /// promised to the runs in flight ([`crate::limits::reserve_host`]): a run that does not
    /// fit beside them is refused with [`crate::Error::DeviceMemory`] and run again with fewer
    /// at once, one that does not fit alone with a configuration error. A GPU keeps a ledger
    /// of its own memory (see the CUDA backend).
    fn admit_run(what: &str, need: f64) -> crate::error::Result<crate::limits::Reservation> {
        crate::limits::reserve_host(what, need)
    }

    /// At the start of each training step: the CPU re-reads how many runs share its pool
    /// ([`crate::core::cpu::sharing_the_pool`]).
    fn step_starts() {}

    /// Choices this backend made for its ops (a GPU's convolution route and, per shape and
    /// pass, the way it took), one line each, for profiles and provenance records.
    fn choices() -> Vec<String> {
        Vec::new()
    }

    /// The first failure of an op on the calling thread since the last call (a GPU out of
    /// memory, a failed launch), taken. After a failure the thread's later ops are skipped and
    /// their outputs unspecified, so callers check here where they read results (the trainer:
    /// at every read of the loss and every evaluation). The CPU's ops do not fail.
    fn take_error() -> Option<crate::error::Error> {
        None
    }

    /// Waits until every op this thread queued has finished (timing; the CPU runs ops
    /// synchronously, so there nothing is queued).
    fn synchronize() {}

    /// `C = A·B` (or `C += A·B` when `accumulate`), with `A` m×k, `B` k×n, `C` m×n.
    /// Strides are in elements: `A[i,p] = a[i*a_rs + p*a_cs]`, likewise for `B`;
    /// `C` is row-major with row stride `c_rs`. Offsets select a sub-matrix inside a buffer.
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        m: usize,
        n: usize,
        k: usize,
        a: (&Self::Buf, usize, usize, usize),
        b: (&Self::Buf, usize, usize, usize),
        c: (&mut Self::Buf, usize, usize),
        accumulate: bool,
    );

    /// `count` GEMMs like [`BackendBase::matmul`] with the same sizes `(m, n, k)`, the i-th
    /// with each operand's offset advanced by i times its batch stride (each tuple's last
    /// element): attention's per-example products in one call.
    #[allow(clippy::type_complexity)]
    fn matmul_batched(
        count: usize,
        (m, n, k): (usize, usize, usize),
        a: (&Self::Buf, usize, usize, usize, usize),
        b: (&Self::Buf, usize, usize, usize, usize),
        c: (&mut Self::Buf, usize, usize, usize),
        accumulate: bool,
    ) {
        for i in 0..count {
            Self::matmul(
                m,
                n,
                k,
                (a.0, a.1 + i * a.4, a.2, a.3),
                (b.0, b.1 + i * b.4, b.2, b.3),
                (&mut *c.0, c.1 + i * c.3, c.2),
                accumulate,
            );
        }
    }
}

/// Everything a model and its training need from a backend.
pub trait Backend:
    BackendBase
    + ops::linear::LinearOps
    + ops::conv2d::Conv2dOps
    + ops::locally_connected::LocallyConnectedOps
    + ops::pool::PoolOps
    + ops::global_avg_pool::GlobalAvgPoolOps
    + ops::relu::ReluOps
    + ops::gelu::GeluOps
    + ops::layer_norm::LayerNormOps
    + ops::batch_norm::BatchNormOps
    + ops::cross_entropy::CrossEntropyOps
    + ops::residual::ResidualOps
    + ops::transpose::TransposeOps
    + ops::patchify::PatchifyOps
    + ops::embedding::EmbeddingOps
    + ops::softmax::SoftmaxOps
    + ops::gather_batch::GatherBatchOps
    + optim::OptimOps
{
}

impl<T> Backend for T where
    T: BackendBase
        + ops::linear::LinearOps
        + ops::conv2d::Conv2dOps
        + ops::locally_connected::LocallyConnectedOps
        + ops::pool::PoolOps
        + ops::global_avg_pool::GlobalAvgPoolOps
        + ops::relu::ReluOps
        + ops::gelu::GeluOps
        + ops::layer_norm::LayerNormOps
        + ops::batch_norm::BatchNormOps
        + ops::cross_entropy::CrossEntropyOps
        + ops::residual::ResidualOps
        + ops::transpose::TransposeOps
        + ops::patchify::PatchifyOps
        + ops::embedding::EmbeddingOps
        + ops::softmax::SoftmaxOps
        + ops::gather_batch::GatherBatchOps
        + optim::OptimOps
{
}
