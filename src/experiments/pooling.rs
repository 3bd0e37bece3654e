//! `analyze pooling`: the MNIST-1D pooling benchmark. A small CNN — conv(1→20, k3, p1), ReLU,
//! downsample, conv(20→20, k3, p1), ReLU, downsample, linear — with five ways to downsample
//! (none, stride-2 convolutions, max, average, L2 pooling), trained on growing training sets
//! (6000 steps, Adam 1e-2, batch 100). As in the reference notebook, each training-set size
//! `n` has its own MNIST-1D of `n + 1000` examples (the reference generator's defaults,
//! seed 42), the last 1000 of which are the test set.

use crate::core::cpu::with_intra_op_threads;
use crate::core::init::InitRng;
use crate::core::layer::Sequential;
use crate::core::ops::conv1d::conv1d;
use crate::core::ops::{Flatten, Linear, Pool, PoolKind, Relu};
use crate::core::{Cpu, Layer};
use crate::data::mnist1d::Mnist1dConfig;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::models::{Model, ModelKind};
use crate::train::{rng_for, streams, TrainConfig, Trainer};
use rayon::prelude::*;
use serde::Serialize;

/// Test examples of every size's dataset (the notebook's 1000).
pub const TEST_EXAMPLES: usize = 1000;

/// How the CNN downsamples between its convolutions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Downsample {
    None,
    Stride2,
    Max,
    Avg,
    L2,
}

impl Downsample {
    pub const ALL: [Downsample; 5] =
        [Downsample::None, Downsample::Stride2, Downsample::Max, Downsample::Avg, Downsample::L2];

    pub fn name(&self) -> &'static str {
        match self {
            Downsample::None => "no-pool",
            Downsample::Stride2 => "stride-2",
            Downsample::Max => "max",
            Downsample::Avg => "avg",
            Downsample::L2 => "l2",
        }
    }

    /// Published test accuracy at 1000 / 5000 / 20000 training examples.
    pub fn reference(&self, n: usize) -> Option<f64> {
        let row = match self {
            Downsample::None => [0.59, 0.92, 0.94],
            Downsample::Stride2 => [0.57, 0.90, 0.92],
            Downsample::Max => [0.78, 0.95, 0.97],
            Downsample::Avg => [0.78, 0.94, 0.96],
            Downsample::L2 => [0.77, 0.95, 0.98],
        };
        match n {
            1000 => Some(row[0]),
            5000 => Some(row[1]),
            20000 => Some(row[2]),
            _ => None,
        }
    }

    /// The network for sequences of length `len`.
    pub fn network(&self, len: usize, rng: &mut InitRng) -> Sequential<Cpu> {
        let stride = if *self == Downsample::Stride2 { 2 } else { 1 };
        let pool = |layers: &mut Vec<Box<dyn Layer<Cpu>>>| match self {
            Downsample::Max => layers.push(Box::new(Pool::new_1d(PoolKind::Max, 2, 2))),
            Downsample::Avg => layers.push(Box::new(Pool::new_1d(PoolKind::Avg, 2, 2))),
            Downsample::L2 => layers.push(Box::new(Pool::new_1d(PoolKind::L2, 2, 2))),
            Downsample::None | Downsample::Stride2 => {}
        };
        let mut layers: Vec<Box<dyn Layer<Cpu>>> = vec![Box::new(conv1d(1, 20, 3, stride, 1, rng)), Box::new(Relu)];
        pool(&mut layers);
        layers.push(Box::new(conv1d(20, 20, 3, stride, 1, rng)));
        layers.push(Box::new(Relu));
        pool(&mut layers);
        let out = match self {
            Downsample::None => len,
            Downsample::Stride2 => len.div_ceil(2).div_ceil(2),
            Downsample::Max | Downsample::Avg | Downsample::L2 => len / 2 / 2,
        };
        layers.push(Box::new(Flatten));
        layers.push(Box::new(Linear::new(20 * out, 10, rng)));
        Sequential::new(layers)
    }
}

