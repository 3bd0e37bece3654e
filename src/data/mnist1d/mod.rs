//! MNIST-1D (Greydanus 2020), generated in process and identical to the reference Python
//! generator (PyPI `mnist1d` 0.0.2.post1, `make_dataset`): same parameters, same seed, same
//! arrays (to within 1e-6; the test compares against a committed fixture made by that package).
//!
//! Ten 12-point templates are padded, stretched, scaled, translated, given correlated and
//! i.i.d. noise, sheared and resampled to 40 points; the whole set is then shuffled,
//! standardised and split into train and test.

mod numerics;
mod numpy_random;

pub use numpy_random::NumpyRandomState;

use crate::error::{Error, Result};

/// Most examples the generator makes (train and test together).
pub const MAX_SAMPLES: usize = 100_000_000;
use numerics::{gaussian_filter1d, linspace, mean, resample, std};
use serde::{Deserialize, Serialize};

/// Every parameter of the reference generator (`get_dataset_args`), defaults included.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mnist1dConfig {
    pub num_samples: usize,
    pub train_split: f64,
    pub template_len: usize,
    /// Inclusive range of zeros appended to each template before stretching.
    pub padding: (usize, usize),
    pub scale_coeff: f64,
    pub max_translation: usize,
    pub corr_noise_scale: f64,
    pub iid_noise_scale: f64,
    pub shear_scale: f64,
    /// Apply one fixed permutation to the positions of every sequence (the reference's flag).
    pub shuffle_seq: bool,
    pub final_seq_length: usize,
    pub seed: u32,
}

impl Default for Mnist1dConfig {
    fn default() -> Self {
        Self {
            num_samples: 5000,
            train_split: 0.8,
            template_len: 12,
            padding: (36, 60),
            scale_coeff: 0.4,
            max_translation: 48,
            corr_noise_scale: 0.25,
            iid_noise_scale: 2e-2,
            shear_scale: 0.75,
            shuffle_seq: false,
            final_seq_length: 40,
            seed: 42,
        }
    }
}

/// Changes to the generator's settings, as a user gives them (unset: the default).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mnist1dOverrides {
    pub num_samples: Option<usize>,
    pub train_split: Option<f64>,
    pub template_len: Option<usize>,
    pub padding_low: Option<usize>,
    pub padding_high: Option<usize>,
    pub scale_coeff: Option<f64>,
    pub max_translation: Option<usize>,
    pub corr_noise_scale: Option<f64>,
    pub iid_noise_scale: Option<f64>,
    pub shear_scale: Option<f64>,
    pub shuffle_seq: Option<bool>,
    pub final_seq_length: Option<usize>,
    pub seed: Option<u32>,
}

