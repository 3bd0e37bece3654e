//! CPU kernels of the element-wise ops (traits in `core/ops/{relu,gelu,residual,linear}.rs`;
//! `core/cuda/elementwise.rs` is the GPU side): ReLU, exact GELU, the residual add, bias rows
//! and their column sums.

use crate::core::cpu::{chunking, columns, elementwise, for_each_chunk_mut, Cpu, PARALLEL_MIN_ELEMS};
use crate::core::ops::gelu::GeluOps;
use crate::core::ops::linear::LinearOps;
use crate::core::ops::relu::ReluOps;
use crate::core::ops::residual::ResidualOps;

// ---- relu

impl ReluOps for Cpu {
    fn relu_forward(x: &Vec<f32>, y: &mut Vec<f32>) {
        elementwise(y, |off, o| {
            let x = &x[off..off + o.len()];
            for i in 0..o.len() {
                o[i] = x[i].max(0.0);
            }
        });
    }

    fn relu_backward(y: &Vec<f32>, dy: &Vec<f32>, dx: &mut Vec<f32>) {
        elementwise(dx, |off, d| {
            let (y, g) = (&y[off..off + d.len()], &dy[off..off + d.len()]);
            // both operands loaded unconditionally: a select the compiler vectorises, where a
            // branch mispredicts on every other value (measured: 24% of a CNN step)
            for i in 0..d.len() {
                let gi = g[i];
                d[i] = if y[i] > 0.0 { gi } else { 0.0 };
            }
        });
    }
}

// ---- gelu

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// `(Φ(x), φ(x))` with `erf` from Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7, the
/// precision of f32 here). Measured: libm's scalar `erff` made GELU 60% of a Mixer step; this
/// form shares one `exp(−x²/2)` between forward and derivative and vectorises (with the
/// polynomial `exp` of `cpu::math`).
#[inline(always)]
pub(crate) fn normal_cdf_pdf(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];
    let z = x.abs() * FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    // clamped so exp stays out of the denormal range (where φ is 0 to f32 precision anyway)
    let e = crate::core::cpu::math::exp(-0.5 * (x * x).min(170.0));
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let erf_abs = 1.0 - poly * e;
    let erf = if x < 0.0 { -erf_abs } else { erf_abs };
    (0.5 * (1.0 + erf), FRAC_1_SQRT_2PI * e)
}

#[inline(always)]
fn forward_slice(x: &[f32], o: &mut [f32], dydx: &mut [f32]) {
    for ((o, d), x) in o.iter_mut().zip(dydx.iter_mut()).zip(x) {
        let (cdf, pdf) = normal_cdf_pdf(*x);
        *o = x * cdf;
        *d = cdf + x * pdf;
    }
}

impl GeluOps for Cpu {
    fn gelu_forward(x: &Vec<f32>, y: &mut Vec<f32>, dydx: &mut Vec<f32>) {
        // the raw slice of `dydx` below is sound only for equal lengths: checked here, since
        // this is a safe function any caller can reach
        assert!(
            x.len() == y.len() && dydx.len() == y.len(),
            "gelu_forward: x, y and dydx must have equal lengths ({}, {}, {})",
            x.len(),
            y.len(),
            dydx.len()
        );
        let dydx_ptr = dydx.as_mut_ptr() as usize;
        elementwise(y, |off, o| {
            let x = &x[off..off + o.len()];
            // SAFETY: `elementwise` hands out disjoint ranges of `y`; `dydx` has the same
            // length, so the same range of it is touched by this task alone.
            let d = unsafe { std::slice::from_raw_parts_mut((dydx_ptr as *mut f32).add(off), o.len()) };
            crate::dispatch_simd!(forward_slice(x, o, d))
        });
    }

    fn gelu_backward(dydx: &Vec<f32>, dy: &Vec<f32>, dx: &mut Vec<f32>) {
        assert!(dydx.len() == dx.len() && dy.len() == dx.len(), "gelu_backward: lengths differ");
        elementwise(dx, |off, d| {
            let (s, g) = (&dydx[off..off + d.len()], &dy[off..off + d.len()]);
            for i in 0..d.len() {
                d[i] = g[i] * s[i];
            }
        });
    }
}

// ---- residual

impl ResidualOps for Cpu {
    fn add(a: &Vec<f32>, b: &Vec<f32>, y: &mut Vec<f32>) {
        elementwise(y, |off, o| {
            let (a, b) = (&a[off..off + o.len()], &b[off..off + o.len()]);
            for i in 0..o.len() {
                o[i] = a[i] + b[i];
            }
        });
    }
}

// ---- linear

impl LinearOps for Cpu {
    fn add_bias_rows(y: &mut Vec<f32>, bias: &Vec<f32>, rows: usize, n: usize) {
        // an add, not a copy before an accumulating GEMM: a per-row memcpy of a few values
        // cost more than this pass (measured: 6% of an MNIST-1D CNN step in memmove)
        if n == 0 {
            return;
        }
        let (bias, y) = (&bias[..n], &mut y[..rows * n]);
        if rows * n < PARALLEL_MIN_ELEMS {
            // small layers (the MNIST-1D MLP's): the call through the AVX-512 dispatch cost
            // more than it saved (measured: W3a 15% slower with it)
            return add_rows(y, bias);
        }
        for_each_chunk_mut(y, chunking(rows, 1) * n, |_, part| crate::dispatch_simd!(add_rows(part, bias)));
    }

    fn sum_rows(dy: &Vec<f32>, db: &mut Vec<f32>, rows: usize, n: usize) {
        if n > 0 {
            columns::sums_into::<{ columns::SUM }>(&dy[..rows * n], &[], n, &mut db[..n]);
        }
    }
}

/// `row += bias` for each row of `y`.
#[inline(always)]
fn add_rows(y: &mut [f32], bias: &[f32]) {
    for row in y.chunks_exact_mut(bias.len()) {
        for (o, b) in row.iter_mut().zip(bias) {
            *o += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::cpu::with_intra_op_threads;
    use crate::core::gradcheck::random_input;

    #[test]
    fn bias_rows_and_their_column_sums_match_one_thread_adding_row_after_row() {
        // widths that take 64-, 32-, 8- and 1-column blocks
        for n in [3, 8, 70, 105, 256] {
            // enough rows that the threads share them out
            let rows = PARALLEL_MIN_ELEMS.div_ceil(n) + 600;
            let y0 = random_input(rows * n, 1, 0.0);
            let bias = random_input(n, 2, 0.0);
            let want_y: Vec<f32> = y0.iter().enumerate().map(|(i, v)| v + bias[i % n]).collect();
            let mut want_sum = vec![0.0f32; n];
            for r in 0..rows {
                for j in 0..n {
                    want_sum[j] += y0[r * n + j];
                }
            }
            for threads in [1, 2, 3] {
                with_intra_op_threads(threads, || {
                    let mut y = y0.clone();
                    Cpu::add_bias_rows(&mut y, &bias, rows, n);
                    assert_eq!(y, want_y, "n = {n}, {threads} threads");
                    let mut sum = vec![f32::NAN; n];
                    Cpu::sum_rows(&y0, &mut sum, rows, n);
                    assert_eq!(sum, want_sum, "n = {n}, {threads} threads");
                });
            }
        }
    }
}
