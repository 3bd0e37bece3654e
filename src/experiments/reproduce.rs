//! `reproduce`: every model under every input condition over several seeds, the table of test
//! accuracies beside the published numbers, each run's learning curve on disk.
//!
//! Runs are independent, so they run in parallel, shared out as the device's policy says
//! ([`Device::run_jobs`]: one per core on the CPU, several CUDA streams on a GPU).

use crate::core::Device;
use crate::data::{Condition, DataSource, Dataset, PositionPermutation};
use crate::error::{Error, Result};
use crate::experiments::grid::{run_grid, Compute, Progress};
use crate::experiments::references;
use crate::experiments::run::{train_run_on, RunSpec};
use crate::experiments::setup::DataChoice;
use crate::models::ModelKind;
use crate::report::{accuracy_table, ensure_dir, write_atomic, write_json, Row, Summary};
use crate::train::{RunResult, TrainConfig, TrainOverrides};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use crate::experiments::references::mnist1d_reference;

/// What to run (saved beside the results, so an experiment can be replayed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReproduceConfig {
    pub data: DataChoice,
    /// Models to train (None: the recipe's: all for sequences, cnn, dnn, mlp, lcn for images).
    pub models: Option<Vec<ModelKind>>,
    pub conditions: Vec<Condition>,
    /// Seeds per cell (None: the recipe's).
    pub seeds: Option<usize>,
    /// Seed of the first run; seed `k` uses `base_seed + k`.
    pub base_seed: u64,
    /// Changes to the recipe's training config.
    pub train: TrainOverrides,
    /// Where each run's curve is written (None: nowhere). A directory that already holds
    /// files is refused unless `overwrite`.
    pub run_dir: Option<PathBuf>,
    /// Replace what `run_dir` holds.
    pub overwrite: bool,
    /// Continue the experiment interrupted in `run_dir`: runs whose curves are there are not
    /// trained again.
    pub resume: bool,
    /// Where the runs train, and how many at once.
    pub compute: Compute,
}

impl Default for ReproduceConfig {
    /// The main experiment: MNIST-1D, every model, original and permuted, the recipe's seeds.
    fn default() -> Self {
        Self {
            data: DataChoice::default(),
            models: None,
            conditions: vec![Condition::Original, Condition::Permuted],
            seeds: None,
            base_seed: 0,
            train: TrainOverrides::default(),
            run_dir: None,
            overwrite: false,
            resume: false,
            compute: Compute::default(),
        }
    }
}

/// One finished run.
#[derive(Debug)]
pub struct RunRecord {
    pub model: ModelKind,
    pub condition: Condition,
    pub seed: u64,
    pub result: RunResult,
}

/// The experiment's results: the summary (its JSON) and what the terminal shows around it.
#[derive(Debug, Serialize)]
pub struct ReproduceReport {
    #[serde(flatten)]
    pub summary: Summary,
    #[serde(skip)]
    pub n_train: usize,
    #[serde(skip)]
    pub n_test: usize,
    #[serde(skip)]
    pub data_crc32: String,
    #[serde(skip)]
    pub models: usize,
    #[serde(skip)]
    pub conditions: usize,
    #[serde(skip)]
    pub seeds: usize,
    #[serde(skip)]
    pub train: TrainConfig,
    #[serde(skip)]
    pub protocol: String,
    #[serde(skip)]
    pub device: Device,
    #[serde(skip)]
    pub run_dir: Option<PathBuf>,
    #[serde(skip)]
    pub records: Vec<RunRecord>,
    /// Files that could not be written (curves, summaries): the table is still complete.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

impl std::fmt::Display for ReproduceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.train;
        writeln!(
            f,
            "{}: {} train / {} test examples; {} models x {} conditions x {} seeds, {} steps each, batch {}, lr {}, on {}",
            self.summary.dataset,
            self.n_train,
            self.n_test,
            self.models,
            self.conditions,
            self.seeds,
            t.steps,
            t.batch_size,
            t.lr,
            self.device
        )?;
        writeln!(f, "protocol: {}", self.protocol)?;
        write!(f, "{}", accuracy_table(&self.summary.rows))?;
        write!(f, "wall time {:.1} s", self.summary.wall_seconds)?;
        if let Some(dir) = &self.run_dir {
            write!(f, "; curves in {}", dir.display())?;
        }
        writeln!(f)
    }
}

