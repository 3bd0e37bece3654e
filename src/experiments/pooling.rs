//! `analyze pooling`: the MNIST-1D pooling benchmark. A small CNN — conv(1→20, k3, p1), ReLU,
//! downsample, conv(20→20, k3, p1), ReLU, downsample, linear — with five ways to downsample
//! (none, stride-2 convolutions, max, average, L2 pooling), trained on growing training sets
//! (6000 steps, Adam 1e-2, batch 100). As in the reference notebook, each training-set size
//! `n` has its own MNIST-1D of `n + 1000` examples (the reference generator's defaults,
//! seed 42), the last 1000 of which are the test set.

use crate::analysis::plot;
use crate::core::init::InitRng;
use crate::core::layer::Sequential;
use crate::core::ops::conv1d::conv1d;
use crate::core::ops::{Flatten, Linear, Pool, PoolKind, Relu};
use crate::core::{Backend, Layer};
use crate::data::mnist1d::Mnist1dConfig;
use crate::data::{Condition, DataSource, Dataset, PositionPermutation};
use crate::error::{Error, Result};
use crate::experiments::grid::{run_grid, Compute, Progress, SeedStats};
use crate::experiments::run::{train_run_on, RunSpec};
use crate::experiments::setup::DataChoice;
use crate::models::{Model, ModelKind};
use crate::report::{ensure_dir, write_json, Artifacts};
use crate::train::{rng_for, streams, TrainConfig, TrainOverrides, Trainer};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
    pub fn network<B: Backend>(&self, len: usize, rng: &mut InitRng) -> Sequential<B> {
        let stride = if *self == Downsample::Stride2 { 2 } else { 1 };
        let pool = |layers: &mut Vec<Box<dyn Layer<B>>>| match self {
            Downsample::Max => layers.push(Box::new(Pool::new_1d(PoolKind::Max, 2, 2))),
            Downsample::Avg => layers.push(Box::new(Pool::new_1d(PoolKind::Avg, 2, 2))),
            Downsample::L2 => layers.push(Box::new(Pool::new_1d(PoolKind::L2, 2, 2))),
            Downsample::None | Downsample::Stride2 => {}
        };
        let mut layers: Vec<Box<dyn Layer<B>>> = vec![Box::new(conv1d(1, 20, 3, stride, 1, rng)), Box::new(Relu)];
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

/// What to run. On MNIST-1D the benchmark generates a dataset per training-set size; on an
/// image dataset it runs the image ablation (the CNN with and without its max-pooling).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolingConfig {
    pub data: DataChoice,
    /// MNIST-1D: training-set sizes.
    pub sizes: Vec<usize>,
    pub seeds: usize,
    /// Changes to the recipe (MNIST-1D: the notebook's 6000 steps of Adam 1e-2, batch 100,
    /// the same batch order every epoch).
    pub train: TrainOverrides,
    pub compute: Compute,
}

impl Default for PoolingConfig {
    fn default() -> Self {
        Self {
            data: DataChoice::default(),
            sizes: vec![1000, 2000, 5000, 10000, 20000],
            seeds: 1,
            train: TrainOverrides::default(),
            compute: Compute::default(),
        }
    }
}

/// One cell: a downsampling variant at a training-set size.
#[derive(Clone, Debug, Serialize)]
pub struct PoolingCell {
    pub variant: String,
    pub train_examples: usize,
    #[serde(flatten)]
    pub stats: SeedStats,
    pub reference: Option<f64>,
}

/// The MNIST-1D benchmark.
#[derive(Clone, Debug, Serialize)]
pub struct SequenceReport {
    pub test_examples: usize,
    pub steps: usize,
    pub cells: Vec<PoolingCell>,
    pub wall_seconds: f64,
    #[serde(skip)]
    pub sizes: Vec<usize>,
    /// Whether the runs follow the notebook's protocol (published values shown only then).
    #[serde(skip)]
    pub comparable: bool,
}

/// One cell of the image ablation.
#[derive(Clone, Debug, Serialize)]
pub struct ImageCell {
    pub variant: String,
    pub pool_after: Vec<usize>,
    #[serde(flatten)]
    pub stats: SeedStats,
    pub flops_per_example: u64,
    pub wall_seconds: f64,
}

/// The image ablation.
#[derive(Clone, Debug, Serialize)]
pub struct ImageReport {
    pub dataset: String,
    pub train_examples: usize,
    pub test_examples: usize,
    pub steps: usize,
    pub arch: crate::models::ImageArch,
    pub cells: Vec<ImageCell>,
    #[serde(skip)]
    pub seeds: usize,
}

