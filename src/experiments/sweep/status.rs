//! Where a sweep stands (`sweep status`: done, failed, started, corrupt, missing) and its
//! tables (`sweep collect`: the same tables and JSON as `reproduce`).

use super::task::{read_json, read_result, Attempt, Failure, Found};
use super::{Manifest, TaskResult};
use crate::error::{Error, Result};
use crate::experiments::reproduce::{ReproduceReport, RunRecord};
use crate::train::RunResult;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A task's state.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum TaskState {
    Done {
        final_test_accuracy: f64,
    },
    /// Its last attempt failed (and none is under way).
    Failed(Failure),
    /// An attempt started and has not ended: running, or killed without a word.
    Started {
        attempt: Attempt,
        previous_failure: Option<Failure>,
    },
    /// A result file that is not valid (it will be redone), and why.
    Corrupt {
        reason: String,
    },
    /// Never started.
    Missing,
}

impl TaskState {
    fn word(&self) -> &'static str {
        match self {
            TaskState::Done { .. } => "done",
            TaskState::Failed(_) => "failed",
            TaskState::Started { .. } => "started",
            TaskState::Corrupt { .. } => "corrupt",
            TaskState::Missing => "missing",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TaskStatus {
    pub index: usize,
    /// `model / condition / seed k`.
    pub run: String,
    #[serde(flatten)]
    pub state: TaskState,
}

/// `sweep status`.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub name: String,
    pub dir: PathBuf,
    pub total: usize,
    pub done: usize,
    pub tasks: Vec<TaskStatus>,
}

/// Indices as Slurm's `--array` takes them: `0-3,7,9-12`.
pub fn ranges(indices: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let mut j = i;
        while j + 1 < indices.len() && indices[j + 1] == indices[j] + 1 {
            j += 1;
        }
        out.push(if i == j { indices[i].to_string() } else { format!("{}-{}", indices[i], indices[j]) });
        i = j + 1;
    }
    out.join(",")
}

impl StatusReport {
    /// Tasks not done, in order.
    pub fn left(&self) -> Vec<usize> {
        self.tasks.iter().filter(|t| !matches!(t.state, TaskState::Done { .. })).map(|t| t.index).collect()
    }
}

impl std::fmt::Display for StatusReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = |w: &str| self.tasks.iter().filter(|t| t.state.word() == w).count();
        writeln!(
            f,
            "sweep {} in {}: {} tasks, {} done, {} failed, {} started (running, or killed), {} corrupt, {} missing",
            self.name,
            self.dir.display(),
            self.total,
            self.done,
            count("failed"),
            count("started"),
            count("corrupt"),
            count("missing")
        )?;
        for t in &self.tasks {
            match &t.state {
                TaskState::Failed(e) => {
                    let status = e.exit_status.map(|s| format!(", exit status {s}")).unwrap_or_default();
                    let job = e.scheduler_job.as_ref().map(|j| format!(", {j}")).unwrap_or_default();
                    writeln!(f, "  failed  task {} ({}) on {}{job}{status}: {}", t.index, t.run, e.host, e.error)?;
                }
                TaskState::Started { attempt: a, .. } => {
                    let job = a.scheduler_job.as_ref().map(|j| format!(", {j}")).unwrap_or_default();
                    writeln!(f, "  started task {} ({}) on {}, process {}{job}", t.index, t.run, a.host, a.pid)?;
                }
                TaskState::Corrupt { reason } => {
                    writeln!(f, "  corrupt task {} ({}): {reason} (it will be redone)", t.index, t.run)?
                }
                _ => {}
            }
        }
        let missing: Vec<usize> =
            self.tasks.iter().filter(|t| matches!(t.state, TaskState::Missing)).map(|t| t.index).collect();
        if !missing.is_empty() {
            writeln!(f, "  missing tasks {}", ranges(&missing))?;
        }
        let left = self.left();
        if left.is_empty() {
            writeln!(f, "all done: cnnlab sweep collect {}", self.dir.display())
        } else {
            writeln!(
                f,
                "to finish: cnnlab sweep local {}, or on Slurm: sbatch --array={} {}",
                self.dir.display(),
                ranges(&left),
                self.dir.join(super::slurm::SCRIPT).display()
            )
        }
    }
}