/// Relative cost of a model's run, to start the long ones first.
pub(crate) fn cost(kind: ModelKind) -> u32 {
    match kind {
        ModelKind::Lcn => 5,
        ModelKind::Transformer2 => 5,
        ModelKind::Transformer1 => 4,
        ModelKind::Dnn => 4,
        ModelKind::Cnn => 3,
        ModelKind::Mlp => 2,
        ModelKind::Logistic | ModelKind::Bag => 1,
    }
}

/// What one table is about: its data, the grid of runs (models x conditions x seeds) and their
/// config. A reproduce plan has one; a sweep ([`super::sweep`]) one per dataset and train size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableSpec {
    /// The data's name (as the summary shows it).
    pub dataset: String,
    /// CRC-32 of the data as loaded ([`Dataset::crc32`]).
    #[serde(default)]
    pub data_crc32: String,
    pub n_train: usize,
    pub n_test: usize,
    /// Reloads the data.
    pub source: DataSource,
    pub models: Vec<ModelKind>,
    pub conditions: Vec<Condition>,
    pub seeds: usize,
    /// The runs' config (the seed is the first run's).
    pub train: TrainConfig,
}

/// The experiment's runs, resolved: the data, and one [`RunSpec`] per (model, condition, seed).
pub struct Plan {
    pub data: Dataset,
    pub runs: Vec<RunSpec>,
    pub table: TableSpec,
}

/// Resolves a table of runs from loaded data: the recipe's models and seeds unless given; one
/// run per (model, condition, seed) in that order, seed `k` being `base_seed + k`.
pub(crate) fn resolve_table(
    prepared: &crate::experiments::setup::Prepared,
    models: Option<&[ModelKind]>,
    conditions: &[Condition],
    seeds: Option<usize>,
    base_seed: u64,
    overrides: &TrainOverrides,
) -> Result<(TableSpec, Vec<RunSpec>)> {
    let train = prepared.train_config(overrides, base_seed)?;
    train.arch.validate()?;
    let models = models.map(<[ModelKind]>::to_vec).unwrap_or(prepared.recipe.models.clone());
    let seeds = seeds.unwrap_or(prepared.recipe.seeds);
    if seeds == 0 || models.is_empty() || conditions.is_empty() {
        return Err(Error::Config("an experiment needs at least one model, condition and seed".into()));
    }
    if seeds > crate::limits::MAX_SEEDS {
        return Err(Error::Config(format!("at most {} seeds per cell", crate::limits::MAX_SEEDS)));
    }
    crate::limits::check_distinct("models", &models)?;
    crate::limits::check_distinct("conditions", conditions)?;
    crate::limits::check_run_count(
        "the table",
        &[("models", models.len()), ("conditions", conditions.len()), ("seeds", seeds)],
    )?;
    let mut runs = Vec::new();
    for &model in &models {
        for &condition in conditions {
            for k in 0..seeds as u64 {
                let train = TrainConfig { seed: base_seed + k, ..train.clone() };
                runs.push(RunSpec { data: prepared.source.clone(), model, condition, train, mask: None });
            }
        }
    }
    let data = &prepared.data;
    let table = TableSpec {
        dataset: data.name.clone(),
        data_crc32: data.crc32(),
        n_train: data.n_train(),
        n_test: data.n_test(),
        source: prepared.source.clone(),
        models,
        conditions: conditions.to_vec(),
        seeds,
        train,
    };
    Ok((table, runs))
}

impl ReproduceConfig {
    /// Loads the data and resolves every run.
    pub fn plan(&self) -> Result<Plan> {
        let prepared = self.data.prepare()?;
        let (table, runs) = resolve_table(
            &prepared,
            self.models.as_deref(),
            &self.conditions,
            self.seeds,
            self.base_seed,
            &self.train,
        )?;
        // every (condition, seed) view of the data is held at once
        let views = (self.conditions.len() * table.seeds) as f64;
        let bytes = 4.0 * (prepared.data.x.len() + prepared.data.x_test.len()) as f64;
        crate::limits::check_fits("the permuted copies of the data", views * bytes)?;
        Ok(Plan { data: prepared.data, runs, table })
    }
}

