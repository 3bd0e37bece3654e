//! Softmax cross-entropy on the GPU (mirrors `core/cpu/loss.rs`). The batch's mean loss and
//! count of correct rows are reduced on the device into the caller's statistics buffer:
//! nothing is read back, so a training step does not wait for the GPU.

use super::{i, p, u, with_local, Cuda, CudaBuf, K};
use crate::core::ops::cross_entropy::CrossEntropyOps;

impl CrossEntropyOps for Cuda {
    fn softmax_cross_entropy(
        logits: &CudaBuf,
        labels: &CudaBuf,
        dlogits: Option<&mut CudaBuf>,
        rows: usize,
        classes: usize,
        stats: &mut CudaBuf,
        slot: usize,
    ) {
        // slots come from the code that sized the buffer (trainer, bench), never from user input
        assert!(stats.len >= 2 * slot + 2, "softmax_cross_entropy: statistics buffer too short");
        let d = dlogits.map(|b| b.ptr).unwrap_or(0);
        with_local(|l| {
            let work = l.work(8 * rows.max(1));
            let (loss, correct) = (work, work + 4 * rows as u64);
            l.launch_n(
                K::softmax_cross_entropy,
                rows,
                &[p(logits), p(labels), d, u(rows), i(classes as i32), loss, correct],
            );
            // one thread sums the rows in order in f64, as the CPU does: the same mean
            l.launch(K::loss_stats, (1, 1, 1), (1, 1, 1), &[loss, correct, u(rows), stats.at(2 * slot)]);
        })
    }
}
