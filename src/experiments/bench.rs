//! Throughput benchmarks, the same workloads as `shared/reference/pytorch_bench.py` (f32,
//! Adam 1e-3, cross-entropy, random data, seed 0), each printing
//! `RESULT <workload> <value> <unit>` so the two can be run side by side and quoted as a ratio
//! (on a GPU `<workload>-fp32` or `-tf32`, as `pytorch_gpu_bench.py` names its lines).

use crate::core::init::InitRng;
use crate::core::layer::{LayerTime, Sequential};
use crate::core::ops::conv1d::conv1d;
use crate::core::ops::cross_entropy::CrossEntropy;
use crate::core::ops::{Conv, Flatten, GlobalAvgPool, Linear, Patchify, Pool, PoolKind, Relu};
use crate::core::optim::{Optimizer, OptimizerConfig};
use crate::core::{Backend, Device, Layer, Mode, Tensor};
use crate::data::{Condition, Dataset};
use crate::error::{Error, Result};
use crate::models::{dnn, mlp, ImageArch, Model, ModelKind};
use crate::train::{Augment, BatchSampler};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// A benchmark's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchResult {
    pub workload: String,
    pub value: f64,
    pub unit: &'static str,
}

impl std::fmt::Display for BenchResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RESULT {} {:.2} {}", self.workload, self.value, self.unit)
    }
}

/// The workloads `cnnlab bench` knows: PyTorch's reference workloads, the data pipeline, and
/// the four networks of the full CIFAR-10 table (`full-*`: `ImageArch::standard`, the full
/// preset's SGD with Nesterov momentum, batch 128, random 32x32x3 input).
pub const WORKLOADS: [&str; 10] =
    ["w1", "w1infer", "w2", "w3a", "w3b", "loader", "full-cnn", "full-dnn", "full-mlp", "full-lcn"];

struct Workload<B: Backend> {
    net: Sequential<B>,
    input: Vec<usize>,
    batch: usize,
    warmup: usize,
    steps: usize,
    /// Forward passes only (inference), in evaluation mode.
    inference: bool,
    optimizer: OptimizerConfig,
    lr: f32,
}

impl<B: Backend> Workload<B> {
    /// A workload of the PyTorch reference script: Adam, learning rate 1e-3.
    fn reference(net: Sequential<B>, input: Vec<usize>, warmup: usize, steps: usize, inference: bool) -> Self {
        let batch = input[0];
        Self { net, input, batch, warmup, steps, inference, optimizer: OptimizerConfig::adam(), lr: 1e-3 }
    }
}

/// W1: the CIFAR-shaped CNN (channels last here, the same arithmetic as NCHW).
fn w1_net<B: Backend>(rng: &mut InitRng) -> Sequential<B> {
    let layers: Vec<Box<dyn Layer<B>>> = vec![
        Box::new(Conv::new_2d(3, 64, 3, 1, 1, rng)),
        Box::new(Relu),
        Box::new(Conv::new_2d(64, 128, 3, 1, 1, rng)),
        Box::new(Relu),
        Box::new(Pool::new_2d(PoolKind::Max, 2, 2)),
        Box::new(Conv::new_2d(128, 256, 3, 1, 1, rng)),
        Box::new(Relu),
        Box::new(Pool::new_2d(PoolKind::Max, 2, 2)),
        Box::new(Conv::new_2d(256, 256, 3, 1, 1, rng)),
        Box::new(Relu),
        Box::new(GlobalAvgPool),
        Box::new(Linear::new(256, 10, rng)),
    ];
    Sequential::new(layers)
}

/// W2: 4x4 patches -> 128 channels, 4 Mixer blocks (token MLP 64-256-64, channel MLP
/// 128-512-128, GELU, pre-LayerNorm, residuals), mean over tokens, linear.
fn w2_net<B: Backend>(rng: &mut InitRng) -> Sequential<B> {
    let mut layers: Vec<Box<dyn Layer<B>>> = vec![Box::new(Patchify { patch: 4 }), Box::new(Linear::new(48, 128, rng))];
    for _ in 0..4 {
        layers.push(dnn::token_mix(128, 64, 256, rng));
        layers.push(dnn::channel_mix(128, 512, rng));
    }
    layers.push(Box::new(GlobalAvgPool));
    layers.push(Box::new(Linear::new(128, 10, rng)));
    Sequential::new(layers)
}

/// The model of a `full-<model>` workload (every image model but logistic regression).
fn full_model(name: &str) -> Option<ModelKind> {
    let model = name.strip_prefix("full-")?;
    ModelKind::ALL.into_iter().find(|k| *k != ModelKind::Logistic && k.name() == model)
}

