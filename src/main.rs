//! `cnnlab`: the command-line front end over the library. Parsing, progress and printing
//! live here; everything else is in the library.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use cnnlab::core::optim::{OptimizerConfig, Schedule};
use cnnlab::data::mnist1d::Mnist1dConfig;
use cnnlab::data::{npy, Condition, Dataset};
use cnnlab::experiments::{bench, reproduce};
use cnnlab::models::{Model, ModelKind};
use cnnlab::report::{accuracy_table, ensure_dir, write_json, Row, Summary};
use cnnlab::train::{self, TrainConfig};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "cnnlab",
    version,
    about = "A laboratory that shows, by experiment, why convolutional networks work so well"
)]
#[command(
    long_about = "A laboratory that shows, by experiment, why convolutional networks work so well.\n\n\
A CNN sees small local windows and stacks them; an MLP or a Mixer (the \"DNN\") sees the whole \
input at every layer. Permuting input positions removes the spatial structure the CNN relies \
on: `cnnlab reproduce` measures exactly that, beside the published numbers."
)]
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
}

#[derive(Clone, Copy, ValueEnum)]
enum DatasetName {
    /// MNIST-1D, generated in process (no download)
    Mnist1d,
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

/// Training hyper-parameters shared by `reproduce` and `train`.
#[derive(Args, Clone)]
struct TrainFlags {
    /// Optimisation steps per run
    #[arg(long, default_value_t = 6000, value_parser = clap::value_parser!(u64).range(1..))]
    steps: u64,
    /// Examples per step
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    /// Base learning rate
    #[arg(long, default_value_t = 1e-2)]
    lr: f32,
    #[arg(long, value_enum, default_value = "adam")]
    optimizer: OptimizerName,
    /// Weight decay (L2 for adam/sgd, decoupled for adamw)
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// SGD momentum
    #[arg(long, default_value_t = 0.9)]
    momentum: f32,
    #[arg(long, value_enum, default_value = "constant")]
    schedule: ScheduleName,
    /// Linear warm-up steps
    #[arg(long, default_value_t = 0)]
    warmup_steps: usize,
    /// Evaluate on the test set every N steps
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    eval_every: u64,
}

impl TrainFlags {
    fn config(&self, seed: u64) -> Result<TrainConfig> {
        let optimizer = match self.optimizer {
            OptimizerName::Adam => OptimizerConfig::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: self.weight_decay,
            },
            OptimizerName::Adamw => OptimizerConfig::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: self.weight_decay,
            },
            OptimizerName::Sgd => OptimizerConfig::Sgd {
                momentum: self.momentum,
                weight_decay: self.weight_decay,
                nesterov: false,
            },
        };
        let schedule = match self.schedule {
            ScheduleName::Constant => Schedule::Constant {
                warmup_steps: self.warmup_steps,
            },
            ScheduleName::Cosine => Schedule::Cosine {
                warmup_steps: self.warmup_steps,
                final_fraction: 0.0,
            },
        };
        let cfg = TrainConfig {
            steps: self.steps as usize,
            batch_size: self.batch_size as usize,
            lr: self.lr,
            optimizer,
            schedule,
            eval_every: self.eval_every as usize,
            seed,
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

    fn dataset(&self) -> Result<Dataset> {
        Ok(self.config().generate()?.into())
    }
}

#[derive(Args)]
struct ReproduceArgs {
    #[arg(long, value_enum, default_value = "mnist1d")]
    dataset: DatasetName,
    /// Models to train (comma-separated)
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["logistic", "mlp", "cnn", "dnn", "lcn"])]
    models: Vec<ModelKind>,
    /// Input conditions (comma-separated); add per-example for the no-order control
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["original", "permuted"])]
    conditions: Vec<Condition>,
    /// Seeds per cell
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
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
    #[command(flatten)]
    train: TrainFlags,
    #[command(flatten)]
    mnist1d: Mnist1dFlags,
}

#[derive(Args)]
struct TrainArgs {
    #[arg(long, value_enum, default_value = "mnist1d")]
    dataset: DatasetName,
    #[arg(long, value_enum)]
    model: ModelKind,
    #[arg(long, value_enum, default_value = "original")]
    condition: Condition,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the run (config, curve, final accuracy) as JSON here
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    train: TrainFlags,
    #[command(flatten)]
    mnist1d: Mnist1dFlags,
}

#[derive(Args)]
struct ModelsArgs {
    #[arg(long, value_enum, default_value = "mnist1d")]
    dataset: DatasetName,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Write a dataset as NumPy files: x.npy, y.npy, x_test.npy, y_test.npy
    Export {
        #[arg(value_enum)]
        dataset: DatasetName,
        /// Output directory (created if missing)
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        mnist1d: Mnist1dFlags,
    },
}

#[derive(Args)]
struct BenchArgs {
    /// Workload: w3a (MNIST-1D MLP), w3b (MNIST-1D 1D CNN)
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(bench::WORKLOADS))]
    workload: String,
}

fn progress_bar(total: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} steps, ETA {eta}",
    ) {
        pb.set_style(style);
    }
    pb
}

fn load(dataset: DatasetName, mnist1d: &Mnist1dFlags) -> Result<Dataset> {
    match dataset {
        DatasetName::Mnist1d => mnist1d.dataset().context("generating MNIST-1D"),
    }
}

fn reference_for(dataset: DatasetName, model: ModelKind, condition: Condition) -> Option<f64> {
    match dataset {
        DatasetName::Mnist1d => reproduce::mnist1d_reference(model, condition),
    }
}

