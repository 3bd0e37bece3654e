//! `analyze dimension`: the curse of dimensionality, computed and measured.
//!
//! (a) The arithmetic: filling N dimensions at density d takes d^N points. (b) Measured with
//! k-nearest neighbours, the learner that interpolates between examples most literally:
//! (i) the same images average-pooled to growing sizes, (ii) a task of fixed intrinsic dimension
//! embedded in a growing ambient dimension, (iii) how many examples kNN needs for a target
//! accuracy as the (intrinsic) dimension grows.

use crate::analysis::knn::{knn, KnnResult};
use crate::data::Dataset;
use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::Serialize;

/// Points needed to fill an input of `n` values at `density` per axis.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FillCost {
    pub input: String,
    pub dimension: usize,
    /// log10(density^dimension)
    pub log10_points: f64,
}

/// The arithmetic for the inputs at stake in examples of `example_shape`: the windows a CNN's
/// first layers read and the whole input (what an MLP's first layer reads). Images `[H, W, C]`:
/// 3×3, 5×5 and 7×7 patches and the image; sequences `[L, C]`: windows of 3, 5, 9 and 17 (the
/// MNIST-1D CNN's fields) and the sequence.
pub fn fill_costs(example_shape: &[usize], density: f64) -> Vec<FillCost> {
    let inputs: Vec<(String, usize)> = match *example_shape {
        [h, w, c] => {
            let mut v: Vec<(String, usize)> = [(3usize, "patch"), (5, "receptive field"), (7, "receptive field")]
                .iter()
                .filter(|(k, _)| *k <= h.min(w))
                .map(|&(k, what)| (format!("{k}x{k}x{c} {what}"), k * k * c))
                .collect();
            v.push((format!("{h}x{w}x{c} image"), h * w * c));
            v
        }
        [l, c] => {
            let mut v: Vec<(String, usize)> =
                [3usize, 5, 9, 17].iter().filter(|&&k| k < l).map(|&k| (format!("{k}x{c} window"), k * c)).collect();
            v.push((format!("{l}x{c} sequence"), l * c));
            v
        }
        _ => vec![(format!("{example_shape:?} input"), example_shape.iter().product())],
    };
    inputs
        .into_iter()
        .map(|(input, n)| FillCost { input, dimension: n, log10_points: n as f64 * density.log10() })
        .collect()
}

/// kNN at one input resolution.
#[derive(Clone, Debug, Serialize)]
pub struct ResolutionPoint {
    pub size: String,
    pub dimension: usize,
    #[serde(flatten)]
    pub knn: KnnResult,
}

/// Average-pools every example of `x` (`[H, W, C]`, or `[L, C]` with `h = 1`) by `f`×`f` blocks.
fn pool(x: &[f32], (h, w, c): (usize, usize, usize), (fh, fw): (usize, usize)) -> Vec<f32> {
    let (oh, ow) = (h / fh, w / fw);
    let mut out = Vec::with_capacity(x.len() / (fh * fw));
    let inv = 1.0 / (fh * fw) as f32;
    for img in x.chunks_exact(h * w * c) {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut s = 0.0;
                    for y in oy * fh..(oy + 1) * fh {
                        for xx in ox * fw..(ox + 1) * fw {
                            s += img[(y * w + xx) * c + ch];
                        }
                    }
                    out.push(s * inv);
                }
            }
        }
    }
    out
}

/// (i) kNN accuracy and distance ratio of `data` at every resolution that divides its size
/// (at most 4 of them, coarse to full).
pub fn resolutions(data: &Dataset, k: usize) -> Result<Vec<ResolutionPoint>> {
    let (h, w, c) = match data.example_shape[..] {
        [l, c] => (1, l, c),
        [h, w, c] => (h, w, c),
        _ => return Err(Error::Shape(format!("cannot pool examples of shape {:?}", data.example_shape))),
    };
    let mut factors: Vec<usize> = (1..=w).filter(|f| w % f == 0 && h % f.min(&h) == 0 && w / f >= 2).collect();
    factors.sort_unstable_by(|a, b| b.cmp(a));
    // keep the full resolution and up to three coarser ones, spread out
    let pick: Vec<usize> = if factors.len() <= 4 {
        factors.clone()
    } else {
        let last = factors.len() - 1;
        vec![factors[0], factors[last / 3], factors[2 * last / 3], factors[last]]
    };
    let mut out = Vec::new();
    for f in pick {
        let fh = if h == 1 { 1 } else { f };
        let (tr, te) = (pool(&data.x, (h, w, c), (fh, f)), pool(&data.x_test, (h, w, c), (fh, f)));
        let dim = (h / fh) * (w / f) * c;
        let size = if h == 1 { format!("{}", w / f) } else { format!("{}x{}", h / fh, w / f) };
        out.push(ResolutionPoint { size, dimension: dim, knn: knn(&tr, &data.y, &te, &data.y_test, dim, k) });
    }
    Ok(out)
}

