//! Sums over the rows of a row-major matrix, one per column: bias gradients, LayerNorm's
//! parameter gradients, BatchNorm's statistics and gradients (used by `elementwise.rs` and
//! `norm.rs`). Each column is summed over the rows in order, as one thread adding row after
//! row would, so any split of the columns across threads gives the same numbers; blocks of
//! columns keep their sums in registers.

use crate::core::cpu::{chunking, for_each_chunk_mut, intra_op_threads, PARALLEL_MIN_ELEMS};
use rayon::prelude::*;

/// Columns summed together in registers by [`column_sums`]: two accumulators of 32 lanes
/// (four AVX-512 or eight AVX2 registers). Measured on W2's LayerNorm(128) over 8192 rows:
/// blocks of 8 columns on one thread made its backward 2.2x PyTorch's.
pub(crate) const COLUMN_BLOCK: usize = 32;

/// What [`column_block`] sums over the rows for each column.
pub(crate) const SUM: u8 = 0; // Σx (bias gradients, BatchNorm's mean)
pub(crate) const BN_SQUARES: u8 = 1; // Σ(x − mean[j])² (BatchNorm's variance)
pub(crate) const BN_GRADS: u8 = 2; // Σdy, Σdy·(x − mean[j])·rstd[j] (BatchNorm's dβ, dγ)
pub(crate) const LN_GRADS: u8 = 3; // Σdy, Σdy·(x − mean[r])·rstd[r] (LayerNorm's dβ, dγ: row statistics)

/// What [`column_sums`] reads: rows of `c` values (and their gradients), and the statistics
/// (per column for BatchNorm, per row for LayerNorm; empty where the mode needs none).
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a> {
    pub x: &'a [f32],
    pub dy: &'a [f32],
    pub mean: &'a [f32],
    pub rstd: &'a [f32],
    pub c: usize,
}

/// `s0[j] += Σ_r ..` and, for the gradients, `s1[j] += Σ_r ..` (see [`SUM`] and the other
/// modes) for the columns `c0..c0 + s0.len()` of rows of `c`, each summed over the rows in
/// order, as one thread adding row after row would: the same numbers whichever threads take
/// which columns.
#[inline(always)]
pub(crate) fn column_sums<const MODE: u8>(rows: Rows, c0: usize, s0: &mut [f32], s1: &mut [f32]) {
    let grads = MODE == BN_GRADS || MODE == LN_GRADS;
    // one sum of 64 columns is four AVX-512 registers (measured: BatchNorm's forward over
    // 131072 rows of 128 took 16 ms with them, 28 with blocks of 32); the gradients' two sums
    // take 32
    let widest = if grads { COLUMN_BLOCK } else { 64 };
    let mut j = 0;
    while j < s0.len() {
        // blocks of fixed width keep the accumulators in registers
        let w = [widest, COLUMN_BLOCK, 16, 8, 1].into_iter().find(|&w| w <= s0.len() - j).unwrap_or(1);
        let (b0, b1) = (&mut s0[j..j + w], if grads { &mut s1[j..j + w] } else { &mut [][..] });
        match w {
            64 => column_block::<MODE, 64>(rows, c0 + j, b0, b1),
            COLUMN_BLOCK => column_block::<MODE, COLUMN_BLOCK>(rows, c0 + j, b0, b1),
            16 => column_block::<MODE, 16>(rows, c0 + j, b0, b1),
            8 => column_block::<MODE, 8>(rows, c0 + j, b0, b1),
            _ => column_block::<MODE, 1>(rows, c0 + j, b0, b1),
        }
        j += w;
    }
}

#[inline(always)]
fn column_block<const MODE: u8, const L: usize>(rows: Rows, c0: usize, s0: &mut [f32], s1: &mut [f32]) {
    let Rows { x, dy, mean, rstd, c } = rows;
    let rows = x.len() / c;
    let (mut a0, mut a1) = ([0.0f32; L], [0.0f32; L]);
    let (mut m, mut s) = ([0.0f32; L], [0.0f32; L]);
    if MODE == BN_SQUARES || MODE == BN_GRADS {
        m.copy_from_slice(&mean[c0..c0 + L]);
    }
    if MODE == BN_GRADS {
        s.copy_from_slice(&rstd[c0..c0 + L]);
    }
    for r in 0..rows {
        let xr = &x[r * c + c0..r * c + c0 + L];
        match MODE {
            SUM => (0..L).for_each(|l| a0[l] += xr[l]),
            BN_SQUARES => (0..L).for_each(|l| {
                let d = xr[l] - m[l];
                a0[l] += d * d;
            }),
            BN_GRADS => {
                let gr = &dy[r * c + c0..r * c + c0 + L];
                (0..L).for_each(|l| {
                    a0[l] += gr[l];
                    a1[l] += gr[l] * (xr[l] - m[l]) * s[l];
                })
            }
            _ => {
                let (gr, mr, sr) = (&dy[r * c + c0..r * c + c0 + L], mean[r], rstd[r]);
                (0..L).for_each(|l| {
                    a0[l] += gr[l];
                    a1[l] += gr[l] * (xr[l] - mr) * sr;
                })
            }
        }
    }
    (0..L).for_each(|l| s0[l] += a0[l]);
    if MODE == BN_GRADS || MODE == LN_GRADS {
        (0..L).for_each(|l| s1[l] += a1[l]);
    }
}

/// Below this many values the sums skip the AVX-512 dispatch (the threshold it was measured
/// at, when it was also the parallel one).
const DISPATCH_MIN_VALUES: usize = 1 << 15;

/// Columns per parallel task for the sums over rows (LayerNorm's parameter gradients,
/// BatchNorm's statistics and gradients).
pub(crate) fn columns_per_task(rows: usize, c: usize) -> usize {
    if rows * c < PARALLEL_MIN_ELEMS {
        c.max(1)
    } else {
        chunking(c, COLUMN_BLOCK)
    }
}

/// `f(task, a_part, b_part)` over matching chunks of `per_task` columns of `a` and `b`: inline
/// where there is one chunk or one thread, on rayon's pool otherwise.
pub(crate) fn for_each_column_pair(
    a: &mut [f32],
    b: &mut [f32],
    per_task: usize,
    f: impl Fn(usize, &mut [f32], &mut [f32]) + Sync + Send,
) {
    if per_task >= a.len() || intra_op_threads() <= 1 {
        f(0, a, b);
    } else {
        a.par_chunks_mut(per_task).zip(b.par_chunks_mut(per_task)).enumerate().for_each(|(t, (a, b))| f(t, a, b));
    }
}

/// One sum per column ([`SUM`] or [`BN_SQUARES`]) of rows of `c` into `out` (zeroed here).
pub(crate) fn sums_into<const MODE: u8>(x: &[f32], mean: &[f32], c: usize, out: &mut [f32]) {
    let rows = Rows { x, dy: &[], mean, rstd: &[], c };
    if x.len() < DISPATCH_MIN_VALUES {
        // small layers (the MNIST-1D MLP's bias gradients): the call through the AVX-512
        // dispatch cost more than it saved (measured: W3a 15% slower with it)
        out.fill(0.0);
        return column_sums::<MODE>(rows, 0, out, &mut []);
    }
    let cpt = columns_per_task(x.len() / c, c);
    for_each_chunk_mut(out, cpt, |t, o| {
        o.fill(0.0);
        crate::dispatch_simd!(column_sums::<MODE>(rows, t * cpt, o, &mut []))
    });
}