impl Mnist1dOverrides {
    /// The names (as settings) of the fields that are set.
    pub fn given(&self) -> Vec<&'static str> {
        let o = self;
        [
            ("num_samples", o.num_samples.is_some()),
            ("train_split", o.train_split.is_some()),
            ("template_len", o.template_len.is_some()),
            ("padding_low", o.padding_low.is_some()),
            ("padding_high", o.padding_high.is_some()),
            ("scale_coeff", o.scale_coeff.is_some()),
            ("max_translation", o.max_translation.is_some()),
            ("corr_noise_scale", o.corr_noise_scale.is_some()),
            ("iid_noise_scale", o.iid_noise_scale.is_some()),
            ("shear_scale", o.shear_scale.is_some()),
            ("shuffle_seq", o.shuffle_seq.is_some()),
            ("final_seq_length", o.final_seq_length.is_some()),
            ("seed", o.seed.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }

    /// `base` with every set field replaced.
    pub fn apply(&self, base: &Mnist1dConfig) -> Mnist1dConfig {
        let mut c = base.clone();
        let o = self;
        c.num_samples = o.num_samples.unwrap_or(c.num_samples);
        c.train_split = o.train_split.unwrap_or(c.train_split);
        c.template_len = o.template_len.unwrap_or(c.template_len);
        c.padding = (o.padding_low.unwrap_or(c.padding.0), o.padding_high.unwrap_or(c.padding.1));
        c.scale_coeff = o.scale_coeff.unwrap_or(c.scale_coeff);
        c.max_translation = o.max_translation.unwrap_or(c.max_translation);
        c.corr_noise_scale = o.corr_noise_scale.unwrap_or(c.corr_noise_scale);
        c.iid_noise_scale = o.iid_noise_scale.unwrap_or(c.iid_noise_scale);
        c.shear_scale = o.shear_scale.unwrap_or(c.shear_scale);
        c.shuffle_seq = o.shuffle_seq.unwrap_or(c.shuffle_seq);
        c.final_seq_length = o.final_seq_length.unwrap_or(c.final_seq_length);
        c.seed = o.seed.unwrap_or(c.seed);
        c
    }
}

/// The generated arrays, in the reference's float64 precision.
#[derive(Clone, Debug)]
pub struct Mnist1d {
    /// Row-major `[n_train, length]`.
    pub x: Vec<f64>,
    pub y: Vec<u8>,
    /// Row-major `[n_test, length]`.
    pub x_test: Vec<f64>,
    pub y_test: Vec<u8>,
    /// The (rescaled) time axis of the templates, as the reference returns it.
    pub t: Vec<f64>,
    pub length: usize,
}

/// The ten digit templates (`get_templates`), whitened, starting at zero, divided by 6.
fn templates() -> (Vec<Vec<f64>>, Vec<f64>) {
    let raw: [[f64; 12]; 10] = [
        [5., 6., 6.5, 6.75, 7., 7., 7., 7., 6.75, 6.5, 6., 5.],
        [5., 3., 3., 3.4, 3.8, 4.2, 4.6, 5., 5.4, 5.8, 5., 5.],
        [5., 6., 6.5, 6.5, 6., 5.25, 4.75, 4., 3.5, 3.5, 4., 5.],
        [5., 6., 6.5, 6.5, 6., 5., 5., 6., 6.5, 6.5, 6., 5.],
        [5., 4.4, 3.8, 3.2, 2.6, 2.6, 5., 5., 5., 5., 5., 5.],
        [5., 3., 3., 3., 3., 5., 6., 6.5, 6.5, 6., 4.5, 5.],
        [5., 4., 3.5, 3.25, 3., 3., 3., 3., 3.25, 3.5, 4., 5.],
        [5., 7., 7., 6.6, 6.2, 5.8, 5.4, 5., 4.6, 4.2, 5., 5.],
        [5., 4., 3.5, 3.5, 4., 5., 5., 4., 3.5, 3.5, 4., 5.],
        [5., 4., 3.5, 3.5, 4., 5., 5., 5., 5., 4.7, 4.3, 5.],
    ];
    let xs = raw
        .iter()
        .map(|row| {
            let m = mean(row);
            let centred: Vec<f64> = row.iter().map(|v| v - m).collect();
            let s = std(&centred);
            let scaled: Vec<f64> = centred.iter().map(|v| v / s).collect();
            let first = scaled[0];
            scaled.iter().map(|v| (v - first) / 6.0).collect()
        })
        .collect();
    let t = linspace(-5.0, 5.0, 12).iter().map(|v| v / 6.0).collect();
    (xs, t)
}

impl Mnist1dConfig {
    /// Checks the parameters so generation cannot fail half-way.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(format!("mnist1d: {m}")));
        if self.num_samples < 10 {
            return bad("num_samples must be at least 10 (one per class)");
        }
        if !(self.train_split > 0.0 && self.train_split < 1.0) {
            return bad("train_split must lie strictly between 0 and 1");
        }
        if self.padding.0 > self.padding.1 {
            return bad("padding must be (low, high) with low <= high");
        }
        let stretched = self.template_len + self.padding.1;
        if stretched < 2 {
            return bad("template_len + padding high must be at least 2");
        }
        if self.max_translation == 0 || self.max_translation > stretched {
            return bad("max_translation must lie in 1..=template_len + padding high");
        }
        if self.final_seq_length < 2 {
            return bad("final_seq_length must be at least 2");
        }
        if self.num_samples > MAX_SAMPLES || self.final_seq_length > 1_000_000 || stretched > 1_000_000 {
            return bad("num_samples is limited to 10^8, final_seq_length and template_len + padding to 10^6");
        }
        // the generator holds every example in f64 twice (before and after its shuffle)
        let values = self.num_samples as f64 * (self.final_seq_length as f64 * 3.0 + stretched as f64);
        crate::limits::check_fits("generating this MNIST-1D", 8.0 * values)?;
        let split = (self.num_samples / 10 * 10) as f64 * self.train_split;
        if split < 1.0 || split as usize >= self.num_samples / 10 * 10 {
            return bad("train_split leaves an empty train or test set");
        }
        let finite = [self.scale_coeff, self.corr_noise_scale, self.iid_noise_scale, self.shear_scale];
        if finite.iter().any(|v| !v.is_finite()) {
            return bad("scales must be finite numbers");
        }
        Ok(())
    }