/// A synthetic task: `n` points uniform in the `intrinsic`-dimensional cube [-1, 1]^k, labelled by
/// the nearest of 10 fixed random prototypes, embedded in `ambient` dimensions by a random
/// isometry (orthonormal columns). Returns (points, labels).
fn prototype_task(
    n: usize,
    intrinsic: usize,
    ambient: usize,
    embed: &[f32],
    protos: &[f32],
    rng: &mut ChaCha8Rng,
) -> (Vec<f32>, Vec<u32>) {
    let mut x = Vec::with_capacity(n * ambient);
    let mut y = Vec::with_capacity(n);
    let mut z = vec![0.0f32; intrinsic];
    for _ in 0..n {
        z.iter_mut().for_each(|v| *v = rng.random_range(-1.0..1.0));
        let label = (0..10)
            .min_by(|&a, &b| {
                let d = |p: usize| {
                    z.iter()
                        .zip(&protos[p * intrinsic..(p + 1) * intrinsic])
                        .map(|(u, v)| (u - v) * (u - v))
                        .sum::<f32>()
                };
                d(a).total_cmp(&d(b))
            })
            .unwrap_or(0);
        y.push(label as u32);
        for a in 0..ambient {
            x.push((0..intrinsic).map(|i| embed[a * intrinsic + i] * z[i]).sum());
        }
    }
    (x, y)
}

/// `ambient × intrinsic` matrix with orthonormal columns (Gram–Schmidt on Gaussian columns).
fn isometry(ambient: usize, intrinsic: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let mut cols: Vec<Vec<f64>> = Vec::new();
    while cols.len() < intrinsic {
        let mut v: Vec<f64> = (0..ambient).map(|_| rng.sample::<f64, _>(StandardNormal)).collect();
        for c in &cols {
            let dot: f64 = v.iter().zip(c).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(c).for_each(|(a, b)| *a -= dot * b);
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm > 1e-6 {
            cols.push(v.iter().map(|a| a / norm).collect());
        }
    }
    let mut m = vec![0.0f32; ambient * intrinsic];
    for (i, c) in cols.iter().enumerate() {
        for a in 0..ambient {
            m[a * intrinsic + i] = c[a] as f32;
        }
    }
    m
}

/// kNN on the prototype task at one (intrinsic, ambient, n) setting.
#[derive(Clone, Debug, Serialize)]
pub struct SyntheticPoint {
    pub intrinsic: usize,
    pub ambient: usize,
    pub train_examples: usize,
    #[serde(flatten)]
    pub knn: KnnResult,
}

/// Runs the prototype task; the prototypes and embedding depend only on (`intrinsic`, `ambient`, `seed`).
pub fn synthetic(intrinsic: usize, ambient: usize, n_train: usize, n_test: usize, seed: u64) -> SyntheticPoint {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ ((intrinsic as u64) << 32));
    let protos: Vec<f32> = (0..10 * intrinsic).map(|_| rng.random_range(-1.0..1.0)).collect();
    let embed = isometry(ambient, intrinsic, &mut ChaCha8Rng::seed_from_u64(seed ^ ambient as u64));
    let mut data_rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(1));
    let (tr, tr_y) = prototype_task(n_train, intrinsic, ambient, &embed, &protos, &mut data_rng);
    let (te, te_y) = prototype_task(n_test, intrinsic, ambient, &embed, &protos, &mut data_rng);
    SyntheticPoint { intrinsic, ambient, train_examples: n_train, knn: knn(&tr, &tr_y, &te, &te_y, ambient, 1) }
}