impl TableSpec {
    /// The table of `records` (runs of this table, in any order), as `reproduce` reports it.
    pub fn report(
        &self,
        mut records: Vec<RunRecord>,
        device: Device,
        wall_seconds: f64,
        run_dir: Option<PathBuf>,
        warnings: Vec<String>,
    ) -> ReproduceReport {
        records.sort_by_key(|r| {
            let m = self.models.iter().position(|&x| x == r.model);
            let c = self.conditions.iter().position(|&x| x == r.condition);
            (m, c, r.seed)
        });
        let mut rows = Vec::new();
        for &m in &self.models {
            for &c in &self.conditions {
                let accs: Vec<f64> = records
                    .iter()
                    .filter(|r| r.model == m && r.condition == c)
                    .map(|r| r.result.final_test_accuracy)
                    .collect();
                rows.push(Row::new(m.name(), c.name(), accs, references::published(&self.source, &self.train, m, c)));
            }
        }
        ReproduceReport {
            summary: Summary { dataset: self.dataset.clone(), rows, wall_seconds },
            n_train: self.n_train,
            n_test: self.n_test,
            data_crc32: self.data_crc32.clone(),
            models: self.models.len(),
            conditions: self.conditions.len(),
            seeds: self.seeds,
            train: self.train.clone(),
            protocol: references::protocol(&self.source, &self.train),
            device,
            run_dir,
            records,
            warnings,
        }
    }
}

/// Runs the experiment. `progress` counts finished training steps and hears of each run as it
/// ends (its curve is already on disk then, so an interrupted experiment keeps what finished).
pub fn run(cfg: &ReproduceConfig, progress: &dyn Progress) -> Result<ReproduceReport> {
    cfg.compute.open()?;
    // the experiment as saved in its run directory (what `--resume` must match)
    let saved = ReproduceConfig { resume: false, overwrite: false, ..cfg.clone() };
    let text =
        serde_json::to_string_pretty(&saved).map_err(|e| Error::Json { path: "reproduce.json".into(), source: e })?;
    match (&cfg.run_dir, cfg.resume) {
        (None, true) => return Err(Error::Config("--resume needs the run directory of the experiment".into())),
        (Some(dir), true) => {
            let found = std::fs::read_to_string(dir.join("reproduce.json"))
                .map_err(|_| Error::NotFound(format!("no interrupted experiment to resume in {}", dir.display())))?;
            if found != text {
                return Err(Error::Config(format!(
                    "the experiment in {} was started with other settings: resume it with the same flags",
                    dir.display()
                )));
            }
        }
        (Some(dir), false) => {
            // before any work: a run directory that cannot be written, or holds another experiment
            crate::experiments::single::check_run_dir(dir, cfg.overwrite)?;
            if cfg.overwrite && dir.exists() {
                std::fs::remove_dir_all(dir).map_err(|e| Error::io("replacing", dir, e))?;
            }
        }
        (None, false) => {}
    }
    let plan = cfg.plan()?;
    if let Some(dir) = &cfg.run_dir {
        ensure_dir(dir)?;
        write_atomic(&dir.join("reproduce.json"), text.as_bytes())?;
    }
    progress.start(plan.runs.len() as u64 * plan.table.train.steps as u64);
    run_plan(cfg, &plan, progress)
}

