//! `cnnlab`: the command-line front end. Each command parses its flags into the library's
//! config, calls the library's `run`, and prints the report (and writes its files). The
//! experiments themselves live in [`cnnlab::experiments`].

use anyhow::{Context, Result};
use clap::builder::TypedValueParser;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use cnnlab::core::optim::{OptimizerKind, ScheduleKind};
use cnnlab::core::Device;
use cnnlab::data::mnist1d::Mnist1dOverrides;
use cnnlab::data::{download, Condition, DatasetSpec};
use cnnlab::experiments::presets::Preset;
use cnnlab::experiments::setup::DataChoice;
use cnnlab::experiments::{analyses, bench, data_size, inventory, pooling, prune, reproduce, single};
use cnnlab::experiments::{Compute, Progress};
use cnnlab::models::{ArchOverrides, ModelKind};
use cnnlab::report::{write_json, Artifacts};
use cnnlab::train::{BatchOrder, TrainOverrides};
use cnnlab::Named;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "cnnlab",
    version,
    about = "A laboratory that shows, by experiment, why convolutional networks work so well",
    long_about = "A laboratory that shows, by experiment, why convolutional networks work so well.\n\n\
A CNN sees small local windows and stacks them; an MLP or a Mixer (the \"DNN\") sees the whole \
input at every layer. Permuting input positions removes the spatial structure the CNN relies \
on: `cnnlab reproduce` measures exactly that, beside the published numbers."
)]
struct Cli {
    /// Worker threads (default: all cores)
    #[arg(long, global = true, value_parser = clap::value_parser!(u32).range(1..))]
    threads: Option<u32>,
    /// No progress bar (runs still report as they finish, on stderr)
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train every model under every input condition over several seeds; print the table
    Reproduce(ReproduceArgs),
    /// Run an experiment again from its saved config (reproduce.json in its run directory)
    Replay(ReplayArgs),
    /// Train one model under one condition
    Train(TrainArgs),
    /// List the models with parameter counts and FLOPs per example
    Models(ModelsArgs),
    /// Dataset utilities
    #[command(subcommand)]
    Data(DataCommand),
    /// Throughput benchmarks (scripts/pytorch_bench.py runs the same workloads in PyTorch)
    Bench(BenchArgs),
    /// Measure the explanations (writes JSON and SVG plots)
    #[command(subcommand)]
    Analyze(AnalyzeCommand),
    /// List the devices this build can compute on
    Devices,
}

// ---- flags shared by several commands (defined once, flattened where they apply) ----

/// A parser for a library enum, listing its names as the possible values.
fn named<T: Named + Send + Sync>() -> impl clap::builder::TypedValueParser<Value = T> {
    let names: Vec<&'static str> = T::ALL.iter().map(|v| v.name()).collect();
    clap::builder::PossibleValuesParser::new(names).map(|s: String| T::parse_name(&s).expect("a listed name parses"))
}

