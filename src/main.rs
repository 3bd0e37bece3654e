//! `cnnlab`: the command-line front end over the library. Parsing, progress and printing
//! live here; everything else is in the library.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use cnnlab::core::optim::{OptimizerConfig, Schedule};
use cnnlab::data::cifar::Cifar;
use cnnlab::data::mnist1d::Mnist1dConfig;
use cnnlab::data::{download, npy, Condition, DataSource, Dataset, DatasetSpec};
use cnnlab::experiments::presets::{self, Preset, Recipe};
use cnnlab::experiments::{bench, reproduce};
use cnnlab::models::{Model, ModelKind};
use cnnlab::report::{accuracy_table, ensure_dir, write_json, Row};
use cnnlab::train::{self, TrainConfig};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "cnnlab",
    version,
    about = "A laboratory that shows, by experiment, why convolutional networks work so well"
)]
#[command(long_about = "A laboratory that shows, by experiment, why convolutional networks work so well.\n\n\
A CNN sees small local windows and stacks them; an MLP or a Mixer (the \"DNN\") sees the whole \
input at every layer. Permuting input positions removes the spatial structure the CNN relies \
on: `cnnlab reproduce` measures exactly that, beside the published numbers.")]
struct Cli {
    /// Worker threads (default: all cores)
    #[arg(long, global = true, value_parser = clap::value_parser!(u32).range(1..))]
    threads: Option<u32>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train every model under every input condition over several seeds; print the table
    Reproduce(ReproduceArgs),
    /// Train one model under one condition
    Train(TrainArgs),
    /// List the models with parameter counts and FLOPs per example
    Models(ModelsArgs),
    /// Dataset utilities
    #[command(subcommand)]
    Data(DataCommand),
    /// Throughput benchmarks matching shared/reference/pytorch_bench.py
    Bench(BenchArgs),
    /// Measure the explanations (writes JSON and an SVG plot)
    #[command(subcommand)]
    Analyze(AnalyzeCommand),
    /// List the devices this build can compute on
    Devices,
}

#[derive(Subcommand)]
enum AnalyzeCommand {
    /// The curse of dimensionality: d^N arithmetic and k-nearest-neighbour measurements
    Dimension(DimensionArgs),
    /// The MNIST-1D pooling benchmark: none / stride-2 / max / avg / L2 against training-set size
    Pooling(PoolingArgs),
    /// Test accuracy of cnn, dnn and mlp against the number of training examples
    DataSize(DataSizeArgs),
    /// Theoretical and measured (gradient) receptive field of each layer of a saved CNN run
    ReceptiveField(ReceptiveFieldArgs),
    /// Principal components of raw patches, whole inputs and each layer's unit inputs of a
    /// saved run; share of zero outputs
    EffectiveDim(EffectiveDimArgs),
    /// Magnitude pruning (one-shot, fine-tuned), lottery tickets and random masks of a saved run
    Prune(PruneArgs),
}

#[derive(Args)]
struct ReceptiveFieldArgs {
    /// A run saved by `cnnlab train --save DIR` (a cnn or lcn)
    #[arg(long)]
    run: PathBuf,
    /// Test examples the gradients are averaged over
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    examples: u64,
    /// Directory for receptive_field.json and receptive_field.svg
    #[arg(long, default_value = "analysis")]
    out: PathBuf,
}

#[derive(Args)]
struct EffectiveDimArgs {
    /// A run saved by `cnnlab train --save DIR`
    #[arg(long)]
    run: PathBuf,
    /// Test examples passed through the network
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(2..))]
    examples: u64,
    /// Vectors (windows or rows) sampled per spectrum
    #[arg(long, default_value_t = 20000, value_parser = clap::value_parser!(u64).range(2..))]
    samples: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory for effective_dim.json and effective_dim.svg
    #[arg(long, default_value = "analysis")]
    out: PathBuf,
}

#[derive(Args)]
struct PruneArgs {
    /// A run saved by `cnnlab train --save DIR`
    #[arg(long)]
    run: PathBuf,
    /// Sparsities of the one-shot curves, comma-separated
    #[arg(long, value_delimiter = ',', default_values_t = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98])]
    sparsities: Vec<f64>,
    /// Fine-tuning steps after one-shot pruning (0: none)
    #[arg(long, default_value_t = 500)]
    fine_tune_steps: usize,
    /// Lottery rounds: sparsities evenly spaced from 0 to --max-sparsity (0: no lottery)
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    #[arg(long, default_value_t = 0.95)]
    max_sparsity: f64,
    /// Training steps of each lottery round (default: the run's)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    lottery_steps: Option<u64>,
    /// Lottery seeds (the first is the run's own initialisation)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// Prune biases too (the MNIST-1D notebook prunes every parameter of each layer)
    #[arg(long)]
    prune_biases: bool,
    /// Write the masks of the last ticket here (for `cnnlab train --mask`)
    #[arg(long)]
    save_mask: Option<PathBuf>,
    /// Directory for prune.json and prune.svg
    #[arg(long, default_value = "analysis")]
    out: PathBuf,
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct DataSizeArgs {
    /// Models (comma-separated)
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["cnn", "dnn", "mlp"])]
    models: Vec<ModelKind>,
    /// Training-set sizes (default: about a log-spaced ladder up to the whole training split)
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// Directory for data_size.json and data_size.svg
    #[arg(long, default_value = "analysis")]
    out: PathBuf,
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    data: DataFlags,
    #[command(flatten)]
    train: TrainFlags,
}

#[derive(Args)]
struct PoolingArgs {
    /// Training-set sizes, comma-separated
    #[arg(long, value_delimiter = ',', default_values_t = [1000usize, 2000, 5000, 10000, 20000])]
    sizes: Vec<usize>,
    /// Add 50000 training examples to the sizes
    #[arg(long)]
    large: bool,
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// MNIST-1D: reshuffle the training set every epoch (default: the notebook's fixed order)
    #[arg(long)]
    shuffle: bool,
    /// Directory for pooling.json and pooling.svg
    #[arg(long, default_value = "analysis")]
    out: PathBuf,
    #[arg(long)]
    quiet: bool,
    /// An image dataset runs the image ablation instead: the CNN with and without max-pooling
    #[command(flatten)]
    data: DataFlags,
    #[command(flatten)]
    train: TrainFlags,
}

#[derive(Args)]
struct DimensionArgs {
    /// Points per axis for the d^N arithmetic (the video uses 9)
    #[arg(long, default_value_t = 9.0)]
    density: f64,
    /// Training examples kNN may use (a subset keeps brute force fast)
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    knn_train: u64,
    /// Test examples kNN classifies
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    knn_test: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory for dimension.json and the plots
    #[arg(long, default_value = "analysis")]
    out: PathBuf,
    #[command(flatten)]
    data: DataFlags,
}

fn parse_dataset(s: &str) -> std::result::Result<DatasetSpec, String> {
    s.parse()
}

