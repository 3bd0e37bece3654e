//! One task's life: an attempt starts (`started.json`), trains the task's [`RunSpec`] into its
//! directory, and ends with a result (`result.json`, checksummed, written atomically) or a
//! failure (`failure.json`: the error line, the exit status). A valid result is never
//! recomputed; a corrupted one is set aside (`result.json.corrupt`) and the task redone.

use super::{host_name, scheduler_job, Manifest, Task};
use crate::core::Device;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::experiments::grid::{Compute, Progress};
use crate::experiments::run::{train_run_on, RunSpec, SaveTo};
use crate::report::provenance::now_unix;
use crate::report::{ensure_dir, write_atomic, write_json};
use crate::train::CurvePoint;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub const RESULT: &str = "result.json";
pub const FAILURE: &str = "failure.json";
pub const STARTED: &str = "started.json";

/// A finished task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskResult {
    pub index: usize,
    /// The run, as the manifest had it (a result of another run is not this task's).
    pub run: RunSpec,
    pub final_test_accuracy: f64,
    /// Training time of the attempt that finished (a resumed run: since it resumed).
    pub wall_seconds: f64,
    /// When it finished, in seconds since 1970.
    pub finished_unix: f64,
    pub host: String,
    pub device: Device,
    pub scheduler_job: Option<String>,
    pub curve: Vec<CurvePoint>,
}

/// An attempt under way, or killed before it could say so.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub host: String,
    pub pid: u32,
    pub started_unix: f64,
    pub scheduler_job: Option<String>,
}

/// The last failure of a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The error, one line.
    pub error: String,
    /// The process's exit status, where known (the scheduler's script records it).
    pub exit_status: Option<i32>,
    pub host: String,
    pub failed_unix: f64,
    pub scheduler_job: Option<String>,
}

/// A result file: the result's exact bytes and their CRC-32.
#[derive(Serialize, Deserialize)]
struct Sealed<'a> {
    crc32: String,
    #[serde(borrow)]
    result: &'a RawValue,
}

/// What a task directory says about its result.
pub(crate) enum Found {
    Missing,
    Done(Box<TaskResult>),
    /// A file that is not this task's valid result, and why.
    Corrupt(String),
}

fn write_result(dir: &Path, result: &TaskResult) -> Result<()> {
    let path = dir.join(RESULT);
    let body = serde_json::to_string(result).map_err(|e| Error::Json { path: path.clone(), source: e })?;
    let text = format!("{{\"crc32\":\"{:08x}\",\"result\":{body}}}\n", crc32fast::hash(body.as_bytes()));
    write_atomic(&path, text.as_bytes())
}