    /// `make_dataset(args)`: the reference generator.
    pub fn generate(&self) -> Result<Mnist1d> {
        self.validate()?;
        let (template_x, template_t) = templates();
        let mut rng = NumpyRandomState::new(self.seed);
        let per_class = self.num_samples / 10;
        let n = per_class * 10;
        let len = self.final_seq_length;
        let mut xs = Vec::with_capacity(n * len);
        let mut ys = Vec::with_capacity(n);
        let mut new_t = Vec::new();
        for (label, tx) in template_x.iter().enumerate() {
            for _ in 0..per_class {
                let (x, t) = self.transform(tx, &template_t, &mut rng);
                xs.extend_from_slice(&x);
                ys.push(label as u8);
                new_t = t;
            }
        }
        let shuffle = rng.permutation(n);
        let mut x: Vec<f64> = shuffle.iter().flat_map(|&i| xs[i * len..(i + 1) * len].iter().copied()).collect();
        let y: Vec<u8> = shuffle.iter().map(|&i| ys[i]).collect();
        if self.shuffle_seq {
            let seq = rng.permutation(len);
            for row in x.chunks_mut(len) {
                let orig = row.to_vec();
                for (dst, &src) in row.iter_mut().zip(&seq) {
                    *dst = orig[src];
                }
            }
        }
        let (m, s) = (mean(&x), std(&x));
        let t = new_t.iter().map(|v| v / s).collect();
        for v in &mut x {
            *v = (*v - m) / s;
        }
        let split = (n as f64 * self.train_split) as usize;
        let x_test = x.split_off(split * len);
        let mut y = y;
        let y_test = y.split_off(split);
        Ok(Mnist1d { x, y, x_test, y_test, t, length: len })
    }

    /// `mnist1d.transform.transform`: one template becomes one example.
    fn transform(&self, x: &[f64], t: &[f64], rng: &mut NumpyRandomState) -> (Vec<f64>, Vec<f64>) {
        const EPS: f64 = 1e-8;
        let (low, high) = self.padding;
        // pad
        let p = low + (rng.rand() * (high - low + 1) as f64) as usize;
        let mut padded: Vec<f64> = x.iter().map(|v| v + EPS).collect();
        padded.resize(padded.len() + p, 0.0);
        // dilate
        let stretched_len = self.template_len + high;
        let mut new_x = resample(&padded, stretched_len);
        let new_t = resample(t, stretched_len);
        // scale
        let scale = 1.0 + self.scale_coeff * (rng.rand() - 0.5);
        for v in &mut new_x {
            *v *= scale;
        }
        // translate: concatenate([x[-k:], x[:-k]]), a roll right by k
        let k = rng.choice(self.max_translation as u64) as usize;
        new_x.rotate_right(k % stretched_len);
        // correlated noise where the signal is exactly zero, then i.i.d. noise everywhere
        let corr: Vec<f64> = (0..stretched_len).map(|_| self.corr_noise_scale * rng.randn()).collect();
        let corr = gaussian_filter1d(&corr, 2.0);
        for (v, c) in new_x.iter_mut().zip(&corr) {
            if *v == 0.0 {
                *v = *c;
            }
        }
        for v in &mut new_x {
            *v += self.iid_noise_scale * rng.randn();
        }
        // shear, then subsample
        let coeff = self.shear_scale * (rng.rand() - 0.5);
        let ramp = linspace(-0.5, 0.5, stretched_len);
        for (v, r) in new_x.iter_mut().zip(&ramp) {
            *v -= coeff * r;
        }
        (resample(&new_x, self.final_seq_length), resample(&new_t, self.final_seq_length))
    }
}
