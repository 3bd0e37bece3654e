//! The flag groups several commands share, each defined once and flattened where it applies;
//! each converts into the library's config type.

use clap::builder::TypedValueParser;
use clap::Args;
use cnnlab::core::optim::{OptimizerKind, ScheduleKind};
use cnnlab::core::Device;
use cnnlab::data::mnist1d::Mnist1dOverrides;
use cnnlab::data::DatasetSpec;
use cnnlab::experiments::presets::Preset;
use cnnlab::experiments::setup::DataChoice;
use cnnlab::experiments::Compute;
use cnnlab::models::ArchOverrides;
use cnnlab::train::{BatchOrder, TrainOverrides};
use cnnlab::Named;
use std::path::PathBuf;

/// A parser for a library enum, listing its names as the possible values.
pub(crate) fn named<T: Named + Send + Sync>() -> impl clap::builder::TypedValueParser<Value = T> {
    let names: Vec<&'static str> = T::ALL.iter().map(|v| v.name()).collect();
    clap::builder::PossibleValuesParser::new(names).try_map(|s: String| T::parse_name(&s))
}

/// Which dataset, where its files are, and the recipe's knobs that depend on it.
#[derive(Args, Clone)]
#[command(next_help_heading = "Data")]
pub(crate) struct DataFlags {
    /// mnist1d or recall (generated in process), fashion-mnist, mnist, cifar10, cifar100,
    /// folder:PATH or rotten-tomatoes
    #[arg(long, default_value = "mnist1d", value_parser = |s: &str| s.parse::<DatasetSpec>())]
    pub(crate) dataset: DatasetSpec,
    /// Directory holding the dataset's files (default: its usual place)
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Image datasets: quick (minutes on a laptop) or full (the paper recipe) [default: quick]
    #[arg(long, value_parser = named::<Preset>())]
    pub(crate) preset: Option<Preset>,
    /// Train on the first N training examples (the recipe's epochs count these)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) train_subset: Option<u64>,
    /// Evaluate on the first N test examples
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) test_subset: Option<u64>,
    /// folder:PATH datasets: resize every image to HxW (default: all must share one size)
    #[arg(long, value_parser = parse_size)]
    pub(crate) image_size: Option<(u32, u32)>,
    #[command(flatten)]
    pub(crate) arch: ArchFlags,
    #[command(flatten)]
    pub(crate) mnist1d: Mnist1dFlags,
    #[command(flatten)]
    pub(crate) recall: RecallFlags,
}

/// The recall task's generator (defaults: 32 tokens, 2 pairs of 16 keys and 16 values, gaps
/// 1..=30, 100,000 training and 2,000 test sequences).
#[derive(Args, Clone)]
#[command(next_help_heading = "Recall task")]
pub(crate) struct RecallFlags {
    /// Tokens per sequence, the query included
    #[arg(long)]
    pub(crate) recall_len: Option<usize>,
    /// Key-value pairs per sequence
    #[arg(long)]
    pub(crate) recall_pairs: Option<usize>,
    /// Distinct value tokens (the classes)
    #[arg(long)]
    pub(crate) recall_values: Option<usize>,
    /// Gaps between the queried value and the query: D or MIN-MAX
    #[arg(long, value_parser = parse_gap)]
    pub(crate) recall_gap: Option<(usize, usize)>,
    /// Training sequences generated
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) recall_train: Option<u64>,
}

fn parse_gap(s: &str) -> std::result::Result<(usize, usize), String> {
    let bad = || format!("'{s}' is not a gap like 5 or 1-20");
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b): (usize, usize) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

impl RecallFlags {
    pub(crate) fn config(&self) -> cnnlab::data::recall::RecallConfig {
        let mut c = cnnlab::data::recall::RecallConfig::default();
        if let Some(v) = self.recall_len {
            c.len = v;
        }
        if let Some(v) = self.recall_pairs {
            c.pairs = v;
        }
        if let Some(v) = self.recall_values {
            c.values = v;
        }
        if let Some((a, b)) = self.recall_gap {
            (c.min_gap, c.max_gap) = (a, Some(b));
        }
        if let Some(n) = self.recall_train {
            c.n_train = n as usize;
        }
        c
    }
}

pub(crate) fn parse_size(s: &str) -> std::result::Result<(u32, u32), String> {
    let bad = || format!("'{s}' is not a size like 32x32");
    let (h, w) = s.split_once('x').ok_or_else(bad)?;
    let (h, w): (u32, u32) = (h.parse().map_err(|_| bad())?, w.parse().map_err(|_| bad())?);
    if h == 0 || w == 0 {
        return Err(bad());
    }
    Ok((h, w))
}

impl DataFlags {
    pub(crate) fn choice(&self) -> DataChoice {
        DataChoice {
            dataset: self.dataset.clone(),
            data_dir: self.data_dir.clone(),
            preset: self.preset,
            train_subset: self.train_subset.map(|n| n as usize),
            test_subset: self.test_subset.map(|n| n as usize),
            image_size: self.image_size,
            mnist1d: self.mnist1d.overrides(),
            arch: self.arch.overrides(),
            recall: self.recall.config(),
        }
    }
}

