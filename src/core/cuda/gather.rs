//! The batch gather on the GPU (mirrors `core/cpu/gather.rs`; the kernel is in
//! `kernels/gather.cu`). The plan (a few hundred bytes, or a few hundred KB with a permutation
//! per example) is copied to the device without waiting for the stream: the copy is staged
//! and runs in stream order, so the batch costs no host synchronisation.

use super::{check, i, p, u, with_local, BackendBase, Cuda, CudaBuf, K};
use crate::core::ops::gather_batch::{BatchPlan, ExampleGeom, GatherBatchOps};
use cudarc::driver::result as drv;

impl GatherBatchOps for Cuda {
    fn gather_batch(
        x_train: &CudaBuf,
        y_train: &CudaBuf,
        g: ExampleGeom,
        plan: &BatchPlan,
        x: &mut CudaBuf,
        y: &mut CudaBuf,
    ) {
        let rows = plan.rows();
        Self::resize(x, rows * g.len());
        Self::resize(y, rows);
        if rows == 0 || g.is_empty() {
            return;
        }
        // the kernel indexes by the plan: one out of range would read past the training split.
        // Plans come from `BatchSampler::plan` over this split, never from user input: a
        // failure here is a bug, as the CPU gather's slice indexing would be
        let n = (x_train.len / g.len()).min(y_train.len);
        assert!(plan.fits(n, g), "gather_batch: a plan that does not fit the training set");
        with_local(|l| {
            let s = l.raw_stream();
            let (n_ex, n_perm) = (plan.examples.len(), plan.perms.len());
            l.plan.reserve(n_ex + n_perm, s);
            if super::failed() {
                return;
            }
            let base = l.plan.ptr;
            // SAFETY: `l.plan` holds n_ex + n_perm 4-byte values; pageable memory is staged
            // before the call returns, so the plan may change after it
            check(unsafe { drv::memcpy_htod_async(base, &plan.examples[..], s) }, "plan upload");
            let perms = if n_perm == 0 {
                0
            } else {
                let at = base + 4 * n_ex as u64;
                check(unsafe { drv::memcpy_htod_async(at, &plan.perms[..], s) }, "plan upload");
                at
            };
            let stride = if n_perm == g.positions() { 0 } else { g.positions() };
            l.launch_n(
                K::gather_batch,
                rows * g.len(),
                &[
                    p(x_train),
                    p(y_train),
                    base,
                    perms,
                    u(stride),
                    i(g.h as i32),
                    i(g.w as i32),
                    i(g.c as i32),
                    u(rows),
                    p(x),
                    p(y),
                ],
            );
        });
    }
}
