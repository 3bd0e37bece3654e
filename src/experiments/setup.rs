//! From what a user chose to what a run needs: the dataset (loaded, subsets taken), the
//! recipe for it, and the [`DataSource`] that reloads the same data. Options that do not
//! apply to the chosen dataset are refused here, once, for every command.

use crate::data::mnist1d::{Mnist1dConfig, Mnist1dOverrides};
use crate::data::recall::RecallConfig;
use crate::data::{DataSource, Dataset, DatasetSpec};
use crate::error::{Error, Result};
use crate::experiments::presets::{self, Preset, Recipe};
use crate::models::ArchOverrides;
use crate::train::{TrainConfig, TrainOverrides};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Which data, and the recipe's knobs that depend on it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataChoice {
    pub dataset: DatasetSpec,
    /// Directory of the dataset's files (None: its usual place).
    pub data_dir: Option<PathBuf>,
    /// Image datasets: how much compute the recipe spends (None: quick).
    pub preset: Option<Preset>,
    pub train_subset: Option<usize>,
    pub test_subset: Option<usize>,
    /// `folder:` datasets: resize every image to (height, width).
    pub image_size: Option<(u32, u32)>,
    /// MNIST-1D: changes to the reference generator's settings.
    pub mnist1d: Mnist1dOverrides,
    /// Changes to the recipe's architecture.
    pub arch: ArchOverrides,
    /// The recall task's generator settings.
    pub recall: RecallConfig,
}

impl Default for DataChoice {
    fn default() -> Self {
        Self {
            dataset: DatasetSpec::Mnist1d,
            data_dir: None,
            preset: None,
            train_subset: None,
            test_subset: None,
            image_size: None,
            mnist1d: Mnist1dOverrides::default(),
            arch: ArchOverrides::default(),
            recall: RecallConfig::default(),
        }
    }
}

/// Loaded data and its resolved recipe.
pub struct Prepared {
    pub data: Dataset,
    pub recipe: Recipe,
    /// Reloads exactly `data` (saved with runs).
    pub source: DataSource,
}

impl Prepared {
    /// The recipe's training config with `overrides` applied, for run `seed`.
    pub fn train_config(&self, overrides: &TrainOverrides, seed: u64) -> Result<TrainConfig> {
        let mut cfg = self.recipe.train.clone();
        cfg.seed = seed;
        cfg.apply(overrides)?;
        Ok(cfg)
    }
}

impl DataChoice {
    pub fn of(dataset: DatasetSpec) -> Self {
        Self { dataset, ..Self::default() }
    }

    /// Refuses the options that do not apply to the dataset (one message naming them).
    pub fn check(&self) -> Result<()> {
        let mut wrong: Vec<String> = Vec::new();
        let name = self.dataset.name();
        if self.dataset.is_text() && self.arch != ArchOverrides::default() {
            wrong.push("architecture overrides (the text models have fixed sizes)".into());
        }
        if self.dataset != DatasetSpec::Recall && self.recall != RecallConfig::default() {
            wrong.push("recall (the recall task's generator)".into());
        }
        if self.dataset.is_text() {
            if self.preset.is_some() {
                wrong.push("preset (image datasets only)".into());
            }
            wrong.extend(self.mnist1d.given().iter().map(|f| format!("{f} (the MNIST-1D generator)")));
        } else if self.dataset.is_sequence() {
            if self.preset.is_some() {
                wrong.push("preset (image datasets only)".into());
            }
            wrong.extend(self.arch.image_only_given().iter().map(|f| format!("{f} (image models only)")));
        } else {
            wrong.extend(self.mnist1d.given().iter().map(|f| format!("{f} (the MNIST-1D generator)")));
        }
        if self.image_size.is_some() && !matches!(self.dataset, DatasetSpec::Folder(_)) {
            wrong.push("image_size (folder: datasets only)".into());
        }
        if self.data_dir.is_some() && self.dataset.default_dir().is_none() {
            wrong.push("data_dir (datasets read from files, not mnist1d, recall or folder:)".into());
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(format!("options that do not apply to {name}: {}", wrong.join(", "))))
        }
    }

    /// Loads the data, resolves the recipe from the examples it will train on, applies the
    /// architecture overrides and takes the subsets.
    pub fn prepare(&self) -> Result<Prepared> {
        self.check()?;
        let mut source = DataSource {
            dataset: self.dataset.clone(),
            data_dir: self.data_dir.clone(),
            mnist1d: self.mnist1d.apply(&Mnist1dConfig::default()),
            recall: self.recall.clone(),
            image_size: self.image_size,
            train_subset: None,
            test_subset: None,
        };
        let mut data = source.load()?;
        let preset = self.preset.unwrap_or(Preset::Quick);
        let mut recipe = presets::recipe(&self.dataset, &data.example_shape, data.n_train(), preset, self.train_subset);
        recipe.train.arch.apply(&self.arch);
        source.train_subset = recipe.train_subset;
        source.test_subset = self.test_subset.or(recipe.test_subset);
        if let Some(n) = source.train_subset {
            data.truncate_train(n);
        }
        if let Some(n) = source.test_subset {
            data.truncate_test(n);
        }
        Ok(Prepared { data, recipe, source })
    }
}
