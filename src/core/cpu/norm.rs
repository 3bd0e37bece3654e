//! CPU kernels of LayerNorm and BatchNorm (traits in `core/ops/{layer_norm,batch_norm}.rs`;
//! `core/cuda/norm.rs` is the GPU side).

use crate::core::cpu::columns::{
    column_sums, columns_per_task, for_each_column_pair, sums_into, Rows, BN_GRADS, BN_SQUARES, LN_GRADS, SUM,
};
use crate::core::cpu::{chunking, for_each_chunk_mut, intra_op_threads, Cpu, PARALLEL_MIN_ELEMS};
use crate::core::ops::batch_norm::BatchNormOps;
use crate::core::ops::layer_norm::LayerNormOps;
use rayon::prelude::*;

// ---- layer_norm

/// `Σ f(v)` over `row` with eight independent accumulators, summed as a tree: the compiler
/// keeps them in one vector register instead of a serial chain of adds. Measured: with rows
/// of 8 values (the MNIST-1D Mixer) the serial sum made LayerNorm's forward 15% of a step.
#[inline(always)]
fn lane_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            acc[l] += f(c[l]);
        }
    }
    for (l, v) in chunks.remainder().iter().enumerate() {
        acc[l] += f(*v);
    }
    lane_tree(acc)
}

/// The eight accumulators of [`lane_sum`] added as its tree.
#[inline(always)]
fn lane_tree(acc: [f32; 8]) -> f32 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// Calls `$f(.., d)` with `d` a compile-time constant for the common small row lengths, so
/// the inlined row loops unroll and vectorise (measured on the MNIST-1D Mixer, rows of 8:
/// LayerNorm's forward went from 15.7% to 7.2% of a training step).
macro_rules! specialise_row_len {
    ($d:expr, $f:ident($($arg:expr),*)) => {
        match $d {
            8 => $f($($arg),*, 8),
            16 => $f($($arg),*, 16),
            32 => $f($($arg),*, 32),
            64 => $f($($arg),*, 64),
            128 => $f($($arg),*, 128),
            d => $f($($arg),*, d),
        }
    };
}

