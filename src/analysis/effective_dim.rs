//! How low-dimensional the inputs of each layer really are.
//!
//! For a set of vectors (raw patches, whole images, the window each unit of a layer reads)
//! the covariance spectrum says how many directions carry the variance: the number of
//! principal components holding 90% and 99% of it, and the participation ratio
//! `(Σλ)² / Σλ²` (equals `r` for `r` equal variances, 1 for one dominant direction).
//! A 3×3 window of a trained CNN lives in far fewer dimensions than a whole image does:
//! the video's argument that local inputs are low-dimensional, measured.
//!
//! The eigenvalues come from nalgebra's symmetric eigen-decomposition of the covariance
//! (or of the Gram matrix when there are fewer vectors than dimensions: same non-zero
//! spectrum, smaller matrix).

use crate::analysis::receptive_field::spatial;
use crate::core::layer::Reads;
use crate::core::{Backend, Layer, Mode, Tensor};
use crate::error::{Error, Result};
use crate::models::Model;
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// The spectrum summary of one set of vectors.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Spectrum {
    /// Length of each vector (the nominal dimension).
    pub dimension: usize,
    /// Vectors the statistics were computed from.
    pub samples: usize,
    pub components_90: usize,
    pub components_99: usize,
    pub participation_ratio: f64,
}

/// Eigenvalues (descending) of the covariance of `rows` vectors of length `dim`.
pub fn covariance_spectrum(data: &[f32], dim: usize) -> Result<Vec<f64>> {
    if dim == 0 || !data.len().is_multiple_of(dim) || data.len() < 2 * dim.min(2) {
        return Err(Error::Shape(format!("{} values are not rows of length {dim}", data.len())));
    }
    let n = data.len() / dim;
    if n < 2 {
        return Err(Error::Config("need at least two vectors for a covariance".into()));
    }
    let mut mean = vec![0.0f64; dim];
    for row in data.chunks_exact(dim) {
        mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v as f64);
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let centred = nalgebra::DMatrix::<f64>::from_fn(n, dim, |i, j| data[i * dim + j] as f64 - mean[j]);
    let scale = 1.0 / (n as f64 - 1.0);
    // the smaller of XᵀX (dim × dim) and XXᵀ (n × n) has the same non-zero eigenvalues
    let gram = if dim <= n { centred.transpose() * &centred } else { &centred * centred.transpose() };
    let mut eig: Vec<f64> =
        nalgebra::SymmetricEigen::new(gram * scale).eigenvalues.iter().map(|&v| v.max(0.0)).collect();
    eig.sort_by(|a, b| b.total_cmp(a));
    Ok(eig)
}

/// Components for 90% and 99% of the variance, and the participation ratio.
pub fn summarise(eigenvalues: &[f64], dimension: usize, samples: usize) -> Spectrum {
    let total: f64 = eigenvalues.iter().sum();
    let needed = |share: f64| {
        let mut acc = 0.0;
        for (i, v) in eigenvalues.iter().enumerate() {
            acc += v;
            if acc >= share * total * (1.0 - 1e-12) {
                return i + 1;
            }
        }
        eigenvalues.len()
    };
    let squares: f64 = eigenvalues.iter().map(|v| v * v).sum();
    Spectrum {
        dimension,
        samples,
        components_90: if total > 0.0 { needed(0.9) } else { 0 },
        components_99: if total > 0.0 { needed(0.99) } else { 0 },
        participation_ratio: if squares > 0.0 { total * total / squares } else { 0.0 },
    }
}

/// The spectrum summary of `rows` vectors of length `dim`.
pub fn spectrum(data: &[f32], dim: usize) -> Result<Spectrum> {
    Ok(summarise(&covariance_spectrum(data, dim)?, dim, data.len() / dim))
}

/// Up to `max` windows (`kernel`, `stride`, `padding`, zero padding) of channels-last maps
/// `x` = `[N, rows, cols, C]`, drawn at random from all examples and positions.
#[allow(clippy::too_many_arguments)]
pub fn windows(
    x: &[f32],
    n: usize,
    (h, w, c): (usize, usize, usize),
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
    max: usize,
    rng: &mut ChaCha8Rng,
) -> (Vec<f32>, usize) {
    let oh = (h + 2 * padding.0).saturating_sub(kernel.0) / stride.0 + 1;
    let ow = (w + 2 * padding.1).saturating_sub(kernel.1) / stride.1 + 1;
    let total = n * oh * ow;
    let dim = kernel.0 * kernel.1 * c;
    let picks: Vec<usize> = if total <= max { (0..total).collect() } else { sample(rng, total, max).into_vec() };
    let mut out = Vec::with_capacity(picks.len() * dim);
    for p in picks {
        let (e, pos) = (p / (oh * ow), p % (oh * ow));
        let (r0, c0) =
            ((pos / ow * stride.0) as i64 - padding.0 as i64, (pos % ow * stride.1) as i64 - padding.1 as i64);
        for kr in 0..kernel.0 as i64 {
            for kc in 0..kernel.1 as i64 {
                let (r, col) = (r0 + kr, c0 + kc);
                if r < 0 || col < 0 || r >= h as i64 || col >= w as i64 {
                    out.extend(std::iter::repeat_n(0.0, c));
                } else {
                    let at = ((e * h + r as usize) * w + col as usize) * c;
                    out.extend_from_slice(&x[at..at + c]);
                }
            }
        }
    }
    (out, dim)
}

