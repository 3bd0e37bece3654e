//! Sweeps beyond one process: a spec expands into a manifest of numbered tasks (one
//! [`RunSpec`] each) that anything can run — this machine ([`local`]), a Slurm job array
//! ([`slurm`]), a Kubernetes Indexed Job — one task per index, each writing its own result; then
//! [`collect`] prints the tables `reproduce` prints.
//!
//! A sweep directory:
//!
//! ```text
//! DIR/sweep.json                  the manifest: the spec, its tables, every task's RunSpec
//! DIR/tasks/0007/result.json      task 7's result (checksummed, written atomically)
//! DIR/tasks/0007/failure.json     its last failure: the error line and exit status
//! DIR/tasks/0007/started.json     an attempt under way (or killed): host, pid, scheduler job
//! DIR/tasks/0007/run.json, *.safetensors   the run itself, for `cnnlab analyze`
//! DIR/sweep.sbatch, DIR/logs/     the Slurm array script and its logs
//! ```
//!
//! A task whose valid result exists is never run again, so a resubmitted array redoes only
//! what failed, was killed, or left a corrupted result.

pub mod spec;
pub mod status;
pub mod task;

pub use spec::SweepSpec;
pub use status::{collect, status, CollectReport, StatusReport, TaskState};
pub use task::{local, record_exit, run_index, run_task, LocalReport, Outcome, TaskResult};

use crate::data::DatasetSpec;
use crate::error::{Error, Result};
use crate::experiments::reproduce::{resolve_table, TableSpec};
use crate::experiments::run::RunSpec;
use crate::report::{ensure_dir, write_atomic};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The manifest's file in a sweep directory.
pub const MANIFEST: &str = "sweep.json";
/// The manifest format this build writes and reads.
pub const FORMAT: u32 = 1;
/// Most tasks in one sweep (every task reads the manifest, which holds them all).
pub const MAX_TASKS: usize = crate::limits::MAX_RUNS;

/// One numbered task: a run of one table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    pub index: usize,
    /// Which of the manifest's tables the run belongs to.
    pub table: usize,
    pub run: RunSpec,
}

/// The expanded sweep: what every task runs, fixed when it is planned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub spec: SweepSpec,
    /// One table per dataset and training-set size.
    pub tables: Vec<TableSpec>,
    pub tasks: Vec<Task>,
}

impl Manifest {
    /// Expands `spec`: loads each table's data to resolve its recipe, then numbers the runs
    /// (tables in order; within a table, model, condition, seed — `reproduce`'s order).
    pub fn expand(spec: &SweepSpec) -> Result<Self> {
        spec.validate()?;
        let mut tables = Vec::new();
        let mut tasks = Vec::new();
        for mut choice in spec.tables() {
            // tasks run elsewhere (a node's working directory): relative paths are made absolute
            choice.data_dir = choice.data_dir.as_deref().map(absolute).transpose()?;
            if let DatasetSpec::Folder(p) = &choice.dataset {
                choice.dataset = DatasetSpec::Folder(absolute(p)?);
            }
            let prepared = choice.prepare()?;
            let (table, runs) = resolve_table(
                &prepared,
                spec.models.as_deref(),
                &spec.conditions,
                spec.seeds,
                spec.base_seed,
                &spec.train,
            )?;
            if tasks.len() + runs.len() > MAX_TASKS {
                return Err(Error::Config(format!("a sweep holds at most {MAX_TASKS} tasks")));
            }
            for run in runs {
                tasks.push(Task { index: tasks.len(), table: tables.len(), run });
            }
            tables.push(table);
        }
        Ok(Manifest { format: FORMAT, name: spec.job_name(), spec: spec.clone(), tables, tasks })
    }

    /// Reads `DIR/sweep.json`, checking that its tasks are numbered in order.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound(format!(
                "no sweep in {} (no {MANIFEST}): plan one with `cnnlab sweep plan SPEC --out {}`",
                dir.display(),
                dir.display()
            )),
            _ => Error::io("reading", &path, e),
        })?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| Error::Json { path: path.clone(), source: e })?;
        let malformed = |reason: String| Error::Malformed { path: path.clone(), reason };
        if manifest.format != FORMAT {
            return Err(malformed(format!("manifest format {} (this build reads {FORMAT})", manifest.format)));
        }
        for (i, t) in manifest.tasks.iter().enumerate() {
            if t.index != i || t.table >= manifest.tables.len() {
                return Err(malformed(format!("task {i} is numbered {} in table {}", t.index, t.table)));
            }
        }
        Ok(manifest)
    }

    /// Task `index`, or an error naming the valid range.
    pub fn task(&self, index: usize) -> Result<&Task> {
        self.tasks.get(index).ok_or_else(|| {
            Error::Config(format!(
                "task index {index} is out of range: the sweep has {} tasks (0-{})",
                self.tasks.len(),
                self.tasks.len().saturating_sub(1)
            ))
        })
    }

    /// The directory of task `index` (`tasks/0007`: as many digits as the largest index, at
    /// least four, so they sort).
    pub fn task_dir(&self, dir: &Path, index: usize) -> PathBuf {
        let width = self.tasks.len().saturating_sub(1).to_string().len().max(4);
        dir.join("tasks").join(format!("{index:0width$}"))
    }

    /// `model / condition / seed k` (and the table where the sweep has several).
    pub fn describe(&self, index: usize) -> String {
        let Some(t) = self.tasks.get(index) else { return format!("task {index}") };
        let mut s = format!("{} / {} / seed {}", t.run.model.name(), t.run.condition.name(), t.run.seed());
        if self.tables.len() > 1 {
            s += &format!(" / {}", self.table_label(t.table));
        }
        s
    }

    /// A table's name: its dataset, and its training-set size where sizes vary.
    pub fn table_label(&self, table: usize) -> String {
        let t = &self.tables[table];
        match t.source.train_subset {
            Some(n) if self.spec.train_sizes.is_some() => format!("{} ({n} train)", t.dataset),
            _ => t.dataset.clone(),
        }
    }
}

