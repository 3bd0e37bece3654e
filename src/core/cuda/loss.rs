//! Softmax cross-entropy on the GPU (mirrors `core/ops/cross_entropy.rs`). The summed loss
//! and the count of correct rows come back to the host: one small read a step.

use super::{i, p, u, with_local, Cuda, CudaBuf, K};
use crate::core::ops::cross_entropy::CrossEntropyOps;
use cudarc::driver::result as drv;

impl CrossEntropyOps for Cuda {
    fn softmax_cross_entropy(
        logits: &CudaBuf,
        labels: &CudaBuf,
        dlogits: Option<&mut CudaBuf>,
        rows: usize,
        classes: usize,
    ) -> (f64, usize) {
        if rows == 0 {
            return (0.0, 0);
        }
        let d = dlogits.map(|b| b.ptr).unwrap_or(0);
        with_local(|l| {
            let work = l.work(8 * rows);
            let (loss, correct) = (work, work + 4 * rows as u64);
            l.launch_n(
                K::softmax_cross_entropy,
                rows,
                &[p(logits), p(labels), d, u(rows), i(classes as i32), loss, correct],
            );
            let mut host = std::mem::take(&mut l.host);
            host.resize(2 * rows, 0.0);
            // SAFETY: `work` holds 2·rows values, `host` as many
            let r = unsafe { drv::memcpy_dtoh_async(&mut host[..], work, l.raw_stream()) };
            super::check(r, "download");
            l.sync();
            let total: f64 = host[..rows].iter().map(|&v| v as f64).sum();
            let right = host[rows..].iter().filter(|&&c| c > 0.5).count();
            l.host = host;
            (total, right)
        })
    }
}
