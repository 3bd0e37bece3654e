//! One training run, fully described by a [`RunSpec`] (the data, the model, the condition and
//! the training config with its seed), and the function every command trains through.

use crate::core::{Backend, Device};
use crate::data::{Condition, DataSource, Dataset, PositionPermutation};
use crate::error::{Error, Result};
use crate::experiments::grid::Progress;
use crate::models::ModelKind;
use crate::report::ensure_dir;
use crate::train::checkpoint::{self, SavedRun};
use crate::train::{condition_for_run, RunResult, TrainConfig, Trainer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything that decides a training run's numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub data: DataSource,
    pub model: ModelKind,
    pub condition: Condition,
    /// Hyper-parameters; `train.seed` is the run's seed (initialisation, batches, permutation).
    pub train: TrainConfig,
    /// A fixed 0/1 mask per parameter (a safetensors file, e.g. from `analyze prune`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<PathBuf>,
}

impl RunSpec {
    pub fn seed(&self) -> u64 {
        self.train.seed
    }

    /// The data as this run sees it: `base` (= `self.data` loaded) under the run's condition,
    /// and the permutation left to apply to each augmented batch.
    pub fn view(&self, base: &Dataset) -> (Dataset, PositionPermutation) {
        condition_for_run(self.condition, base, &self.train, self.seed())
    }
}

/// Loads the run's data and trains it on `device` (opened first: [`Device::open`]).
pub fn train_run(spec: &RunSpec, device: Device, progress: &dyn Progress) -> Result<RunResult> {
    let base = spec.data.load()?;
    let (data, permutation) = spec.view(&base);
    train_run_on(spec, &data, permutation, device, None, progress)
}

/// Where a run is saved: its directory, and how often it writes a checkpoint there
/// (`checkpoint.safetensors`, from which an interrupted run continues).
#[derive(Clone, Copy, Debug)]
pub struct SaveTo<'a> {
    pub dir: &'a Path,
    pub checkpoint_every: Option<usize>,
}

/// The checkpoint file of a run directory.
pub const CHECKPOINT: &str = "checkpoint.safetensors";

/// Trains `spec` on `data` (the run's view of its data: [`RunSpec::view`], computed once by
/// grid runners for the runs that share it); with `save`, writes the run there for the
/// analyses (`run.json`, `init.safetensors`, `final.safetensors`), and checkpoints as asked
/// (a checkpoint already there is continued; it is removed once the run is saved).
pub fn train_run_on(
    spec: &RunSpec,
    data: &Dataset,
    permutation: PositionPermutation,
    device: Device,
    save: Option<SaveTo>,
    progress: &dyn Progress,
) -> Result<RunResult> {
    crate::with_backend!(device, B => run_on::<B>(spec, data, permutation, save, progress))
}

fn run_on<B: Backend>(
    spec: &RunSpec,
    data: &Dataset,
    permutation: PositionPermutation,
    save: Option<SaveTo>,
    progress: &dyn Progress,
) -> Result<RunResult> {
    let mut trainer = Trainer::<B>::for_dataset(spec.model, data, spec.train.clone())?;
    trainer.sampler.permutation = permutation;
    if let Some(path) = &spec.mask {
        let masks = checkpoint::load_masks(&trainer.model.net, path).map_err(|e| match e {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Error::NotFound(format!("no mask file at {}", path.display()))
            }
            e => e,
        })?;
        trainer.set_masks(&masks)?;
    }
    let dir = save.map(|s| s.dir);
    if let Some(dir) = dir {
        ensure_dir(dir)?;
        let init = dir.join(checkpoint::INIT_WEIGHTS);
        if !init.exists() {
            checkpoint::save_state(&trainer.model.net, &init)?;
        }
    }
    let result = match save {
        Some(SaveTo { dir, checkpoint_every: Some(every) }) => {
            trainer.fit_checkpointed(data, &dir.join(CHECKPOINT), every, &mut |s| progress.steps(s))?
        }
        _ => trainer.fit(data, &mut |s| progress.steps(s))?,
    };
    if let Some(dir) = dir {
        checkpoint::save_state(&trainer.model.net, &dir.join(checkpoint::FINAL_WEIGHTS))?;
        let saved = SavedRun {
            data: spec.data.clone(),
            model: spec.model,
            condition: spec.condition,
            seed: spec.seed(),
            config: spec.train.clone(),
            final_test_accuracy: result.final_test_accuracy,
        };
        checkpoint::save_run(dir, &saved)?;
        let ckpt = dir.join(CHECKPOINT);
        if ckpt.exists() {
            std::fs::remove_file(&ckpt).map_err(|e| Error::io("removing", ckpt, e))?;
        }
    }
    Ok(result)
}
