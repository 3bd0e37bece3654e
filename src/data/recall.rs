//! Associative recall as classification (the Zoology/H3 "MQAR" family), generated from a seed.
//!
//! A sequence of `len` tokens holds `pairs` key-value pairs (a key, then its value in the next
//! position) among filler, and ends with a query: one of those keys. The label is the value
//! bound to it. The filler is random value tokens (as Zoology's MQAR fills with random
//! tokens): every value occurs somewhere, so knowing which values occur is worth nothing and
//! only binding a key to its neighbour answers. (With one filler token, measured: every model
//! settles at 1/pairs, the score of knowing which values occur, and a 2-layer transformer
//! stayed there for 20,000 steps on 16 tokens, 2 pairs.) The gap `d` is the distance from the queried pair's value to the query
//! (`d = 1`: the pair just before the query); it is drawn uniformly from `min_gap..=max_gap`,
//! or fixed ([`RecallConfig::at_gap`]) to measure accuracy against distance.
//!
//! Keys within a sequence are distinct and occur once each (the query aside); chance is
//! `1/values`.
//!
//! Tokens: `1..=keys` keys, `keys+1..=keys+values` values, and 0 (never generated; kept so
//! that `vocab = 1 + keys + values` leaves room for padding); labels `0..values`.

use crate::data::Dataset;
use crate::error::{Error, Result};
use rand::seq::index::sample;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The task's sizes and seed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecallConfig {
    pub n_train: usize,
    pub n_test: usize,
    /// Tokens per sequence, the query included.
    pub len: usize,
    /// Key-value pairs per sequence.
    pub pairs: usize,
    /// Distinct key tokens and value tokens (the classes).
    pub keys: usize,
    pub values: usize,
    /// Smallest gap between the queried value and the query.
    pub min_gap: usize,
    /// Largest gap (None: the longest that fits, `len − 2`).
    pub max_gap: Option<usize>,
    pub seed: u64,
}

impl Default for RecallConfig {
    fn default() -> Self {
        Self {
            n_train: 100_000,
            n_test: 2_000,
            len: 32,
            pairs: 2,
            keys: 16,
            values: 16,
            min_gap: 1,
            max_gap: None,
            seed: 0,
        }
    }
}

/// Largest sequence length and example count the generator accepts.
pub const MAX_LEN: usize = 4096;
pub const MAX_EXAMPLES: usize = 10_000_000;

impl RecallConfig {
    /// Token ids in the vocabulary.
    pub fn vocab(&self) -> usize {
        1 + self.keys + self.values
    }

    /// The largest gap drawn.
    pub fn max_gap(&self) -> usize {
        self.max_gap.unwrap_or(self.len.saturating_sub(2))
    }

    /// Refuses sizes the generator cannot fill (or that would not fit in memory).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("recall task: {m}")));
        if self.len < 4 || self.len > MAX_LEN {
            return bad(format!("len must lie in 4..={MAX_LEN}, got {}", self.len));
        }
        if self.pairs == 0 || self.pairs > self.keys || self.pairs > self.values {
            return bad(format!(
                "pairs ({}) must be at least 1 and at most the keys ({}) and values ({})",
                self.pairs, self.keys, self.values
            ));
        }
        if self.values < 2 || self.keys + self.values >= 1 << 24 {
            return bad("needs 2 values or more, and fewer than 2^24 tokens".into());
        }
        // room for every pair whatever the earlier ones took: each pair blocks at most three
        // starting positions of the next
        if 3 * self.pairs + 3 > self.len {
            return bad(format!("{} pairs need sequences of at least {} tokens", self.pairs, 3 * self.pairs + 3));
        }
        if self.min_gap == 0 || self.min_gap > self.max_gap() || self.max_gap() > self.len - 2 {
            return bad(format!("gaps must satisfy 1 <= min_gap <= max_gap <= len - 2 = {}", self.len - 2));
        }
        if self.n_train == 0 || self.n_test == 0 || self.n_train.max(self.n_test) > MAX_EXAMPLES {
            return bad(format!("n_train and n_test must lie in 1..={MAX_EXAMPLES}"));
        }
        Ok(())
    }

    /// The dataset: `n_train` and `n_test` sequences with gaps drawn from the range.
    pub fn generate(&self) -> Result<Dataset> {
        self.validate()?;
        let (x, y, _) = self.examples(self.n_train, None, stream(self.seed, 1));
        let (x_test, y_test, _) = self.examples(self.n_test, None, stream(self.seed, 2));
        Ok(self.dataset(x, y, x_test, y_test))
    }

    /// `n` test sequences whose queried pair lies exactly `gap` before the query (a stream of
    /// their own for each gap).
    pub fn at_gap(&self, gap: usize, n: usize) -> Result<(Vec<f32>, Vec<u32>)> {
        let fixed = RecallConfig { min_gap: gap, max_gap: Some(gap), n_test: n, ..self.clone() };
        fixed.validate()?;
        let (x, y, _) = fixed.examples(n, Some(gap), stream(self.seed, 1000 + gap as u64));
        Ok((x, y))
    }

    fn dataset(&self, x: Vec<f32>, y: Vec<u32>, x_test: Vec<f32>, y_test: Vec<u32>) -> Dataset {
        Dataset {
            name: "recall".into(),
            example_shape: vec![self.len, 1],
            classes: self.values,
            vocab: Some(self.vocab()),
            x,
            y,
            x_test,
            y_test,
        }
    }

    /// `n` sequences (row-major), their labels and their gaps.
    fn examples(&self, n: usize, gap: Option<usize>, mut rng: ChaCha8Rng) -> (Vec<f32>, Vec<u32>, Vec<usize>) {
        let len = self.len;
        let (mut x, mut y, mut gaps) = (vec![0.0f32; n * len], Vec::with_capacity(n), Vec::with_capacity(n));
        let mut used = vec![false; len];
        let mut starts = Vec::with_capacity(len);
        for seq in x.chunks_exact_mut(len) {
            used.fill(false);
            for t in seq.iter_mut() {
                *t = (1 + self.keys + rng.random_range(0..self.values)) as f32;
            }
            let keys = sample(&mut rng, self.keys, self.pairs);
            let values = sample(&mut rng, self.values, self.pairs);
            let d = gap.unwrap_or_else(|| rng.random_range(self.min_gap..=self.max_gap()));
            let query = len - 1;
            // the queried pair (pair 0) ends `d` before the query; the others go anywhere free
            let place = |start: usize, k: usize, seq: &mut [f32], used: &mut [bool]| {
                seq[start] = (1 + keys.index(k)) as f32;
                seq[start + 1] = (1 + self.keys + values.index(k)) as f32;
                used[start] = true;
                used[start + 1] = true;
            };
            used[query] = true;
            place(query - d - 1, 0, seq, &mut used);
            for k in 1..self.pairs {
                starts.clear();
                starts.extend((0..len - 2).filter(|&s| !used[s] && !used[s + 1]));
                let s = starts[rng.random_range(0..starts.len())];
                place(s, k, seq, &mut used);
            }
            seq[query] = (1 + keys.index(0)) as f32;
            y.push(values.index(0) as u32);
            gaps.push(d);
        }
        (x, y, gaps)
    }
}

