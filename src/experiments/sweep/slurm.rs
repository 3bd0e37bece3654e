//! `sweep slurm`: the sbatch script that runs a sweep as one Slurm job array. Each array index
//! runs `cnnlab sweep run DIR --index $SLURM_ARRAY_TASK_ID`; a non-zero exit is recorded in
//! the task's `failure.json` by `cnnlab sweep fail` (so a kill or an out-of-memory death is not
//! lost in a log file).

use super::Manifest;
use crate::core::Device;
use crate::error::{Error, Result};
use crate::report::{ensure_dir, write_atomic};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The script's file in the sweep directory.
pub const SCRIPT: &str = "sweep.sbatch";
/// Slurm's default `MaxArraySize` allows indices 0-1000.
const DEFAULT_MAX_ARRAY_INDEX: usize = 1000;

/// What the array asks of the scheduler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    pub account: Option<String>,
    /// GPUs per task (the tasks then train on `cuda` unless `device` says otherwise).
    pub gpus_per_task: Option<u32>,
    /// CPU cores per task (its threads).
    pub cpus_per_task: u32,
    /// Memory per task, in Slurm's syntax (`4G`).
    pub mem: Option<String>,
    /// Time limit per array index, in Slurm's syntax (`1:00:00`).
    pub time: Option<String>,
    /// Most array indices running at once (`--array=0-N%K`).
    pub max_parallel: Option<usize>,
    /// Tasks each array index runs, one after the other (short tasks amortise the
    /// scheduler's start-up; large sweeps fit its array size).
    pub tasks_per_index: usize,
    /// The device the tasks train on (None: `cuda` with GPUs, else `cpu`).
    pub device: Option<Device>,
    /// The cnnlab binary the nodes run (on a filesystem they share).
    pub cnnlab: PathBuf,
    /// More `#SBATCH` options, verbatim (`--qos=long`).
    pub extra: Vec<String>,
}

impl SlurmOptions {
    /// One CPU per task, one task per index, this very binary.
    pub fn new(cnnlab: PathBuf) -> Self {
        Self {
            partition: None,
            account: None,
            gpus_per_task: None,
            cpus_per_task: 1,
            mem: None,
            time: None,
            max_parallel: None,
            tasks_per_index: 1,
            device: None,
            cnnlab,
            extra: Vec::new(),
        }
    }
}

/// What `sweep slurm` wrote.
#[derive(Debug, Serialize)]
pub struct SlurmReport {
    pub script: PathBuf,
    pub dir: PathBuf,
    pub tasks: usize,
    /// Array indices (tasks / tasks per index, rounded up).
    pub indices: usize,
    pub max_parallel: Option<usize>,
    /// Things to know before submitting.
    pub notes: Vec<String>,
}

impl std::fmt::Display for SlurmReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at_once = self.max_parallel.map(|k| format!(", at most {k} at once")).unwrap_or_default();
        writeln!(
            f,
            "wrote {}: {} tasks as a job array of {} indices (0-{}){at_once}",
            self.script.display(),
            self.tasks,
            self.indices,
            self.indices - 1
        )?;
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        writeln!(f, "submit:  sbatch {}", self.script.display())?;
        writeln!(f, "watch:   cnnlab sweep status {}", self.dir.display())?;
        writeln!(f, "collect: cnnlab sweep collect {}", self.dir.display())
    }
}

/// A value that goes into an `#SBATCH` line: one word, no quotes.
fn word(what: &str, v: &str) -> Result<()> {
    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control() || "'\"\\`$#".contains(c)) {
        return Err(Error::Config(format!("--{what} '{v}' must be one word without quotes or spaces")));
    }
    Ok(())
}

/// An absolute path Slurm's `#SBATCH` lines and the script can hold.
fn plain_path(what: &str, p: &Path) -> Result<PathBuf> {
    let abs = p.canonicalize().map_err(|e| Error::io("finding", p, e))?;
    let text = abs.to_string_lossy();
    if text.chars().any(|c| c.is_whitespace() || c.is_control() || "'\"\\`$%".contains(c)) {
        return Err(Error::Config(format!(
            "{what} {text}: Slurm's #SBATCH lines cannot hold a path with spaces, quotes or %; move it"
        )));
    }
    Ok(abs)
}