/// Which dataset, and where its files are.
#[derive(Args, Clone)]
struct DataFlags {
    /// mnist1d (generated in process), fashion-mnist, mnist, cifar10, cifar100 or folder:PATH
    #[arg(long, default_value = "mnist1d", value_parser = parse_dataset)]
    dataset: DatasetSpec,
    /// Directory holding the dataset's files (default: its usual place)
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Image experiments: quick (minutes) or full (the paper recipe)
    #[arg(long, value_enum, default_value = "quick")]
    preset: Preset,
    /// Train on the first N training examples
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    train_subset: Option<u64>,
    /// Evaluate on the first N test examples
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    test_subset: Option<u64>,
    /// folder:PATH datasets: resize every image to HxW (default: all must share one size)
    #[arg(long, value_parser = parse_size)]
    image_size: Option<(u32, u32)>,
    #[command(flatten)]
    arch: ArchFlags,
    #[command(flatten)]
    mnist1d: Mnist1dFlags,
}

fn parse_size(s: &str) -> std::result::Result<(u32, u32), String> {
    let bad = || format!("'{s}' is not a size like 32x32");
    let (h, w) = s.split_once('x').ok_or_else(bad)?;
    let (h, w): (u32, u32) = (h.parse().map_err(|_| bad())?, w.parse().map_err(|_| bad())?);
    if h == 0 || w == 0 {
        return Err(bad());
    }
    Ok((h, w))
}

/// Overrides of the image architecture of the preset.
#[derive(Args, Clone)]
#[command(next_help_heading = "Image architecture")]
struct ArchFlags {
    /// Widths of the CNN's (and LCN's) 3x3 convolutions, comma-separated
    #[arg(long, value_delimiter = ',')]
    widths: Option<Vec<usize>>,
    /// Convolutions (0-based) followed by 2x2 max-pooling, comma-separated
    #[arg(long, value_delimiter = ',')]
    pool_after: Option<Vec<usize>>,
    /// BatchNorm after each convolution
    #[arg(long)]
    batch_norm: Option<bool>,
    /// Average the CNN's last map over positions before the classifier (else flatten it)
    #[arg(long)]
    global_pool: Option<bool>,
    /// Hidden widths of the MLP, comma-separated (sequences: default 100,100)
    #[arg(long, value_delimiter = ',')]
    mlp_hidden: Option<Vec<usize>>,
    /// Mixer patch size (1: every pixel is a token)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    patch: Option<u64>,
    /// Mixer channels
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    mixer_dim: Option<u64>,
    /// Mixer blocks
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    mixer_depth: Option<u64>,
}

impl ArchFlags {
    fn apply(&self, arch: &mut cnnlab::models::ImageArch) {
        if let Some(w) = &self.widths {
            arch.cnn_widths = w.clone();
        }
        if let Some(p) = &self.pool_after {
            arch.pool_after = p.clone();
        }
        if let Some(h) = &self.mlp_hidden {
            arch.mlp_hidden = h.clone();
            arch.sequence_mlp_hidden = h.clone();
        }
        if let Some(b) = self.batch_norm {
            arch.batch_norm = b;
        }
        if let Some(g) = self.global_pool {
            arch.global_pool = g;
        }
        if let Some(p) = self.patch {
            arch.mixer_patch = p as usize;
        }
        if let Some(d) = self.mixer_dim {
            arch.mixer.dim = d as usize;
        }
        if let Some(d) = self.mixer_depth {
            arch.mixer.depth = d as usize;
        }
    }
}

impl DataFlags {
    /// Loads the dataset and resolves the recipe, applying the subsets.
    fn load(&self) -> Result<(Dataset, Recipe)> {
        let (data, recipe, _) = self.load_source()?;
        Ok((data, recipe))
    }

