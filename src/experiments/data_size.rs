//! `analyze data-size`: test accuracy of several models against the number of training examples
//! — the curse of dimensionality seen as sample efficiency. Every (model, size, seed) run trains
//! on the first `size` training examples and is tested on the whole test split.

use crate::analysis::plot;
use crate::data::{Condition, DataSource, PositionPermutation};
use crate::error::{Error, Result};
use crate::experiments::grid::{run_grid, Compute, Progress, SeedStats};
use crate::experiments::run::{train_run_on, RunSpec};
use crate::experiments::setup::DataChoice;
use crate::models::ModelKind;
use crate::report::{ensure_dir, write_json, Artifacts};
use crate::train::{TrainConfig, TrainOverrides};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataSizeConfig {
    pub data: DataChoice,
    pub models: Vec<ModelKind>,
    /// Training-set sizes (None: a ladder n/16, n/8, n/4, n/2, n of the training split).
    pub sizes: Option<Vec<usize>>,
    pub seeds: usize,
    pub train: TrainOverrides,
    pub compute: Compute,
}

impl Default for DataSizeConfig {
    fn default() -> Self {
        Self {
            data: DataChoice::default(),
            models: vec![ModelKind::Cnn, ModelKind::Dnn, ModelKind::Mlp],
            sizes: None,
            seeds: 1,
            train: TrainOverrides::default(),
            compute: Compute::default(),
        }
    }
}

/// One model at one training-set size.
#[derive(Clone, Debug, Serialize)]
pub struct SizeCell {
    pub model: String,
    pub train_examples: usize,
    #[serde(flatten)]
    pub stats: SeedStats,
}

#[derive(Clone, Debug, Serialize)]
pub struct DataSizeReport {
    pub dataset: String,
    pub test_examples: usize,
    pub steps: usize,
    pub cells: Vec<SizeCell>,
    pub wall_seconds: f64,
    #[serde(skip)]
    pub models: Vec<String>,
    #[serde(skip)]
    pub sizes: Vec<usize>,
}

/// The default ladder of sizes for a training split of `n`.
pub fn default_sizes(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = [n / 16, n / 8, n / 4, n / 2, n].into_iter().filter(|&s| s >= 10).collect();
    v.dedup();
    v
}

/// Trains every model at every size (sizes above the training split are refused).
pub fn run(cfg: &DataSizeConfig, progress: &dyn Progress) -> Result<DataSizeReport> {
    cfg.compute.open()?;
    let prepared = cfg.data.prepare()?;
    let train = prepared.train_config(&cfg.train, 0)?;
    let data = &prepared.data;
    data.validate()?;
    let sizes = cfg.sizes.clone().unwrap_or_else(|| default_sizes(data.n_train()));
    if let Some(&n) = sizes.iter().find(|&&n| n == 0 || n > data.n_train()) {
        return Err(Error::Config(format!("training-set size {n} is not in 1..={}", data.n_train())));
    }
    if cfg.models.is_empty() || sizes.is_empty() || cfg.seeds == 0 || cfg.seeds > crate::limits::MAX_SEEDS {
        return Err(Error::Config(format!(
            "data-size needs at least one model and size, and 1..={} seeds",
            crate::limits::MAX_SEEDS
        )));
    }
    crate::limits::check_distinct("models", &cfg.models)?;
    crate::limits::check_distinct("training-set sizes", &sizes)?;
    crate::limits::check_run_count(
        "the data-size curve",
        &[("models", cfg.models.len()), ("sizes", sizes.len()), ("seeds", cfg.seeds)],
    )?;
    progress.start((cfg.models.len() * sizes.len() * cfg.seeds * train.steps) as u64);
    let start = std::time::Instant::now();
    let jobs: Vec<RunSpec> = cfg
        .models
        .iter()
        .flat_map(|&model| sizes.iter().flat_map(move |&n| (0..cfg.seeds as u64).map(move |s| (model, n, s))))
        .map(|(model, n, seed)| RunSpec {
            data: DataSource { train_subset: Some(n), ..prepared.source.clone() },
            model,
            condition: Condition::Original,
            train: TrainConfig { seed, ..train.clone() },
            mask: None,
        })
        .collect();
    let accuracies = run_grid(cfg.compute, &jobs, progress, |spec| {
        let mut d = data.clone();
        d.truncate_train(spec.data.train_subset.unwrap_or(d.n_train()));
        let r = train_run_on(spec, &d, PositionPermutation::None, cfg.compute.device, None, progress)?;
        Ok(r.final_test_accuracy)
    })?;
    let key = |s: &RunSpec| (s.model, s.data.train_subset);
    let mut cells = Vec::new();
    for &m in &cfg.models {
        for &n in &sizes {
            cells.push(SizeCell {
                model: m.name().into(),
                train_examples: n,
                stats: SeedStats::select(jobs.iter().map(key), &accuracies, &(m, Some(n))),
            });
        }
    }
    Ok(DataSizeReport {
        dataset: data.name.clone(),
        test_examples: data.n_test(),
        steps: train.steps,
        cells,
        wall_seconds: start.elapsed().as_secs_f64(),
        models: cfg.models.iter().map(|m| m.name().to_string()).collect(),
        sizes,
    })
}

/// A names-by-sizes table of `cell(name, size)` texts, and the accuracies as one curve per
/// name against the training-set size (shared by the size studies).
pub(crate) fn size_table(
    names: &[String],
    sizes: &[usize],
    cell: impl Fn(&str, usize) -> Option<(f64, String)>,
) -> (String, Vec<plot::Series>) {
    let series = names
        .iter()
        .map(|name| plot::Series {
            name: name.to_string(),
            points: sizes.iter().filter_map(|&n| cell(name, n).map(|(acc, _)| (n as f64, acc))).collect(),
        })
        .collect();
    let mut out = format!("{:<10}", "");
    for n in sizes {
        out += &format!("  {n:>14}");
    }
    out += "\n";
    for name in names {
        out += &format!("{name:<10}");
        for &n in sizes {
            out += &format!("  {:>14}", cell(name, n).map(|c| c.1).unwrap_or_default());
        }
        out += "\n";
    }
    (out, series)
}

impl DataSizeReport {
    fn table(&self) -> (String, Vec<plot::Series>) {
        size_table(&self.models, &self.sizes, |name, n| {
            let c = self.cells.iter().find(|c| c.model == name && c.train_examples == n)?;
            Some((c.stats.accuracy_mean, c.stats.percent()))
        })
    }
}

impl std::fmt::Display for DataSizeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.table().0)?;
        writeln!(
            f,
            "test accuracy % on {} test examples, {} steps per run; {:.1} s",
            self.test_examples, self.steps, self.wall_seconds
        )
    }
}

impl Artifacts for DataSizeReport {
    fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        ensure_dir(dir)?;
        let (json, svg) = (dir.join("data_size.json"), dir.join("data_size.svg"));
        write_json(&json, self)?;
        let title = format!("{}: test accuracy against training examples", self.dataset);
        plot::line_chart(&svg, &title, ("training examples", "test accuracy"), &self.table().1, true, (0.0, 1.0))?;
        Ok(vec![json, svg])
    }
}