/// Normalises consecutive rows of `x` (row length = `gamma.len()`) into `y`, one pass per row.
#[inline(always)]
fn normalize_rows(x: &[f32], gamma: &[f32], beta: &[f32], y: &mut [f32], mean: &mut [f32], rstd: &mut [f32], eps: f32) {
    #[cfg(target_arch = "x86_64")]
    if avx_rows::suit(gamma.len()) {
        // SAFETY: the CPU has AVX; the slices hold whole rows of gamma.len() values
        return unsafe { avx_rows::normalize(x, gamma, beta, y, mean, rstd, eps) };
    }
    specialise_row_len!(gamma.len(), normalize_rows_d(x, gamma, beta, y, mean, rstd, eps))
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn normalize_rows_d(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    eps: f32,
    d: usize,
) {
    let (gamma, beta) = (&gamma[..d], &beta[..d]);
    for (((o, row), m_out), s_out) in
        y.chunks_exact_mut(d).zip(x.chunks_exact(d)).zip(mean.iter_mut()).zip(rstd.iter_mut())
    {
        let m = lane_sum(row, |v| v) / d as f32;
        let var = lane_sum(row, |v| (v - m) * (v - m)) / d as f32;
        let s = 1.0 / (var + eps).sqrt();
        *m_out = m;
        *s_out = s;
        for (((o, v), g), b) in o.iter_mut().zip(row).zip(gamma).zip(beta) {
            *o = (v - m) * s * g + b;
        }
    }
}

/// Rows per parallel task for row-wise kernels.
fn rows_per_task(rows: usize, d: usize) -> usize {
    if rows * d < PARALLEL_MIN_ELEMS {
        rows.max(1)
    } else {
        chunking(rows, 8)
    }
}

impl LayerNormOps for Cpu {
    fn layer_norm_forward(
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        y: &mut Vec<f32>,
        mean: &mut Vec<f32>,
        rstd: &mut Vec<f32>,
        rows: usize,
        d: usize,
        eps: f32,
    ) {
        let (gamma, beta) = (&gamma[..d], &beta[..d]);
        let norm_rows = |r0: usize, y: &mut [f32], mean: &mut [f32], rstd: &mut [f32]| {
            let x = &x[r0 * d..r0 * d + y.len()];
            crate::dispatch_simd!(normalize_rows(x, gamma, beta, y, mean, rstd, eps))
        };
        let rpt = rows_per_task(rows, d);
        let (y, mean, rstd) = (&mut y[..rows * d], &mut mean[..rows], &mut rstd[..rows]);
        if rpt >= rows || intra_op_threads() <= 1 {
            norm_rows(0, y, mean, rstd);
        } else {
            y.par_chunks_mut(rpt * d)
                .zip(mean.par_chunks_mut(rpt))
                .zip(rstd.par_chunks_mut(rpt))
                .enumerate()
                .for_each(|(t, ((y, m), s))| norm_rows(t * rpt, y, m, s));
        }
    }

    fn layer_norm_backward(
        x: &Vec<f32>,
        dy: &Vec<f32>,
        gamma: &Vec<f32>,
        mean: &Vec<f32>,
        rstd: &Vec<f32>,
        dx: Option<&mut Vec<f32>>,
        dgamma: &mut Vec<f32>,
        dbeta: &mut Vec<f32>,
        rows: usize,
        d: usize,
    ) {
        let gamma = &gamma[..d];
        let (dgamma, dbeta) = (&mut dgamma[..d], &mut dbeta[..d]);
        dgamma.fill(0.0);
        dbeta.fill(0.0);
        let (x, dy, mean, rstd) = (&x[..rows * d], &dy[..rows * d], &mean[..rows], &rstd[..rows]);
        // dγ, dβ: column sums, each column over the rows in order (so any split of the
        // columns across threads gives the same numbers)
        let cpt = columns_per_task(rows, d);
        for_each_column_pair(dbeta, dgamma, cpt, |t, db, dg| {
            crate::dispatch_simd!(column_sums::<LN_GRADS>(Rows { x, dy, mean, rstd, c: d }, t * cpt, db, dg))
        });
        let Some(dx) = dx else { return };
        let rpt = rows_per_task(rows, d);
        for_each_chunk_mut(&mut dx[..rows * d], rpt * d, |t, out| {
            let r0 = t * rpt;
            let span = r0 * d..r0 * d + out.len();
            let (x, dy) = (&x[span.clone()], &dy[span]);
            let (m, s) = (&mean[r0..r0 + out.len() / d], &rstd[r0..r0 + out.len() / d]);
            crate::dispatch_simd!(input_grad_rows(x, dy, gamma, m, s, out))
        });
    }
}

/// `dx` for consecutive rows.
#[inline(always)]
fn input_grad_rows(x: &[f32], dy: &[f32], gamma: &[f32], mean: &[f32], rstd: &[f32], dx: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx_rows::suit(gamma.len()) {
        // SAFETY: the CPU has AVX; the slices hold whole rows of gamma.len() values
        return unsafe { avx_rows::input_grads(x, dy, gamma, mean, rstd, dx) };
    }
    specialise_row_len!(gamma.len(), input_grad_rows_d(x, dy, gamma, mean, rstd, dx))
}

#[inline(always)]
fn input_grad_rows_d(x: &[f32], dy: &[f32], gamma: &[f32], mean: &[f32], rstd: &[f32], dx: &mut [f32], d: usize) {
    let gamma = &gamma[..d];
    for (r, ((xr, gr), o)) in x.chunks_exact(d).zip(dy.chunks_exact(d)).zip(dx.chunks_exact_mut(d)).enumerate() {
        input_grad_row(xr, gr, gamma, mean[r], rstd[r], o);
    }
}

/// `dx = r·(g − mean(g) − x̂·mean(g·x̂))` with `g = dy·γ` for one row.
#[inline(always)]
fn input_grad_row(xr: &[f32], gr: &[f32], gamma: &[f32], m: f32, s: f32, o: &mut [f32]) {
    let d = gamma.len() as f32;
    let mut mg = [0.0f32; 8];
    let mut mgx = [0.0f32; 8];
    for (j, ((gv, xv), gm)) in gr.iter().zip(xr).zip(gamma).enumerate() {
        let g = gv * gm;
        mg[j % 8] += g;
        mgx[j % 8] += g * (xv - m) * s;
    }
    let mg = mg.iter().sum::<f32>() / d;
    let mgx = mgx.iter().sum::<f32>() / d;
    for (((o, gv), xv), gm) in o.iter_mut().zip(gr).zip(xr).zip(gamma) {
        *o = s * (gv * gm - mg - (xv - m) * s * mgx);
    }
}

/// LayerNorm's rows of a multiple of 8 values (16 or more), one row at a time in 8-lane AVX
/// registers: the sums of [`lane_sum`] and [`input_grad_row`] lane for lane and in the same
/// order, so the same bits. The compiler vectorised the plain loops across rows instead, with
/// gathers: with the CIFAR-10 quick Mixer's rows of 16, LayerNorm's forward and backward took
/// 16% of the quick table (`perf`), about ten cycles a value; these took its Mixer runs from
/// 30 s to 19 s. Rows of 8 (the MNIST-1D Mixer) stay with the compiler's loops, which ran
/// them faster (a run in 3.1 s against 3.5 s).
#[cfg(target_arch = "x86_64")]
mod avx_rows {
    use std::arch::x86_64::*;

    /// Whether rows of `d` values go through these loops (and the CPU has AVX).
    #[inline(always)]
    pub(super) fn suit(d: usize) -> bool {
        d.is_multiple_of(8) && d >= 16 && std::arch::is_x86_feature_detected!("avx")
    }

    #[inline(always)]
    fn lanes(v: __m256) -> [f32; 8] {
        // SAFETY: __m256 is eight f32 lanes
        unsafe { std::mem::transmute(v) }
    }

    /// `normalize_rows_d` for rows of `gamma.len()` (a multiple of 8) values.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn normalize(
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        y: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        eps: f32,
    ) {
        let d = gamma.len();
        debug_assert!(d.is_multiple_of(8) && x.len() >= y.len() && y.len().is_multiple_of(d));
        let (g, b) = (gamma.as_ptr(), beta.as_ptr());
        for (((o, row), m_out), s_out) in
            y.chunks_exact_mut(d).zip(x.chunks_exact(d)).zip(mean.iter_mut()).zip(rstd.iter_mut())
        {
            let (p, q) = (row.as_ptr(), o.as_mut_ptr());
            // SAFETY (every load and store): offsets below d in rows, gamma and beta of d values
            let load = |ptr: *const f32, c: usize| unsafe { _mm256_loadu_ps(ptr.add(c)) };
            let mut acc = _mm256_setzero_ps();
            for c in (0..d).step_by(8) {
                acc = _mm256_add_ps(acc, load(p, c));
            }
            let m = super::lane_tree(lanes(acc)) / d as f32;
            let mv = _mm256_set1_ps(m);
            let mut acc = _mm256_setzero_ps();
            for c in (0..d).step_by(8) {
                let t = _mm256_sub_ps(load(p, c), mv);
                acc = _mm256_add_ps(acc, _mm256_mul_ps(t, t));
            }
            let var = super::lane_tree(lanes(acc)) / d as f32;
            let s = 1.0 / (var + eps).sqrt();
            *m_out = m;
            *s_out = s;
            let sv = _mm256_set1_ps(s);
            for c in (0..d).step_by(8) {
                let t = _mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(load(p, c), mv), sv), load(g, c));
                unsafe { _mm256_storeu_ps(q.add(c), _mm256_add_ps(t, load(b, c))) };
            }
        }
    }

    /// `input_grad_rows_d` for rows of `gamma.len()` (a multiple of 8) values.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn input_grads(x: &[f32], dy: &[f32], gamma: &[f32], mean: &[f32], rstd: &[f32], dx: &mut [f32]) {
        let d = gamma.len();
        debug_assert!(d.is_multiple_of(8) && x.len() >= dx.len() && dy.len() >= dx.len() && dx.len().is_multiple_of(d));
        let g = gamma.as_ptr();
        for (r, ((xr, gr), o)) in x.chunks_exact(d).zip(dy.chunks_exact(d)).zip(dx.chunks_exact_mut(d)).enumerate() {
            let (xp, gp, q) = (xr.as_ptr(), gr.as_ptr(), o.as_mut_ptr());
            // SAFETY (every load and store): offsets below d in rows and gamma of d values
            let load = |ptr: *const f32, c: usize| unsafe { _mm256_loadu_ps(ptr.add(c)) };
            let (mv, sv) = (_mm256_set1_ps(mean[r]), _mm256_set1_ps(rstd[r]));
            let (mut mg, mut mgx) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            for c in (0..d).step_by(8) {
                let gv = _mm256_mul_ps(load(gp, c), load(g, c));
                mg = _mm256_add_ps(mg, gv);
                mgx = _mm256_add_ps(mgx, _mm256_mul_ps(_mm256_mul_ps(gv, _mm256_sub_ps(load(xp, c), mv)), sv));
            }
            let mg = _mm256_set1_ps(lanes(mg).iter().sum::<f32>() / d as f32);
            let mgx = _mm256_set1_ps(lanes(mgx).iter().sum::<f32>() / d as f32);
            for c in (0..d).step_by(8) {
                let t = _mm256_sub_ps(_mm256_mul_ps(load(gp, c), load(g, c)), mg);
                let u = _mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(load(xp, c), mv), sv), mgx);
                unsafe { _mm256_storeu_ps(q.add(c), _mm256_mul_ps(sv, _mm256_sub_ps(t, u))) };
            }
        }
    }
}