/// Changes to the recipe's architecture.
#[derive(Args, Clone)]
#[command(next_help_heading = "Architecture")]
pub(crate) struct ArchFlags {
    /// Images: widths of the CNN's (and LCN's) 3x3 convolutions, comma-separated
    #[arg(long, value_delimiter = ',')]
    pub(crate) widths: Option<Vec<usize>>,
    /// Images: convolutions (0-based) followed by 2x2 max-pooling, comma-separated
    #[arg(long, value_delimiter = ',')]
    pub(crate) pool_after: Option<Vec<usize>>,
    /// Images: BatchNorm after each convolution
    #[arg(long)]
    pub(crate) batch_norm: Option<bool>,
    /// Images: average the CNN's last map over positions before the classifier (else flatten)
    #[arg(long)]
    pub(crate) global_pool: Option<bool>,
    /// Hidden widths of the MLP, comma-separated (sequences: default 100,100)
    #[arg(long, value_delimiter = ',')]
    pub(crate) mlp_hidden: Option<Vec<usize>>,
    /// Images: Mixer patch size (1: every pixel is a token)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) patch: Option<u64>,
    /// Images: Mixer channels
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) mixer_dim: Option<u64>,
    /// Images: Mixer blocks
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) mixer_depth: Option<u64>,
}

impl ArchFlags {
    pub(crate) fn overrides(&self) -> ArchOverrides {
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
pub(crate) struct Mnist1dFlags {
    /// Examples generated, train and test together [5000]
    #[arg(long)]
    pub(crate) num_samples: Option<usize>,
    /// Share of the examples in the training split [0.8]
    #[arg(long)]
    pub(crate) train_split: Option<f64>,
    /// Length of each digit's template [12]
    #[arg(long)]
    pub(crate) template_len: Option<usize>,
    /// Fewest zeros padded onto a template before stretching [36]
    #[arg(long)]
    pub(crate) padding_low: Option<usize>,
    /// Most zeros padded onto a template before stretching [60]
    #[arg(long)]
    pub(crate) padding_high: Option<usize>,
    /// Random scaling of each example [0.4]
    #[arg(long)]
    pub(crate) scale_coeff: Option<f64>,
    /// Largest random shift, in positions [48]
    #[arg(long)]
    pub(crate) max_translation: Option<usize>,
    /// Scale of the correlated (smoothed) noise [0.25]
    #[arg(long)]
    pub(crate) corr_noise_scale: Option<f64>,
    /// Scale of the independent noise [0.02]
    #[arg(long)]
    pub(crate) iid_noise_scale: Option<f64>,
    /// Largest random shear [0.75]
    #[arg(long)]
    pub(crate) shear_scale: Option<f64>,
    /// Apply the reference's own fixed shuffle of positions
    #[arg(long)]
    pub(crate) shuffle_seq: bool,
    /// Positions of each example [40]
    #[arg(long)]
    pub(crate) final_seq_length: Option<usize>,
    /// Generator seed (NumPy's np.random.seed) [42]
    #[arg(long)]
    pub(crate) data_seed: Option<u32>,
}

impl Mnist1dFlags {
    pub(crate) fn overrides(&self) -> Mnist1dOverrides {
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
pub(crate) struct TrainFlags {
    /// Optimisation steps per run
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) steps: Option<u64>,
    /// Examples per step
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) batch_size: Option<u64>,
    /// Base learning rate
    #[arg(long)]
    pub(crate) lr: Option<f32>,
    /// adam, adamw or sgd (PyTorch's defaults)
    #[arg(long, value_parser = named::<OptimizerKind>())]
    pub(crate) optimizer: Option<OptimizerKind>,
    /// Weight decay (L2 for adam and sgd, decoupled for adamw)
    #[arg(long)]
    pub(crate) weight_decay: Option<f32>,
    /// SGD momentum [0.9]
    #[arg(long)]
    pub(crate) momentum: Option<f32>,
    /// Learning-rate schedule: constant or cosine
    #[arg(long, value_parser = named::<ScheduleKind>())]
    pub(crate) schedule: Option<ScheduleKind>,
    /// Linear warm-up steps
    #[arg(long)]
    pub(crate) warmup_steps: Option<usize>,
    /// Evaluate on the test set every N steps
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) eval_every: Option<u64>,
    /// sequential (the same order every epoch, the MNIST-1D notebooks' loop) or shuffled
    #[arg(long, value_parser = named::<BatchOrder>())]
    pub(crate) batch_order: Option<BatchOrder>,
    /// Same as --batch-order sequential
    #[arg(long, hide = true, conflicts_with = "batch_order")]
    pub(crate) sequential_batches: bool,
}

impl TrainFlags {
    pub(crate) fn overrides(&self) -> TrainOverrides {
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
pub(crate) struct DeviceFlags {
    /// cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`)
    #[arg(long, default_value = "cpu", value_parser = |s: &str| s.parse::<Device>())]
    pub(crate) device: Device,
    /// Let GPU matrix products use TF32 tensor cores (faster, 10-bit mantissa products)
    #[arg(long)]
    pub(crate) tf32: bool,
}

impl DeviceFlags {
    /// One run at a time on the device.
    pub(crate) fn single(&self) -> Compute {
        Compute { device: self.device, tf32: self.tf32, parallel_runs: None }
    }
    pub(crate) fn compute(&self, grid: &GridFlags) -> Compute {
        Compute { parallel_runs: grid.parallel_runs.map(|n| n as usize), ..self.single() }
    }
}

/// How many runs, and how many at once.
#[derive(Args, Clone, Copy)]
#[command(next_help_heading = "Runs")]
pub(crate) struct GridFlags {
    /// Seeds per cell (default: the recipe's for reproduce, 1 for the analyses)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) seeds: Option<u64>,
    /// Runs trained at once (default: one per core; 8 on a GPU, each on its own CUDA stream)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub(crate) parallel_runs: Option<u64>,
}

/// Where an analysis writes its JSON and plots.
#[derive(Args, Clone)]
#[command(next_help_heading = "Output")]
pub(crate) struct OutFlags {
    /// Directory for the JSON and SVG files
    #[arg(long, default_value = "analysis")]
    pub(crate) out: PathBuf,
    /// Also write the HTML report of --out here
    #[arg(long)]
    pub(crate) report: Option<PathBuf>,
}