/// One cell: a downsampling variant at a training-set size.
#[derive(Clone, Debug, Serialize)]
pub struct PoolingCell {
    pub variant: String,
    pub train_examples: usize,
    pub accuracy_mean: f64,
    pub accuracy_std: f64,
    pub accuracies: Vec<f64>,
    pub reference: Option<f64>,
}

/// The whole benchmark.
#[derive(Clone, Debug, Serialize)]
pub struct PoolingReport {
    pub test_examples: usize,
    pub steps: usize,
    pub cells: Vec<PoolingCell>,
    pub wall_seconds: f64,
}

/// Runs every variant at every size in `sizes` for `seeds` seeds, every run on its own core.
/// `shuffle`: reshuffle every epoch (the notebook does not: the same batches every epoch).
pub fn run(
    sizes: &[usize],
    steps: usize,
    seeds: usize,
    shuffle: bool,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<PoolingReport> {
    if sizes.is_empty() || sizes.contains(&0) || seeds == 0 || steps == 0 {
        return Err(Error::Config("sizes, seeds and steps must be positive".into()));
    }
    let start = std::time::Instant::now();
    let datasets: Vec<Dataset> = sizes
        .par_iter()
        .map(|&n| {
            let total = n + TEST_EXAMPLES;
            let cfg =
                Mnist1dConfig { num_samples: total, train_split: n as f64 / total as f64, ..Mnist1dConfig::default() };
            let mut d: Dataset = cfg.generate()?.into();
            if d.n_train() < n || d.n_test() < TEST_EXAMPLES.min(total - d.n_train()) {
                return Err(Error::Config(format!("MNIST-1D split of {total} did not give {n} training examples")));
            }
            d.truncate_train(n);
            Ok(d)
        })
        .collect::<Result<Vec<_>>>()?;
    let test_examples = datasets.iter().map(|d| d.n_test()).min().unwrap_or(0);
    let train = TrainConfig { steps, eval_every: steps, shuffle, ..TrainConfig::mnist1d() };
    let jobs: Vec<(Downsample, usize, u64)> = Downsample::ALL
        .iter()
        .flat_map(|&v| (0..sizes.len()).flat_map(move |i| (0..seeds as u64).map(move |s| (v, i, s))))
        .collect();
    let results: Vec<Result<f64>> = jobs
        .par_iter()
        .map(|&(variant, i, seed)| {
            let data = &datasets[i];
            let config = TrainConfig { seed, ..train.clone() };
            let mut init = rng_for(seed, streams::INIT);
            let net = variant.network(data.example_shape[0], &mut init);
            let model = Model { kind: ModelKind::Cnn, net, example_shape: data.example_shape.clone(), classes: 10 };
            let mut trainer = Trainer::new(model, config)?;
            let r = with_intra_op_threads(1, || trainer.fit(data, &mut |s| progress(s)))?;
            Ok(r.final_test_accuracy)
        })
        .collect();
    let accuracies = results.into_iter().collect::<Result<Vec<f64>>>()?;
    let mut cells = Vec::new();
    for v in Downsample::ALL {
        for &n in sizes {
            let accs: Vec<f64> =
                jobs.iter().zip(&accuracies).filter(|(j, _)| j.0 == v && sizes[j.1] == n).map(|(_, a)| *a).collect();
            let row = crate::report::Row::new(v.name(), "", accs.clone(), v.reference(n));
            cells.push(PoolingCell {
                variant: v.name().into(),
                train_examples: n,
                accuracy_mean: row.accuracy_mean,
                accuracy_std: row.accuracy_std,
                accuracies: accs,
                reference: v.reference(n),
            });
        }
    }
    Ok(PoolingReport { test_examples, steps, cells, wall_seconds: start.elapsed().as_secs_f64() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_variant_maps_a_sequence_to_ten_classes() {
        for v in Downsample::ALL {
            let net = v.network(40, &mut InitRng::seed_from_u64(0));
            assert_eq!(net.output_shape(&[3, 40, 1]).unwrap(), vec![3, 10], "{v:?}");
        }
        assert_eq!(Downsample::L2.reference(20000), Some(0.98));
        assert_eq!(Downsample::Max.reference(2000), None);
    }

    #[test]
    fn image_ablation_removes_only_the_pooling() {
        // 8x8 images: class 1 has a bright left half
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..40u32 {
            let c = i % 2;
            y.push(c);
            x.extend((0..64).map(|p| if c == 1 && p % 8 < 4 { 1.0 } else { 0.0 }));
        }
        let data = Dataset {
            name: "toy".into(),
            example_shape: vec![8, 8, 1],
            classes: 2,
            x: x.clone(),
            y: y.clone(),
            x_test: x,
            y_test: y,
        };
        let mut cfg = TrainConfig { steps: 30, batch_size: 10, lr: 1e-2, eval_every: 30, ..TrainConfig::mnist1d() };
        cfg.arch.cnn_widths = vec![4, 4];
        cfg.arch.pool_after = vec![0];
        let cells = images(&data, &cfg, 1, &|_| {}).unwrap();
        assert_eq!(cells.len(), 2);
        assert_eq!((cells[0].pool_after.clone(), cells[1].pool_after.clone()), (vec![0], vec![]));
        // the second convolution runs on 4x the positions without pooling
        assert!(cells[1].flops_per_example > 3 * cells[0].flops_per_example / 2);
        assert!(cells.iter().all(|c| c.accuracy_mean > 0.9), "{cells:?}");
        cfg.arch.pool_after.clear();
        assert!(images(&data, &cfg, 1, &|_| {}).is_err());
    }
}

/// One cell of the image ablation.
#[derive(Clone, Debug, Serialize)]
pub struct ImageCell {
    pub variant: String,
    pub pool_after: Vec<usize>,
    pub accuracy_mean: f64,
    pub accuracy_std: f64,
    pub accuracies: Vec<f64>,
    pub flops_per_example: u64,
    pub wall_seconds: f64,
}

/// The same question on images: the CNN of `config.arch` with its 2×2 max-pooling and with
/// none (every convolution at full resolution), both with the arch's head. With a flattening
/// head the unpooled network's classifier reads a map 4^k times larger (k poolings removed);
/// with global average pooling (`arch.global_pool`) both classifiers are the same size.
pub fn images(
    data: &Dataset,
    config: &TrainConfig,
    seeds: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<ImageCell>> {
    if config.arch.pool_after.is_empty() {
        return Err(Error::Config("the image CNN has no pooling to remove (--pool-after is empty)".into()));
    }
    let variants = [("max-pool", config.arch.pool_after.clone()), ("no-pool", Vec::new())];
    let jobs: Vec<(usize, u64)> = (0..variants.len()).flat_map(|v| (0..seeds as u64).map(move |s| (v, s))).collect();
    let inner = if jobs.len() >= rayon::current_num_threads() { 1 } else { 0 };
    let results: Vec<Result<(f64, f64, u64)>> = jobs
        .par_iter()
        .map(|&(v, seed)| {
            let mut cfg = TrainConfig { seed, ..config.clone() };
            cfg.arch.pool_after = variants[v].1.clone();
            let mut trainer = Trainer::<Cpu>::for_dataset(ModelKind::Cnn, data, cfg)?;
            let flops = trainer.model.flops_per_example();
            let r = with_intra_op_threads(inner, || trainer.fit(data, &mut |s| progress(s)))?;
            Ok((r.final_test_accuracy, r.wall_seconds, flops))
        })
        .collect();
    let results = results.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(variants
        .iter()
        .enumerate()
        .map(|(v, (name, pool_after))| {
            let mine: Vec<&(f64, f64, u64)> =
                jobs.iter().zip(&results).filter(|(j, _)| j.0 == v).map(|(_, r)| r).collect();
            let accs: Vec<f64> = mine.iter().map(|r| r.0).collect();
            let row = crate::report::Row::new(name, "", accs.clone(), None);
            ImageCell {
                variant: name.to_string(),
                pool_after: pool_after.clone(),
                accuracy_mean: row.accuracy_mean,
                accuracy_std: row.accuracy_std,
                accuracies: accs,
                flops_per_example: mine.first().map(|r| r.2).unwrap_or(0),
                wall_seconds: mine.iter().map(|r| r.1).sum::<f64>() / mine.len().max(1) as f64,
            }
        })
        .collect())
}