// ---- batch_norm

/// `f(row0, y_rows)` over `y` (rows of `c`) split into row ranges across the op's threads.
fn bn_rows(y: &mut [f32], c: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    let rpt = rows_per_task(y.len() / c, c);
    for_each_chunk_mut(y, rpt * c, |t, part| f(t * rpt, part));
}

impl BatchNormOps for Cpu {
    fn batch_norm_forward_train(
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        y: &mut Vec<f32>,
        mean: &mut Vec<f32>,
        rstd: &mut Vec<f32>,
        running_mean: &mut Vec<f32>,
        running_var: &mut Vec<f32>,
        rows: usize,
        c: usize,
        eps: f32,
        momentum: f32,
    ) {
        if c == 0 {
            return;
        }
        let (x, mean, rstd) = (&x[..rows * c], &mut mean[..c], &mut rstd[..c]);
        sums_into::<SUM>(x, &[], c, mean);
        mean.iter_mut().for_each(|m| *m /= rows as f32);
        // the sum of squared deviations, in rstd until it becomes 1/σ
        sums_into::<BN_SQUARES>(x, mean, c, rstd);
        for j in 0..c {
            let var = rstd[j];
            let biased = var / rows as f32;
            let unbiased = if rows > 1 { var / (rows - 1) as f32 } else { biased };
            running_mean[j] = (1.0 - momentum) * running_mean[j] + momentum * mean[j];
            running_var[j] = (1.0 - momentum) * running_var[j] + momentum * unbiased;
            rstd[j] = 1.0 / (biased + eps).sqrt();
        }
        bn_apply(x, mean, rstd, &gamma[..c], &beta[..c], &mut y[..rows * c]);
    }

