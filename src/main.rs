//! `cnnlab`: the command-line front end. Each command parses its flags into the library's
//! config, calls the library's `run`, and prints the report (and writes its files). The
//! experiments themselves live in [`cnnlab::experiments`].

mod cli;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use cli::commands::*;
use cli::output::{
    check_json, check_out, check_report, default_run_dir, finish, finish_reproduce, finish_train, report_page, show,
    Bar,
};
use cnnlab::core::Device;
use cnnlab::data::{download, Condition};
use cnnlab::experiments::{analyses, bench, data_size, distance, inventory, pooling, prune, reproduce, single};

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
    /// One HTML page of the whole argument from run and analysis directories
    Report(ReportArgs),
    /// Sweeps beyond one process: plan tasks, run them here or on Slurm, collect the tables
    #[command(subcommand)]
    Sweep(SweepCommand),
    /// List the devices this build can compute on
    Devices,
}

fn run(cli: Cli) -> Result<()> {
    let threads = cnnlab::core::cpu::init_thread_pool(cli.threads.unwrap_or(0) as usize)?;
    if cli.threads.is_some_and(|t| t as usize > threads) {
        eprintln!("note: this machine has {threads} cores; using {threads} threads");
    }
    // a malformed CNNLAB_MEMORY is an error before anything is written
    cnnlab::limits::memory_cap()?;
    // the command on one of the pool's threads, so that its ops split without handing
    // themselves over from outside the pool (`on_pool`)
    cnnlab::core::cpu::on_pool(move || run_command(cli))
}

fn run_command(cli: Cli) -> Result<()> {
    let bar = Bar::new(cli.quiet);
    match cli.command {
        Command::Reproduce(a) => {
            let mut reserved = None;
            let cfg = reproduce::ReproduceConfig {
                data: a.data.choice(),
                models: a.models,
                conditions: a.conditions.unwrap_or_else(|| {
                    let mut c = vec![Condition::Original, Condition::Permuted];
                    if a.data.dataset.is_text() {
                        c.push(Condition::PerExample);
                    }
                    c
                }),
                seeds: a.grid.seeds.map(|s| s as usize),
                base_seed: a.seed,
                train: a.train.overrides(),
                run_dir: Some(match a.run_dir {
                    Some(dir) => dir,
                    None => reserved.insert(default_run_dir(&a.data.dataset)).path(),
                }),
                overwrite: a.overwrite,
                resume: a.resume,
                compute: a.device.compute(&a.grid),
            };
            check_json(&a.json)?;
            check_report(&a.report)?;
            let report = reproduce::run(&cfg, &bar).context("reproduce")?;
            drop(bar);
            finish_reproduce(&cfg, report, &a.json, &a.report)
        }
        Command::Replay(a) => {
            let text = cnnlab::report::read_text_at_most(&a.config, cnnlab::report::MAX_CONFIG_BYTES)
                .with_context(|| format!("reading {}", a.config.display()))?;
            let mut cfg: reproduce::ReproduceConfig = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a reproduce config", a.config.display()))?;
            let mut reserved = None;
            cfg.run_dir = Some(match a.run_dir {
                Some(dir) => dir,
                None => reserved.insert(default_run_dir(&cfg.data.dataset)).path(),
            });
            cfg.overwrite = a.overwrite;
            cfg.resume = false;
            check_json(&a.json)?;
            check_report(&a.report)?;
            let report = reproduce::run(&cfg, &bar).context("replay")?;
            drop(bar);
            finish_reproduce(&cfg, report, &a.json, &a.report)
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
                overwrite: a.overwrite,
                checkpoint_every: a.checkpoint_every.map(|n| n as usize),
                resume: a.resume,
                compute: a.device.single(),
            };
            check_json(&a.json)?;
            let report = single::run(&cfg, &bar).context("training")?;
            drop(bar);
            finish_train(&cfg, &report, &a.json)
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
            let archive = match dataset.as_str() {
                "cifar10" => download::cifar_archive(cnnlab::data::cifar::Cifar::Ten),
                "cifar100" => download::cifar_archive(cnnlab::data::cifar::Cifar::Hundred { fine: true }),
                _ => download::rotten_tomatoes_archive(),
            };
            let path = download::download(archive, &dir, &mut |done, total| {
                if let Some(t) = total {
                    bar.0.set_length(t);
                }
                bar.0.set_position(done);
            })?;
            drop(bar);
            println!("{} verified ({}) and unpacked into {}", path.display(), archive.checksum(), dir.display());
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
        Command::Sweep(c) => sweep(c, bar),
        Command::Report(a) => {
            check_report(&Some(a.out.clone()))?;
            report_page(&a.dirs, &a.out)
        }
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
            check_out(&s.out)?;
            let report = data_size::run(&cfg, &bar)?;
            drop(bar);
            finish(&report, &s.out, cfg.compute.device)
        }
        AnalyzeCommand::Distance(a) => {
            let s = &a.study;
            let recall = distance::recall_of(&s.data.choice())?;
            if s.grid.seeds.is_some_and(|n| n != 1) {
                anyhow::bail!("analyze distance trains one seed per model: give it with --seed");
            }
            let cfg = distance::DistanceConfig {
                recall,
                models: a.models,
                gaps: a.gaps,
                per_gap: a.per_gap,
                seed: a.seed,
                train: s.train.overrides(),
                compute: s.compute(),
            };
            check_out(&s.out)?;
            let report = distance::run(&cfg, &bar)?;
            drop(bar);
            finish(&report, &s.out, cfg.compute.device)
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
            check_out(&s.out)?;
            let report = pooling::run(&cfg, &bar)?;
            drop(bar);
            finish(&report, &s.out, cfg.compute.device)
        }
        AnalyzeCommand::ReceptiveField(a) => {
            check_out(&a.out)?;
            let cfg = analyses::ReceptiveFieldConfig {
                run: a.run,
                examples: a.examples as usize,
                compute: a.device.single(),
            };
            finish(&analyses::receptive_field(&cfg)?, &a.out, cfg.compute.device)
        }
        AnalyzeCommand::EffectiveDim(a) => {
            check_out(&a.out)?;
            let cfg = analyses::EffectiveDimConfig {
                run: a.run,
                examples: a.examples as usize,
                samples: a.samples as usize,
                seed: a.seed,
                compute: a.device.single(),
            };
            finish(&analyses::effective_dim(&cfg)?, &a.out, cfg.compute.device)
        }
        AnalyzeCommand::Prune(a) => {
            check_out(&a.out)?;
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
                compute: cnnlab::experiments::grid::Compute {
                    parallel_runs: a.parallel_runs.map(|n| n as usize),
                    ..a.device.single()
                },
            };
            let report = prune::run(&cfg, &bar)?;
            drop(bar);
            finish(&report, &a.out, cfg.compute.device)
        }
        AnalyzeCommand::Dimension(a) => {
            check_out(&a.out)?;
            let cfg = analyses::DimensionConfig {
                data: a.data.choice(),
                density: a.density,
                knn_train: a.knn_train as usize,
                knn_test: a.knn_test as usize,
                seed: a.seed,
            };
            finish(&analyses::dimension(&cfg)?, &a.out, Device::Cpu)
        }
    }
}

