//! Training batches: a fresh shuffle each epoch, optional augmentation (random crop with
//! padding, horizontal flip) in the original pixel layout, then the run's permutation of
//! positions. [`BatchSampler`] owns all of it so it can run on a prefetch thread.

use crate::core::ops::gather_batch::{gather_host, BatchPlan, ExampleGeom};
use crate::data::Dataset;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Data augmentation for images (`[H, W, C]` examples).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Shift by up to this many pixels each way (zero-padded, then cropped back).
    pub crop_padding: usize,
    /// Mirror left-right with probability 1/2.
    pub horizontal_flip: bool,
}

pub use crate::data::permutation::PositionPermutation;

/// Produces training batches; deterministic given its generator.
pub struct BatchSampler {
    pub batch_size: usize,
    pub augment: Option<Augment>,
    pub permutation: PositionPermutation,
    /// Reshuffle every epoch (false: the same order, 0..n, every epoch).
    pub shuffle: bool,
    rng: ChaCha8Rng,
    order: Vec<usize>,
    cursor: usize,
    perm: Vec<usize>,
    /// The plan [`BatchSampler::fill`] reuses.
    plan: BatchPlan,
}

/// Where a sampler stands: everything its next batches depend on (for checkpoints).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplerState {
    pub order: Vec<usize>,
    pub cursor: usize,
    pub perm: Vec<usize>,
    /// Position in the generator's stream (its seed and stream come from the run's seed).
    pub rng_word_pos: u128,
}

impl BatchSampler {
    pub fn state(&self) -> SamplerState {
        SamplerState {
            order: self.order.clone(),
            cursor: self.cursor,
            perm: self.perm.clone(),
            rng_word_pos: self.rng.get_word_pos(),
        }
    }

    pub fn restore(&mut self, s: &SamplerState) {
        self.order.clone_from(&s.order);
        self.cursor = s.cursor;
        self.perm.clone_from(&s.perm);
        self.rng.set_word_pos(s.rng_word_pos);
    }

    pub fn new(batch_size: usize, rng: ChaCha8Rng) -> Self {
        Self {
            batch_size,
            augment: None,
            permutation: PositionPermutation::None,
            shuffle: true,
            rng,
            order: Vec::new(),
            cursor: 0,
            perm: Vec::new(),
            plan: BatchPlan::default(),
        }
    }

    /// Fills `x` (examples, row-major) and `y` (labels as f32) with the next batch.
    pub fn fill(&mut self, data: &Dataset, x: &mut Vec<f32>, y: &mut Vec<f32>) {
        let mut plan = std::mem::take(&mut self.plan);
        self.plan(data, &mut plan);
        let g = ExampleGeom::of(&data.example_shape);
        x.clear();
        x.resize(plan.rows() * g.len(), 0.0);
        gather_host(&data.x, g, &plan, x);
        y.clear();
        y.extend(plan.examples.chunks_exact(4).map(|e| data.y[e[0] as usize] as f32));
        self.plan = plan;
    }

    /// The choices behind the next batch (which examples, their crops and flips, the
    /// permutations), for a backend to gather from its copy of the training set: the batch
    /// [`BatchSampler::fill`] would make, drawing the same random numbers.
    pub fn plan(&mut self, data: &Dataset, plan: &mut BatchPlan) {
        let n = data.n_train();
        let b = self.batch_size.min(n);
        if self.order.len() != n || self.cursor + b > n {
            if self.order.len() != n {
                self.order = (0..n).collect();
            }
            if self.shuffle {
                self.order.shuffle(&mut self.rng);
            }
            self.cursor = 0;
        }
        plan.clear();
        let g = ExampleGeom::of(&data.example_shape);
        let image = data.example_shape.len() == 3;
        for k in self.cursor..self.cursor + b {
            let (dy, dx, flip) = match self.augment {
                Some(a) if image => draw_augment(a, &mut self.rng),
                _ => (0, 0, false),
            };
            plan.examples.extend_from_slice(&[self.order[k] as i32, dy, dx, flip as i32]);
            match &self.permutation {
                PositionPermutation::None => {}
                PositionPermutation::Fixed(p) => {
                    if plan.perms.is_empty() {
                        plan.perms.extend(p.iter().map(|&q| q as i32));
                    }
                }
                PositionPermutation::PerExample => {
                    if self.perm.len() != g.positions() {
                        self.perm = (0..g.positions()).collect();
                    }
                    self.perm.shuffle(&mut self.rng);
                    plan.perms.extend(self.perm.iter().map(|&q| q as i32));
                }
            }
        }
        self.cursor += b;
    }
}