/// [`run`] on an already resolved plan.
pub fn run_plan(cfg: &ReproduceConfig, plan: &Plan, progress: &dyn Progress) -> Result<ReproduceReport> {
    let data = &plan.data;
    data.validate()?;
    if let Some(dir) = &cfg.run_dir {
        ensure_dir(dir)?;
    }
    let start = std::time::Instant::now();
    let warnings = std::sync::Mutex::new(Vec::new());
    let warn = |e: Error| {
        if let Ok(mut w) = warnings.lock() {
            w.push(e.to_string());
        }
    };
    // every (condition, seed) view of the data once, shared by all models; each job holds
    // its run and the index of its view
    let mut firsts: Vec<&RunSpec> = Vec::new();
    let mut jobs: Vec<(&RunSpec, usize)> = Vec::with_capacity(plan.runs.len());
    for run in &plan.runs {
        let key = (run.condition, run.seed());
        let v = firsts.iter().position(|r| (r.condition, r.seed()) == key).unwrap_or_else(|| {
            firsts.push(run);
            firsts.len() - 1
        });
        jobs.push((run, v));
    }
    let views: Vec<(Dataset, PositionPermutation)> = firsts.into_par_iter().map(|r| r.view(data)).collect();
    jobs.sort_by_key(|(r, _)| std::cmp::Reverse(cost(r.model)));
    let one_run = |&(spec, v): &(&RunSpec, usize)| -> Result<RunRecord> {
        let (d, perm) = &views[v];
        if cfg.resume {
            if let Some(result) = cfg.run_dir.as_deref().and_then(|dir| read_curve(dir, spec)) {
                progress.steps(spec.train.steps);
                return Ok(RunRecord { model: spec.model, condition: spec.condition, seed: spec.seed(), result });
            }
        }
        let result = train_run_on(spec, d, perm.clone(), cfg.compute.device, None, progress)?;
        let record = RunRecord { model: spec.model, condition: spec.condition, seed: spec.seed(), result };
        if let Some(dir) = &cfg.run_dir {
            // a curve that cannot be written does not cost the experiment its table
            if let Err(e) = write_curve(dir, &record) {
                warn(e);
            }
        }
        progress.note(&format!(
            "finished {} / {} / seed {}: {:.1}% in {:.1} s",
            record.model.name(),
            record.condition.name(),
            record.seed,
            100.0 * record.result.final_test_accuracy,
            record.result.wall_seconds
        ));
        Ok(record)
    };
    let records = run_grid(cfg.compute, &jobs, progress, one_run)?;
    let report =
        plan.table.report(records, cfg.compute.device, start.elapsed().as_secs_f64(), cfg.run_dir.clone(), vec![]);
    if let Some(dir) = &cfg.run_dir {
        for result in [
            write_json(&dir.join("summary.json"), &report.summary),
            write_json(&dir.join("config.json"), &plan.table.train),
        ] {
            if let Err(e) = result {
                warn(e);
            }
        }
    }
    Ok(ReproduceReport { warnings: warnings.into_inner().unwrap_or_default(), ..report })
}

/// A run's curve file in a run directory: `<model>-<condition>-seed<k>.jsonl`.
pub(crate) fn curve_name(model: &str, condition: &str, seed: u64) -> String {
    format!("{model}-{condition}-seed{seed}.jsonl")
}

/// A curve file's points (None: absent or unreadable).
pub(crate) fn read_curve_file(path: &std::path::Path) -> Option<Vec<crate::train::CurvePoint>> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().map(serde_json::from_str).collect::<std::result::Result<_, _>>().ok()
}

/// A finished run's result from its curve file (None: absent, or not a whole run's curve).
fn read_curve(dir: &std::path::Path, spec: &RunSpec) -> Option<RunResult> {
    let curve = read_curve_file(&dir.join(curve_name(spec.model.name(), spec.condition.name(), spec.seed())))?;
    let last = curve.last()?;
    let final_test_accuracy = last.test_accuracy as f64;
    (last.step == spec.train.steps).then_some(RunResult { final_test_accuracy, curve, wall_seconds: 0.0 })
}

/// Writes one run's learning curve as JSON lines (`<model>-<condition>-seed<k>.jsonl`).
fn write_curve(dir: &std::path::Path, r: &RunRecord) -> Result<()> {
    let name = curve_name(r.model.name(), r.condition.name(), r.seed);
    let mut text = String::new();
    for p in &r.result.curve {
        text += &serde_json::to_string(p).map_err(|e| Error::Json { path: dir.join(&name), source: e })?;
        text.push('\n');
    }
    write_atomic(&dir.join(name), text.as_bytes())
}
