//! `reproduce`: every model under every input condition over several seeds, the table of test
//! accuracies beside the published numbers, each run's learning curve on disk.
//!
//! Runs are independent, so they run in parallel, shared out as the device's policy says
//! ([`Device::run_jobs`]: one per core on the CPU, several CUDA streams on a GPU).

use crate::core::Device;
use crate::data::{Condition, Dataset};
use crate::error::{Error, Result};
use crate::models::ModelKind;
use crate::report::{ensure_dir, write_atomic, write_json, Row, Summary};
use crate::train::{condition_for_run, train_on, PositionPermutation, RunResult, TrainConfig};
use rayon::prelude::*;
use std::path::PathBuf;

/// Published MNIST-1D test accuracies (Greydanus 2020): (model, condition) -> accuracy.
pub fn mnist1d_reference(model: ModelKind, condition: Condition) -> Option<f64> {
    use Condition::*;
    use ModelKind::*;
    match (model, condition) {
        (Logistic, Original | Permuted) => Some(0.32),
        (Mlp, Original | Permuted) => Some(0.68),
        (Cnn, Original) => Some(0.94),
        (Cnn, Permuted) => Some(0.56),
        _ => None,
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct ReproduceConfig {
    pub models: Vec<ModelKind>,
    pub conditions: Vec<Condition>,
    pub seeds: usize,
    /// Seed of the first run; seed `k` uses `base_seed + k`.
    pub base_seed: u64,
    pub train: TrainConfig,
    /// Where each run's curve is written (None: nowhere).
    pub run_dir: Option<PathBuf>,
    /// Where the runs train (opened by the caller).
    pub device: Device,
    /// Runs trained at once (None: the device's policy, see [`Device::run_jobs`]).
    pub parallel_runs: Option<usize>,
}

impl ReproduceConfig {
    pub fn mnist1d_default() -> Self {
        Self {
            models: ModelKind::ALL.to_vec(),
            conditions: vec![Condition::Original, Condition::Permuted],
            seeds: 3,
            base_seed: 0,
            train: TrainConfig::mnist1d(),
            run_dir: None,
            device: Device::Cpu,
            parallel_runs: None,
        }
    }
}

/// One finished run.
pub struct RunRecord {
    pub model: ModelKind,
    pub condition: Condition,
    pub seed: u64,
    pub result: RunResult,
}

/// Relative cost of a model's run, to start the long ones first.
fn cost(kind: ModelKind) -> u32 {
    match kind {
        ModelKind::Lcn => 5,
        ModelKind::Dnn => 4,
        ModelKind::Cnn => 3,
        ModelKind::Mlp => 2,
        ModelKind::Logistic => 1,
    }
}

/// Runs the experiment on `data`. `progress(steps)` reports finished training steps (of
/// `total_steps(cfg)`), from any thread; `finished(run)` is called as each run ends (its
/// curve is already on disk then, so an interrupted experiment keeps the runs it finished).
pub fn run(
    data: &Dataset,
    cfg: &ReproduceConfig,
    reference: &dyn Fn(ModelKind, Condition) -> Option<f64>,
    progress: &(dyn Fn(usize) + Sync),
    finished: &(dyn Fn(&RunRecord) + Sync),
) -> Result<(Summary, Vec<RunRecord>)> {
    cfg.train.validate()?;
    data.validate()?;
    if cfg.seeds == 0 || cfg.models.is_empty() || cfg.conditions.is_empty() {
        return Err(Error::Config("reproduce needs at least one model, condition and seed".into()));
    }
    if let Some(dir) = &cfg.run_dir {
        ensure_dir(dir)?;
    }
    let start = std::time::Instant::now();
    // every (condition, seed) dataset once, shared by all models
    let variants: Vec<(Condition, u64, Dataset, PositionPermutation)> = cfg
        .conditions
        .iter()
        .flat_map(|&c| (0..cfg.seeds as u64).map(move |k| (c, k)))
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|(c, k)| {
            let seed = cfg.base_seed + k;
            let (variant, perm) = condition_for_run(c, data, &cfg.train, seed);
            (c, seed, variant, perm)
        })
        .collect();
    let mut jobs: Vec<(ModelKind, usize)> =
        cfg.models.iter().flat_map(|&m| (0..variants.len()).map(move |v| (m, v))).collect();
    jobs.sort_by_key(|(m, _)| std::cmp::Reverse(cost(*m)));
    let one_run = |&(model, v): &(ModelKind, usize)| -> Result<RunRecord> {
        let (condition, seed, ref d, ref perm) = variants[v];
        let train = TrainConfig { seed, ..cfg.train.clone() };
        let result = train_on(cfg.device, model, d, &train, perm.clone(), &mut |s| progress(s))?;
        let record = RunRecord { model, condition, seed, result };
        if let Some(dir) = &cfg.run_dir {
            write_curve(dir, &record)?;
        }
        finished(&record);
        Ok(record)
    };
    // how the runs share the device is the device's policy (one per core, or streams)
    let results = cfg.device.run_jobs(&jobs, cfg.parallel_runs, one_run)?;
    let mut records = results.into_iter().collect::<Result<Vec<_>>>()?;
    records.sort_by_key(|r| {
        let m = cfg.models.iter().position(|&x| x == r.model);
        let c = cfg.conditions.iter().position(|&x| x == r.condition);
        (m, c, r.seed)
    });
    let mut rows = Vec::new();
    for &m in &cfg.models {
        for &c in &cfg.conditions {
            let accs: Vec<f64> = records
                .iter()
                .filter(|r| r.model == m && r.condition == c)
                .map(|r| r.result.final_test_accuracy)
                .collect();
            rows.push(Row::new(m.name(), c.name(), accs, reference(m, c)));
        }
    }
    let summary = Summary { dataset: data.name.clone(), rows, wall_seconds: start.elapsed().as_secs_f64() };
    if let Some(dir) = &cfg.run_dir {
        write_json(&dir.join("summary.json"), &summary)?;
        write_json(&dir.join("config.json"), &cfg.train)?;
    }
    Ok((summary, records))
}

/// Writes one run's learning curve as JSON lines (`<model>-<condition>-seed<k>.jsonl`).
fn write_curve(dir: &std::path::Path, r: &RunRecord) -> Result<()> {
    let name = format!("{}-{}-seed{}.jsonl", r.model.name(), r.condition.name(), r.seed);
    let mut text = String::new();
    for p in &r.result.curve {
        text += &serde_json::to_string(p).map_err(|e| Error::Json { path: dir.join(&name), source: e })?;
        text.push('\n');
    }
    write_atomic(&dir.join(name), text.as_bytes())
}

/// Training steps the whole experiment performs.
pub fn total_steps(cfg: &ReproduceConfig) -> u64 {
    (cfg.models.len() * cfg.conditions.len() * cfg.seeds * cfg.train.steps) as u64
}