/// One image's crop shift `(dy, dx)` and mirror flag (output pixel `(y, x)` reads
/// `(y + dy, x' + dx)` of the zero-padded original, `x'` mirrored when flipped).
fn draw_augment(a: Augment, rng: &mut ChaCha8Rng) -> (i32, i32, bool) {
    let p = a.crop_padding as i64;
    let (dy, dx) = if p > 0 { (rng.random_range(-p..=p) as i32, rng.random_range(-p..=p) as i32) } else { (0, 0) };
    let flip = a.horizontal_flip && rng.random::<bool>();
    (dy, dx, flip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_order_repeats_every_epoch() {
        let data = crate::data::Dataset {
            name: "seq".into(),
            example_shape: vec![1, 1],
            classes: 2,
            vocab: None,
            x: (0..6).map(|v| v as f32).collect(),
            y: vec![0, 1, 0, 1, 0, 1],
            x_test: vec![0.0],
            y_test: vec![0],
        };
        let mut s = BatchSampler::new(2, rand::SeedableRng::seed_from_u64(0));
        s.shuffle = false;
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let mut seen = Vec::new();
        for _ in 0..6 {
            s.fill(&data, &mut x, &mut y);
            seen.extend_from_slice(&x);
        }
        assert_eq!(seen, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }
    use rand::SeedableRng;

    /// Random crop with zero padding and random horizontal flip of one `[H, W, C]` image.
    fn augment_one(
        img: &mut [f32],
        (h, w, c): (usize, usize, usize),
        a: Augment,
        rng: &mut ChaCha8Rng,
        scratch: &mut Vec<f32>,
    ) {
        let p = a.crop_padding as i64;
        let (dy, dx) =
            if p > 0 { (rng.random_range(-p..=p) as isize, rng.random_range(-p..=p) as isize) } else { (0, 0) };
        let flip = a.horizontal_flip && rng.random::<bool>();
        if dy == 0 && dx == 0 && !flip {
            return;
        }
        scratch.resize(img.len(), 0.0);
        scratch.copy_from_slice(img);
        for y in 0..h {
            for x in 0..w {
                let sy = y as isize + dy;
                let sx0 = if flip { (w - 1 - x) as isize } else { x as isize };
                let sx = sx0 + dx;
                let dst = &mut img[(y * w + x) * c..(y * w + x + 1) * c];
                if sy < 0 || sy >= h as isize || sx < 0 || sx >= w as isize {
                    dst.fill(0.0);
                } else {
                    let src = (sy as usize * w + sx as usize) * c;
                    dst.copy_from_slice(&scratch[src..src + c]);
                }
            }
        }
    }

    /// The sampler as it was before batches were planned (copy, augment in place, permute in
    /// place): the reference the planned batches must equal bit for bit.
    fn reference_fill(s: &mut BatchSampler, data: &Dataset, x: &mut Vec<f32>, y: &mut Vec<f32>) {
        use crate::data::permutation::permute_one;
        let n = data.n_train();
        let b = s.batch_size.min(n);
        if s.order.len() != n || s.cursor + b > n {
            if s.order.len() != n {
                s.order = (0..n).collect();
            }
            if s.shuffle {
                s.order.shuffle(&mut s.rng);
            }
            s.cursor = 0;
        }
        let len = data.example_len();
        let mut scratch = Vec::new();
        x.clear();
        y.clear();
        for k in s.cursor..s.cursor + b {
            let i = s.order[k];
            let start = x.len();
            x.extend_from_slice(&data.x[i * len..(i + 1) * len]);
            y.push(data.y[i] as f32);
            let example = &mut x[start..];
            if let (Some(a), [h, w, c]) = (s.augment, data.example_shape.as_slice()) {
                augment_one(example, (*h, *w, *c), a, &mut s.rng, &mut scratch);
            }
            let channels = data.example_shape.last().copied().unwrap_or(1).max(1);
            match &s.permutation {
                PositionPermutation::None => {}
                PositionPermutation::Fixed(p) => {
                    scratch.resize(len, 0.0);
                    permute_one(example, p, channels, &mut scratch);
                }
                PositionPermutation::PerExample => {
                    if s.perm.len() != len / channels {
                        s.perm = (0..len / channels).collect();
                    }
                    s.perm.shuffle(&mut s.rng);
                    scratch.resize(len, 0.0);
                    permute_one(example, &s.perm, channels, &mut scratch);
                }
            }
        }
        s.cursor += b;
    }

    #[test]
    fn planned_batches_equal_the_reference_sampler() {
        let d = images(7);
        let perms = [
            PositionPermutation::None,
            PositionPermutation::Fixed((0..16).rev().collect()),
            PositionPermutation::PerExample,
        ];
        for augment in [None, Some(Augment { crop_padding: 2, horizontal_flip: true })] {
            for perm in &perms {
                let make = || {
                    let mut s = BatchSampler::new(3, ChaCha8Rng::seed_from_u64(9));
                    (s.augment, s.permutation) = (augment, perm.clone());
                    s
                };
                let (mut new, mut old) = (make(), make());
                let (mut x, mut y, mut rx, mut ry) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for batch in 0..8 {
                    new.fill(&d, &mut x, &mut y);
                    reference_fill(&mut old, &d, &mut rx, &mut ry);
                    assert_eq!((&x, &y), (&rx, &ry), "batch {batch}, {augment:?}, {perm:?}");
                }
                assert_eq!(new.state(), old.state());
            }
        }
    }

    fn images(n: usize) -> Dataset {
        Dataset {
            name: "t".into(),
            example_shape: vec![4, 4, 2],
            classes: 2,
            vocab: None,
            x: (0..n * 32).map(|v| v as f32).collect(),
            y: (0..n as u32).map(|v| v % 2).collect(),
            x_test: vec![0.0; 32],
            y_test: vec![0],
        }
    }

    #[test]
    fn epochs_visit_every_example_once() {
        let d = images(10);
        let mut s = BatchSampler::new(5, ChaCha8Rng::seed_from_u64(1));
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let mut seen = Vec::new();
        for _ in 0..2 {
            s.fill(&d, &mut x, &mut y);
            seen.extend(x.chunks(32).map(|e| (e[0] / 32.0) as usize));
        }
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn flip_and_crop_move_pixels_as_expected() {
        let mut img: Vec<f32> = (1..=32).map(|v| v as f32).collect();
        let orig = img.clone();
        let mut scratch = Vec::new();
        // find a draw that flips without shifting
        let a = Augment { crop_padding: 0, horizontal_flip: true };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        loop {
            img.copy_from_slice(&orig);
            augment_one(&mut img, (4, 4, 2), a, &mut rng, &mut scratch);
            if img != orig {
                break;
            }
        }
        // row 0: pixels (0..4) mirrored, channels kept together
        assert_eq!(&img[..8], &[7., 8., 5., 6., 3., 4., 1., 2.]);
        let shift = Augment { crop_padding: 1, horizontal_flip: false };
        let shifted = |dy: isize, dx: isize| -> Vec<f32> {
            let mut out = vec![0.0; 32];
            for y in 0..4isize {
                for x in 0..4isize {
                    let (sy, sx) = (y + dy, x + dx);
                    if (0..4).contains(&sy) && (0..4).contains(&sx) {
                        for c in 0..2 {
                            out[((y * 4 + x) * 2 + c) as usize] = orig[((sy * 4 + sx) * 2 + c) as usize];
                        }
                    }
                }
            }
            out
        };
        let mut shifts_seen = std::collections::HashSet::new();
        for seed in 0..40 {
            img.copy_from_slice(&orig);
            augment_one(&mut img, (4, 4, 2), shift, &mut ChaCha8Rng::seed_from_u64(seed), &mut scratch);
            let found =
                (-1..=1).flat_map(|dy| (-1..=1).map(move |dx| (dy, dx))).find(|&(dy, dx)| shifted(dy, dx) == img);
            let found = found.unwrap_or_else(|| panic!("not a shift by at most 1: {img:?}"));
            shifts_seen.insert(found);
        }
        assert!(shifts_seen.len() >= 5, "shifts should vary: {shifts_seen:?}");
    }

    #[test]
    fn permutation_is_applied_after_augmentation() {
        let d = images(1);
        let perm: Vec<usize> = (0..16).rev().collect();
        let mut s = BatchSampler::new(1, ChaCha8Rng::seed_from_u64(2));
        s.permutation = PositionPermutation::Fixed(perm);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        s.fill(&d, &mut x, &mut y);
        assert_eq!(&x[..4], &[30., 31., 28., 29.]);
    }
}