/// Either study.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum PoolingReport {
    Sequences(SequenceReport),
    Images(ImageReport),
}

/// Runs the study `cfg.data` calls for.
pub fn run(cfg: &PoolingConfig, progress: &dyn Progress) -> Result<PoolingReport> {
    cfg.compute.open()?;
    if cfg.seeds == 0 || cfg.seeds > crate::limits::MAX_SEEDS {
        return Err(Error::Config(format!("seeds must lie in 1..={}", crate::limits::MAX_SEEDS)));
    }
    if cfg.data.dataset.is_sequence() {
        sequences(cfg, progress).map(PoolingReport::Sequences)
    } else {
        images(cfg, progress).map(PoolingReport::Images)
    }
}

/// The MNIST-1D benchmark: every variant at every size, every run on its own core.
fn sequences(cfg: &PoolingConfig, progress: &dyn Progress) -> Result<SequenceReport> {
    let d = &cfg.data;
    cfg.data.check()?;
    let mut refused: Vec<&str> =
        d.mnist1d.given().into_iter().filter(|f| matches!(*f, "num_samples" | "train_split")).collect();
    if d.train_subset.is_some() || d.test_subset.is_some() {
        refused.push("train/test subsets");
    }
    if d.arch.mlp_hidden.is_some() {
        refused.push("mlp_hidden (the benchmark trains CNNs)");
    }
    if !refused.is_empty() {
        return Err(Error::Config(format!(
            "the MNIST-1D pooling benchmark makes a dataset of n + {TEST_EXAMPLES} examples per size; it does not take: {}",
            refused.join(", ")
        )));
    }
    let sizes = &cfg.sizes;
    if sizes.is_empty() || sizes.contains(&0) {
        return Err(Error::Config("sizes must be positive".into()));
    }
    // the test examples are among the generator's
    let largest = crate::data::mnist1d::MAX_SAMPLES - TEST_EXAMPLES;
    if let Some(n) = sizes.iter().find(|&&n| n > largest) {
        return Err(Error::Config(format!("size {n} is too large: MNIST-1D sizes are limited to {largest}")));
    }
    crate::limits::check_distinct("training-set sizes", sizes)?;
    crate::limits::check_run_count(
        "the pooling benchmark",
        &[("variants", Downsample::ALL.len()), ("sizes", sizes.len()), ("seeds", cfg.seeds)],
    )?;
    let mut train = TrainConfig { eval_every: 6000, ..TrainConfig::mnist1d() };
    let eval_given = cfg.train.eval_every.is_some();
    train.apply(&cfg.train)?;
    if !eval_given {
        // evaluate once, at the end (the table reports the final accuracy)
        train.eval_every = train.steps;
    }
    let base = d.mnist1d.apply(&Mnist1dConfig::default());
    // every size's dataset is held for the whole benchmark (each generator checks only its own)
    let examples: f64 = sizes.iter().map(|&n| (n + TEST_EXAMPLES) as f64).sum();
    crate::limits::check_fits("the pooling benchmark's datasets", 4.0 * examples * base.final_seq_length as f64)?;
    let comparable = base == Mnist1dConfig::default()
        && train == TrainConfig { eval_every: train.eval_every, ..TrainConfig::mnist1d() };
    progress.start((Downsample::ALL.len() * sizes.len() * cfg.seeds * train.steps) as u64);
    let start = std::time::Instant::now();
    let datasets: Vec<Dataset> = sizes
        .par_iter()
        .map(|&n| {
            let total = n + TEST_EXAMPLES;
            let gen = Mnist1dConfig { num_samples: total, train_split: n as f64 / total as f64, ..base.clone() };
            let mut d: Dataset = gen.generate()?.into();
            if d.n_train() < n || d.n_test() < TEST_EXAMPLES.min(total - d.n_train()) {
                return Err(Error::Config(format!("MNIST-1D split of {total} did not give {n} training examples")));
            }
            d.truncate_train(n);
            Ok(d)
        })
        .collect::<Result<Vec<_>>>()?;
    let test_examples = datasets.iter().map(|d| d.n_test()).min().unwrap_or(0);
    let jobs: Vec<(Downsample, usize, u64)> = Downsample::ALL
        .iter()
        .flat_map(|&v| (0..sizes.len()).flat_map(move |i| (0..cfg.seeds as u64).map(move |s| (v, i, s))))
        .collect();
    let accuracies = run_grid(cfg.compute, &jobs, progress, |&(variant, i, seed)| {
        let config = TrainConfig { seed, ..train.clone() };
        crate::with_backend!(cfg.compute.device, B => {
            let data = &datasets[i];
            let mut init = rng_for(seed, streams::INIT);
            let net = variant.network::<B>(data.example_shape[0], &mut init);
            let model = Model { kind: ModelKind::Cnn, net, example_shape: data.example_shape.clone(), classes: 10 };
            let mut trainer = Trainer::new(model, config)?;
            Ok(trainer.fit(data, &mut |s| progress.steps(s))?.final_test_accuracy)
        })
    })?;
    let mut cells = Vec::new();
    for v in Downsample::ALL {
        for &n in sizes {
            let reference = if comparable { v.reference(n) } else { None };
            cells.push(PoolingCell {
                variant: v.name().into(),
                train_examples: n,
                stats: SeedStats::select(jobs.iter().map(|j| (j.0, sizes[j.1])), &accuracies, &(v, n)),
                reference,
            });
        }
    }
    Ok(SequenceReport {
        test_examples,
        steps: train.steps,
        cells,
        wall_seconds: start.elapsed().as_secs_f64(),
        sizes: sizes.clone(),
        comparable,
    })
}

