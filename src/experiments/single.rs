//! `train`: one model under one condition, its learning curve, optionally saved for the
//! analyses or trained under a fixed mask.

use crate::data::Condition;
use crate::error::{Error, Result};
use crate::experiments::grid::Compute;
use crate::experiments::grid::Progress;
use crate::experiments::references;
use crate::experiments::run::{train_run_on, RunSpec, SaveTo};
use crate::experiments::setup::DataChoice;
use crate::models::ModelKind;
use crate::report::{check_writable_dir, write_dir_atomic};
use crate::train::checkpoint;
use crate::train::{CurvePoint, TrainConfig, TrainOverrides};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What to train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainRunConfig {
    pub data: DataChoice,
    pub model: ModelKind,
    pub condition: Condition,
    pub seed: u64,
    pub train: TrainOverrides,
    /// Train under this fixed mask (its file names the architecture it was made for).
    pub mask: Option<PathBuf>,
    /// Save the run here for the analyses (written as a whole: a temporary directory renamed
    /// at the end).
    pub save: Option<PathBuf>,
    /// Replace a run already saved at `save` (otherwise refused).
    #[serde(default)]
    pub overwrite: bool,
    /// Write a checkpoint every this many steps (with `save`), so a killed run can continue.
    #[serde(default)]
    pub checkpoint_every: Option<usize>,
    /// Continue the interrupted run saved at `save` from its last checkpoint.
    #[serde(default)]
    pub resume: bool,
    /// Where to train (one run: `parallel_runs` does not apply).
    pub compute: Compute,
}

impl TrainRunConfig {
    pub fn new(model: ModelKind) -> Self {
        Self {
            data: DataChoice::default(),
            model,
            condition: Condition::Original,
            seed: 0,
            train: TrainOverrides::default(),
            mask: None,
            save: None,
            overwrite: false,
            checkpoint_every: None,
            resume: false,
            compute: Compute::default(),
        }
    }
}

/// A finished run (the JSON of `train --json`: dataset, model, condition, config, final
/// accuracy, curve, wall time).
#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    pub dataset: String,
    pub model: String,
    pub condition: String,
    pub config: TrainConfig,
    pub final_test_accuracy: f64,
    pub curve: Vec<CurvePoint>,
    pub wall_seconds: f64,
    /// The published accuracy, where this run follows its protocol.
    #[serde(skip)]
    pub reference: Option<f64>,
    #[serde(skip)]
    pub protocol: String,
    #[serde(skip)]
    pub saved: Option<PathBuf>,
    /// `--resume` found the run already finished and saved (a run killed after its files were
    /// in place): nothing was trained, and `curve` is empty. (In the JSON only where true.)
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub finished_before: bool,
}

impl std::fmt::Display for TrainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let (true, Some(dir)) = (self.finished_before, &self.saved) {
            return writeln!(
                f,
                "nothing to resume: the run in {} had finished ({} {} / {} / seed {}: test accuracy {:.1}% after {} \
                 steps)",
                dir.display(),
                self.dataset,
                self.model,
                self.condition,
                self.config.seed,
                self.final_test_accuracy * 100.0,
                self.config.steps
            );
        }
        writeln!(f, "{:>6}  {:>10}  {:>9}  {:>9}  {:>8}", "step", "train loss", "train acc", "test loss", "test acc")?;
        for p in &self.curve {
            writeln!(
                f,
                "{:>6}  {:>10.4}  {:>8.1}%  {:>9.4}  {:>7.1}%",
                p.step,
                p.train_loss,
                p.train_accuracy * 100.0,
                p.test_loss,
                p.test_accuracy * 100.0
            )?;
        }
        let published = self.reference.map(|r| format!(" (published {:.0}%)", r * 100.0)).unwrap_or_default();
        writeln!(
            f,
            "{} {} / {} / seed {}: test accuracy {:.1}%{published} after {} steps in {:.1} s; {}",
            self.dataset,
            self.model,
            self.condition,
            self.config.seed,
            self.final_test_accuracy * 100.0,
            self.config.steps,
            self.wall_seconds,
            self.protocol
        )?;
        if let Some(dir) = &self.saved {
            writeln!(f, "saved the run in {}", dir.display())?;
        }
        Ok(())
    }
}