fn state_of(manifest: &Manifest, dir: &Path, index: usize) -> (TaskState, Option<TaskResult>) {
    let tdir = manifest.task_dir(dir, index);
    match read_result(&tdir, &manifest.tasks[index]) {
        Found::Done(r) => (TaskState::Done { final_test_accuracy: r.final_test_accuracy }, Some(*r)),
        Found::Corrupt(reason) => (TaskState::Corrupt { reason }, None),
        Found::Missing => {
            let failure = read_json::<Failure>(&tdir.join(super::task::FAILURE));
            let state = match (read_json::<Attempt>(&tdir.join(super::task::STARTED)), failure) {
                (Some(attempt), previous_failure) => TaskState::Started { attempt, previous_failure },
                (None, Some(f)) => TaskState::Failed(f),
                (None, None) => TaskState::Missing,
            };
            (state, None)
        }
    }
}

/// `sweep status DIR`: every task's state.
pub fn status(dir: &Path) -> Result<StatusReport> {
    let manifest = Manifest::load(dir)?;
    let tasks: Vec<TaskStatus> = (0..manifest.tasks.len())
        .map(|i| TaskStatus { index: i, run: manifest.describe(i), state: state_of(&manifest, dir, i).0 })
        .collect();
    let done = tasks.iter().filter(|t| matches!(t.state, TaskState::Done { .. })).count();
    Ok(StatusReport { name: manifest.name.clone(), dir: dir.to_path_buf(), total: tasks.len(), done, tasks })
}

/// `sweep collect`: one `reproduce` table per table of the sweep.
#[derive(Debug)]
pub struct CollectReport {
    pub name: String,
    pub tables: Vec<ReproduceReport>,
    /// Each table's label (dataset, training-set size).
    pub labels: Vec<String>,
}

impl std::fmt::Display for CollectReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, t) in self.tables.iter().enumerate() {
            if self.tables.len() > 1 {
                writeln!(f, "== {} ==", self.labels[i])?;
            }
            write!(f, "{t}")?;
        }
        Ok(())
    }
}

/// One table: `reproduce`'s JSON; several: a list of them, each with its label.
impl Serialize for CollectReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Labelled<'a> {
            table: &'a str,
            #[serde(flatten)]
            report: &'a ReproduceReport,
        }
        match self.tables.as_slice() {
            [one] => one.serialize(s),
            many => s.collect_seq(many.iter().zip(&self.labels).map(|(r, l)| Labelled { table: l, report: r })),
        }
    }
}

/// `sweep collect DIR`: every task must have its valid result (else the error says which do
/// not and how to finish them). A table's wall time runs from its first task's start to its
/// last task's end.
pub fn collect(dir: &Path) -> Result<CollectReport> {
    let manifest = Manifest::load(dir)?;
    let mut results = Vec::with_capacity(manifest.tasks.len());
    let mut left = Vec::new();
    for i in 0..manifest.tasks.len() {
        match state_of(&manifest, dir, i) {
            (_, Some(r)) => results.push(r),
            _ => left.push(i),
        }
    }
    if !left.is_empty() {
        return Err(Error::Config(format!(
            "{} of {} tasks have no valid result yet (tasks {}): see `cnnlab sweep status {}`",
            left.len(),
            manifest.tasks.len(),
            ranges(&left),
            dir.display()
        )));
    }
    let mut tables = Vec::new();
    let mut labels = Vec::new();
    for (t, table) in manifest.tables.iter().enumerate() {
        let mine: Vec<&TaskResult> = results.iter().filter(|r| manifest.tasks[r.index].table == t).collect();
        let first = mine.iter().map(|r| r.finished_unix - r.wall_seconds).fold(f64::INFINITY, f64::min);
        let last = mine.iter().map(|r| r.finished_unix).fold(f64::NEG_INFINITY, f64::max);
        let device = mine.first().map(|r| r.device).unwrap_or_default();
        let records = mine
            .iter()
            .map(|r| RunRecord {
                model: r.run.model,
                condition: r.run.condition,
                seed: r.run.seed(),
                result: RunResult {
                    curve: r.curve.clone(),
                    final_test_accuracy: r.final_test_accuracy,
                    wall_seconds: r.wall_seconds,
                },
            })
            .collect();
        tables.push(table.report(records, device, (last - first).max(0.0), None, vec![]));
        labels.push(manifest.table_label(t));
    }
    Ok(CollectReport { name: manifest.name, tables, labels })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranges_compress_runs_of_indices() {
        assert_eq!(super::ranges(&[0, 1, 2, 3, 7, 9, 10, 11, 12]), "0-3,7,9-12");
        assert_eq!(super::ranges(&[5]), "5");
        assert_eq!(super::ranges(&[]), "");
    }
}