fn sweep(c: SweepCommand, bar: Bar) -> Result<()> {
    use cnnlab::experiments::sweep::{self, slurm};
    let index = |f: &IndexFlags| -> Result<(usize, usize)> {
        let i = match f.index {
            Some(i) => i,
            None => sweep::index_from_env()?,
        };
        Ok((i, f.tasks_per_index as usize))
    };
    match c {
        SweepCommand::Plan(a) => {
            let spec = sweep::SweepSpec::load(&a.spec)?;
            print!("{}", sweep::plan(&spec, &a.out, a.overwrite)?);
            Ok(())
        }
        SweepCommand::Run(a) => {
            let (i, per) = index(&a.index)?;
            let manifest = sweep::Manifest::load(&a.dir)?;
            let outcomes = sweep::run_index(&a.dir, &manifest, i, per, a.device.single(), &bar)?;
            drop(bar);
            let mut failed = 0;
            for (t, outcome) in outcomes {
                let what = manifest.describe(t);
                match outcome {
                    Ok(sweep::Outcome::AlreadyDone(r)) => {
                        println!("task {t} ({what}): already done, {:.1}%", 100.0 * r.final_test_accuracy)
                    }
                    Ok(sweep::Outcome::Ran { result: r, replaced }) => {
                        if let Some(why) = replaced {
                            eprintln!("note: task {t}'s result file was not valid ({why}): set aside and redone");
                        }
                        println!("task {t} ({what}): {:.1}% in {:.1} s", 100.0 * r.final_test_accuracy, r.wall_seconds)
                    }
                    Err(e) => {
                        eprintln!("error: task {t} ({what}): {e}");
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                anyhow::bail!("{failed} task(s) did not finish (see `cnnlab sweep status {}`)", a.dir.display());
            }
            Ok(())
        }
        SweepCommand::Local(a) => {
            let compute =
                cnnlab::experiments::Compute { parallel_runs: a.jobs.map(|n| n as usize), ..a.device.single() };
            check_json(&a.json)?;
            let report = sweep::local(&a.dir, compute, &bar)?;
            drop(bar);
            eprint!("{report}");
            if !report.failed.is_empty() {
                anyhow::bail!(
                    "{} task(s) did not finish (see `cnnlab sweep status {}`)",
                    report.failed.len(),
                    a.dir.display()
                );
            }
            show(&sweep::collect(&a.dir)?, &a.json)
        }
        SweepCommand::Slurm(a) => {
            let exe = match a.cnnlab {
                Some(p) => p,
                None => std::env::current_exe().context("finding this cnnlab binary (pass --cnnlab)")?,
            };
            let opts = slurm::SlurmOptions {
                partition: a.partition,
                account: a.account,
                gpus_per_task: a.gpus_per_task,
                cpus_per_task: a.cpus_per_task,
                mem: a.mem,
                time: a.time,
                max_parallel: a.max_parallel.map(|k| k as usize),
                tasks_per_index: a.tasks_per_index as usize,
                device: a.device,
                cnnlab: exe,
                extra: a.extra,
            };
            print!("{}", slurm::write_script(&a.dir, &opts)?);
            Ok(())
        }
        SweepCommand::Status(a) => {
            check_json(&a.json)?;
            show(&sweep::status(&a.dir)?, &a.json)
        }
        SweepCommand::Collect(a) => {
            check_json(&a.json)?;
            show(&sweep::collect(&a.dir)?, &a.json)
        }
        SweepCommand::Fail(a) => {
            let (i, per) = index(&a.index)?;
            for t in sweep::record_exit(&a.dir, i, per, a.exit_status)? {
                eprintln!("recorded task {t}'s exit status {}", a.exit_status);
            }
            Ok(())
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
    let _ = cli::output::STARTED.set(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
    );
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
    // a panic anywhere (a bug, or a lost GPU) is one line and a non-zero exit too, not a
    // backtrace (a GPU out of memory is an error: see core/cuda/mod.rs, `check`)
    std::panic::set_hook(Box::new(|info| {
        let msg = cnnlab::error::panic_message(info.payload());
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