/// (iii) The fewest training examples (of `sizes`) with which 1-NN reaches `target` accuracy.
#[derive(Clone, Debug, Serialize)]
pub struct SamplesNeeded {
    pub dimension: usize,
    pub target_accuracy: f64,
    /// None: not reached with the largest size tried.
    pub examples: Option<usize>,
    pub curve: Vec<SyntheticPoint>,
}

pub fn samples_needed(dimension: usize, sizes: &[usize], target: f64, seed: u64) -> SamplesNeeded {
    let curve: Vec<SyntheticPoint> = sizes.iter().map(|&n| synthetic(dimension, dimension, n, 500, seed)).collect();
    let examples = curve.iter().find(|p| p.knn.accuracy >= target).map(|p| p.train_examples);
    SamplesNeeded { dimension, target_accuracy: target, examples, curve }
}

/// Everything `analyze dimension` reports.
#[derive(Clone, Debug, Serialize)]
pub struct DimensionReport {
    pub dataset: String,
    pub density: f64,
    pub fill_costs: Vec<FillCost>,
    pub resolutions: Vec<ResolutionPoint>,
    pub fixed_intrinsic: Vec<SyntheticPoint>,
    pub samples_needed: Vec<SamplesNeeded>,
}

/// Runs (a) and (b)(i–iii) on `data` (already subset to the size to measure).
pub fn analyze(data: &Dataset, density: f64, seed: u64) -> Result<DimensionReport> {
    data.validate()?;
    let fixed_intrinsic = [2usize, 8, 32, 128, 512].iter().map(|&a| synthetic(2, a, 2000, 500, seed)).collect();
    let samples =
        [1usize, 2, 4, 8, 16].iter().map(|&d| samples_needed(d, &[100, 300, 1000, 3000, 10000], 0.9, seed)).collect();
    Ok(DimensionReport {
        dataset: data.name.clone(),
        density,
        fill_costs: fill_costs(&data.example_shape, density),
        resolutions: resolutions(data, 1)?,
        fixed_intrinsic,
        samples_needed: samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_costs_are_powers_of_the_density() {
        let c = fill_costs(&[32, 32, 3], 9.0);
        assert_eq!(c[0].dimension, 27);
        assert!((c[0].log10_points - 27.0 * 9f64.log10()).abs() < 1e-9);
        assert_eq!(c[3].input, "32x32x3 image");
        assert!((c[3].log10_points - 2931.4).abs() < 0.1, "9^3072 ≈ 10^2931");
        // a sequence's own arithmetic, not an image's
        let s = fill_costs(&[40, 1], 9.0);
        assert_eq!(s.iter().map(|c| c.dimension).collect::<Vec<_>>(), vec![3, 5, 9, 17, 40]);
        assert_eq!(s[4].input, "40x1 sequence");
    }

    #[test]
    fn pooling_averages_blocks_per_channel() {
        // one 2x4 image, 2 channels: channel 0 = 0..8, channel 1 = 10 * that
        let x: Vec<f32> = (0..8).flat_map(|v| [v as f32, 10.0 * v as f32]).collect();
        let p = pool(&x, (2, 4, 2), (2, 2));
        // blocks {0,1,4,5} and {2,3,6,7}
        assert_eq!(p, vec![2.5, 25.0, 4.5, 45.0]);
    }

    #[test]
    fn ambient_dimension_does_not_matter_when_intrinsic_is_fixed() {
        let a = synthetic(2, 2, 500, 200, 1);
        let b = synthetic(2, 256, 500, 200, 1);
        // an isometry preserves distances: the same neighbours, the same accuracy
        assert!((a.knn.accuracy - b.knn.accuracy).abs() <= 0.01, "{} vs {}", a.knn.accuracy, b.knn.accuracy);
        assert!(a.knn.accuracy > 0.85);
    }

    #[test]
    fn higher_intrinsic_dimension_needs_more_examples() {
        let low = synthetic(2, 2, 300, 300, 3).knn;
        let high = synthetic(16, 16, 300, 300, 3).knn;
        assert!(low.accuracy > high.accuracy + 0.2, "{low:?} vs {high:?}");
        assert!(high.nearest_to_farthest > low.nearest_to_farthest, "distances concentrate in high dimension");
    }
}