/// Up to `max` rows (last-dimension vectors) of `x`, at random.
fn rows(x: &[f32], dim: usize, max: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n = x.len() / dim;
    if n <= max {
        return x.to_vec();
    }
    let mut picks = sample(rng, n, max).into_vec();
    picks.sort_unstable();
    picks.iter().flat_map(|&i| x[i * dim..(i + 1) * dim].iter().copied()).collect()
}

/// One weighted layer of a trained network: what each of its units reads.
#[derive(Clone, Debug, Serialize)]
pub struct LayerInput {
    pub index: usize,
    pub describe: String,
    /// "window" (a convolution's or LCN's local window) or "dense" (a linear layer's whole
    /// input vector: the whole image for an MLP, all positions for a Mixer's token mixing).
    pub reads: &'static str,
    pub spectrum: Spectrum,
    /// Share of the values this layer reads that are (near) zero: the previous ReLU's
    /// inactive units ("the number of significant outputs is small").
    pub zero_fraction: f64,
}

/// One nonlinearity of the network: how many of its outputs are (near) zero.
#[derive(Clone, Debug, Serialize)]
pub struct Sparsity {
    pub index: usize,
    pub describe: String,
    /// Outputs with |y| ≤ 1e-6 (exact zeros of a ReLU).
    pub zero_fraction: f64,
    /// Outputs smaller than a tenth of the layer's root-mean-square output.
    pub small_fraction: f64,
}

/// The whole report of `cnnlab analyze effective-dim`.
#[derive(Clone, Debug, Serialize)]
pub struct EffectiveDimReport {
    pub dataset: String,
    pub model: String,
    pub condition: String,
    /// (a) raw windows of the input (3×3 for images, 3 for sequences).
    pub raw_patches: Spectrum,
    /// (b) whole inputs.
    pub whole_inputs: Spectrum,
    /// (c) each weighted layer's unit inputs.
    pub layers: Vec<LayerInput>,
    pub nonlinearities: Vec<Sparsity>,
}

/// (a) and (b): spectra of raw 3×3 (or 3-long) windows and of whole examples from `x`.
pub fn input_spectra(x: &[f32], example_shape: &[usize], max: usize, seed: u64) -> Result<(Spectrum, Spectrum)> {
    let (h, w, c) = spatial(example_shape)?;
    let len = h * w * c;
    let n = x.len() / len;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let kernel = if h == 1 { (1, 3) } else { (3, 3) };
    let (patches, dim) = windows(x, n, (h, w, c), kernel, (1, 1), (0, 0), max, &mut rng);
    let raw = spectrum(&patches, dim)?;
    let whole = spectrum(&rows(x, len, max.min(2000), &mut rng), len)?;
    Ok((raw, whole))
}