/// Trains the run.
pub fn run(cfg: &TrainRunConfig, progress: &dyn Progress) -> Result<TrainReport> {
    let device = cfg.compute.open()?;
    if cfg.save.is_none() && (cfg.checkpoint_every.is_some() || cfg.resume) {
        return Err(Error::Config("checkpoints and --resume need a run directory (--save DIR)".into()));
    }
    // a run killed after its files were in place: `--resume` says so (below) rather than
    // refusing the used directory
    let finished = match &cfg.save {
        Some(dir) if cfg.resume => !partial_dir(dir).exists() && dir.join(checkpoint::RUN_FILE).is_file(),
        _ => false,
    };
    if let Some(dir) = cfg.save.as_ref().filter(|_| !finished) {
        check_run_dir(dir, cfg.overwrite)?;
    }
    let mut prepared = cfg.data.prepare()?;
    if let Some(mask) = &cfg.mask {
        // the mask's own network, unless the user changes it again
        if let Some((model, arch)) = checkpoint::mask_made_for(mask)? {
            if model != cfg.model {
                return Err(Error::Config(format!(
                    "the mask {} was made for a {model}, not a {}",
                    mask.display(),
                    cfg.model
                )));
            }
            prepared.recipe.train.arch = arch;
            prepared.recipe.train.arch.apply(&cfg.data.arch);
        }
    }
    let train = prepared.train_config(&cfg.train, cfg.seed)?;
    let spec = RunSpec {
        data: prepared.source.clone(),
        model: cfg.model,
        condition: cfg.condition,
        train,
        mask: cfg.mask.clone(),
    };
    let (data, permutation) = spec.view(&prepared.data);
    if let Some(dir) = cfg.save.as_ref().filter(|_| finished) {
        return finished_before(dir, &spec, &data.name);
    }
    progress.start(spec.train.steps as u64);
    let result = match &cfg.save {
        None => train_run_on(&spec, &data, permutation, device, None, progress)?,
        Some(dir) if cfg.checkpoint_every.is_some() || cfg.resume => {
            resumable(cfg, &spec, &data, permutation, device, dir, progress)?
        }
        Some(dir) => {
            // the run's files appear together or not at all: no new init beside an old final
            let mut result = None;
            write_dir_atomic(dir, cfg.overwrite, |tmp| {
                let to = SaveTo { dir: tmp, checkpoint_every: None };
                result = Some(train_run_on(&spec, &data, permutation, device, Some(to), progress)?);
                Ok(())
            })
            .map_err(|e| match &result {
                Some(r) => Error::Config(format!(
                    "the run finished (test accuracy {:.1}%) but could not be saved in {}: {e}",
                    r.final_test_accuracy * 100.0,
                    dir.display()
                )),
                None => e,
            })?;
            result.ok_or_else(|| Error::Config("the run did not finish".into()))?
        }
    };
    Ok(TrainReport {
        dataset: data.name.clone(),
        model: cfg.model.name().into(),
        condition: cfg.condition.name().into(),
        reference: references::published(&spec.data, &spec.train, cfg.model, cfg.condition),
        protocol: references::protocol(&spec.data, &spec.train),
        config: spec.train,
        final_test_accuracy: result.final_test_accuracy,
        curve: result.curve,
        wall_seconds: result.wall_seconds,
        saved: cfg.save.clone(),
        finished_before: false,
    })
}