fn cmd_reproduce(a: ReproduceArgs) -> Result<()> {
    let data = load(a.dataset, &a.mnist1d)?;
    let run_dir = a.run_dir.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from("runs").join(format!("{}-{secs}", data.name))
    });
    let cfg = reproduce::ReproduceConfig {
        models: a.models.clone(),
        conditions: a.conditions.clone(),
        seeds: a.seeds as usize,
        base_seed: a.seed,
        train: a.train.config(a.seed)?,
        run_dir: Some(run_dir.clone()),
    };
    let pb = progress_bar(reproduce::total_steps(&cfg), a.quiet);
    let dataset = a.dataset;
    let (summary, _) = reproduce::run(&data, &cfg, &|m, c| reference_for(dataset, m, c), &|s| {
        pb.inc(s as u64)
    })
    .context("reproduce")?;
    pb.finish_and_clear();
    println!(
        "{}: {} models x {} conditions x {} seeds, {} steps each, batch {}, lr {}",
        summary.dataset,
        cfg.models.len(),
        cfg.conditions.len(),
        cfg.seeds,
        cfg.train.steps,
        cfg.train.batch_size,
        cfg.train.lr
    );
    print!("{}", accuracy_table(&summary.rows));
    println!(
        "wall time {:.1} s; curves in {}",
        summary.wall_seconds,
        run_dir.display()
    );
    if let Some(path) = &a.json {
        write_json(path, &summary).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn cmd_train(a: TrainArgs) -> Result<()> {
    let data = load(a.dataset, &a.mnist1d)?;
    let cfg = reproduce::ReproduceConfig {
        models: vec![a.model],
        conditions: vec![a.condition],
        seeds: 1,
        base_seed: a.seed,
        train: a.train.config(a.seed)?,
        run_dir: None,
    };
    let pb = progress_bar(cfg.train.steps as u64, a.quiet);
    // a single run: let each op use every thread
    let (summary, records) = {
        let dataset = a.dataset;
        let data = &data;
        let cfg = &cfg;
        let variant = a.condition.apply(data, {
            use rand::Rng;
            train::rng_for(a.seed, train::streams::CONDITION).random::<u64>()
        });
        let start = std::time::Instant::now();
        let result = train::train_cpu(a.model, &variant, &cfg.train, &mut |s| pb.inc(s as u64))
            .context("training")?;
        let row = Row::new(
            a.model.name(),
            a.condition.name(),
            vec![result.final_test_accuracy],
            reference_for(dataset, a.model, a.condition),
        );
        (
            Summary {
                dataset: data.name.clone(),
                rows: vec![row],
                wall_seconds: start.elapsed().as_secs_f64(),
            },
            result,
        )
    };
    pb.finish_and_clear();
    println!(
        "{:>6}  {:>10}  {:>9}  {:>9}  {:>8}",
        "step", "train loss", "train acc", "test loss", "test acc"
    );
    for p in &records.curve {
        println!(
            "{:>6}  {:>10.4}  {:>8.1}%  {:>9.4}  {:>7.1}%",
            p.step,
            p.train_loss,
            p.train_accuracy * 100.0,
            p.test_loss,
            p.test_accuracy * 100.0
        );
    }
    print!("{}", accuracy_table(&summary.rows));
    println!("wall time {:.1} s", summary.wall_seconds);
    if let Some(path) = &a.json {
        let out = serde_json::json!({
            "dataset": summary.dataset,
            "model": a.model.name(),
            "condition": a.condition.name(),
            "config": cfg.train,
            "final_test_accuracy": records.final_test_accuracy,
            "curve": records.curve,
            "wall_seconds": summary.wall_seconds,
        });
        write_json(path, &out).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn cmd_models(a: ModelsArgs) -> Result<()> {
    let data = load(a.dataset, &Mnist1dFlags::parse_defaults())?;
    println!(
        "{} examples of shape {:?}, {} classes\n",
        data.name, data.example_shape, data.classes
    );
    println!(
        "{:<9} {:>9} {:>12}  what it is",
        "model", "params", "FLOPs/ex"
    );
    for kind in ModelKind::ALL {
        let mut rng = train::rng_for(0, train::streams::INIT);
        let model =
            Model::<cnnlab::core::Cpu>::build(kind, &data.example_shape, data.classes, &mut rng)?;
        println!(
            "{:<9} {:>9} {:>12}  {}",
            kind.name(),
            model.param_count(),
            model.flops_per_example(),
            kind.summary()
        );
        println!("{:<9} {}", "", cnnlab::core::Layer::describe(&model.net));
    }
    Ok(())
}

impl Mnist1dFlags {
    /// The defaults, as if no flag had been given.
    fn parse_defaults() -> Self {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            f: Mnist1dFlags,
        }
        Wrapper::parse_from(["cnnlab"]).f
    }
}

fn cmd_data(c: DataCommand) -> Result<()> {
    match c {
        DataCommand::Export {
            dataset: DatasetName::Mnist1d,
            out,
            mnist1d,
        } => {
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
    }
}

fn cmd_bench(a: BenchArgs) -> Result<()> {
    let r = bench::run(&a.workload)?;
    println!("{r}");
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
    }
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
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with("For more information")
                        && !l.starts_with("Usage:")
                })
                .collect();
            eprintln!("{}", line.join(" "));
            std::process::exit(2);
        }
    };
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
