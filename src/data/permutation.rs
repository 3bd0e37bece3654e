//! The experiment's input conditions. Permuting positions destroys spatial structure while
//! keeping every value: a learner that ignores position order (MLP, Mixer) is unaffected, a
//! CNN loses the locality it relies on. All channels of a position move together.

use crate::data::Dataset;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// How positions are permuted in each training batch after augmentation (a condition applied
/// on the fly, so that crops and flips act on the original layout).
#[derive(Clone, Debug, PartialEq)]
pub enum PositionPermutation {
    None,
    /// The same permutation for every example.
    Fixed(Vec<usize>),
    /// A fresh permutation for every example drawn.
    PerExample,
}

/// How positions are arranged in every example.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    /// As recorded.
    Original,
    /// One fixed random permutation of positions, the same for train and test.
    Permuted,
    /// A fresh permutation for each example: no order is left, only the values (the control).
    PerExample,
}

crate::named_enum!(Condition { Original => "original", Permuted => "permuted", PerExample => "per-example" });

impl Condition {
    /// The name a user types (the list is in `named_enum!` above).
    pub fn name(&self) -> &'static str {
        crate::Named::name(self)
    }

    /// The permutation of `positions` this condition applies to training batches drawn after
    /// augmentation (the same one [`Condition::apply`] uses for `seed`).
    pub fn batch_permutation(&self, positions: usize, seed: u64) -> PositionPermutation {
        match self {
            Condition::Original => PositionPermutation::None,
            Condition::Permuted => {
                PositionPermutation::Fixed(random_permutation(positions, &mut ChaCha8Rng::seed_from_u64(seed)))
            }
            Condition::PerExample => PositionPermutation::PerExample,
        }
    }

    /// The dataset under this condition; permutations are drawn from `seed`.
    pub fn apply(&self, data: &Dataset, seed: u64) -> Dataset {
        let channels = data.example_shape.last().copied().unwrap_or(1).max(1);
        let positions = data.example_len() / channels;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut out = data.clone();
        match self {
            Condition::Original => {}
            Condition::Permuted => {
                let perm = random_permutation(positions, &mut rng);
                permute_all(&mut out.x, &perm, channels);
                permute_all(&mut out.x_test, &perm, channels);
            }
            Condition::PerExample => {
                for x in [&mut out.x, &mut out.x_test] {
                    let mut perm = (0..positions).collect::<Vec<_>>();
                    let mut scratch = vec![0.0; positions * channels];
                    for example in x.chunks_mut(positions * channels) {
                        perm.shuffle(&mut rng);
                        permute_one(example, &perm, channels, &mut scratch);
                    }
                }
            }
        }
        out
    }
}

/// A uniformly random permutation of `0..n`.
pub fn random_permutation(n: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    p.shuffle(rng);
    p
}

/// `example[i] = original[perm[i]]` for every position (channels move together).
pub fn permute_one(example: &mut [f32], perm: &[usize], channels: usize, scratch: &mut [f32]) {
    scratch.copy_from_slice(example);
    for (dst, &src) in perm.iter().enumerate() {
        example[dst * channels..(dst + 1) * channels].copy_from_slice(&scratch[src * channels..(src + 1) * channels]);
    }
}

fn permute_all(x: &mut [f32], perm: &[usize], channels: usize) {
    let len = perm.len() * channels;
    let mut scratch = vec![0.0; len];
    for example in x.chunks_mut(len) {
        permute_one(example, perm, channels, &mut scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Dataset {
        Dataset {
            name: "toy".into(),
            example_shape: vec![4, 2],
            classes: 2,
            vocab: None,
            x: (0..16).map(|v| v as f32).collect(),
            y: vec![0, 1],
            x_test: (100..108).map(|v| v as f32).collect(),
            y_test: vec![1],
        }
    }

    #[test]
    fn fixed_permutation_is_shared_by_train_and_test_and_keeps_channels_together() {
        let d = toy();
        let p = Condition::Permuted.apply(&d, 7);
        // recover the permutation from the first training example
        let perm: Vec<usize> = (0..4).map(|i| (p.x[i * 2] / 2.0) as usize).collect();
        for (i, &to) in perm.iter().enumerate() {
            assert_eq!(p.x[i * 2 + 1], p.x[i * 2] + 1.0, "channels move together");
            assert_eq!(p.x[8 + i * 2], 8.0 + to as f32 * 2.0, "same permutation for every example");
            assert_eq!(p.x_test[i * 2], 100.0 + to as f32 * 2.0, "same permutation for test");
        }
        let mut sorted = perm.clone();
        sorted.sort();
        assert_eq!(sorted, vec![0, 1, 2, 3]);
        assert_eq!(Condition::Permuted.apply(&d, 7).x, p.x, "seeded");
    }

    #[test]
    fn per_example_keeps_each_examples_values() {
        let d = toy();
        let p = Condition::PerExample.apply(&d, 3);
        for (a, b) in d.x.chunks(8).zip(p.x.chunks(8)) {
            let mut a = a.to_vec();
            let mut b = b.to_vec();
            a.sort_by(f32::total_cmp);
            b.sort_by(f32::total_cmp);
            assert_eq!(a, b);
        }
        assert_eq!(Condition::Original.apply(&d, 3).x, d.x);
    }
}