/// Reads and checks task `task`'s result in its directory `dir`.
pub(crate) fn read_result(dir: &Path, task: &Task) -> Found {
    let bytes = match std::fs::read(dir.join(RESULT)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Found::Missing,
        Err(e) => return Found::Corrupt(format!("unreadable: {e}")),
    };
    let Ok(text) = std::str::from_utf8(&bytes) else { return Found::Corrupt("not text".into()) };
    let sealed: Sealed = match serde_json::from_str(text) {
        Ok(s) => s,
        Err(e) => return Found::Corrupt(format!("not a result file: {e}")),
    };
    let body = sealed.result.get();
    if sealed.crc32 != format!("{:08x}", crc32fast::hash(body.as_bytes())) {
        return Found::Corrupt("checksum mismatch".into());
    }
    let result: TaskResult = match serde_json::from_str(body) {
        Ok(r) => r,
        Err(e) => return Found::Corrupt(format!("not a result: {e}")),
    };
    if result.index != task.index || result.run != task.run {
        return Found::Corrupt(format!("the result of another run (task {})", result.index));
    }
    Found::Done(Box::new(result))
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Whether a process with this pid runs on this machine.
fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// What running a task did.
#[derive(Debug)]
pub enum Outcome {
    /// Its valid result was there: nothing ran.
    AlreadyDone(Box<TaskResult>),
    /// It trained; `replaced` says why a result file found there was not valid.
    Ran { result: Box<TaskResult>, replaced: Option<String> },
}

impl Outcome {
    pub fn result(&self) -> &TaskResult {
        match self {
            Outcome::AlreadyDone(r) | Outcome::Ran { result: r, .. } => r,
        }
    }
}

/// The data of each table, loaded once for the tasks that share it.
pub struct DataCache(Mutex<Vec<Option<Arc<Dataset>>>>);

impl DataCache {
    pub fn new(manifest: &Manifest) -> Self {
        DataCache(Mutex::new(vec![None; manifest.tables.len()]))
    }

    fn get(&self, table: usize, run: &RunSpec) -> Result<Arc<Dataset>> {
        let mut tables = self.0.lock().map_err(|_| Error::Internal("the data cache was poisoned".into()))?;
        if let Some(d) = tables.get(table).and_then(|d| d.clone()) {
            return Ok(d);
        }
        let data = Arc::new(run.data.load()?);
        if let Some(slot) = tables.get_mut(table) {
            *slot = Some(data.clone());
        }
        Ok(data)
    }
}

/// Runs task `index` of the sweep in `dir` unless its valid result is there; records the
/// failure (and returns it) where it cannot.
pub fn run_task(
    dir: &Path,
    manifest: &Manifest,
    index: usize,
    compute: Compute,
    cache: &DataCache,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let task = manifest.task(index)?;
    let tdir = manifest.task_dir(dir, index);
    ensure_dir(&tdir)?;
    let mut replaced = None;
    match read_result(&tdir, task) {
        Found::Done(r) => return Ok(Outcome::AlreadyDone(r)),
        Found::Missing => {}
        Found::Corrupt(why) => {
            let (from, to) = (tdir.join(RESULT), tdir.join(format!("{RESULT}.corrupt")));
            std::fs::rename(&from, &to).map_err(|e| Error::io("setting aside", &from, e))?;
            replaced = Some(why);
        }
    }
    let host = host_name();
    if let Some(a) = read_json::<Attempt>(&tdir.join(STARTED)) {
        if a.host == host && a.pid != std::process::id() && alive(a.pid) {
            return Err(Error::Config(format!(
                "task {index} is being run by process {} on this machine: wait for it, or stop it and run the task again",
                a.pid
            )));
        }
    }
    let attempt = Attempt {
        host: host.clone(),
        pid: std::process::id(),
        started_unix: now_unix(),
        scheduler_job: scheduler_job(),
    };
    write_json(&tdir.join(STARTED), &attempt)?;
    let trained = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let data = cache.get(task.table, &task.run)?;
        let (view, permutation) = task.run.view(&data);
        let save = SaveTo { dir: &tdir, checkpoint_every: manifest.spec.checkpoint_every };
        train_run_on(&task.run, &view, permutation, compute.device, Some(save), progress)
    }))
    .unwrap_or_else(|p| Err(Error::Internal(crate::error::panic_message(p.as_ref()))));
    let ended = match trained {
        Ok(r) => {
            let result = TaskResult {
                index,
                run: task.run.clone(),
                final_test_accuracy: r.final_test_accuracy,
                wall_seconds: r.wall_seconds,
                finished_unix: now_unix(),
                host,
                device: compute.device,
                scheduler_job: attempt.scheduler_job.clone(),
                curve: r.curve,
            };
            write_result(&tdir, &result).map(|_| result)
        }
        Err(e) => Err(e),
    };
    match ended {
        Ok(result) => {
            for f in [FAILURE, STARTED] {
                let _ = std::fs::remove_file(tdir.join(f));
            }
            Ok(Outcome::Ran { result: Box::new(result), replaced })
        }
        Err(e) => {
            let failure = Failure {
                error: e.to_string().replace('\n', " "),
                exit_status: None,
                host: attempt.host,
                failed_unix: now_unix(),
                scheduler_job: attempt.scheduler_job,
            };
            // the failure is recorded before the attempt's mark goes (never neither)
            if write_json(&tdir.join(FAILURE), &failure).is_ok() {
                let _ = std::fs::remove_file(tdir.join(STARTED));
            }
            Err(e)
        }
    }
}

/// The tasks a scheduler index runs: `index * per_index` and the `per_index - 1` after it.
pub fn tasks_of_index(manifest: &Manifest, index: usize, per_index: usize) -> Result<std::ops::Range<usize>> {
    let per = per_index.max(1);
    let first = index.checked_mul(per).filter(|&f| f < manifest.tasks.len()).ok_or_else(|| {
        Error::Config(format!(
            "index {index} is out of range: the sweep has {} tasks{}",
            manifest.tasks.len(),
            if per > 1 {
                format!(", {per} per index (indices 0-{})", manifest.tasks.len().div_ceil(per) - 1)
            } else {
                format!(" (0-{})", manifest.tasks.len().saturating_sub(1))
            }
        ))
    })?;
    Ok(first..(first + per).min(manifest.tasks.len()))
}

/// `sweep run`: the tasks of one scheduler index of the sweep in `dir` (its `manifest`), one
/// after another (a failure does not stop the others); each task's outcome.
pub fn run_index(
    dir: &Path,
    manifest: &Manifest,
    index: usize,
    per_index: usize,
    compute: Compute,
    progress: &dyn Progress,
) -> Result<Vec<(usize, Result<Outcome>)>> {
    let range = tasks_of_index(manifest, index, per_index)?;
    compute.open()?;
    progress.start(range.clone().map(|i| manifest.tasks[i].run.train.steps as u64).sum());
    let cache = DataCache::new(manifest);
    Ok(range.map(|i| (i, run_task(dir, manifest, i, compute, &cache, progress))).collect())
}

