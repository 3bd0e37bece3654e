//! An in-memory classification dataset: f32 examples (channels last), integer labels.

use crate::data::mnist1d::{Mnist1d, Mnist1dConfig};
use crate::error::{Error, Result};

/// Train and test splits of one dataset.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: String,
    /// Shape of one example, channels last: `[L, C]` for sequences, `[H, W, C]` for images.
    pub example_shape: Vec<usize>,
    pub classes: usize,
    /// Token data: every value is a token id in `0..vocab` (an integer, exact in f32 below
    /// 2^24) and examples are `[L, 1]`; the models embed the ids ([`crate::models::text`]).
    /// None: the values are measurements.
    pub vocab: Option<usize>,
    /// `[n_train, example_len]`, row-major.
    pub x: Vec<f32>,
    pub y: Vec<u32>,
    pub x_test: Vec<f32>,
    pub y_test: Vec<u32>,
}

impl Dataset {
    /// CRC-32 of the examples and labels (train, then test), as hex: names the exact data a
    /// result was computed on.
    pub fn crc32(&self) -> String {
        let mut h = crc32fast::Hasher::new();
        for part in [&self.x, &self.x_test] {
            for v in part.iter() {
                h.update(&v.to_le_bytes());
            }
        }
        for part in [&self.y, &self.y_test] {
            for v in part.iter() {
                h.update(&v.to_le_bytes());
            }
        }
        format!("{:08x}", h.finalize())
    }

    /// Values per example.
    pub fn example_len(&self) -> usize {
        self.example_shape.iter().product()
    }

    pub fn n_train(&self) -> usize {
        self.y.len()
    }

    pub fn n_test(&self) -> usize {
        self.y_test.len()
    }

    /// Checks sizes and labels so training can index without further checks.
    pub fn validate(&self) -> Result<()> {
        let len = self.example_len();
        let bad = |m: String| Err(Error::Config(format!("dataset {}: {m}", self.name)));
        if len == 0 || self.classes < 2 {
            return bad("needs non-empty examples and at least two classes".into());
        }
        if self.x.len() != self.n_train() * len || self.x_test.len() != self.n_test() * len {
            return bad("example arrays do not match the label counts".into());
        }
        if self.n_train() == 0 || self.n_test() == 0 {
            return bad("train and test splits must both be non-empty".into());
        }
        if let Some(l) = self.y.iter().chain(&self.y_test).find(|&&l| l as usize >= self.classes) {
            return bad(format!("label {l} out of range for {} classes", self.classes));
        }
        if let Some(vocab) = self.vocab {
            if self.example_shape.len() != 2 || self.example_shape[1] != 1 {
                return bad(format!("token ids come as [L, 1] examples, not {:?}", self.example_shape));
            }
            let not_a_token = |v: f32| !(v >= 0.0 && v < vocab as f32 && v.fract() == 0.0);
            if let Some(v) = self.x.iter().chain(&self.x_test).find(|&&v| not_a_token(v)) {
                return bad(format!("{v} is not a token id of a vocabulary of {vocab}"));
            }
        }
        Ok(())
    }

    /// Keeps the first `n` test examples.
    pub fn truncate_test(&mut self, n: usize) {
        let n = n.min(self.n_test());
        self.x_test.truncate(n * self.example_len());
        self.y_test.truncate(n);
    }

    /// Keeps the first `n` training examples (for data-size experiments and quick runs).
    pub fn truncate_train(&mut self, n: usize) {
        let n = n.min(self.n_train());
        self.x.truncate(n * self.example_len());
        self.y.truncate(n);
    }
}

impl From<Mnist1d> for Dataset {
    fn from(d: Mnist1d) -> Self {
        Dataset {
            name: "mnist1d".into(),
            example_shape: vec![d.length, 1],
            classes: 10,
            vocab: None,
            x: d.x.iter().map(|&v| v as f32).collect(),
            y: d.y.iter().map(|&v| v as u32).collect(),
            x_test: d.x_test.iter().map(|&v| v as f32).collect(),
            y_test: d.y_test.iter().map(|&v| v as u32).collect(),
        }
    }
}

/// MNIST-1D with the reference defaults (4000 train / 1000 test, length 40, seed 42).
pub fn mnist1d_default() -> Result<Dataset> {
    Ok(Mnist1dConfig::default().generate()?.into())
}