/// The script's text for the sweep in `dir` (absolute) of `tasks` tasks.
pub fn script(name: &str, dir: &Path, tasks: usize, opts: &SlurmOptions) -> String {
    let per = opts.tasks_per_index.max(1);
    let indices = tasks.div_ceil(per);
    let d = dir.display();
    let throttle = opts.max_parallel.map(|k| format!("%{k}")).unwrap_or_default();
    let device = opts.device.unwrap_or(if opts.gpus_per_task.unwrap_or(0) > 0 { Device::Cuda(0) } else { Device::Cpu });
    let mut s = String::new();
    s += "#!/bin/bash\n";
    s += &format!("# Sweep {name}: {tasks} tasks as a Slurm job array (written by `cnnlab sweep slurm`).\n");
    s += &format!("#   submit:   sbatch {d}/{SCRIPT}\n");
    s += &format!("#   watch:    cnnlab sweep status {d}\n");
    s += &format!("#   collect:  cnnlab sweep collect {d}\n");
    s += "# A task whose valid result exists exits at once, so submitting again redoes only what is\n";
    s += &format!("# left; `sbatch --array=LIST {d}/{SCRIPT}` runs just the indices in LIST.\n");
    s += &format!("#SBATCH --job-name=cnnlab-{name}\n");
    s += &format!("#SBATCH --array=0-{}{throttle}\n", indices - 1);
    s += &format!("#SBATCH --output={d}/logs/%A_%a.out\n");
    s += "#SBATCH --ntasks=1\n";
    s += &format!("#SBATCH --cpus-per-task={}\n", opts.cpus_per_task.max(1));
    let lines = [
        opts.partition.as_ref().map(|p| format!("--partition={p}")),
        opts.account.as_ref().map(|a| format!("--account={a}")),
        opts.gpus_per_task.filter(|&g| g > 0).map(|g| format!("--gpus-per-task={g}")),
        opts.mem.as_ref().map(|m| format!("--mem={m}")),
        opts.time.as_ref().map(|t| format!("--time={t}")),
    ];
    for l in lines.into_iter().flatten().chain(opts.extra.iter().cloned()) {
        s += &format!("#SBATCH {l}\n");
    }
    s += "set -u\n";
    // At a time limit or `scancel` Slurm sends SIGTERM to the whole job: cnnlab dies of it, and
    // this shell (whose trap runs only after its child has ended) goes on to record the exit
    // status. A trap, not an ignore: an ignored signal would be inherited by cnnlab.
    s += "trap 'true' TERM\n";
    s += &format!("cnnlab='{}'\n", opts.cnnlab.display());
    s += &format!("sweep='{d}'\n");
    s += "index=\"$SLURM_ARRAY_TASK_ID\"\n";
    s += &format!(
        "\"$cnnlab\" --quiet --threads \"${{SLURM_CPUS_PER_TASK:-1}}\" sweep run \"$sweep\" --index \"$index\" --tasks-per-index {per} --device {device}\n"
    );
    s += "status=$?\n";
    s += "if [ \"$status\" -ne 0 ]; then\n";
    s += &format!(
        "    \"$cnnlab\" sweep fail \"$sweep\" --index \"$index\" --tasks-per-index {per} --exit-status \"$status\"\n"
    );
    s += "fi\n";
    s += "exit \"$status\"\n";
    s
}

/// `sweep slurm DIR`: writes `DIR/sweep.sbatch` (and `DIR/logs/`, which Slurm does not create).
pub fn write_script(dir: &Path, opts: &SlurmOptions) -> Result<SlurmReport> {
    let manifest = Manifest::load(dir)?;
    for (what, v) in
        [("partition", &opts.partition), ("account", &opts.account), ("mem", &opts.mem), ("time", &opts.time)]
    {
        if let Some(v) = v {
            word(what, v)?;
        }
    }
    for e in &opts.extra {
        if !e.starts_with("--") || e.chars().any(|c| c.is_control()) {
            return Err(Error::Config(format!("--sbatch '{e}' must be one sbatch option, like --qos=long")));
        }
    }
    if opts.max_parallel == Some(0) || opts.tasks_per_index == 0 || opts.cpus_per_task == 0 {
        return Err(Error::Config("--max-parallel, --tasks-per-index and --cpus-per-task must be at least 1".into()));
    }
    let abs = plain_path("the sweep directory", dir)?;
    let cnnlab = plain_path("the cnnlab binary", &opts.cnnlab)?;
    let opts = SlurmOptions { cnnlab, ..opts.clone() };
    let indices = manifest.tasks.len().div_ceil(opts.tasks_per_index);
    let mut notes = Vec::new();
    if indices - 1 > DEFAULT_MAX_ARRAY_INDEX {
        notes.push(format!(
            "the array's last index is {}; Slurm refuses indices above MaxArraySize - 1 (1000 by default): raise --tasks-per-index",
            indices - 1
        ));
    }
    if matches!(opts.device, Some(Device::Cuda(_))) && opts.gpus_per_task.unwrap_or(0) == 0 {
        notes.push("the tasks train on CUDA but ask Slurm for no GPU (--gpus-per-task)".into());
    }
    ensure_dir(&abs.join("logs"))?;
    let path = abs.join(SCRIPT);
    write_atomic(&path, script(&manifest.name, &abs, manifest.tasks.len(), &opts).as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755));
    }
    Ok(SlurmReport {
        script: path,
        dir: abs,
        tasks: manifest.tasks.len(),
        indices,
        max_parallel: opts.max_parallel,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_is_an_array_with_the_options_asked_for() {
        let mut o = SlurmOptions::new("/opt/cnnlab".into());
        o.max_parallel = Some(4);
        o.gpus_per_task = Some(1);
        o.partition = Some("gpu".into());
        o.tasks_per_index = 3;
        o.extra = vec!["--qos=long".into()];
        let s = script("t", Path::new("/s"), 10, &o);
        for line in [
            "#SBATCH --array=0-3%4\n",
            "#SBATCH --output=/s/logs/%A_%a.out\n",
            "#SBATCH --partition=gpu\n",
            "#SBATCH --gpus-per-task=1\n",
            "#SBATCH --qos=long\n",
            "--index \"$index\" --tasks-per-index 3 --device cuda:0\n",
            "sweep fail \"$sweep\" --index \"$index\" --tasks-per-index 3 --exit-status \"$status\"\n",
        ] {
            assert!(s.contains(line), "{line} missing from\n{s}");
        }
        assert!(!s.contains("--time") && !s.contains("--mem"));
        let cpu = script("t", Path::new("/s"), 10, &SlurmOptions::new("/opt/cnnlab".into()));
        assert!(cpu.contains("#SBATCH --array=0-9\n") && cpu.contains("--device cpu\n"), "{cpu}");
    }

    #[test]
    fn values_that_would_break_the_script_are_refused() {
        assert!(word("partition", "gpu").is_ok());
        for bad in ["gpu long", "a\nb", "x'y", "$(rm)", ""] {
            assert!(word("partition", bad).is_err(), "{bad:?}");
        }
    }
}