fn workload<B: Backend>(name: &str) -> Result<Workload<B>> {
    let mut rng = InitRng::seed_from_u64(0);
    if let Some(kind) = full_model(name) {
        // the full table's networks with the full preset's optimizer
        let model = Model::<B>::build_with(kind, &[32, 32, 3], 10, &ImageArch::standard(), &mut rng)?;
        return Ok(Workload {
            net: model.net,
            input: vec![128, 32, 32, 3],
            batch: 128,
            warmup: 1,
            steps: 3,
            inference: false,
            optimizer: OptimizerConfig::Sgd { momentum: 0.9, weight_decay: 5e-4, nesterov: true },
            lr: 0.05,
        });
    }
    match name {
        // W3a: MLP 40-100-100-10, ReLU, batch 100
        "w3a" => Ok(Workload::reference(
            Sequential::new(mlp::build(40, &[100, 100], false, 10, &mut rng)),
            vec![100, 40],
            30,
            500,
            false,
        )),
        "w1" => Ok(Workload::reference(w1_net(&mut rng), vec![128, 32, 32, 3], 3, 20, false)),
        "w1infer" => Ok(Workload::reference(w1_net(&mut rng), vec![512, 32, 32, 3], 2, 10, true)),
        "w2" => Ok(Workload::reference(w2_net(&mut rng), vec![128, 32, 32, 3], 3, 20, false)),
        // W3b: conv1d(1->25,k5,p2), conv1d(25->25,k3,p1) x2, ReLU, flatten, linear(1000->10)
        "w3b" => {
            let layers: Vec<Box<dyn Layer<B>>> = vec![
                Box::new(conv1d(1, 25, 5, 1, 2, &mut rng)),
                Box::new(Relu),
                Box::new(conv1d(25, 25, 3, 1, 1, &mut rng)),
                Box::new(Relu),
                Box::new(conv1d(25, 25, 3, 1, 1, &mut rng)),
                Box::new(Relu),
                Box::new(Flatten),
                Box::new(Linear::new(1000, 10, &mut rng)),
            ];
            Ok(Workload::reference(Sequential::new(layers), vec![100, 40, 1], 30, 300, false))
        }
        other => Err(Error::Config(format!("unknown benchmark '{other}' (known: {})", WORKLOADS.join(", ")))),
    }
}

/// Each layer's forward and backward time per step of a profiled benchmark, and the choices
/// the backend made for them (a GPU's convolution algorithms); prints as a table.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub layers: Vec<LayerTime>,
    pub choices: Vec<String>,
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the model's own layers make up the step; the rows inside a block share its time
        let top = self.layers.iter().filter(|l| l.depth == 0);
        let total: f64 = top.map(|l| l.forward_seconds + l.backward_seconds).sum();
        let rate = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{:.1}", v / 1e9));
        writeln!(
            f,
            "{:>9}  {:>9}  {:>6}  {:>8}  {:>8}  layer (ms per step; GFLOP/s and GB/s: the work by count over the time)",
            "forward", "backward", "share", "GFLOP/s", "GB/s"
        )?;
        for l in &self.layers {
            let share = 100.0 * (l.forward_seconds + l.backward_seconds) / total.max(1e-12);
            writeln!(
                f,
                "{:>9.3}  {:>9.3}  {share:>5.1}%  {:>8}  {:>8}  {}{}",
                1e3 * l.forward_seconds,
                1e3 * l.backward_seconds,
                rate(l.flops_per_second()),
                rate(l.bytes_per_second()),
                "  ".repeat(l.depth),
                l.layer
            )?;
        }
        writeln!(f, "{:>20.3}  total of the layers (the optimizer and loss not included)", 1e3 * total)?;
        self.choices.iter().try_for_each(|c| writeln!(f, "{c}"))
    }
}

/// Runs workload `name` on the CPU: steps per second for the MNIST-1D ones, images per
/// second for the image ones (`loader` is [`loader`]).
pub fn run(name: &str) -> Result<BenchResult> {
    run_on(Device::Cpu, name, false).map(|(r, _)| r)
}

/// Runs workload `name` on `device` (opened first). A GPU gets the reference script's
/// 20 warm-up and 200 timed steps, with the queue drained before and after the clock. With
/// `profile`, a second timing pass measures each layer (the throughput comes from the first,
/// unprofiled pass).
pub fn run_on(device: Device, name: &str, profile: bool) -> Result<(BenchResult, Option<Profile>)> {
    crate::with_backend!(device, B => run_backend::<B>(name, device.is_gpu(), profile))
}