/// Which dataset, where its files are, and the recipe's knobs that depend on it.
#[derive(Args, Clone)]
#[command(next_help_heading = "Data")]
struct DataFlags {
    /// mnist1d (generated in process), fashion-mnist, mnist, cifar10, cifar100 or folder:PATH
    #[arg(long, default_value = "mnist1d", value_parser = |s: &str| s.parse::<DatasetSpec>())]
    dataset: DatasetSpec,
    /// Directory holding the dataset's files (default: its usual place)
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Image datasets: quick (minutes on a laptop) or full (the paper recipe) [default: quick]
    #[arg(long, value_parser = named::<Preset>())]
    preset: Option<Preset>,
    /// Train on the first N training examples (the recipe's epochs count these)
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

impl DataFlags {
    fn choice(&self) -> DataChoice {
        DataChoice {
            dataset: self.dataset.clone(),
            data_dir: self.data_dir.clone(),
            preset: self.preset,
            train_subset: self.train_subset.map(|n| n as usize),
            test_subset: self.test_subset.map(|n| n as usize),
            image_size: self.image_size,
            mnist1d: self.mnist1d.overrides(),
            arch: self.arch.overrides(),
        }
    }
}

/// Changes to the recipe's architecture.
#[derive(Args, Clone)]
#[command(next_help_heading = "Architecture")]
struct ArchFlags {
    /// Images: widths of the CNN's (and LCN's) 3x3 convolutions, comma-separated
    #[arg(long, value_delimiter = ',')]
    widths: Option<Vec<usize>>,
    /// Images: convolutions (0-based) followed by 2x2 max-pooling, comma-separated
    #[arg(long, value_delimiter = ',')]
    pool_after: Option<Vec<usize>>,
    /// Images: BatchNorm after each convolution
    #[arg(long)]
    batch_norm: Option<bool>,
    /// Images: average the CNN's last map over positions before the classifier (else flatten)
    #[arg(long)]
    global_pool: Option<bool>,
    /// Hidden widths of the MLP, comma-separated (sequences: default 100,100)
    #[arg(long, value_delimiter = ',')]
    mlp_hidden: Option<Vec<usize>>,
    /// Images: Mixer patch size (1: every pixel is a token)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    patch: Option<u64>,
    /// Images: Mixer channels
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    mixer_dim: Option<u64>,
    /// Images: Mixer blocks
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    mixer_depth: Option<u64>,
}

impl ArchFlags {
    fn overrides(&self) -> ArchOverrides {
        ArchOverrides {
            widths: self.widths.clone(),
            pool_after: self.pool_after.clone(),
            batch_norm: self.batch_norm,
            global_pool: self.global_pool,
            mlp_hidden: self.mlp_hidden.clone(),
            patch: self.patch.map(|v| v as usize),
            mixer_dim: self.mixer_dim.map(|v| v as usize),
            mixer_depth: self.mixer_depth.map(|v| v as usize),
        }
    }
}

/// The MNIST-1D generator's settings (unset: the reference's defaults, in brackets).
#[derive(Args, Clone)]
#[command(next_help_heading = "MNIST-1D generator")]
struct Mnist1dFlags {
    /// Examples generated, train and test together [5000]
    #[arg(long)]
    num_samples: Option<usize>,
    /// Share of the examples in the training split [0.8]
    #[arg(long)]
    train_split: Option<f64>,
    /// Length of each digit's template [12]
    #[arg(long)]
    template_len: Option<usize>,
    /// Fewest zeros padded onto a template before stretching [36]
    #[arg(long)]
    padding_low: Option<usize>,
    /// Most zeros padded onto a template before stretching [60]
    #[arg(long)]
    padding_high: Option<usize>,
    /// Random scaling of each example [0.4]
    #[arg(long)]
    scale_coeff: Option<f64>,
    /// Largest random shift, in positions [48]
    #[arg(long)]
    max_translation: Option<usize>,
    /// Scale of the correlated (smoothed) noise [0.25]
    #[arg(long)]
    corr_noise_scale: Option<f64>,
    /// Scale of the independent noise [0.02]
    #[arg(long)]
    iid_noise_scale: Option<f64>,
    /// Largest random shear [0.75]
    #[arg(long)]
    shear_scale: Option<f64>,
    /// Apply the reference's own fixed shuffle of positions
    #[arg(long)]
    shuffle_seq: bool,
    /// Positions of each example [40]
    #[arg(long)]
    final_seq_length: Option<usize>,
    /// Generator seed (NumPy's np.random.seed) [42]
    #[arg(long)]
    data_seed: Option<u32>,
}

impl Mnist1dFlags {
    fn overrides(&self) -> Mnist1dOverrides {
        Mnist1dOverrides {
            num_samples: self.num_samples,
            train_split: self.train_split,
            template_len: self.template_len,
            padding_low: self.padding_low,
            padding_high: self.padding_high,
            scale_coeff: self.scale_coeff,
            max_translation: self.max_translation,
            corr_noise_scale: self.corr_noise_scale,
            iid_noise_scale: self.iid_noise_scale,
            shear_scale: self.shear_scale,
            shuffle_seq: self.shuffle_seq.then_some(true),
            final_seq_length: self.final_seq_length,
            seed: self.data_seed,
        }
    }
}

/// Changes to the recipe's training config (MNIST-1D: Adam 1e-2, batch 100, 6000 steps, the
/// same batch order every epoch; images: the preset's).
#[derive(Args, Clone)]
#[command(next_help_heading = "Training")]
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
    /// adam, adamw or sgd (PyTorch's defaults)
    #[arg(long, value_parser = named::<OptimizerKind>())]
    optimizer: Option<OptimizerKind>,
    /// Weight decay (L2 for adam and sgd, decoupled for adamw)
    #[arg(long)]
    weight_decay: Option<f32>,
    /// SGD momentum [0.9]
    #[arg(long)]
    momentum: Option<f32>,
    /// Learning-rate schedule: constant or cosine
    #[arg(long, value_parser = named::<ScheduleKind>())]
    schedule: Option<ScheduleKind>,
    /// Linear warm-up steps
    #[arg(long)]
    warmup_steps: Option<usize>,
    /// Evaluate on the test set every N steps
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    eval_every: Option<u64>,
    /// sequential (the same order every epoch, the MNIST-1D notebooks' loop) or shuffled
    #[arg(long, value_parser = named::<BatchOrder>())]
    batch_order: Option<BatchOrder>,
    /// Same as --batch-order sequential
    #[arg(long, hide = true, conflicts_with = "batch_order")]
    sequential_batches: bool,
}