/// The same question on images: the CNN of the recipe's arch with its 2×2 max-pooling and with
/// none (every convolution at full resolution), both with the arch's head. With a flattening
/// head the unpooled network's classifier reads a map 4^k times larger (k poolings removed);
/// with global average pooling (`arch.global_pool`) both classifiers are the same size.
fn images(cfg: &PoolingConfig, progress: &dyn Progress) -> Result<ImageReport> {
    if cfg.sizes != PoolingConfig::default().sizes {
        return Err(Error::Config("sizes apply to the MNIST-1D benchmark; on images use --train-subset".into()));
    }
    let prepared = cfg.data.prepare()?;
    let config = prepared.train_config(&cfg.train, 0)?;
    progress.start((2 * cfg.seeds * config.steps) as u64);
    image_ablation(&prepared.data, &prepared.source, &config, cfg.seeds, cfg.compute, progress)
}

/// The image ablation on loaded `data` (reloaded by `source`).
pub fn image_ablation(
    data: &Dataset,
    source: &DataSource,
    config: &TrainConfig,
    seeds: usize,
    compute: Compute,
    progress: &dyn Progress,
) -> Result<ImageReport> {
    if config.arch.pool_after.is_empty() {
        return Err(Error::Config("the image CNN has no pooling to remove (--pool-after is empty)".into()));
    }
    let variants = [("max-pool", config.arch.pool_after.clone()), ("no-pool", Vec::new())];
    let jobs: Vec<(usize, RunSpec)> = (0..variants.len())
        .flat_map(|v| (0..seeds as u64).map(move |s| (v, s)))
        .map(|(v, seed)| {
            let mut train = TrainConfig { seed, ..config.clone() };
            train.arch.pool_after = variants[v].1.clone();
            let spec = RunSpec {
                data: source.clone(),
                model: ModelKind::Cnn,
                condition: Condition::Original,
                train,
                mask: None,
            };
            (v, spec)
        })
        .collect();
    let results = run_grid(compute, &jobs, progress, |(_, spec)| {
        let mut rng = rng_for(spec.seed(), streams::INIT);
        let probe = Model::<crate::core::Cpu>::build_with(
            ModelKind::Cnn,
            &data.example_shape,
            data.classes,
            &spec.train.arch,
            &mut rng,
        )?;
        let flops = probe.flops_per_example();
        let r = train_run_on(spec, data, PositionPermutation::None, compute.device, None, progress)?;
        Ok((r.final_test_accuracy, r.wall_seconds, flops))
    })?;
    let cells = variants
        .iter()
        .enumerate()
        .map(|(v, (name, pool_after))| {
            let mine: Vec<&(f64, f64, u64)> =
                jobs.iter().zip(&results).filter(|(j, _)| j.0 == v).map(|(_, r)| r).collect();
            ImageCell {
                variant: name.to_string(),
                pool_after: pool_after.clone(),
                stats: SeedStats::of(mine.iter().map(|r| r.0).collect()),
                flops_per_example: mine.first().map(|r| r.2).unwrap_or(0),
                wall_seconds: mine.iter().map(|r| r.1).sum::<f64>() / mine.len().max(1) as f64,
            }
        })
        .collect();
    Ok(ImageReport {
        dataset: data.name.clone(),
        train_examples: data.n_train(),
        test_examples: data.n_test(),
        steps: config.steps,
        arch: config.arch.clone(),
        cells,
        seeds,
    })
}