    fn batch_norm_forward_eval(
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        y: &mut Vec<f32>,
        mean: &mut Vec<f32>,
        rstd: &mut Vec<f32>,
        running_mean: &Vec<f32>,
        running_var: &Vec<f32>,
        rows: usize,
        c: usize,
        eps: f32,
    ) {
        if c == 0 {
            return;
        }
        for j in 0..c {
            mean[j] = running_mean[j];
            rstd[j] = 1.0 / (running_var[j] + eps).sqrt();
        }
        bn_apply(&x[..rows * c], &mean[..c], &rstd[..c], &gamma[..c], &beta[..c], &mut y[..rows * c]);
    }

    fn batch_norm_backward(
        x: &Vec<f32>,
        dy: &Vec<f32>,
        gamma: &Vec<f32>,
        mean: &Vec<f32>,
        rstd: &Vec<f32>,
        dx: Option<&mut Vec<f32>>,
        dgamma: &mut Vec<f32>,
        dbeta: &mut Vec<f32>,
        rows: usize,
        c: usize,
        batch_stats: bool,
    ) {
        if c == 0 {
            return;
        }
        let (x, dy, gamma, mean, rstd) = (&x[..rows * c], &dy[..rows * c], &gamma[..c], &mean[..c], &rstd[..c]);
        // dβ = Σ dy, dγ = Σ dy·x̂ (per channel)
        let (dgamma, dbeta) = (&mut dgamma[..c], &mut dbeta[..c]);
        let cpt = columns_per_task(rows, c);
        dgamma.fill(0.0);
        dbeta.fill(0.0);
        for_each_column_pair(dbeta, dgamma, cpt, |t, db, dg| {
            crate::dispatch_simd!(column_sums::<BN_GRADS>(Rows { x, dy, mean, rstd, c }, t * cpt, db, dg))
        });
        let Some(dx) = dx else { return };
        let (dgamma, dbeta) = (&*dgamma, &*dbeta);
        let n = rows as f32;
        bn_rows(&mut dx[..rows * c], c, |r0, part| {
            crate::dispatch_simd!(for (i, o) in part.chunks_exact_mut(c).enumerate() {
                let r = r0 + i;
                let (xr, gr) = (&x[r * c..(r + 1) * c], &dy[r * c..(r + 1) * c]);
                // zipped, not indexed (see bn_apply)
                if !batch_stats {
                    for ((o, g), (gm, s)) in o.iter_mut().zip(gr).zip(gamma.iter().zip(rstd)) {
                        *o = g * gm * s;
                    }
                    continue;
                }
                let params = gamma.iter().zip(rstd).zip(mean).zip(dbeta.iter().zip(dgamma));
                for (((o, g), xv), (((gm, s), m), (db, dg))) in o.iter_mut().zip(gr).zip(xr).zip(params) {
                    let xhat = (xv - m) * s;
                    // Σg = γ·dβ, Σ(g·x̂) = γ·dγ
                    *o = gm * s / n * (n * g - db - xhat * dg);
                }
            })
        });
    }
}

