//! LayerNorm and BatchNorm on the GPU (mirrors `core/ops/{layer_norm,batch_norm}.rs`).
//! Per-channel sums run in two deterministic stages (see `kernels/norm.cu`).

use super::{d, f, i, p, u, with_local, Cuda, CudaBuf, Local, K};
use crate::core::ops::batch_norm::BatchNormOps;
use crate::core::ops::layer_norm::LayerNormOps;

/// Slabs of rows that the first stage of a column sum splits `rows` into.
fn slabs(rows: usize) -> usize {
    rows.div_ceil(512).clamp(1, 256)
}

/// First stage of a column sum over `rows × c` values; returns the two partial arrays.
#[allow(clippy::too_many_arguments)]
fn column_sums(
    l: &mut Local,
    mode: i32,
    x: u64,
    dy: u64,
    mean: u64,
    rstd: u64,
    rows: usize,
    c: usize,
) -> (u64, u64, usize) {
    let s = slabs(rows);
    let work = l.work(16 * s * c);
    let (p0, p1) = (work, work + 8 * (s * c) as u64);
    let args = [i(mode), x, dy, mean, rstd, u(rows), i(c as i32), p0, p1];
    l.launch(K::column_sums, (c.div_ceil(32) as u32, s as u32, 1), (32, 8, 1), &args);
    (p0, p1, s)
}

/// One warp a row, eight rows a block (the LayerNorm kernels); nothing for no rows.
pub(crate) fn launch_row_warps(l: &Local, k: K, rows: usize, args: &[u64]) {
    if rows > 0 {
        l.launch(k, (rows.div_ceil(8) as u32, 1, 1), (256, 1, 1), args);
    }
}

fn finish(l: &Local, parts: (u64, u64, usize), c: usize, scale: f64, out0: u64, out1: u64) {
    let (p0, p1, s) = parts;
    // the second stage: one warp a column, laid out as one warp a row
    launch_row_warps(l, K::column_sums_finish, c, &[p0, p1, i(s as i32), i(c as i32), d(scale), out0, out1]);
}

impl LayerNormOps for Cuda {
    fn layer_norm_forward(
        x: &CudaBuf,
        gamma: &CudaBuf,
        beta: &CudaBuf,
        y: &mut CudaBuf,
        mean: &mut CudaBuf,
        rstd: &mut CudaBuf,
        rows: usize,
        dim: usize,
        eps: f32,
    ) {
        let args = [p(x), p(gamma), p(beta), p(y), p(mean), p(rstd), u(rows), i(dim as i32), f(eps)];
        with_local(|l| launch_row_warps(l, K::layer_norm_forward, rows, &args));
    }

    fn layer_norm_backward(
        x: &CudaBuf,
        dy: &CudaBuf,
        gamma: &CudaBuf,
        mean: &CudaBuf,
        rstd: &CudaBuf,
        dx: Option<&mut CudaBuf>,
        dgamma: &mut CudaBuf,
        dbeta: &mut CudaBuf,
        rows: usize,
        dim: usize,
    ) {
        let dx = dx.map(|b| b.ptr);
        with_local(|l| {
            let parts = column_sums(l, 3, x.ptr, dy.ptr, mean.ptr, rstd.ptr, rows, dim);
            finish(l, parts, dim, 1.0, dgamma.ptr, dbeta.ptr);
            if let Some(dx) = dx {
                let args = [p(x), p(dy), p(gamma), p(mean), p(rstd), dx, u(rows), i(dim as i32)];
                launch_row_warps(l, K::layer_norm_input_grad, rows, &args);
            }
        });
    }
}

impl BatchNormOps for Cuda {
    fn batch_norm_forward_train(
        x: &CudaBuf,
        gamma: &CudaBuf,
        beta: &CudaBuf,
        y: &mut CudaBuf,
        mean: &mut CudaBuf,
        rstd: &mut CudaBuf,
        running_mean: &mut CudaBuf,
        running_var: &mut CudaBuf,
        rows: usize,
        c: usize,
        eps: f32,
        momentum: f32,
    ) {
        with_local(|l| {
            // mean, then the squared deviations from it (two passes, as on the CPU)
            let parts = column_sums(l, 0, x.ptr, 0, 0, 0, rows, c);
            finish(l, parts, c, 1.0 / rows.max(1) as f64, mean.ptr, 0);
            let (p0, _, s) = column_sums(l, 1, x.ptr, 0, mean.ptr, 0, rows, c);
            let args = [
                p0,
                i(s as i32),
                i(c as i32),
                u(rows),
                mean.ptr,
                rstd.ptr,
                running_mean.ptr,
                running_var.ptr,
                f(eps),
                f(momentum),
            ];
            launch_row_warps(l, K::batch_norm_finish_var, c, &args);
            let args = [p(x), p(y), p(mean), p(rstd), p(gamma), p(beta), u(rows), i(c as i32)];
            l.launch_n4(K::batch_norm_apply, rows * c, &args);
        });
    }

    fn batch_norm_forward_eval(
        x: &CudaBuf,
        gamma: &CudaBuf,
        beta: &CudaBuf,
        y: &mut CudaBuf,
        mean: &mut CudaBuf,
        rstd: &mut CudaBuf,
        running_mean: &CudaBuf,
        running_var: &CudaBuf,
        rows: usize,
        c: usize,
        eps: f32,
    ) {
        with_local(|l| {
            let args = [p(running_mean), p(running_var), p(mean), p(rstd), i(c as i32), f(eps)];
            l.launch_n(K::batch_norm_eval_stats, c, &args);
            let args = [p(x), p(y), p(mean), p(rstd), p(gamma), p(beta), u(rows), i(c as i32)];
            l.launch_n4(K::batch_norm_apply, rows * c, &args);
        });
    }

    fn batch_norm_backward(
        x: &CudaBuf,
        dy: &CudaBuf,
        gamma: &CudaBuf,
        mean: &CudaBuf,
        rstd: &CudaBuf,
        dx: Option<&mut CudaBuf>,
        dgamma: &mut CudaBuf,
        dbeta: &mut CudaBuf,
        rows: usize,
        c: usize,
        batch_stats: bool,
    ) {
        let dx = dx.map(|b| b.ptr);
        with_local(|l| {
            let parts = column_sums(l, 2, x.ptr, dy.ptr, mean.ptr, rstd.ptr, rows, c);
            finish(l, parts, c, 1.0, dbeta.ptr, dgamma.ptr);
            if let Some(dx) = dx {
                let args = [
                    p(x),
                    p(dy),
                    p(gamma),
                    p(mean),
                    p(rstd),
                    p(dgamma),
                    p(dbeta),
                    dx,
                    u(rows),
                    i(c as i32),
                    i(batch_stats as i32),
                ];
                l.launch_n4(K::batch_norm_input_grad, rows * c, &args);
            }
        });
    }
}