impl TrainFlags {
    fn overrides(&self) -> TrainOverrides {
        TrainOverrides {
            steps: self.steps.map(|v| v as usize),
            batch_size: self.batch_size.map(|v| v as usize),
            lr: self.lr,
            optimizer: self.optimizer,
            weight_decay: self.weight_decay,
            momentum: self.momentum,
            schedule: self.schedule,
            warmup_steps: self.warmup_steps,
            eval_every: self.eval_every.map(|v| v as usize),
            batch_order: if self.sequential_batches { Some(BatchOrder::Sequential) } else { self.batch_order },
        }
    }
}

/// Where to compute.
#[derive(Args, Clone, Copy)]
#[command(next_help_heading = "Device")]
struct DeviceFlags {
    /// cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`)
    #[arg(long, default_value = "cpu", value_parser = |s: &str| s.parse::<Device>())]
    device: Device,
    /// Let GPU matrix products use TF32 tensor cores (faster, 10-bit mantissa products)
    #[arg(long)]
    tf32: bool,
}

impl DeviceFlags {
    /// One run at a time on the device.
    fn single(&self) -> Compute {
        Compute { device: self.device, tf32: self.tf32, parallel_runs: None }
    }
    fn compute(&self, grid: &GridFlags) -> Compute {
        Compute { parallel_runs: grid.parallel_runs.map(|n| n as usize), ..self.single() }
    }
}

/// How many runs, and how many at once.
#[derive(Args, Clone, Copy)]
#[command(next_help_heading = "Runs")]
struct GridFlags {
    /// Seeds per cell (default: the recipe's for reproduce, 1 for the analyses)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: Option<u64>,
    /// Runs trained at once (default: one per core; 8 on a GPU, each on its own CUDA stream)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    parallel_runs: Option<u64>,
}

/// Where an analysis writes its JSON and plots.
#[derive(Args, Clone)]
#[command(next_help_heading = "Output")]
struct OutFlags {
    /// Directory for the JSON and SVG files
    #[arg(long, default_value = "analysis")]
    out: PathBuf,
}

// ---- the commands ----

#[derive(Args)]
struct ReproduceArgs {
    /// Models to train, comma-separated (default: all for sequences; cnn,dnn,mlp,lcn for images)
    #[arg(long, value_parser = named::<ModelKind>(), value_delimiter = ',')]
    models: Option<Vec<ModelKind>>,
    /// Input conditions (comma-separated); add per-example for the no-order control
    #[arg(long, value_parser = named::<Condition>(), value_delimiter = ',', default_values = ["original", "permuted"])]
    conditions: Vec<Condition>,
    /// Seed of the first run (run k uses seed + k)
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the summary as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
    /// Directory for each run's learning curve (default: runs/<dataset>-<unix time>)
    #[arg(long)]
    run_dir: Option<PathBuf>,
    #[command(flatten)]
    grid: GridFlags,
    #[command(flatten)]
    data: DataFlags,
    #[command(flatten)]
    train: TrainFlags,
    #[command(flatten)]
    device: DeviceFlags,
}