/// `p` from the current directory.
fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::io("resolving", p, e))
}

/// What `sweep plan` did.
#[derive(Debug, Serialize)]
pub struct PlanReport {
    pub dir: PathBuf,
    pub name: String,
    pub tasks: usize,
    /// Each table: its label and its runs' shape.
    pub tables: Vec<String>,
    /// The directory already held this very plan (nothing was written).
    pub unchanged: bool,
}

impl std::fmt::Display for PlanReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.unchanged { "already planned" } else { "planned" };
        writeln!(f, "{verb}: sweep {} in {}, {} tasks", self.name, self.dir.display(), self.tasks)?;
        for t in &self.tables {
            writeln!(f, "  {t}")?;
        }
        let d = self.dir.display();
        writeln!(f, "run them here:   cnnlab sweep local {d}")?;
        writeln!(f, "or on Slurm:     cnnlab sweep slurm {d}   (writes the sbatch array script)")?;
        writeln!(f, "then:            cnnlab sweep status {d}; cnnlab sweep collect {d}")
    }
}

/// `sweep plan`: expands `spec` into `dir/sweep.json`. Planning the same spec again changes
/// nothing (its results stay); a directory holding another sweep or other files is refused
/// unless `overwrite` (which removes it first).
pub fn plan(spec: &SweepSpec, dir: &Path, overwrite: bool) -> Result<PlanReport> {
    let manifest = Manifest::expand(spec)?;
    let text =
        serde_json::to_string_pretty(&manifest).map_err(|e| Error::Json { path: dir.join(MANIFEST), source: e })?;
    let found = std::fs::read_to_string(dir.join(MANIFEST)).ok();
    let unchanged = found.as_deref() == Some(text.as_str());
    if !unchanged {
        if found.is_some() && !overwrite {
            return Err(Error::Config(format!(
                "{} holds another sweep (its {MANIFEST} differs): pass --overwrite to replace it and its results, or choose another directory",
                dir.display()
            )));
        }
        crate::experiments::single::check_run_dir(dir, overwrite)?;
        if overwrite && dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| Error::io("replacing", dir, e))?;
        }
        ensure_dir(&dir.join("tasks"))?;
        write_atomic(&dir.join(MANIFEST), text.as_bytes())?;
    }
    let tables = (0..manifest.tables.len())
        .map(|i| {
            let t = &manifest.tables[i];
            let models: Vec<&str> = t.models.iter().map(|m| m.name()).collect();
            let conditions: Vec<&str> = t.conditions.iter().map(|c| c.name()).collect();
            format!(
                "{}: {} train / {} test; {} x {} x {} seeds, {} steps",
                manifest.table_label(i),
                t.n_train,
                t.n_test,
                models.join(","),
                conditions.join(","),
                t.seeds,
                t.train.steps
            )
        })
        .collect();
    Ok(PlanReport { dir: dir.to_path_buf(), name: manifest.name, tasks: manifest.tasks.len(), tables, unchanged })
}

/// The task index a scheduler gave this process: `SLURM_ARRAY_TASK_ID` (a Slurm job array) or
/// `JOB_COMPLETION_INDEX` (a Kubernetes Indexed Job).
pub fn index_from_env() -> Result<usize> {
    for var in ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"] {
        if let Ok(v) = std::env::var(var) {
            return v.trim().parse().map_err(|_| Error::Config(format!("{var}={v} is not a task index")));
        }
    }
    Err(Error::Config(
        "no task index: pass --index, or run inside a Slurm job array (SLURM_ARRAY_TASK_ID) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX)".into(),
    ))
}

/// The scheduler's name for this job, where one runs it (kept with attempts and failures).
pub fn scheduler_job() -> Option<String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (var("SLURM_ARRAY_JOB_ID"), var("SLURM_ARRAY_TASK_ID"), var("SLURM_JOB_ID")) {
        (Some(array), Some(task), _) => Some(format!("slurm {array}_{task}")),
        (_, _, Some(job)) => Some(format!("slurm {job}")),
        _ => var("JOB_COMPLETION_INDEX").map(|i| format!("kubernetes index {i}")),
    }
}

/// This machine's name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

pub mod slurm;
