//! A training batch gathered from a training set kept in the backend's memory: each example
//! copied by its index, shifted (zero-padded crop) and mirrored in its original layout, then
//! its positions permuted — the augmentation of [`crate::train::BatchSampler`], as one kernel.
//!
//! The random choices stay on the host (the sampler draws them from the run's seed into a
//! [`BatchPlan`]), so every backend trains on the same batches; only the copying moves to the
//! device, where it saves uploading each batch. A data op: it has no gradient.

use crate::core::backend::BackendBase;

/// An example's layout: `[H, W, C]` images; sequences are `[1, L, C]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExampleGeom {
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl ExampleGeom {
    /// The layout of examples of `shape` (`[H, W, C]`, or `[L, C]`, or `[L]`).
    pub fn of(shape: &[usize]) -> Self {
        match *shape {
            [h, w, c] => ExampleGeom { h, w, c },
            [l, c] => ExampleGeom { h: 1, w: l, c },
            _ => ExampleGeom { h: 1, w: shape.iter().product(), c: 1 },
        }
    }

    pub fn positions(&self) -> usize {
        self.h * self.w
    }

    pub fn len(&self) -> usize {
        self.h * self.w * self.c
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The choices behind one batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchPlan {
    /// Four values an example: its index in the training set, the crop's row and column
    /// shift (output pixel `(y, x)` reads `(y + dy, x' + dx)`, zero outside), and 1 to mirror
    /// (`x' = W − 1 − x`) or 0.
    pub examples: Vec<i32>,
    /// Position permutations applied after the crop: none (empty), one for every example, or
    /// one per example (`positions` values each); output position `q` takes position `perm[q]`.
    pub perms: Vec<i32>,
}

impl BatchPlan {
    pub fn rows(&self) -> usize {
        self.examples.len() / 4
    }

    pub fn clear(&mut self) {
        self.examples.clear();
        self.perms.clear();
    }

    /// The permutation example `r` uses, if any.
    fn perm(&self, r: usize, positions: usize) -> Option<&[i32]> {
        match self.perms.len() {
            0 => None,
            n if n == positions => Some(&self.perms),
            _ => Some(&self.perms[r * positions..(r + 1) * positions]),
        }
    }

    /// Whether the plan fits a training set of `n` examples of layout `g` (indices in range,
    /// permutation tables of the right size and in range).
    pub fn fits(&self, n: usize, g: ExampleGeom) -> bool {
        let p = g.positions();
        self.examples.len().is_multiple_of(4)
            && self.examples.chunks(4).all(|e| (e[0] as usize) < n && e[0] >= 0 && e[3] & !1 == 0)
            && (self.perms.is_empty() || self.perms.len() == p || self.perms.len() == p * self.rows())
            && self.perms.iter().all(|&q| q >= 0 && (q as usize) < p)
    }
}

/// The backend kernel.
pub trait GatherBatchOps: BackendBase {
    /// Fills `x` (`plan.rows()` examples of layout `g`) and `y` (their labels) from the
    /// training set `x_train` / `y_train` (labels as f32) as `plan` says. `plan` must fit the
    /// training set ([`BatchPlan::fits`]); `x` and `y` are resized.
    fn gather_batch(
        x_train: &Self::Buf,
        y_train: &Self::Buf,
        g: ExampleGeom,
        plan: &BatchPlan,
        x: &mut Self::Buf,
        y: &mut Self::Buf,
    );
}

/// The gather of examples on host slices: the CPU backend's kernel, and the sampler's when it
/// fills host batches (so both paths make the same batches by construction). `x` must hold
/// `plan.rows()` examples.
pub fn gather_host(x_train: &[f32], g: ExampleGeom, plan: &BatchPlan, x: &mut [f32]) {
    let (len, c, positions) = (g.len(), g.c, g.positions());
    for (r, e) in plan.examples.chunks_exact(4).enumerate() {
        let src = &x_train[e[0] as usize * len..][..len];
        let (dy, dx, flip) = (e[1] as isize, e[2] as isize, e[3] != 0);
        let out = &mut x[r * len..(r + 1) * len];
        // output pixel (py, px) of the crop: zero outside the original
        let pixel = |py: usize, px: usize, dst: &mut [f32]| {
            let sy = py as isize + dy;
            let sx = if flip { g.w - 1 - px } else { px } as isize + dx;
            if sy < 0 || sy >= g.h as isize || sx < 0 || sx >= g.w as isize {
                dst.fill(0.0);
            } else {
                let s = (sy as usize * g.w + sx as usize) * c;
                dst.copy_from_slice(&src[s..s + c]);
            }
        };
        match plan.perm(r, positions) {
            // the common cases copy rows, with no division per position
            None if dy == 0 && dx == 0 && !flip => out.copy_from_slice(src),
            None => {
                for (py, row) in out.chunks_exact_mut(g.w * c).enumerate() {
                    for (px, dst) in row.chunks_exact_mut(c).enumerate() {
                        pixel(py, px, dst);
                    }
                }
            }
            Some(perm) => {
                for (dst, &pos) in out.chunks_exact_mut(c).zip(perm) {
                    pixel(pos as usize / g.w, pos as usize % g.w, dst);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Cpu, Tensor};

    #[test]
    fn shifts_mirrors_and_permutes_like_the_definition() {
        // two 2x3 images of 2 channels: value = 100·example + 10·position + channel
        let g = ExampleGeom { h: 2, w: 3, c: 2 };
        let x_train: Vec<f32> =
            (0..2).flat_map(|e| (0..6).flat_map(move |p| (0..2).map(move |c| (100 * e + 10 * p + c) as f32))).collect();
        let y_train = vec![7.0, 9.0];
        let plan = BatchPlan {
            // example 1 shifted one column right-to-left and mirrored; example 0 unshifted
            examples: vec![1, 0, 1, 1, 0, 0, 0, 0],
            perms: vec![5, 4, 3, 2, 1, 0],
        };
        assert!(plan.fits(2, g));
        let (mut x, mut y) = (Tensor::<Cpu>::empty(), Tensor::<Cpu>::empty());
        Cpu::gather_batch(&x_train, &y_train, g, &plan, x.buf_mut(), y.buf_mut());
        let (x, y) = (x.buf().clone(), y.buf().clone());
        assert_eq!(y, [9.0, 7.0]);
        // output q of example 1 reads augmented position 5 - q: row py, column px, mirrored
        // (2 - px) then shifted (+1): column 3 - px, out of bounds for px = 0
        let want = |q: usize| -> f32 {
            let pos = 5 - q;
            let (py, px) = (pos / 3, pos % 3);
            let sx = 2 - px + 1;
            if sx >= 3 {
                0.0
            } else {
                (100 + 10 * (py * 3 + sx)) as f32
            }
        };
        for q in 0..6 {
            assert_eq!(x[q * 2], want(q), "example 1, position {q}");
            assert_eq!(x[q * 2 + 1], if want(q) == 0.0 { 0.0 } else { want(q) + 1.0 });
            // example 0: only permuted
            assert_eq!(x[12 + q * 2], (10 * (5 - q)) as f32);
        }
    }

    #[test]
    fn refuses_plans_that_do_not_fit() {
        let g = ExampleGeom { h: 1, w: 4, c: 1 };
        assert!(!BatchPlan { examples: vec![4, 0, 0, 0], perms: vec![] }.fits(4, g));
        assert!(!BatchPlan { examples: vec![0, 0, 0, 2], perms: vec![] }.fits(4, g));
        assert!(!BatchPlan { examples: vec![0, 0, 0, 0], perms: vec![0, 1, 2] }.fits(4, g));
        assert!(!BatchPlan { examples: vec![0, 0, 0, 0], perms: vec![0, 1, 2, 4] }.fits(4, g));
        assert!(BatchPlan { examples: vec![3, 0, 0, 1], perms: vec![3, 2, 1, 0] }.fits(4, g));
    }
}