    /// Like [`DataFlags::load`], and also returns the [`DataSource`] that reloads the same data.
    fn load_source(&self) -> Result<(Dataset, Recipe, DataSource)> {
        let mut source = DataSource {
            dataset: self.dataset.name(),
            data_dir: self.data_dir.clone(),
            mnist1d: self.mnist1d.config(),
            image_size: self.image_size,
            train_subset: None,
            test_subset: None,
        };
        let mut data = source.load().with_context(|| format!("loading {}", self.dataset.name()))?;
        let mut recipe = presets::recipe(&data.example_shape, data.n_train(), self.preset);
        self.arch.apply(&mut recipe.train.arch);
        source.train_subset = self.train_subset.map(|n| n as usize).or(recipe.train_subset);
        source.test_subset = self.test_subset.map(|n| n as usize).or(recipe.test_subset);
        if let Some(n) = source.train_subset {
            data.truncate_train(n);
        }
        if let Some(n) = source.test_subset {
            data.truncate_test(n);
        }
        Ok((data, recipe, source))
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum OptimizerName {
    Adam,
    Adamw,
    Sgd,
}

#[derive(Clone, Copy, ValueEnum)]
enum ScheduleName {
    Constant,
    Cosine,
}

/// Training hyper-parameters shared by `reproduce` and `train`; unset ones come from the
/// dataset's recipe (MNIST-1D: Adam 1e-2, batch 100, 6000 steps; images: the preset).
#[derive(Args, Clone)]
struct TrainFlags {
    /// Optimisation steps per run
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    steps: Option<u64>,
    /// Examples per step
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: Option<u64>,
    /// Base learning rate
    #[arg(long)]
    lr: Option<f32>,
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerName>,
    /// Weight decay (L2 for adam/sgd, decoupled for adamw)
    #[arg(long)]
    weight_decay: Option<f32>,
    /// SGD momentum
    #[arg(long, default_value_t = 0.9)]
    momentum: f32,
    #[arg(long, value_enum)]
    schedule: Option<ScheduleName>,
    /// Linear warm-up steps
    #[arg(long)]
    warmup_steps: Option<usize>,
    /// Evaluate on the test set every N steps
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    eval_every: Option<u64>,
    /// The same batch order every epoch (the MNIST-1D notebooks' loop) instead of a reshuffle
    #[arg(long)]
    sequential_batches: bool,
}

impl TrainFlags {
    /// The recipe's config with every given flag applied.
    fn config(&self, base: &TrainConfig, seed: u64) -> Result<TrainConfig> {
        let mut cfg = base.clone();
        cfg.seed = seed;
        if let Some(v) = self.steps {
            cfg.steps = v as usize;
        }
        if let Some(v) = self.batch_size {
            cfg.batch_size = v as usize;
        }
        if let Some(v) = self.lr {
            cfg.lr = v;
        }
        if let Some(v) = self.eval_every {
            cfg.eval_every = v as usize;
        }
        if self.sequential_batches {
            cfg.shuffle = false;
        }
        let wd = self.weight_decay.unwrap_or(match cfg.optimizer {
            OptimizerConfig::Adam { weight_decay, .. }
            | OptimizerConfig::AdamW { weight_decay, .. }
            | OptimizerConfig::Sgd { weight_decay, .. } => weight_decay,
        });
        let optimizer = match self.optimizer {
            Some(OptimizerName::Adam) => {
                Some(OptimizerConfig::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: wd })
            }
            Some(OptimizerName::Adamw) => {
                Some(OptimizerConfig::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: wd })
            }
            Some(OptimizerName::Sgd) => {
                Some(OptimizerConfig::Sgd { momentum: self.momentum, weight_decay: wd, nesterov: false })
            }
            None => None,
        };
        match optimizer {
            Some(o) => cfg.optimizer = o,
            None => match &mut cfg.optimizer {
                OptimizerConfig::Adam { weight_decay, .. }
                | OptimizerConfig::AdamW { weight_decay, .. }
                | OptimizerConfig::Sgd { weight_decay, .. } => *weight_decay = wd,
            },
        }
        let warmup = self.warmup_steps.unwrap_or(match cfg.schedule {
            Schedule::Constant { warmup_steps } | Schedule::Cosine { warmup_steps, .. } => warmup_steps,
        });
        cfg.schedule = match (self.schedule, &cfg.schedule) {
            (Some(ScheduleName::Constant), _) | (None, Schedule::Constant { .. }) => {
                Schedule::Constant { warmup_steps: warmup }
            }
            (Some(ScheduleName::Cosine), _) | (None, Schedule::Cosine { .. }) => {
                Schedule::Cosine { warmup_steps: warmup, final_fraction: 0.0 }
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Every parameter of the MNIST-1D generator (defaults: the reference's).
#[derive(Args, Clone)]
#[command(next_help_heading = "MNIST-1D generator")]
struct Mnist1dFlags {
    #[arg(long, default_value_t = 5000)]
    num_samples: usize,
    #[arg(long, default_value_t = 0.8)]
    train_split: f64,
    #[arg(long, default_value_t = 12)]
    template_len: usize,
    #[arg(long, default_value_t = 36)]
    padding_low: usize,
    #[arg(long, default_value_t = 60)]
    padding_high: usize,
    #[arg(long, default_value_t = 0.4)]
    scale_coeff: f64,
    #[arg(long, default_value_t = 48)]
    max_translation: usize,
    #[arg(long, default_value_t = 0.25)]
    corr_noise_scale: f64,
    #[arg(long, default_value_t = 0.02)]
    iid_noise_scale: f64,
    #[arg(long, default_value_t = 0.75)]
    shear_scale: f64,
    /// The reference's own fixed shuffle of positions
    #[arg(long)]
    shuffle_seq: bool,
    #[arg(long, default_value_t = 40)]
    final_seq_length: usize,
    /// Generator seed (NumPy's np.random.seed)
    #[arg(long, default_value_t = 42)]
    data_seed: u32,
}

impl Mnist1dFlags {
    fn config(&self) -> Mnist1dConfig {
        Mnist1dConfig {
            num_samples: self.num_samples,
            train_split: self.train_split,
            template_len: self.template_len,
            padding: (self.padding_low, self.padding_high),
            scale_coeff: self.scale_coeff,
            max_translation: self.max_translation,
            corr_noise_scale: self.corr_noise_scale,
            iid_noise_scale: self.iid_noise_scale,
            shear_scale: self.shear_scale,
            shuffle_seq: self.shuffle_seq,
            final_seq_length: self.final_seq_length,
            seed: self.data_seed,
        }
    }
}

/// Where to compute.
#[derive(Args, Clone, Copy)]
struct DeviceFlags {
    /// cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`)
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: cnnlab::core::Device,
    /// Let GPU matrix products use TF32 tensor cores (faster, 10-bit mantissa products)
    #[arg(long)]
    tf32: bool,
}

fn parse_device(s: &str) -> std::result::Result<cnnlab::core::Device, String> {
    s.parse().map_err(|e: cnnlab::Error| e.to_string())
}

impl DeviceFlags {
    /// Opens the device; one clear line if it cannot be used.
    fn open(&self) -> Result<cnnlab::core::Device> {
        self.device.open(self.tf32).with_context(|| format!("cannot use device {}", self.device))?;
        Ok(self.device)
    }
}

#[derive(Args)]
struct ReproduceArgs {
    /// Models to train, comma-separated (default: all for sequences; cnn,dnn,mlp,lcn for images)
    #[arg(long, value_enum, value_delimiter = ',')]
    models: Option<Vec<ModelKind>>,
    /// Input conditions (comma-separated); add per-example for the no-order control
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["original", "permuted"])]
    conditions: Vec<Condition>,
    /// Seeds per cell (default: 3; 1 for the quick image preset)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: Option<u64>,
    /// Seed of the first run (run k uses seed + k)
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the summary as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
    /// Directory for each run's learning curve (default: runs/<dataset>-<unix time>)
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// No progress bar
    #[arg(long)]
    quiet: bool,
    /// Runs trained at once (default: one per core; 8 on a GPU, each on its own CUDA stream)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    parallel_runs: Option<u64>,
    #[command(flatten)]
    data: DataFlags,
    #[command(flatten)]
    train: TrainFlags,
    #[command(flatten)]
    device: DeviceFlags,
}

#[derive(Args)]
struct TrainArgs {
    #[arg(long, value_enum)]
    model: ModelKind,
    #[arg(long, value_enum, default_value = "original")]
    condition: Condition,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the run (config, curve, final accuracy) as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
    /// Save the run here (run.json, init.safetensors, final.safetensors) for `cnnlab analyze`
    #[arg(long)]
    save: Option<PathBuf>,
    /// Train with a fixed 0/1 mask (a safetensors file of parameter masks, e.g. from
    /// `cnnlab analyze prune`); masked weights start at zero and stay zero
    #[arg(long)]
    mask: Option<PathBuf>,
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    data: DataFlags,
    #[command(flatten)]
    train: TrainFlags,
    #[command(flatten)]
    device: DeviceFlags,
}

#[derive(Args)]
struct ModelsArgs {
    #[command(flatten)]
    data: DataFlags,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Write MNIST-1D as NumPy files: x.npy, y.npy, x_test.npy, y_test.npy
    Export {
        #[arg(value_parser = ["mnist1d"])]
        dataset: String,
        /// Output directory (created if missing)
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        mnist1d: Mnist1dFlags,
    },
    /// Download an official archive, check its published MD5 and unpack it (needs internet)
    Download {
        #[arg(value_parser = ["cifar10", "cifar100"])]
        dataset: String,
        /// Where to put the archive and its files
        #[arg(long, default_value = "data")]
        dir: PathBuf,
    },
}

#[derive(Args)]
struct BenchArgs {
    /// w1, w1infer, w2 (CIFAR-shaped CNN, its inference, Mixer), w3a, w3b (MNIST-1D MLP and
    /// CNN), loader (the data pipeline on --dataset)
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(bench::WORKLOADS))]
    workload: String,
    /// Also time each layer's forward and backward pass (a second, synchronised pass)
    #[arg(long)]
    profile: bool,
    #[command(flatten)]
    data: DataFlags,
    #[command(flatten)]
    device: DeviceFlags,
}

fn progress_bar(total: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} steps, ETA {eta}")
    {
        pb.set_style(style);
    }
    pb
}

fn reference_for(dataset: &DatasetSpec, model: ModelKind, condition: Condition) -> Option<f64> {
    match dataset {
        DatasetSpec::Mnist1d => reproduce::mnist1d_reference(model, condition),
        _ => None,
    }
}