/// `y = (x − mean)·rstd·γ + β`, rows split across the op's threads.
fn bn_apply(x: &[f32], mean: &[f32], rstd: &[f32], gamma: &[f32], beta: &[f32], y: &mut [f32]) {
    let c = mean.len();
    bn_rows(y, c, |r0, part| {
        crate::dispatch_simd!(for (i, o) in part.chunks_exact_mut(c).enumerate() {
            let xr = &x[(r0 + i) * c..(r0 + i + 1) * c];
            // zipped, not indexed: five indexed slices kept bounds checks that stopped the
            // loop vectorising (measured: this pass was two thirds of the forward's time)
            let params = mean.iter().zip(rstd).zip(gamma).zip(beta);
            for ((o, xv), (((m, s), g), b)) in o.iter_mut().zip(xr).zip(params) {
                *o = (xv - m) * s * g + b;
            }
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::cpu::with_intra_op_threads;
    use crate::core::gradcheck::random_input;

    /// The per-channel sums one thread adds row after row (the kernels' contract), and dx.
    fn naive_bn_backward(x: &[f32], dy: &[f32], gamma: &[f32], mean: &[f32], rstd: &[f32], c: usize) -> [Vec<f32>; 3] {
        let rows = x.len() / c;
        let (mut dg, mut db, mut dx) = (vec![0.0f32; c], vec![0.0f32; c], vec![0.0f32; rows * c]);
        for r in 0..rows {
            for j in 0..c {
                let g = dy[r * c + j];
                db[j] += g;
                dg[j] += g * (x[r * c + j] - mean[j]) * rstd[j];
            }
        }
        let n = rows as f32;
        for r in 0..rows {
            for j in 0..c {
                let xhat = (x[r * c + j] - mean[j]) * rstd[j];
                dx[r * c + j] = gamma[j] * rstd[j] / n * (n * dy[r * c + j] - db[j] - xhat * dg[j]);
            }
        }
        [dg, db, dx]
    }

    #[test]
    fn batch_norm_sums_each_channel_in_row_order_on_any_thread_count() {
        // widths that take 32-, 8- and 1-channel blocks; rows * c over the parallel threshold
        for c in [5, 40, 77] {
            let rows = PARALLEL_MIN_ELEMS.div_ceil(c) + 100;
            let x = random_input(rows * c, 1, 0.0);
            let dy = random_input(rows * c, 2, 0.0);
            let (gamma, beta) = (random_input(c, 3, 0.1), random_input(c, 4, 0.0));
            // the reference statistics
            let mut mean = vec![0.0f32; c];
            let mut var = vec![0.0f32; c];
            for r in 0..rows {
                for j in 0..c {
                    mean[j] += x[r * c + j];
                }
            }
            mean.iter_mut().for_each(|m| *m /= rows as f32);
            for r in 0..rows {
                for j in 0..c {
                    let d = x[r * c + j] - mean[j];
                    var[j] += d * d;
                }
            }
            let rstd: Vec<f32> = var.iter().map(|v| 1.0 / (v / rows as f32 + 1e-5).sqrt()).collect();
            let want_y: Vec<f32> =
                (0..rows * c).map(|i| (x[i] - mean[i % c]) * rstd[i % c] * gamma[i % c] + beta[i % c]).collect();
            let want = naive_bn_backward(&x, &dy, &gamma, &mean, &rstd, c);
            for threads in [1, 2, 3] {
                with_intra_op_threads(threads, || {
                    let (mut y, mut m, mut s) = (vec![0.0; rows * c], vec![0.0; c], vec![0.0; c]);
                    let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
                    let (x_, g_, b_) = (x.clone(), gamma.clone(), beta.clone());
                    Cpu::batch_norm_forward_train(
                        &x_, &g_, &b_, &mut y, &mut m, &mut s, &mut rm, &mut rv, rows, c, 1e-5, 0.1,
                    );
                    assert_eq!((&m, &s, &y), (&mean, &rstd, &want_y), "forward, c = {c}, {threads} threads");
                    let (mut dg, mut db, mut dx) = (vec![0.0; c], vec![0.0; c], vec![0.0; rows * c]);
                    let dy_ = dy.clone();
                    Cpu::batch_norm_backward(&x_, &dy_, &g_, &m, &s, Some(&mut dx), &mut dg, &mut db, rows, c, true);
                    assert_eq!([dg, db, dx], want, "backward, c = {c}, {threads} threads");
                });
            }
        }
    }

    #[test]
    fn layer_norm_parameter_gradients_sum_each_column_in_row_order() {
        for d in [8, 40, 77] {
            // over the parallel threshold: the columns are shared out
            let rows = PARALLEL_MIN_ELEMS.div_ceil(d) + 100;
            let x = random_input(rows * d, 5, 0.0);
            let dy = random_input(rows * d, 6, 0.0);
            let (gamma, beta) = (random_input(d, 7, 0.1), vec![0.0f32; d]);
            let (mut y, mut mean, mut rstd) = (vec![0.0; rows * d], vec![0.0; rows], vec![0.0; rows]);
            Cpu::layer_norm_forward(&x, &gamma, &beta, &mut y, &mut mean, &mut rstd, rows, d, 1e-5);
            let (mut want_g, mut want_b) = (vec![0.0f32; d], vec![0.0f32; d]);
            for r in 0..rows {
                for j in 0..d {
                    want_g[j] += dy[r * d + j] * (x[r * d + j] - mean[r]) * rstd[r];
                    want_b[j] += dy[r * d + j];
                }
            }
            for threads in [1, 2, 3] {
                with_intra_op_threads(threads, || {
                    let (mut dg, mut db, mut dx) = (vec![0.0; d], vec![0.0; d], vec![0.0; rows * d]);
                    Cpu::layer_norm_backward(&x, &dy, &gamma, &mean, &rstd, Some(&mut dx), &mut dg, &mut db, rows, d);
                    assert_eq!((&dg, &db), (&want_g, &want_b), "d = {d}, {threads} threads");
                });
            }
        }
    }

    /// LayerNorm's AVX rows give the generic loops' bits, forward and backward, for row
    /// lengths that are and are not the specialised ones, with rows that hold zeros, large
    /// offsets and a constant row (variance 0).
    #[test]
    fn layer_norm_rows_in_avx_registers_give_the_generic_loops_bits() {
        #[cfg(target_arch = "x86_64")]
        {
            if !std::arch::is_x86_feature_detected!("avx") {
                eprintln!("SKIPPED layer_norm_rows_in_avx_registers_give_the_generic_loops_bits: no AVX here");
                return;
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for (i, d) in [8usize, 16, 24, 32, 40, 64, 128, 256].into_iter().enumerate() {
                let rows = 37;
                let seed = 10 * i as u64;
                let mut x = random_input(rows * d, seed, 0.0);
                for (j, v) in x.iter_mut().enumerate() {
                    match (j / d) % 4 {
                        1 => *v = *v * 1e3 + 5e3,
                        2 if j % 3 == 0 => *v = 0.0,
                        3 => *v = 0.25,
                        _ => {}
                    }
                }
                let dy = random_input(rows * d, seed + 1, 0.0);
                let gamma = random_input(d, seed + 2, 0.0);
                let beta = random_input(d, seed + 3, 0.0);
                let (mut y0, mut m0, mut s0) = (vec![0.0; rows * d], vec![0.0; rows], vec![0.0; rows]);
                specialise_row_len!(d, normalize_rows_d(&x, &gamma, &beta, &mut y0, &mut m0, &mut s0, 1e-5));
                let (mut y1, mut m1, mut s1) = (vec![0.0; rows * d], vec![0.0; rows], vec![0.0; rows]);
                // SAFETY: AVX is present; whole rows of d values
                unsafe { avx_rows::normalize(&x, &gamma, &beta, &mut y1, &mut m1, &mut s1, 1e-5) };
                assert_eq!(
                    (bits(&y0), bits(&m0), bits(&s0)),
                    (bits(&y1), bits(&m1), bits(&s1)),
                    "forward, rows of {d}"
                );
                let mut dx0 = vec![0.0; rows * d];
                specialise_row_len!(d, input_grad_rows_d(&x, &dy, &gamma, &m0, &s0, &mut dx0));
                let mut dx1 = vec![0.0; rows * d];
                // SAFETY: as above
                unsafe { avx_rows::input_grads(&x, &dy, &gamma, &m0, &s0, &mut dx1) };
                assert_eq!(bits(&dx0), bits(&dx1), "input gradient, rows of {d}");
            }
        }
    }
}