/// What `sweep local` did.
#[derive(Debug, Serialize)]
pub struct LocalReport {
    pub total: usize,
    /// Tasks whose results were already there.
    pub already_done: usize,
    /// Tasks trained now.
    pub ran: usize,
    /// Tasks that failed: index and error line.
    pub failed: Vec<(usize, String)>,
    pub wall_seconds: f64,
}

impl std::fmt::Display for LocalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} tasks: {} already done, {} ran now", self.total, self.already_done, self.ran)?;
        if !self.failed.is_empty() {
            write!(f, ", {} failed", self.failed.len())?;
        }
        writeln!(f, " ({:.1} s)", self.wall_seconds)?;
        for (i, e) in &self.failed {
            writeln!(f, "  task {i} failed: {e}")?;
        }
        Ok(())
    }
}

/// `sweep local`: every task without a valid result, on this machine, as many at once as
/// `compute` says (long runs first); failures recorded and reported, not fatal.
pub fn local(dir: &Path, compute: Compute, progress: &dyn Progress) -> Result<LocalReport> {
    let manifest = Manifest::load(dir)?;
    compute.open()?;
    let start = std::time::Instant::now();
    let mut pending: Vec<usize> = (0..manifest.tasks.len())
        .filter(|&i| !matches!(read_result(&manifest.task_dir(dir, i), &manifest.tasks[i]), Found::Done(_)))
        .collect();
    pending.sort_by_key(|&i| std::cmp::Reverse(crate::experiments::reproduce::cost(manifest.tasks[i].run.model)));
    progress.start(pending.iter().map(|&i| manifest.tasks[i].run.train.steps as u64).sum());
    let cache = DataCache::new(&manifest);
    let note = |line: &str| progress.note(line);
    let outcomes = compute.device.run_jobs(
        &pending,
        compute.parallel_runs,
        |&i| {
            let outcome = run_task(dir, &manifest, i, compute, &cache, progress);
            match &outcome {
                Ok(o) => progress.note(&format!(
                    "task {i} ({}): {:.1}% in {:.1} s",
                    manifest.describe(i),
                    100.0 * o.result().final_test_accuracy,
                    o.result().wall_seconds
                )),
                Err(e) => progress.note(&format!("task {i} ({}) failed: {e}", manifest.describe(i))),
            }
            outcome
        },
        &note,
    )?;
    let mut report = LocalReport {
        total: manifest.tasks.len(),
        already_done: manifest.tasks.len() - pending.len(),
        ran: 0,
        failed: Vec::new(),
        wall_seconds: 0.0,
    };
    for (&i, outcome) in pending.iter().zip(outcomes) {
        match outcome {
            Ok(Outcome::AlreadyDone(_)) => report.already_done += 1,
            Ok(Outcome::Ran { .. }) => report.ran += 1,
            Err(e) => report.failed.push((i, e.to_string())),
        }
    }
    report.failed.sort();
    report.wall_seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// What an exit status means, in words.
fn exit_words(status: i32) -> String {
    let signal = |n: i32| match n {
        1 => "SIGHUP",
        2 => "SIGINT",
        6 => "SIGABRT",
        9 => "SIGKILL (out of memory, or the scheduler)",
        11 => "SIGSEGV",
        15 => "SIGTERM (a time limit, or cancelled)",
        _ => "a signal",
    };
    if status > 128 && status < 160 {
        format!("killed by signal {} {} before it could record an error", status - 128, signal(status - 128))
    } else {
        format!("exited with status {status} without recording an error")
    }
}

/// `sweep fail`: what a scheduler's script records after the tasks of `index` exited with
/// `status` ≠ 0. A failure the task recorded itself gets the exit status; an attempt that
/// never ended (killed, out of memory) becomes a failure saying so. Returns the tasks updated.
pub fn record_exit(dir: &Path, index: usize, per_index: usize, status: i32) -> Result<Vec<usize>> {
    let manifest = Manifest::load(dir)?;
    let mut updated = Vec::new();
    for i in tasks_of_index(&manifest, index, per_index)? {
        let tdir = manifest.task_dir(dir, i);
        if matches!(read_result(&tdir, &manifest.tasks[i]), Found::Done(_)) {
            continue;
        }
        let attempt = read_json::<Attempt>(&tdir.join(STARTED));
        let recorded = read_json::<Failure>(&tdir.join(FAILURE));
        let failure = match (attempt, recorded) {
            (Some(a), _) => Failure {
                error: exit_words(status),
                exit_status: Some(status),
                host: a.host,
                failed_unix: now_unix(),
                scheduler_job: a.scheduler_job,
            },
            (None, Some(f)) if f.exit_status.is_none() => Failure { exit_status: Some(status), ..f },
            _ => continue,
        };
        write_json(&tdir.join(FAILURE), &failure)?;
        let _ = std::fs::remove_file(tdir.join(STARTED));
        updated.push(i);
    }
    Ok(updated)
}