fn cmd_reproduce(a: ReproduceArgs) -> Result<()> {
    let device = a.device.open()?;
    let (data, recipe) = a.data.load()?;
    let run_dir = a.run_dir.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        PathBuf::from("runs").join(format!("{}-{secs}", a.data.dataset.name().replace([':', '/'], "_")))
    });
    let cfg = reproduce::ReproduceConfig {
        models: a.models.clone().unwrap_or(recipe.models.clone()),
        conditions: a.conditions.clone(),
        seeds: a.seeds.map(|s| s as usize).unwrap_or(recipe.seeds),
        base_seed: a.seed,
        train: a.train.config(&recipe.train, a.seed)?,
        run_dir: Some(run_dir.clone()),
        device,
        parallel_runs: a.parallel_runs.map(|n| n as usize),
    };
    let pb = progress_bar(reproduce::total_steps(&cfg), a.quiet);
    let spec = a.data.dataset.clone();
    // each run's result as it ends (also without a progress bar: long experiments show progress)
    let finished = |r: &reproduce::RunRecord| {
        let line = format!(
            "finished {} / {} / seed {}: {:.1}% in {:.1} s",
            r.model.name(),
            r.condition.name(),
            r.seed,
            100.0 * r.result.final_test_accuracy,
            r.result.wall_seconds
        );
        if pb.is_hidden() {
            eprintln!("{line}");
        } else {
            pb.println(line);
        }
    };
    let (summary, _) =
        reproduce::run(&data, &cfg, &|m, c| reference_for(&spec, m, c), &|s| pb.inc(s as u64), &finished)
            .context("reproduce")?;
    pb.finish_and_clear();
    println!(
        "{}: {} train / {} test examples; {} models x {} conditions x {} seeds, {} steps each, batch {}, lr {}, on {}",
        summary.dataset,
        data.n_train(),
        data.n_test(),
        cfg.models.len(),
        cfg.conditions.len(),
        cfg.seeds,
        cfg.train.steps,
        cfg.train.batch_size,
        cfg.train.lr,
        device
    );
    print!("{}", accuracy_table(&summary.rows));
    println!("wall time {:.1} s; curves in {}", summary.wall_seconds, run_dir.display());
    if let Some(path) = &a.json {
        write_json(path, &summary).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn cmd_train(a: TrainArgs) -> Result<()> {
    let device = a.device.open()?;
    cnnlab::with_backend!(device, B => train_on_backend::<B>(a))
}

fn train_on_backend<B: cnnlab::core::Backend>(a: TrainArgs) -> Result<()> {
    use cnnlab::train::checkpoint;
    let (data, recipe, source) = a.data.load_source()?;
    let cfg = a.train.config(&recipe.train, a.seed)?;
    let pb = progress_bar(cfg.steps as u64, a.quiet);
    let (variant, perm) = train::condition_for_run(a.condition, &data, &cfg, a.seed);
    let mut trainer = train::Trainer::<B>::for_dataset(a.model, &variant, cfg.clone())?;
    trainer.sampler.permutation = perm;
    if let Some(path) = &a.mask {
        let masks = checkpoint::load_masks(&trainer.model.net, path)
            .with_context(|| format!("reading the mask {}", path.display()))?;
        trainer.set_masks(&masks)?;
    }
    if let Some(dir) = &a.save {
        ensure_dir(dir)?;
        checkpoint::save_state(&trainer.model.net, &dir.join(checkpoint::INIT_WEIGHTS))
            .with_context(|| format!("saving into {}", dir.display()))?;
    }
    let result = trainer.fit(&variant, &mut |s| pb.inc(s as u64)).context("training")?;
    if let Some(dir) = &a.save {
        checkpoint::save_state(&trainer.model.net, &dir.join(checkpoint::FINAL_WEIGHTS))?;
        let saved = checkpoint::SavedRun {
            data: source.clone(),
            model: a.model,
            condition: a.condition,
            seed: a.seed,
            config: cfg.clone(),
            final_test_accuracy: result.final_test_accuracy,
        };
        checkpoint::save_run(dir, &saved)?;
    }
    pb.finish_and_clear();
    println!("{:>6}  {:>10}  {:>9}  {:>9}  {:>8}", "step", "train loss", "train acc", "test loss", "test acc");
    for p in &result.curve {
        println!(
            "{:>6}  {:>10.4}  {:>8.1}%  {:>9.4}  {:>7.1}%",
            p.step,
            p.train_loss,
            p.train_accuracy * 100.0,
            p.test_loss,
            p.test_accuracy * 100.0
        );
    }
    let row = Row::new(
        a.model.name(),
        a.condition.name(),
        vec![result.final_test_accuracy],
        reference_for(&a.data.dataset, a.model, a.condition),
    );
    print!("{}", accuracy_table(std::slice::from_ref(&row)));
    println!("wall time {:.1} s", result.wall_seconds);
    if let Some(dir) = &a.save {
        println!("saved the run in {}", dir.display());
    }
    if let Some(path) = &a.json {
        let out = serde_json::json!({
            "dataset": data.name,
            "model": a.model.name(),
            "condition": a.condition.name(),
            "config": cfg,
            "final_test_accuracy": result.final_test_accuracy,
            "curve": result.curve,
            "wall_seconds": result.wall_seconds,
        });
        write_json(path, &out).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn cmd_models(a: ModelsArgs) -> Result<()> {
    let (data, recipe) = a.data.load()?;
    println!("{} examples of shape {:?}, {} classes\n", data.name, data.example_shape, data.classes);
    println!("{:<9} {:>9} {:>12}  what it is", "model", "params", "FLOPs/ex");
    for kind in ModelKind::ALL {
        let mut rng = train::rng_for(0, train::streams::INIT);
        let model = Model::<cnnlab::core::Cpu>::build_with(
            kind,
            &data.example_shape,
            data.classes,
            &recipe.train.arch,
            &mut rng,
        )?;
        println!("{:<9} {:>9} {:>12}  {}", kind.name(), model.param_count(), model.flops_per_example(), kind.summary());
        println!("{:<9} {}", "", cnnlab::core::Layer::describe(&model.net));
    }
    Ok(())
}

fn cmd_data(c: DataCommand) -> Result<()> {
    match c {
        DataCommand::Export { out, mnist1d, .. } => {
            let d = mnist1d.config().generate().context("generating MNIST-1D")?;
            ensure_dir(&out)?;
            let len = d.length;
            let x: Vec<f32> = d.x.iter().map(|&v| v as f32).collect();
            let xt: Vec<f32> = d.x_test.iter().map(|&v| v as f32).collect();
            let y: Vec<i64> = d.y.iter().map(|&v| v as i64).collect();
            let yt: Vec<i64> = d.y_test.iter().map(|&v| v as i64).collect();
            npy::write_f32(&out.join("x.npy"), &[y.len(), len], &x)?;
            npy::write_i64(&out.join("y.npy"), &[y.len()], &y)?;
            npy::write_f32(&out.join("x_test.npy"), &[yt.len(), len], &xt)?;
            npy::write_i64(&out.join("y_test.npy"), &[yt.len()], &yt)?;
            println!(
                "wrote x.npy [{}, {len}], y.npy, x_test.npy [{}, {len}], y_test.npy to {}",
                y.len(),
                yt.len(),
                out.display()
            );
            Ok(())
        }
        DataCommand::Download { dataset, dir } => {
            let kind = if dataset == "cifar10" { Cifar::Ten } else { Cifar::Hundred { fine: true } };
            let archive = download::cifar_archive(kind);
            let pb = ProgressBar::new(0);
            let path = download::download(archive, &dir, &mut |done, total| {
                if let Some(t) = total {
                    pb.set_length(t);
                }
                pb.set_position(done);
            })?;
            pb.finish_and_clear();
            println!("{} verified (MD5 {}) and unpacked into {}", path.display(), archive.md5, dir.display());
            Ok(())
        }
    }
}

fn cmd_bench(a: BenchArgs) -> Result<()> {
    let r = if a.workload == "loader" {
        let (data, _) = a.data.load()?;
        bench::loader(&data)?
    } else {
        let (r, profile) = bench::run_on(a.device.open()?, &a.workload, a.profile)?;
        if let Some(p) = profile {
            print!("{p}");
        }
        r
    };
    println!("{r}");
    Ok(())
}

/// Prints a names-by-sizes table of `cell(name, size)` texts and draws the accuracies as one
/// curve per name against the (log-scaled) training-set size.
fn size_study_output(
    svg: &std::path::Path,
    title: &str,
    names: &[&str],
    sizes: &[usize],
    cell: impl Fn(&str, usize) -> Option<(f64, String)>,
) -> Result<()> {
    use cnnlab::analysis::plot;
    let series: Vec<plot::Series> = names
        .iter()
        .map(|name| plot::Series {
            name: name.to_string(),
            points: sizes.iter().filter_map(|&n| cell(name, n).map(|(acc, _)| (n as f64, acc))).collect(),
        })
        .collect();
    plot::line_chart(svg, title, ("training examples", "test accuracy"), &series, true, (0.0, 1.0))?;
    print!("{:<10}", "");
    for n in sizes {
        print!("  {n:>14}");
    }
    println!();
    for name in names {
        print!("{name:<10}");
        for &n in sizes {
            print!("  {:>14}", cell(name, n).map(|c| c.1).unwrap_or_default());
        }
        println!();
    }
    Ok(())
}

fn cmd_analyze(c: AnalyzeCommand) -> Result<()> {
    use cnnlab::analysis::{dimension, plot};
    match c {
        AnalyzeCommand::DataSize(a) => {
            use cnnlab::experiments::data_size;
            let (data, recipe) = a.data.load()?;
            let cfg = a.train.config(&recipe.train, 0)?;
            let sizes = a.sizes.clone().unwrap_or_else(|| {
                let n = data.n_train();
                let mut v: Vec<usize> = [n / 16, n / 8, n / 4, n / 2, n].into_iter().filter(|&s| s >= 10).collect();
                v.dedup();
                v
            });
            let total = (a.models.len() * sizes.len()) as u64 * a.seeds * cfg.steps as u64;
            let pb = progress_bar(total, a.quiet);
            let r = data_size::run(&data, &a.models, &sizes, &cfg, a.seeds as usize, &|s| pb.inc(s as u64))?;
            pb.finish_and_clear();
            ensure_dir(&a.out)?;
            write_json(&a.out.join("data_size.json"), &r)?;
            let names: Vec<&str> = a.models.iter().map(|m| m.name()).collect();
            size_study_output(
                &a.out.join("data_size.svg"),
                &format!("{}: test accuracy against training examples", r.dataset),
                &names,
                &sizes,
                |name, n| {
                    let c = r.cells.iter().find(|c| c.model == name && c.train_examples == n)?;
                    Some((c.accuracy_mean, format!("{:5.1} ± {:3.1}", c.accuracy_mean * 100.0, c.accuracy_std * 100.0)))
                },
            )?;
            println!(
                "test accuracy % on {} test examples, {} steps per run; {:.1} s",
                r.test_examples, r.steps, r.wall_seconds
            );
            Ok(())
        }
        AnalyzeCommand::Pooling(a) if a.data.dataset != DatasetSpec::Mnist1d => {
            use cnnlab::experiments::pooling;
            let (data, recipe) = a.data.load()?;
            let cfg = a.train.config(&recipe.train, 0)?;
            let pb = progress_bar(2 * a.seeds * cfg.steps as u64, a.quiet);
            let cells = pooling::images(&data, &cfg, a.seeds as usize, &|s| pb.inc(s as u64))?;
            pb.finish_and_clear();
            ensure_dir(&a.out)?;
            let report = serde_json::json!({
                "dataset": data.name, "train_examples": data.n_train(), "test_examples": data.n_test(),
                "steps": cfg.steps, "arch": cfg.arch, "cells": cells,
            });
            let head = if cfg.arch.global_pool { "global average pooling" } else { "flattened map" };
            write_json(&a.out.join("pooling_images.json"), &report)?;
            let series: Vec<plot::Series> = cells
                .iter()
                .map(|c| plot::Series {
                    name: c.variant.clone(),
                    points: vec![(c.flops_per_example as f64, c.accuracy_mean)],
                })
                .collect();
            plot::line_chart(
                &a.out.join("pooling_images.svg"),
                &format!("{}: CNN with and without max-pooling", data.name),
                ("forward FLOPs per example", "test accuracy"),
                &series,
                true,
                (0.0, 1.0),
            )?;
            println!(
                "{} ({} train / {} test, {} steps, {} seed(s); classifier on the {head}):",
                data.name,
                data.n_train(),
                data.n_test(),
                cfg.steps,
                a.seeds
            );
            println!("{:<10} {:>16} {:>14} {:>12}", "variant", "test accuracy %", "MFLOPs/ex", "s per run");
            for c in &cells {
                println!(
                    "{:<10} {:>10.1} ± {:<3.1} {:>14.1} {:>12.1}",
                    c.variant,
                    c.accuracy_mean * 100.0,
                    c.accuracy_std * 100.0,
                    c.flops_per_example as f64 / 1e6,
                    c.wall_seconds
                );
            }
            println!("(the video: pooling is mostly efficiency, worth 1-2 points)");
            Ok(())
        }
        AnalyzeCommand::Pooling(a) => {
            use cnnlab::experiments::pooling;
            let mut sizes = a.sizes.clone();
            if a.large && !sizes.contains(&50000) {
                sizes.push(50000);
            }
            // the notebook's 6000 steps unless --steps says otherwise
            let steps = a.train.steps.unwrap_or(6000);
            let total = (pooling::Downsample::ALL.len() * sizes.len()) as u64 * a.seeds * steps;
            let pb = progress_bar(total, a.quiet);
            let r = pooling::run(&sizes, steps as usize, a.seeds as usize, a.shuffle, &|s| pb.inc(s as u64))?;
            pb.finish_and_clear();
            ensure_dir(&a.out)?;
            write_json(&a.out.join("pooling.json"), &r)?;
            let names: Vec<&str> = pooling::Downsample::ALL.iter().map(|v| v.name()).collect();
            size_study_output(
                &a.out.join("pooling.svg"),
                "MNIST-1D CNN: downsampling against training-set size",
                &names,
                &sizes,
                |name, n| {
                    let c = r.cells.iter().find(|c| c.variant == name && c.train_examples == n)?;
                    let reference = c.reference.map(|x| format!("{:.0}", x * 100.0)).unwrap_or_else(|| "-".into());
                    Some((c.accuracy_mean, format!("{:5.1} ({reference:>2})", c.accuracy_mean * 100.0)))
                },
            )?;
            println!(
                "test accuracy % on {} test examples, {} steps (published in parentheses); {:.1} s",
                r.test_examples, r.steps, r.wall_seconds
            );
            Ok(())
        }
        AnalyzeCommand::ReceptiveField(a) => analyze_receptive_field(a),
        AnalyzeCommand::EffectiveDim(a) => analyze_effective_dim(a),
        AnalyzeCommand::Prune(a) => analyze_prune(a),
        AnalyzeCommand::Dimension(a) => {
            if !(a.density.is_finite() && a.density > 1.0) {
                anyhow::bail!("--density must be a number above 1");
            }
            let (mut data, _) = a.data.load()?;
            data.truncate_train(a.knn_train as usize);
            data.truncate_test(a.knn_test as usize);
            let r = dimension::analyze(&data, a.density, a.seed)?;
            ensure_dir(&a.out)?;
            write_json(&a.out.join("dimension.json"), &r)?;
            let series = |name: &str, pts: Vec<(f64, f64)>| plot::Series { name: name.into(), points: pts };
            let res: Vec<(f64, f64)> = r.resolutions.iter().map(|p| (p.dimension as f64, p.knn.accuracy)).collect();
            let ratio: Vec<(f64, f64)> =
                r.resolutions.iter().map(|p| (p.dimension as f64, p.knn.nearest_to_farthest)).collect();
            let amb: Vec<(f64, f64)> = r.fixed_intrinsic.iter().map(|p| (p.ambient as f64, p.knn.accuracy)).collect();
            plot::line_chart(
                &a.out.join("dimension.svg"),
                &format!("1-NN on {} and a 2-D task in growing ambient dimension", r.dataset),
                ("input dimension", "accuracy / nearest:farthest distance"),
                &[
                    series("kNN accuracy, pooled images", res),
                    series("nearest/farthest distance, pooled images", ratio),
                    series("kNN accuracy, intrinsic dim 2", amb),
                ],
                true,
                (0.0, 1.0),
            )?;
            let needed: Vec<plot::Series> = r
                .samples_needed
                .iter()
                .map(|s| {
                    series(
                        &format!("dimension {}", s.dimension),
                        s.curve.iter().map(|p| (p.train_examples as f64, p.knn.accuracy)).collect(),
                    )
                })
                .collect();
            plot::line_chart(
                &a.out.join("samples.svg"),
                "1-NN accuracy against training examples, by intrinsic dimension",
                ("training examples", "test accuracy"),
                &needed,
                true,
                (0.0, 1.0),
            )?;
            println!("(a) points to fill an input at {} per axis:", a.density);
            for f in &r.fill_costs {
                println!("    {:<24} N = {:>5}   10^{:.1}", f.input, f.dimension, f.log10_points);
            }
            println!("(b-i) 1-NN on {} ({} train / {} test), by resolution:", r.dataset, data.n_train(), data.n_test());
            for p in &r.resolutions {
                println!(
                    "    {:>7} (N = {:>5})  accuracy {:5.1}%  nearest/farthest {:.3}",
                    p.size,
                    p.dimension,
                    p.knn.accuracy * 100.0,
                    p.knn.nearest_to_farthest
                );
            }
            println!("(b-ii) intrinsic dimension 2 embedded in ambient dimension D (2000 examples):");
            for p in &r.fixed_intrinsic {
                println!("    D = {:>4}  accuracy {:5.1}%", p.ambient, p.knn.accuracy * 100.0);
            }
            println!("(b-iii) training examples 1-NN needs for 90% on the prototype task:");
            for s in &r.samples_needed {
                let n = s.examples.map(|n| n.to_string()).unwrap_or_else(|| "> 10000".into());
                println!("    dimension {:>2}: {n}", s.dimension);
            }
            println!("wrote {}", a.out.join("dimension.json").display());
            Ok(())
        }
    }
}

/// The first `n` test examples of `data` as one batch tensor.
fn test_batch(data: &Dataset, n: usize) -> cnnlab::core::Tensor<cnnlab::core::Cpu> {
    let n = n.min(data.n_test());
    let mut shape = vec![n];
    shape.extend_from_slice(&data.example_shape);
    cnnlab::core::Tensor::from_slice(&shape, &data.x_test[..n * data.example_len()])
}

fn load_saved_run(dir: &std::path::Path) -> Result<cnnlab::train::checkpoint::LoadedRun<cnnlab::core::Cpu>> {
    use cnnlab::train::checkpoint;
    checkpoint::load_run(dir, checkpoint::FINAL_WEIGHTS).with_context(|| format!("loading the run {}", dir.display()))
}

fn analyze_receptive_field(a: ReceptiveFieldArgs) -> Result<()> {
    use cnnlab::analysis::{plot, receptive_field};
    let mut run = load_saved_run(&a.run)?;
    let x = test_batch(&run.data, a.examples as usize);
    let fields = receptive_field::measure(&mut run.model.net, &x, &run.data.example_shape)?;
    ensure_dir(&a.out)?;
    let report = serde_json::json!({
        "dataset": run.data.name, "model": run.saved.model.name(), "condition": run.saved.condition.name(),
        "examples": x.rows(), "layers": fields,
    });
    write_json(&a.out.join("receptive_field.json"), &report)?;
    let (h, w, _) = receptive_field::spatial(&run.data.example_shape)?;
    let maps: Vec<plot::HeatMap> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| plot::HeatMap {
            title: format!(
                "block {}: theory {}x{}, 90% in {}",
                i + 1,
                f.theory.0.size,
                f.theory.1.size,
                f.effective_size_90
            ),
            rows: h,
            cols: w,
            values: f.map.clone(),
            outline: Some(f.window),
        })
        .collect();
    plot::heat_maps(
        &a.out.join("receptive_field.svg"),
        &format!(
            "{} {} ({}): |d unit / d input|, theoretical field in red",
            run.data.name,
            run.saved.model.name(),
            run.saved.condition.name()
        ),
        &maps,
    )?;
    println!(
        "{} {} run ({}), gradients of the central unit averaged over {} test examples:",
        run.data.name,
        run.saved.model.name(),
        run.saved.condition.name(),
        x.rows()
    );
    println!(
        "{:<6} {:<28} {:>10} {:>12} {:>14} {:>11} {:>11}",
        "block", "layer", "output", "theory", "90% of mass in", "rms radius", "mass inside"
    );
    for (i, f) in fields.iter().enumerate() {
        let dims = |a: usize, b: usize| if h == 1 { format!("{b}") } else { format!("{a}x{b}") };
        println!(
            "{:<6} {:<28} {:>10} {:>12} {:>14} {:>11.2} {:>10.1}%",
            i + 1,
            f.describe,
            dims(f.output.0, f.output.1),
            dims(f.theory.0.size, f.theory.1.size),
            dims(f.effective_size_90.min(h), f.effective_size_90),
            f.rms_radius,
            f.mass_inside_theory * 100.0
        );
    }
    println!("wrote {} and receptive_field.svg", a.out.join("receptive_field.json").display());
    Ok(())
}

fn analyze_effective_dim(a: EffectiveDimArgs) -> Result<()> {
    use cnnlab::analysis::{effective_dim, plot};
    let mut run = load_saved_run(&a.run)?;
    let n = (a.examples as usize).min(run.data.n_test());
    let x = test_batch(&run.data, n);
    let (raw, whole) = effective_dim::input_spectra(
        &run.data.x_test[..n * run.data.example_len()],
        &run.data.example_shape,
        a.samples as usize,
        a.seed,
    )?;
    let (layers, nonlinearities) = effective_dim::layer_spectra(&mut run.model, &x, a.samples as usize, a.seed)?;
    let report = effective_dim::EffectiveDimReport {
        dataset: run.data.name.clone(),
        model: run.saved.model.name().into(),
        condition: run.saved.condition.name().into(),
        raw_patches: raw,
        whole_inputs: whole,
        layers,
        nonlinearities,
    };
    ensure_dir(&a.out)?;
    write_json(&a.out.join("effective_dim.json"), &report)?;
    let xs = |f: &dyn Fn(&effective_dim::Spectrum) -> f64| -> Vec<(f64, f64)> {
        report.layers.iter().enumerate().map(|(i, l)| ((i + 1) as f64, f(&l.spectrum))).collect()
    };
    let ymax = report
        .layers
        .iter()
        .map(|l| l.spectrum.components_99 as f64)
        .fold(report.whole_inputs.components_99 as f64, f64::max);
    let constant = |v: f64| vec![(1.0, v), (report.layers.len().max(2) as f64, v)];
    plot::line_chart(
        &a.out.join("effective_dim.svg"),
        &format!("{} {}: dimensions of what each layer's units read", report.dataset, report.model),
        ("weighted layer", "principal components"),
        &[
            plot::Series { name: "unit inputs: 90% of variance".into(), points: xs(&|s| s.components_90 as f64) },
            plot::Series { name: "unit inputs: 99% of variance".into(), points: xs(&|s| s.components_99 as f64) },
            plot::Series { name: "unit inputs: participation ratio".into(), points: xs(&|s| s.participation_ratio) },
            plot::Series {
                name: "whole input: 90%".into(),
                points: constant(report.whole_inputs.components_90 as f64),
            },
            plot::Series { name: "raw patch: 90%".into(), points: constant(report.raw_patches.components_90 as f64) },
        ],
        false,
        (0.0, ymax * 1.05 + 1.0),
    )?;
    let line = |name: &str, s: &effective_dim::Spectrum| {
        println!(
            "{name:<34} {:>6} {:>8} {:>8} {:>8} {:>10.1}",
            s.dimension, s.samples, s.components_90, s.components_99, s.participation_ratio
        )
    };
    println!("{} {} run ({}):", report.dataset, report.model, report.condition);
    println!("{:<34} {:>6} {:>8} {:>8} {:>8} {:>10}", "vectors", "dim", "samples", "PCs 90%", "PCs 99%", "part.ratio");
    line("(a) raw patches of the input", &report.raw_patches);
    line("(b) whole inputs", &report.whole_inputs);
    for l in &report.layers {
        line(&format!("(c) {} {}", l.reads, l.describe), &l.spectrum);
    }
    println!("\nzero outputs of each nonlinearity (|y| <= 1e-6; below 0.1 x RMS):");
    for s in &report.nonlinearities {
        println!(
            "    layer {:>2} {:<10} {:5.1}%  {:5.1}%",
            s.index,
            s.describe,
            s.zero_fraction * 100.0,
            s.small_fraction * 100.0
        );
    }
    println!("wrote {} and effective_dim.svg", a.out.join("effective_dim.json").display());
    Ok(())
}

fn analyze_prune(a: PruneArgs) -> Result<()> {
    use cnnlab::analysis::plot;
    use cnnlab::experiments::prune;
    use cnnlab::train::checkpoint;
    if a.sparsities.iter().any(|s| !(0.0..1.0).contains(s)) || !(0.0..1.0).contains(&a.max_sparsity) {
        anyhow::bail!("sparsities must lie in [0, 1)");
    }
    if a.save_mask.is_some() && a.rounds == 0 {
        anyhow::bail!("--save-mask needs lottery rounds (--rounds above 0)");
    }
    let run = load_saved_run(&a.run)?;
    let init = checkpoint::read_tensors(&a.run.join(checkpoint::INIT_WEIGHTS))
        .with_context(|| format!("reading the initial weights of {}", a.run.display()))?;
    let init: Vec<checkpoint::NamedTensor> = init.into_values().collect();
    let subject = prune::PruneSubject {
        kind: run.saved.model,
        arch: &run.saved.config.arch,
        data: &run.data,
        permutation: run.permutation.clone(),
        config: run.saved.config.clone(),
        init,
        trained: checkpoint::state(&run.model.net),
        prune_biases: a.prune_biases,
    };
    let steps = a.lottery_steps.map(|s| s as usize).unwrap_or(run.saved.config.steps);
    let schedule: Vec<f64> = (0..a.rounds).map(|i| a.max_sparsity * i as f64 / (a.rounds.max(2) - 1) as f64).collect();
    let seeds: Vec<u64> = (0..a.seeds).map(|k| run.saved.seed + k).collect();
    let total = (a.sparsities.len() * 3 * a.fine_tune_steps + seeds.len() * 2 * schedule.len() * steps) as u64;
    let pb = progress_bar(total, a.quiet);
    let start = std::time::Instant::now();
    let one_shot = prune::one_shot(&subject, &a.sparsities, a.fine_tune_steps, &|n| pb.inc(n as u64))?;
    let lottery = prune::lottery(&subject, &schedule, steps, &seeds, &|n| pb.inc(n as u64))?;
    pb.finish_and_clear();
    let report = prune::PruneReport {
        dataset: run.data.name.clone(),
        model: run.saved.model.name().into(),
        dense_accuracy: run.saved.final_test_accuracy,
        fine_tune_steps: a.fine_tune_steps,
        one_shot,
        lottery_steps: steps,
        lottery,
    };
    ensure_dir(&a.out)?;
    write_json(&a.out.join("prune.json"), &report)?;
    if let Some(path) = &a.save_mask {
        if let Some(c) = report.lottery.first() {
            checkpoint::save_masks(&run.model.net, &c.last_ticket_masks, path)?;
        }
    }
    // curves: one-shot (fine-tuned where available) and the lottery chains (mean over seeds)
    let mut series = Vec::new();
    for (scope, mask, name) in [
        (prune::Scope::Global, "magnitude", "one-shot global"),
        (prune::Scope::LayerWise, "magnitude", "one-shot layer-wise"),
        (prune::Scope::LayerWise, "random", "one-shot random mask"),
    ] {
        let points = report
            .one_shot
            .iter()
            .filter(|p| p.scope == scope && p.mask == mask)
            .map(|p| (p.sparsity, p.fine_tuned.unwrap_or(p.accuracy)))
            .collect();
        series.push(plot::Series {
            name: format!("{name}{}", if a.fine_tune_steps > 0 { ", fine-tuned" } else { "" }),
            points,
        });
    }
    let mean_chain = |pick: &dyn Fn(&prune::LotteryChains) -> &Vec<prune::Round>| -> Vec<(f64, f64, f64)> {
        (0..schedule.len())
            .map(|i| {
                let rounds: Vec<&prune::Round> = report.lottery.iter().filter_map(|c| pick(c).get(i)).collect();
                let n = rounds.len().max(1) as f64;
                (
                    rounds.iter().map(|r| r.sparsity).sum::<f64>() / n,
                    rounds.iter().map(|r| r.final_accuracy).sum::<f64>() / n,
                    rounds.iter().map(|r| r.best_accuracy).sum::<f64>() / n,
                )
            })
            .collect()
    };
    let ticket = mean_chain(&|c| &c.ticket);
    let random = mean_chain(&|c| &c.random);
    if !schedule.is_empty() {
        series.push(plot::Series {
            name: "lottery ticket (rewind to init)".into(),
            points: ticket.iter().map(|r| (r.0, r.1)).collect(),
        });
        series.push(plot::Series { name: "random ticket".into(), points: random.iter().map(|r| (r.0, r.1)).collect() });
    }
    if report.dataset.starts_with("mnist1d") && report.model == "mlp" && !schedule.is_empty() {
        let at = [0.80, 0.85, 0.90, 0.92, 0.95];
        let published = |pick: fn((f64, f64)) -> f64| -> Vec<(f64, f64)> {
            at.iter().filter_map(|&s| prune::mnist1d_published(s).map(|p| (s, pick(p)))).collect()
        };
        series.push(plot::Series { name: "published ticket (notebook)".into(), points: published(|p| p.0) });
        series.push(plot::Series { name: "published random ticket".into(), points: published(|p| p.1) });
    }
    plot::line_chart(
        &a.out.join("prune.svg"),
        &format!("{} {}: test accuracy against sparsity", report.dataset, report.model),
        ("share of weights removed", "test accuracy"),
        &series,
        false,
        (0.0, 1.0),
    )?;
    println!("{} {} run: dense test accuracy {:.1}%", report.dataset, report.model, report.dense_accuracy * 100.0);
    println!("one-shot magnitude pruning (as is / after {} fine-tuning steps):", a.fine_tune_steps);
    println!("{:>9}  {:>15}  {:>15}  {:>15}", "sparsity", "global", "layer-wise", "random mask");
    for &s in &a.sparsities {
        let cell = |scope: prune::Scope, mask: &str| {
            report
                .one_shot
                .iter()
                .find(|p| p.scope == scope && p.mask == mask && p.sparsity == s)
                .map(|p| match p.fine_tuned {
                    Some(f) => format!("{:5.1} / {:5.1}", p.accuracy * 100.0, f * 100.0),
                    None => format!("{:5.1}", p.accuracy * 100.0),
                })
                .unwrap_or_default()
        };
        println!(
            "{:>8.0}%  {:>15}  {:>15}  {:>15}",
            s * 100.0,
            cell(prune::Scope::Global, "magnitude"),
            cell(prune::Scope::LayerWise, "magnitude"),
            cell(prune::Scope::LayerWise, "random")
        );
    }
    if !schedule.is_empty() {
        println!(
            "\nlottery tickets: {} rounds of {} steps, mean of {} seed(s); final (best) test accuracy %",
            schedule.len(),
            steps,
            seeds.len()
        );
        let published = report.dataset.starts_with("mnist1d") && report.model == "mlp";
        println!(
            "{:>9}  {:>15}  {:>15}  {:>12}  first layer: 2/3/4 adjacent kept (ticket vs random)",
            "sparsity",
            "ticket",
            "random ticket",
            if published { "published" } else { "" }
        );
        for (i, (t, r)) in ticket.iter().zip(&random).enumerate() {
            let adj = match (
                report.lottery[0].ticket.get(i).and_then(|x| x.adjacent_kept),
                report.lottery[0].random.get(i).and_then(|x| x.adjacent_kept),
            ) {
                (Some(t), Some(r)) => {
                    format!("{:.3}/{:.3}/{:.3} vs {:.3}/{:.3}/{:.3}", t[0], t[1], t[2], r[0], r[1], r[2])
                }
                _ => String::new(),
            };
            let reference = if published {
                prune::mnist1d_published(t.0)
                    .map(|(a, b)| format!("{:.1} / {:.1}", a * 100.0, b * 100.0))
                    .unwrap_or_default()
            } else {
                String::new()
            };
            println!(
                "{:>8.1}%  {:>6.1} ({:>5.1})  {:>6.1} ({:>5.1})  {reference:>12}  {adj}",
                t.0 * 100.0,
                t.1 * 100.0,
                t.2 * 100.0,
                r.1 * 100.0,
                r.2 * 100.0
            );
        }
        if published {
            println!(
                "published: the MNIST-1D notebook's trial 0 (MLP 40-500-500-10, 100 rounds of 1501 steps, Adam 2e-2, \
                 weights and biases pruned), final accuracy of ticket / random ticket; dense runs 64-66%"
            );
        }
    }
    println!("{:.1} s; wrote {} and prune.svg", start.elapsed().as_secs_f64(), a.out.join("prune.json").display());
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    cnnlab::core::cpu::init_thread_pool(cli.threads.unwrap_or(0) as usize)?;
    match cli.command {
        Command::Reproduce(a) => cmd_reproduce(a),
        Command::Train(a) => cmd_train(a),
        Command::Models(a) => cmd_models(a),
        Command::Data(c) => cmd_data(c),
        Command::Bench(a) => cmd_bench(a),
        Command::Analyze(c) => cmd_analyze(c),
        Command::Devices => cmd_devices(),
    }
}

fn cmd_devices() -> Result<()> {
    print!("{}", cnnlab::core::Device::list());
    Ok(())
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            let _ = e.print();
            return;
        }
        Err(e) => {
            // one line: clap's message and its hint of valid values
            let text = e.to_string();
            let line: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("For more information") && !l.starts_with("Usage:"))
                .collect();
            eprintln!("{}", line.join(" "));
            std::process::exit(2);
        }
    };
    // a panic anywhere (a bug, or a device failure such as running out of GPU memory) is one
    // line and a non-zero exit too, not a backtrace
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown failure".into());
        let at = info.location().map(|l| format!(" (at {}:{})", l.file(), l.line())).unwrap_or_default();
        eprintln!("error: internal: {}{at}", msg.replace('\n', " "));
    }));
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli))) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
        Err(_) => std::process::exit(1),
    }
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks: unique argument names across flattened groups, etc.
    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