fn run_backend<B: Backend>(name: &str, gpu: bool, profile: bool) -> Result<(BenchResult, Option<Profile>)> {
    let Workload { mut net, input, batch, mut warmup, mut steps, inference, optimizer, lr } = workload::<B>(name)?;
    if gpu {
        (warmup, steps) = (20, 200);
    }
    crate::core::cpu::flush_denormals();
    let mut rng = InitRng::seed_from_u64(0);
    let xs: Vec<f32> = (0..input.iter().product::<usize>()).map(|_| rng.sample(StandardNormal)).collect();
    let ys: Vec<f32> = (0..batch).map(|_| rng.random_range(0..10) as f32).collect();
    let x = Tensor::<B>::from_slice(&input, &xs);
    let mut loss = CrossEntropy::<B>::default();
    #[allow(clippy::field_reassign_with_default)] // the other fields are private scratch
    {
        loss.labels = Tensor::from_slice(&[batch], &ys);
    }
    let mut logits = Tensor::empty();
    let mut opt = Optimizer::<B>::new(optimizer);
    // the loss stays in the backend's memory (as in training, and as the PyTorch reference,
    // which never reads it): a GPU step does not wait for the host
    let mut stats = Tensor::<B>::zeros(&[2]);
    let mut step = |net: &mut Sequential<B>, logits: &mut Tensor<B>, stats: &mut Tensor<B>| {
        if inference {
            net.forward(&x, logits, Mode::Eval);
            return;
        }
        net.forward(&x, logits, Mode::Train);
        loss.evaluate_into(logits, true, stats, 0);
        net.backward(&x, logits, &loss.dlogits, None);
        opt.step(net, lr);
    };
    for _ in 0..warmup {
        step(&mut net, &mut logits, &mut stats);
    }
    B::synchronize();
    let t = std::time::Instant::now();
    for _ in 0..steps {
        step(&mut net, &mut logits, &mut stats);
    }
    B::synchronize();
    let secs = t.elapsed().as_secs_f64();
    let last = if inference { logits.to_vec().first().copied() } else { stats.to_vec().first().copied() };
    let last = last.unwrap_or(f32::NAN);
    if !last.is_finite() {
        return Err(Error::Diverged { step: steps, loss: last });
    }
    let rate = steps as f64 / secs;
    let result = if name.starts_with("w3") {
        BenchResult { workload: name.into(), value: rate, unit: "steps/s" }
    } else {
        BenchResult { workload: name.into(), value: rate * batch as f64, unit: "images/s" }
    };
    if !profile {
        return Ok((result, None));
    }
    net.profile(true);
    for _ in 0..steps {
        step(&mut net, &mut logits, &mut stats);
    }
    let mut layers = net.profile_report();
    for l in &mut layers {
        l.per(steps);
    }
    Ok((result, Some(Profile { layers, choices: B::choices() })))
}

/// Images per second of the training data pipeline alone (shuffle, gather, augmentation,
/// permutation) on `data`, with the full preset's augmentation and a fixed permutation.
pub fn loader(data: &Dataset) -> Result<BenchResult> {
    data.validate()?;
    let color = data.example_shape.last() == Some(&3);
    let mut sampler = BatchSampler::new(128, InitRng::seed_from_u64(0));
    if data.example_shape.len() == 3 {
        sampler.augment = Some(Augment { crop_padding: if color { 4 } else { 2 }, horizontal_flip: color });
    }
    let positions = data.example_len() / data.example_shape.last().copied().unwrap_or(1).max(1);
    sampler.permutation = Condition::Permuted.batch_permutation(positions, 0);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        sampler.fill(data, &mut x, &mut y);
    }
    let batches = 200;
    let t = std::time::Instant::now();
    for _ in 0..batches {
        sampler.fill(data, &mut x, &mut y);
    }
    let rate = (batches * 128) as f64 / t.elapsed().as_secs_f64();
    Ok(BenchResult { workload: "loader".into(), value: rate, unit: "images/s" })
}

/// `bench`: which workload, where.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BenchConfig {
    /// One of [`WORKLOADS`].
    pub workload: String,
    /// Also time each layer (a second, synchronised pass).
    pub profile: bool,
    /// The `loader` workload's dataset.
    pub data: crate::experiments::setup::DataChoice,
    pub compute: crate::experiments::grid::Compute,
}

/// A benchmark's throughput, and the per-layer profile when asked for.
pub struct BenchReport {
    pub result: BenchResult,
    pub profile: Option<Profile>,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(p) = &self.profile {
            write!(f, "{p}")?;
        }
        writeln!(f, "{}", self.result)
    }
}

/// Runs the benchmark of `cfg`.
pub fn bench(cfg: &BenchConfig) -> Result<BenchReport> {
    if !WORKLOADS.contains(&cfg.workload.as_str()) {
        return Err(crate::Error::Config(format!(
            "unknown workload '{}' (one of: {})",
            cfg.workload,
            WORKLOADS.join(", ")
        )));
    }
    if cfg.workload == "loader" {
        if cfg.compute.device != Device::Cpu || cfg.profile {
            return Err(crate::Error::Config("the loader benchmark runs on the CPU, without a profile".into()));
        }
        let data = cfg.data.prepare()?.data;
        return Ok(BenchReport { result: loader(&data)?, profile: None });
    }
    if cfg.data != crate::experiments::setup::DataChoice::default() {
        return Err(crate::Error::Config(format!(
            "dataset options apply to the loader benchmark; {} is a fixed workload",
            cfg.workload
        )));
    }
    let device = cfg.compute.open()?;
    let (mut result, profile) = run_on(device, &cfg.workload, cfg.profile)?;
    if device.is_gpu() {
        // the names of pytorch_gpu_bench.py's lines (`w1-fp32`, `w1-tf32`), so that the two
        // programs' outputs line up
        result.workload = format!("{}-{}", result.workload, if cfg.compute.tf32 { "tf32" } else { "fp32" });
    }
    Ok(BenchReport { result, profile })
}
