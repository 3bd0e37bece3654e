//! Element-wise ops on the GPU: ReLU, GELU, the residual add, bias rows and their sums
//! (mirrors `core/ops/{relu,gelu,residual,linear}.rs`).

use super::{f, gemm, p, u, with_local, Cuda, CudaBuf, K};
use crate::core::ops::gelu::GeluOps;
use crate::core::ops::linear::LinearOps;
use crate::core::ops::relu::ReluOps;
use crate::core::ops::residual::ResidualOps;

/// The kernels index every buffer up to the output's length: a shorter input would be read out
/// of bounds on the device, so safe callers are stopped here (a panic, not undefined behaviour).
fn same_len(bufs: &[&CudaBuf], what: &str) {
    assert!(bufs.windows(2).all(|w| w[0].len == w[1].len), "{what}: buffers of different lengths");
}

impl ReluOps for Cuda {
    fn relu_forward(x: &CudaBuf, y: &mut CudaBuf) {
        same_len(&[x, y], "relu_forward");
        with_local(|l| l.launch_n4(K::relu_forward, y.len, &[p(x), p(y), u(y.len)]));
    }
    fn relu_backward(y: &CudaBuf, dy: &CudaBuf, dx: &mut CudaBuf) {
        same_len(&[y, dy, dx], "relu_backward");
        with_local(|l| l.launch_n4(K::relu_backward, dx.len, &[p(y), p(dy), p(dx), u(dx.len)]));
    }
}

impl GeluOps for Cuda {
    fn gelu_forward(x: &CudaBuf, y: &mut CudaBuf, dydx: &mut CudaBuf) {
        same_len(&[x, y, dydx], "gelu_forward");
        with_local(|l| l.launch_n4(K::gelu_forward, y.len, &[p(x), p(y), p(dydx), u(y.len)]));
    }
    fn gelu_backward(dydx: &CudaBuf, dy: &CudaBuf, dx: &mut CudaBuf) {
        same_len(&[dydx, dy, dx], "gelu_backward");
        with_local(|l| l.launch_n4(K::mul, dx.len, &[p(dy), p(dydx), p(dx), u(dx.len)]));
    }
}

impl ResidualOps for Cuda {
    fn add(a: &CudaBuf, b: &CudaBuf, y: &mut CudaBuf) {
        same_len(&[a, b, y], "add");
        with_local(|l| l.launch_n4(K::add, y.len, &[p(a), p(b), p(y), u(y.len)]));
    }
}

impl LinearOps for Cuda {
    fn add_bias_rows(y: &mut CudaBuf, bias: &CudaBuf, rows: usize, n: usize) {
        with_local(|l| l.launch_n4(K::add_bias_rows, rows * n, &[p(y), p(bias), u(rows), u(n)]));
    }
    fn sum_rows(dy: &CudaBuf, db: &mut CudaBuf, rows: usize, n: usize) {
        with_local(|l| sum_rows(l, dy.ptr, db.ptr, rows, n));
    }
}

/// `db[j] = Σ_i dy[i, j]` as the GEMM `onesᵀ·dy` (deterministic, and as fast as the copy).
pub(crate) fn sum_rows(l: &mut super::Local, dy: u64, db: u64, rows: usize, n: usize) {
    if rows == 0 {
        l.launch_n(K::fill_f32, n, &[db, f(0.0), u(n)]);
        return;
    }
    let ones = l.ones(rows);
    gemm(l, 1, n, rows, (ones, rows, 1), (dy, n, 1), (db, n), false, None);
}

/// Each value of `x` as two TF32 values, `hi + lo` (the `split_tf32` kernel, which the
/// strict-fp32 convolutions in TF32 on split operands run: see `cudnn.rs`); for the tests.
#[doc(hidden)]
pub fn split_tf32(x: &CudaBuf, hi: &mut CudaBuf, lo: &mut CudaBuf) {
    same_len(&[x, hi, lo], "split_tf32");
    with_local(|l| l.launch_n4(K::split_tf32, x.len, &[p(x), p(hi), p(lo), u(x.len)]));
}