#[derive(Args)]
struct ReplayArgs {
    /// A config written by `reproduce` (RUN_DIR/reproduce.json)
    config: PathBuf,
    /// Directory for the new run's curves (default: runs/<dataset>-<unix time>)
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Write the summary as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct TrainArgs {
    /// The model to train
    #[arg(long, value_parser = named::<ModelKind>())]
    model: ModelKind,
    /// The input condition: positions as recorded, one fixed permutation, or one per example
    #[arg(long, value_parser = named::<Condition>(), default_value = "original")]
    condition: Condition,
    /// The run's seed (initialisation, batch order, permutation)
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the run (config, curve, final accuracy) as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
    /// Save the run here (run.json, init.safetensors, final.safetensors) for `cnnlab analyze`
    #[arg(long)]
    save: Option<PathBuf>,
    /// Train with a fixed 0/1 mask (from `cnnlab analyze prune --save-mask`; it carries the
    /// architecture it was made for); masked weights start at zero and stay zero
    #[arg(long)]
    mask: Option<PathBuf>,
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
    /// CNN), full-cnn|dnn|mlp|lcn (the full recipe's networks), loader (the data pipeline)
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

#[derive(Subcommand)]
enum AnalyzeCommand {
    /// The curse of dimensionality: d^N arithmetic and k-nearest-neighbour measurements
    Dimension(DimensionArgs),
    /// The MNIST-1D pooling benchmark (none / stride-2 / max / avg / L2 against training-set
    /// size); on an image dataset, the CNN with and without its max-pooling
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
    #[command(flatten)]
    out: OutFlags,
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
    /// Seed of the sampling
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    out: OutFlags,
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
    /// Sparsity of the last lottery round
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
    #[command(flatten)]
    out: OutFlags,
}

/// The flags of a study that trains many runs and writes an analysis.
#[derive(Args)]
struct StudyFlags {
    #[command(flatten)]
    grid: GridFlags,
    #[command(flatten)]
    out: OutFlags,
    #[command(flatten)]
    data: DataFlags,
    #[command(flatten)]
    train: TrainFlags,
    #[command(flatten)]
    device: DeviceFlags,
}

impl StudyFlags {
    fn seeds(&self) -> usize {
        self.grid.seeds.unwrap_or(1) as usize
    }
    fn compute(&self) -> Compute {
        self.device.compute(&self.grid)
    }
}

#[derive(Args)]
struct DataSizeArgs {
    /// Models (comma-separated)
    #[arg(long, value_parser = named::<ModelKind>(), value_delimiter = ',', default_values = ["cnn", "dnn", "mlp"])]
    models: Vec<ModelKind>,
    /// Training-set sizes (default: n/16, n/8, n/4, n/2, n of the training split)
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    #[command(flatten)]
    study: StudyFlags,
}

#[derive(Args)]
struct PoolingArgs {
    /// MNIST-1D: training-set sizes, comma-separated
    #[arg(long, value_delimiter = ',', default_values_t = [1000usize, 2000, 5000, 10000, 20000])]
    sizes: Vec<usize>,
    /// MNIST-1D: add 50000 training examples to the sizes
    #[arg(long)]
    large: bool,
    #[command(flatten)]
    study: StudyFlags,
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
    /// Seed of the synthetic tasks
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    out: OutFlags,
    #[command(flatten)]
    data: DataFlags,
}

// ---- progress and output ----

/// The terminal's progress: a bar (hidden with --quiet); notes above it, or on stderr.
struct Bar(ProgressBar);

impl Bar {
    fn new(quiet: bool) -> Self {
        if quiet {
            return Bar(ProgressBar::hidden());
        }
        let pb = ProgressBar::new(0);
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} steps, ETA {eta}")
        {
            pb.set_style(style);
        }
        Bar(pb)
    }
}

impl Progress for Bar {
    fn start(&self, total_steps: u64) {
        self.0.set_length(total_steps);
    }
    fn steps(&self, n: usize) {
        self.0.inc(n as u64);
    }
    fn note(&self, line: &str) {
        if self.0.is_hidden() {
            eprintln!("{line}");
        } else {
            self.0.println(line);
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

fn save_json<T: serde::Serialize>(path: &Option<PathBuf>, value: &T) -> Result<()> {
    if let Some(path) = path {
        write_json(path, value).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Prints a report, writes its files into `out` and names them.
fn finish(report: &(impl std::fmt::Display + Artifacts), out: &Path) -> Result<()> {
    print!("{report}");
    let files = report.write(out).with_context(|| format!("writing into {}", out.display()))?;
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    println!("wrote {}", names.join(", "));
    Ok(())
}

fn default_run_dir(dataset: &DatasetSpec) -> PathBuf {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    PathBuf::from("runs").join(format!("{}-{secs}", dataset.name().replace([':', '/'], "_")))
}

fn run(cli: Cli) -> Result<()> {
    cnnlab::core::cpu::init_thread_pool(cli.threads.unwrap_or(0) as usize)?;
    let bar = Bar::new(cli.quiet);
    match cli.command {
        Command::Reproduce(a) => {
            let cfg = reproduce::ReproduceConfig {
                data: a.data.choice(),
                models: a.models,
                conditions: a.conditions,
                seeds: a.grid.seeds.map(|s| s as usize),
                base_seed: a.seed,
                train: a.train.overrides(),
                run_dir: Some(a.run_dir.unwrap_or_else(|| default_run_dir(&a.data.dataset))),
                compute: a.device.compute(&a.grid),
            };
            let report = reproduce::run(&cfg, &bar).context("reproduce")?;
            drop(bar);
            print!("{report}");
            save_json(&a.json, &report)
        }
        Command::Replay(a) => {
            let text = std::fs::read_to_string(&a.config).with_context(|| format!("reading {}", a.config.display()))?;
            let mut cfg: reproduce::ReproduceConfig = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a reproduce config", a.config.display()))?;
            cfg.run_dir = Some(a.run_dir.unwrap_or_else(|| default_run_dir(&cfg.data.dataset)));
            let report = reproduce::run(&cfg, &bar).context("replay")?;
            drop(bar);
            print!("{report}");
            save_json(&a.json, &report)
        }
        Command::Train(a) => {
            let cfg = single::TrainRunConfig {
                data: a.data.choice(),
                model: a.model,
                condition: a.condition,
                seed: a.seed,
                train: a.train.overrides(),
                mask: a.mask,
                save: a.save,
                compute: a.device.single(),
            };
            let report = single::run(&cfg, &bar).context("training")?;
            drop(bar);
            print!("{report}");
            save_json(&a.json, &report)
        }
        Command::Models(a) => {
            print!("{}", inventory::models(&a.data.choice())?);
            Ok(())
        }
        Command::Data(DataCommand::Export { out, mnist1d, .. }) => {
            let (_, n_train, n_test, len) = inventory::export_mnist1d(&mnist1d.overrides(), &out)?;
            println!(
                "wrote x.npy [{n_train}, {len}], y.npy, x_test.npy [{n_test}, {len}], y_test.npy to {}",
                out.display()
            );
            Ok(())
        }
        Command::Data(DataCommand::Download { dataset, dir }) => {
            let kind = if dataset == "cifar10" {
                cnnlab::data::cifar::Cifar::Ten
            } else {
                cnnlab::data::cifar::Cifar::Hundred { fine: true }
            };
            let archive = download::cifar_archive(kind);
            let path = download::download(archive, &dir, &mut |done, total| {
                if let Some(t) = total {
                    bar.0.set_length(t);
                }
                bar.0.set_position(done);
            })?;
            drop(bar);
            println!("{} verified (MD5 {}) and unpacked into {}", path.display(), archive.md5, dir.display());
            Ok(())
        }
        Command::Bench(a) => {
            let cfg = bench::BenchConfig {
                workload: a.workload,
                profile: a.profile,
                data: a.data.choice(),
                compute: a.device.single(),
            };
            print!("{}", bench::bench(&cfg)?);
            Ok(())
        }
        Command::Analyze(c) => analyze(c, bar),
        Command::Devices => {
            print!("{}", Device::list());
            Ok(())
        }
    }
}

fn analyze(c: AnalyzeCommand, bar: Bar) -> Result<()> {
    match c {
        AnalyzeCommand::DataSize(a) => {
            let s = &a.study;
            let cfg = data_size::DataSizeConfig {
                data: s.data.choice(),
                models: a.models,
                sizes: a.sizes,
                seeds: s.seeds(),
                train: s.train.overrides(),
                compute: s.compute(),
            };
            let report = data_size::run(&cfg, &bar)?;
            drop(bar);
            finish(&report, &s.out.out)
        }
        AnalyzeCommand::Pooling(a) => {
            let (s, mut sizes) = (&a.study, a.sizes);
            if a.large {
                if !s.data.dataset.is_sequence() {
                    anyhow::bail!("--large applies to the MNIST-1D benchmark");
                }
                if !sizes.contains(&50000) {
                    sizes.push(50000);
                }
            }
            let cfg = pooling::PoolingConfig {
                data: s.data.choice(),
                sizes,
                seeds: s.seeds(),
                train: s.train.overrides(),
                compute: s.compute(),
            };
            let report = pooling::run(&cfg, &bar)?;
            drop(bar);
            finish(&report, &s.out.out)
        }
        AnalyzeCommand::ReceptiveField(a) => {
            let cfg = analyses::ReceptiveFieldConfig { run: a.run, examples: a.examples as usize };
            finish(&analyses::receptive_field(&cfg)?, &a.out.out)
        }
        AnalyzeCommand::EffectiveDim(a) => {
            let cfg = analyses::EffectiveDimConfig {
                run: a.run,
                examples: a.examples as usize,
                samples: a.samples as usize,
                seed: a.seed,
            };
            finish(&analyses::effective_dim(&cfg)?, &a.out.out)
        }
        AnalyzeCommand::Prune(a) => {
            let cfg = prune::PruneConfig {
                run: a.run,
                sparsities: a.sparsities,
                fine_tune_steps: a.fine_tune_steps,
                rounds: a.rounds,
                max_sparsity: a.max_sparsity,
                lottery_steps: a.lottery_steps.map(|s| s as usize),
                seeds: a.seeds as usize,
                prune_biases: a.prune_biases,
                save_mask: a.save_mask,
            };
            let report = prune::run(&cfg, &bar)?;
            drop(bar);
            finish(&report, &a.out.out)
        }
        AnalyzeCommand::Dimension(a) => {
            let cfg = analyses::DimensionConfig {
                data: a.data.choice(),
                density: a.density,
                knn_train: a.knn_train as usize,
                knn_test: a.knn_test as usize,
                seed: a.seed,
            };
            finish(&analyses::dimension(&cfg)?, &a.out.out)
        }
    }
}

/// The command line, with every value-taking flag accepting negative numbers (so `--lr -1`
/// reaches the library's check instead of looking like a flag).
fn command() -> clap::Command {
    fn negatives(cmd: clap::Command) -> clap::Command {
        let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
        let mut cmd = cmd.mut_args(|a| if a.get_action().takes_values() { a.allow_negative_numbers(true) } else { a });
        for name in names {
            cmd = cmd.mut_subcommand(name, negatives);
        }
        cmd
    }
    negatives(Cli::command())
}

/// An error as one line: each cause once (a cause already quoted by its parent is not repeated).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line += ": ";
            }
            line += &text;
        }
    }
    line.replace('\n', " ")
}

fn main() {
    let cli = match command().try_get_matches().and_then(|m| Cli::from_arg_matches(&m)) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            let _ = e.print();
            return;
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // `cnnlab` alone: the help, as help
            let _ = e.print();
            std::process::exit(2);
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
            eprintln!("error: {}", one_line(&e));
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
        super::command().debug_assert();
    }
}