impl SequenceReport {
    fn table(&self) -> (String, Vec<plot::Series>) {
        let names: Vec<String> = Downsample::ALL.iter().map(|v| v.name().to_string()).collect();
        crate::experiments::data_size::size_table(&names, &self.sizes, |name, n| {
            let c = self.cells.iter().find(|c| c.variant == name && c.train_examples == n)?;
            let text = if self.comparable {
                let reference = c.reference.map(|x| format!("{:.0}", x * 100.0)).unwrap_or_else(|| "-".into());
                format!("{} ({reference:>2})", c.stats.percent())
            } else {
                c.stats.percent()
            };
            Some((c.stats.accuracy_mean, text))
        })
    }
}

impl std::fmt::Display for PoolingReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolingReport::Sequences(r) => {
                write!(f, "{}", r.table().0)?;
                let published = if r.comparable { " (published in parentheses)" } else { "" };
                writeln!(
                    f,
                    "test accuracy % on {} test examples, {} steps{published}; {:.1} s",
                    r.test_examples, r.steps, r.wall_seconds
                )
            }
            PoolingReport::Images(r) => {
                let head = if r.arch.global_pool { "global average pooling" } else { "flattened map" };
                writeln!(
                    f,
                    "{} ({} train / {} test, {} steps, {} seed(s); classifier on the {head}):",
                    r.dataset, r.train_examples, r.test_examples, r.steps, r.seeds
                )?;
                writeln!(f, "{:<10} {:>16} {:>14} {:>12}", "variant", "test accuracy %", "MFLOPs/ex", "s per run")?;
                for c in &r.cells {
                    writeln!(
                        f,
                        "{:<10} {:>16} {:>14.1} {:>12.1}",
                        c.variant,
                        c.stats.percent(),
                        c.flops_per_example as f64 / 1e6,
                        c.wall_seconds
                    )?;
                }
                writeln!(f, "(the video: pooling is mostly efficiency, worth 1-2 points)")
            }
        }
    }
}

impl Artifacts for PoolingReport {
    fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        ensure_dir(dir)?;
        match self {
            PoolingReport::Sequences(r) => {
                let (json, svg) = (dir.join("pooling.json"), dir.join("pooling.svg"));
                write_json(&json, r)?;
                let title = "MNIST-1D CNN: downsampling against training-set size";
                plot::line_chart(&svg, title, ("training examples", "test accuracy"), &r.table().1, true, (0.0, 1.0))?;
                Ok(vec![json, svg])
            }
            PoolingReport::Images(r) => {
                let (json, svg) = (dir.join("pooling_images.json"), dir.join("pooling_images.svg"));
                write_json(&json, r)?;
                let series: Vec<plot::Series> = r
                    .cells
                    .iter()
                    .map(|c| plot::Series {
                        name: c.variant.clone(),
                        points: vec![(c.flops_per_example as f64, c.stats.accuracy_mean)],
                    })
                    .collect();
                plot::line_chart(
                    &svg,
                    &format!("{}: CNN with and without max-pooling", r.dataset),
                    ("forward FLOPs per example", "test accuracy"),
                    &series,
                    true,
                    (0.0, 1.0),
                )?;
                Ok(vec![json, svg])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_variant_maps_a_sequence_to_ten_classes() {
        for v in Downsample::ALL {
            let net = v.network::<crate::core::Cpu>(40, &mut InitRng::seed_from_u64(0));
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
            vocab: None,
            x: x.clone(),
            y: y.clone(),
            x_test: x,
            y_test: y,
        };
        let mut cfg = TrainConfig { steps: 30, batch_size: 10, lr: 1e-2, eval_every: 30, ..TrainConfig::mnist1d() };
        cfg.arch.cnn_widths = vec![4, 4];
        cfg.arch.pool_after = vec![0];
        let ablate = |cfg: &TrainConfig| {
            image_ablation(&data, &DataSource::mnist1d(), cfg, 1, Compute::default(), &crate::experiments::grid::Silent)
        };
        let cells = ablate(&cfg).unwrap().cells;
        assert_eq!(cells.len(), 2);
        assert_eq!((cells[0].pool_after.clone(), cells[1].pool_after.clone()), (vec![0], vec![]));
        // the second convolution runs on 4x the positions without pooling
        assert!(cells[1].flops_per_example > 3 * cells[0].flops_per_example / 2);
        assert!(cells.iter().all(|c| c.stats.accuracy_mean > 0.9), "{cells:?}");
        cfg.arch.pool_after.clear();
        assert!(ablate(&cfg).is_err());
    }
}