/// (c): runs `model` on `x` (eval mode) and measures what each weighted layer reads, and how
/// sparse each nonlinearity's output is.
pub fn layer_spectra<B: Backend>(
    model: &mut Model<B>,
    x: &Tensor<B>,
    max: usize,
    seed: u64,
) -> Result<(Vec<LayerInput>, Vec<Sparsity>)> {
    let mut logits = Tensor::empty();
    model.net.forward(x, &mut logits, Mode::Eval);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut layers, mut sparsity) = (Vec::new(), Vec::new());
    let mut index = 0;
    let mut failure = None;
    model.net.visit_activations(x, &logits, &mut |layer: &dyn Layer<B>, input: &Tensor<B>, output: &Tensor<B>| {
        index += 1;
        if failure.is_some() {
            return;
        }
        let describe = layer.describe();
        let reads = layer.reads();
        if matches!(reads, Reads::Window { weighted: true, .. } | Reads::Linear { .. }) {
            let values = input.to_vec();
            let sampled = match reads {
                Reads::Window { kernel, stride, padding, weighted: true } => {
                    let shape = input.shape();
                    let (h, w, c) = match spatial(&shape[1..]) {
                        Ok(s) => s,
                        Err(e) => return failure = Some(e),
                    };
                    let (v, dim) = windows(&values, shape[0], (h, w, c), kernel, stride, padding, max, &mut rng);
                    Some(("window", v, dim))
                }
                Reads::Linear { inputs } => Some(("dense", rows(&values, inputs, max, &mut rng), inputs)),
                _ => None,
            };
            if let Some((reads, v, dim)) = sampled {
                match spectrum(&v, dim) {
                    Ok(spectrum) => layers.push(LayerInput {
                        index: index - 1,
                        describe: describe.clone(),
                        reads,
                        spectrum,
                        zero_fraction: fraction(&values, |v| v.abs() <= 1e-6),
                    }),
                    Err(e) => failure = Some(e),
                }
            }
        }
        if layer.is_nonlinearity() {
            let out = output.to_vec();
            let rms = (out.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / out.len().max(1) as f64).sqrt();
            sparsity.push(Sparsity {
                index: index - 1,
                describe,
                zero_fraction: fraction(&out, |v| v.abs() <= 1e-6),
                small_fraction: fraction(&out, |v| (v.abs() as f64) < 0.1 * rms),
            });
        }
    });
    match failure {
        Some(e) => Err(e),
        None => Ok((layers, sparsity)),
    }
}

fn fraction(values: &[f32], pred: impl Fn(f32) -> bool) -> f64 {
    values.iter().filter(|&&v| pred(v)).count() as f64 / values.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points in a rank-3 subspace of R^20 with exactly equal variance along its three axes
    /// (every sign pattern of (±1, ±1, ±1) on three orthonormal directions): 3 components
    /// hold all the variance and the participation ratio is exactly 3.
    #[test]
    fn known_rank_data() {
        let dim = 20;
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        // three orthonormal directions from Gram-Schmidt on random vectors
        use rand::Rng;
        let mut basis: Vec<Vec<f64>> = Vec::new();
        while basis.len() < 3 {
            let mut v: Vec<f64> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
            for b in &basis {
                let d: f64 = v.iter().zip(b).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(b).for_each(|(a, b)| *a -= d * b);
            }
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            basis.push(v.iter().map(|a| a / norm).collect());
        }
        let offset: Vec<f64> = (0..dim).map(|i| i as f64 * 0.1).collect();
        let mut data = Vec::new();
        for _ in 0..5 {
            for signs in 0..8 {
                for j in 0..dim {
                    let mut v = offset[j];
                    for (k, b) in basis.iter().enumerate() {
                        v += if signs >> k & 1 == 1 { 2.0 } else { -2.0 } * b[j];
                    }
                    data.push(v as f32);
                }
            }
        }
        let s = spectrum(&data, dim).unwrap();
        assert_eq!((s.components_90, s.components_99, s.samples), (3, 3, 40));
        assert!((s.participation_ratio - 3.0).abs() < 1e-4, "{}", s.participation_ratio);
        // the same through the Gram matrix (fewer vectors than dimensions)
        let few = spectrum(&data[..8 * dim], dim).unwrap();
        assert_eq!((few.components_90, few.components_99), (3, 3));
        assert!((few.participation_ratio - 3.0).abs() < 1e-4);
    }

    #[test]
    fn one_dominant_direction_and_isotropic_noise() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        use rand::Rng;
        // 1-D data: participation ratio 1
        let line: Vec<f32> = (0..200)
            .flat_map(|i| {
                let t = i as f32 / 10.0;
                [t, 2.0 * t, -t]
            })
            .collect();
        let s = spectrum(&line, 3).unwrap();
        assert_eq!(s.components_99, 1);
        assert!((s.participation_ratio - 1.0).abs() < 1e-6);
        // isotropic noise in 8 dimensions needs most of them
        let noise: Vec<f32> = (0..8 * 4000).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let s = spectrum(&noise, 8).unwrap();
        assert!(s.components_90 >= 7 && s.participation_ratio > 7.5, "{s:?}");
    }

    #[test]
    fn windows_follow_the_layout_and_pad_with_zeros() {
        // one 3x3 single-channel image 1..9; 3x3 windows with padding 1 at stride 3: one window
        // centred on (1,1) = the whole image, then the windows at (0,3)… fall off the edge
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (v, dim) = windows(&x, 1, (3, 3, 1), (3, 3), (1, 1), (1, 1), 100, &mut rng);
        assert_eq!(dim, 9);
        assert_eq!(v.len(), 9 * 9);
        // the window of output (1,1) is the image itself
        assert_eq!(&v[4 * 9..5 * 9], &x[..]);
        // the window of output (0,0) has zeros in its first row and column
        assert_eq!(&v[..9], &[0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 4.0, 5.0]);
    }
}
