//! The token embedding and the row softmax on the GPU (mirrors `core/cpu/attention.rs`; the
//! kernels are in `kernels/attention.cu`). Attention itself is GEMMs and this softmax.

use super::norm::launch_row_warps;
use super::{f, i, p, u, with_local, Cuda, CudaBuf, K};
use crate::core::ops::embedding::EmbeddingOps;
use crate::core::ops::softmax::SoftmaxOps;

impl EmbeddingOps for Cuda {
    fn embedding_forward(ids: &CudaBuf, table: &CudaBuf, y: &mut CudaBuf, tokens: usize, dim: usize) {
        assert!(ids.len >= tokens && y.len >= tokens * dim, "embedding_forward: buffers too short");
        let vocab = table.len / dim.max(1);
        with_local(|l| {
            l.launch_n(
                K::embedding_forward,
                tokens * dim,
                &[p(ids), p(table), p(y), u(tokens), i(dim as i32), i(vocab as i32)],
            )
        });
    }
    fn embedding_backward(ids: &CudaBuf, dy: &CudaBuf, dtable: &mut CudaBuf, tokens: usize, vocab: usize, dim: usize) {
        assert!(
            ids.len >= tokens && dy.len >= tokens * dim && dtable.len >= vocab * dim,
            "embedding_backward: buffers too short"
        );
        with_local(|l| {
            l.launch_n(
                K::embedding_backward,
                vocab * dim,
                &[p(ids), p(dy), p(dtable), u(tokens), i(vocab as i32), i(dim as i32)],
            )
        });
    }
}

impl SoftmaxOps for Cuda {
    fn softmax_forward(x: &CudaBuf, y: &mut CudaBuf, rows: usize, n: usize, scale: f32, causal: bool) {
        assert!(x.len >= rows * n && y.len >= rows * n, "softmax_forward: buffers too short");
        let args = [p(x), p(y), u(rows), i(n as i32), f(scale), i(causal as i32)];
        with_local(|l| launch_row_warps(l, K::softmax_forward, rows, &args));
    }
    fn softmax_backward(y: &CudaBuf, dy: &CudaBuf, dx: &mut CudaBuf, rows: usize, n: usize, scale: f32) {
        assert!(y.len >= rows * n && dy.len >= rows * n && dx.len >= rows * n, "softmax_backward: buffers too short");
        let args = [p(y), p(dy), p(dx), u(rows), i(n as i32), f(scale)];
        with_local(|l| launch_row_warps(l, K::softmax_backward, rows, &args));
    }
}