/// `--resume` of a run that had already finished and been saved in `dir` (killed as it
/// ended): its result, where it was this run (the same data, model, condition, seed and
/// config), else an error. A work file the killed run left behind is removed.
fn finished_before(dir: &std::path::Path, spec: &RunSpec, dataset: &str) -> Result<TrainReport> {
    let saved = checkpoint::read_run(dir)?;
    let ours = checkpoint::SavedRun {
        data: spec.data.clone(),
        model: spec.model,
        condition: spec.condition,
        seed: spec.seed(),
        config: spec.train.clone(),
        final_test_accuracy: saved.final_test_accuracy,
    };
    let as_json = |r: &checkpoint::SavedRun| serde_json::to_value(r).ok();
    let same = matches!((as_json(&saved), as_json(&ours)), (Some(a), Some(b)) if a == b);
    if !same {
        return Err(Error::Config(format!(
            "{} holds a finished run with other settings: nothing to resume (pass --overwrite to train afresh there, \
             or choose another directory)",
            dir.display()
        )));
    }
    let _ = std::fs::remove_file(dir.join(SPEC_FILE));
    Ok(TrainReport {
        dataset: dataset.into(),
        model: spec.model.name().into(),
        condition: spec.condition.name().into(),
        reference: references::published(&spec.data, &spec.train, spec.model, spec.condition),
        protocol: references::protocol(&spec.data, &spec.train),
        config: spec.train.clone(),
        final_test_accuracy: saved.final_test_accuracy,
        curve: Vec::new(),
        wall_seconds: 0.0,
        saved: Some(dir.to_path_buf()),
        finished_before: true,
    })
}

/// Refuses to save into a directory that already holds something, unless `overwrite`; checks
/// that the directory's parent takes new files.
pub fn check_run_dir(dir: &std::path::Path, overwrite: bool) -> Result<()> {
    if dir.exists() {
        if !dir.is_dir() {
            return Err(Error::Config(format!("{} is a file, not a run directory", dir.display())));
        }
        let holds = std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(true);
        if holds && !overwrite {
            return Err(Error::Config(format!(
                "{} already holds files (another run?): pass --overwrite to replace it, or choose another directory",
                dir.display()
            )));
        }
    }
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => check_writable_dir(p),
        _ => check_writable_dir(std::path::Path::new(".")),
    }
}

/// The run directory of an interrupted run: `.NAME.partial` beside `dir` (a stable name, so a
/// later `--resume` finds it), renamed to `dir` when the run is saved.
pub fn partial_dir(dir: &std::path::Path) -> std::path::PathBuf {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
    dir.with_file_name(format!(".{name}.partial"))
}

const SPEC_FILE: &str = "spec.json";

/// Trains with checkpoints in the partial directory, continuing it with `resume`; the finished
/// run replaces `dir` as a whole.
fn resumable(
    cfg: &TrainRunConfig,
    spec: &RunSpec,
    data: &crate::data::Dataset,
    permutation: crate::data::PositionPermutation,
    device: crate::core::Device,
    dir: &std::path::Path,
    progress: &dyn Progress,
) -> Result<crate::train::RunResult> {
    let partial = partial_dir(dir);
    let spec_path = partial.join(SPEC_FILE);
    let text = serde_json::to_string_pretty(spec).map_err(|e| Error::Json { path: spec_path.clone(), source: e })?;
    if cfg.resume {
        let saved = std::fs::read_to_string(&spec_path).map_err(|_| {
            Error::NotFound(format!(
                "no interrupted run to resume at {} (its work directory {} is missing)",
                dir.display(),
                partial.display()
            ))
        })?;
        if saved != text {
            return Err(Error::Config(format!(
                "the interrupted run in {} was started with other settings: resume it with the same flags (its {})",
                partial.display(),
                SPEC_FILE
            )));
        }
    } else {
        if partial.exists() {
            if !cfg.overwrite {
                return Err(Error::Config(format!(
                    "an interrupted run is at {}: pass --resume to continue it, or --overwrite to start afresh",
                    partial.display()
                )));
            }
            std::fs::remove_dir_all(&partial).map_err(|e| Error::io("removing", &partial, e))?;
        }
        crate::report::ensure_dir(&partial)?;
        crate::report::write_atomic(&spec_path, text.as_bytes())?;
    }
    let to = SaveTo { dir: &partial, checkpoint_every: Some(cfg.checkpoint_every.unwrap_or(1000)) };
    let result = train_run_on(spec, data, permutation, device, Some(to), progress)?;
    // `check_run_dir` refused a used `dir` without --overwrite before the run. The spec goes
    // after the move: killed between the two, the finished run is still found finished by
    // `--resume` (which removes the spec), where before the move a work directory without its
    // spec could not be resumed.
    crate::report::move_dir(&partial, dir, true)?;
    let _ = std::fs::remove_file(dir.join(SPEC_FILE));
    Ok(result)
}