/// The generator of one part of the task (train 1, test 2, the test at gap g 1000 + g).
fn stream(seed: u64, stream: u64) -> ChaCha8Rng {
    crate::train::rng_for(seed, stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sequence holds its pairs adjacent, distinct keys and values, and a query whose
    /// value is the label, `d` before the query.
    #[test]
    fn sequences_hold_what_the_label_says() {
        let cfg = RecallConfig { n_train: 300, n_test: 50, len: 64, pairs: 4, ..RecallConfig::default() };
        let d = cfg.generate().unwrap();
        d.validate().unwrap();
        assert_eq!((d.example_shape.as_slice(), d.classes, d.vocab), ([64, 1].as_slice(), 16, Some(33)));
        let (_, _, gaps) = cfg.examples(300, None, stream(cfg.seed, 1));
        for ((seq, &label), &gap) in d.x.chunks(64).zip(&d.y).zip(&gaps) {
            let query = seq[63] as usize;
            assert!((1..=16).contains(&query), "the query is a key");
            let key_at: Vec<usize> = (0..63).filter(|&i| seq[i] as usize == query).collect();
            assert_eq!(key_at.len(), 1, "the queried key occurs once before the query");
            assert_eq!(63 - (key_at[0] + 1), gap);
            assert_eq!(seq[key_at[0] + 1] as usize, 17 + label as usize, "its value is the label");
            let keys: Vec<usize> = seq[..63].iter().map(|&t| t as usize).filter(|t| (1..=16).contains(t)).collect();
            assert_eq!(keys.len(), 4, "four keys, the rest values");
            assert!(seq.iter().all(|&t| (1.0..33.0).contains(&t)));
            let mut distinct = keys.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), 4);
        }
        // gaps cover the range
        assert!(gaps.iter().min() == Some(&1) && gaps.iter().max() == Some(&62));
    }

    #[test]
    fn seeded_and_gap_fixed_on_request() {
        let cfg = RecallConfig { n_train: 50, n_test: 10, len: 64, ..RecallConfig::default() };
        assert_eq!(cfg.generate().unwrap().x, cfg.generate().unwrap().x);
        let other = RecallConfig { seed: 1, ..cfg.clone() };
        assert_ne!(cfg.generate().unwrap().x, other.generate().unwrap().x);
        let (x, y) = cfg.at_gap(40, 20).unwrap();
        for (seq, label) in x.chunks(64).zip(&y) {
            assert_eq!(seq[63 - 40] as usize, 17 + *label as usize);
            assert_eq!(seq[63 - 41], seq[63]);
        }
        assert!(cfg.at_gap(63, 5).is_err());
    }

    #[test]
    fn impossible_sizes_are_refused() {
        for bad in [
            RecallConfig { pairs: 0, ..Default::default() },
            RecallConfig { pairs: 17, ..Default::default() },
            RecallConfig { len: 12, pairs: 4, ..Default::default() },
            RecallConfig { max_gap: Some(31), ..Default::default() },
            RecallConfig { min_gap: 10, max_gap: Some(5), ..Default::default() },
            RecallConfig { len: 1 << 20, ..Default::default() },
            RecallConfig { n_train: usize::MAX, ..Default::default() },
        ] {
            assert!(bad.generate().is_err(), "{bad:?}");
        }
    }
}
