//! Recipes: what `reproduce` and `train` run for a dataset unless flags say otherwise.

use crate::core::optim::{OptimizerConfig, Schedule};
use crate::models::{ImageArch, ModelKind};
use crate::train::{Augment, TrainConfig};
use serde::{Deserialize, Serialize};

/// How much compute an image experiment spends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// A subset and a few epochs of small networks: minutes on a 2-core laptop.
    Quick,
    /// The recipe to defend in a paper: standard networks with BatchNorm, SGD with momentum,
    /// weight decay, warm-up and cosine decay, augmentation, 30 epochs (hours on a CPU).
    Full,
}

/// A resolved recipe.
#[derive(Clone, Debug)]
pub struct Recipe {
    pub train: TrainConfig,
    /// Train on the first this many training examples (None: all).
    pub train_subset: Option<usize>,
    /// Evaluate on the first this many test examples (None: all).
    pub test_subset: Option<usize>,
    pub seeds: usize,
    pub models: Vec<ModelKind>,
}

/// The recipe for a dataset with examples of `example_shape` and `n_train` training examples.
pub fn recipe(example_shape: &[usize], n_train: usize, preset: Preset) -> Recipe {
    if example_shape.len() != 3 {
        // sequences: the MNIST-1D recipe (Adam 1e-2, batch 100, 6000 steps)
        return Recipe {
            train: TrainConfig::mnist1d(),
            train_subset: None,
            test_subset: None,
            seeds: 3,
            models: ModelKind::ALL.to_vec(),
        };
    }
    let image_models = vec![ModelKind::Cnn, ModelKind::Dnn, ModelKind::Mlp, ModelKind::Lcn];
    let color = example_shape[2] == 3;
    match preset {
        Preset::Quick => {
            let n = n_train.min(10_000);
            let batch = 128;
            let steps_per_epoch = n.div_ceil(batch);
            Recipe {
                train: TrainConfig {
                    steps: 3 * steps_per_epoch,
                    batch_size: batch,
                    lr: 1e-3,
                    optimizer: OptimizerConfig::adam(),
                    schedule: Schedule::Constant { warmup_steps: 0 },
                    eval_every: steps_per_epoch,
                    seed: 0,
                    augment: None,
                    arch: ImageArch::small(),
                    prefetch: true,
                    shuffle: true,
                },
                train_subset: Some(n),
                test_subset: Some(2000),
                seeds: 1,
                models: image_models,
            }
        }
        Preset::Full => {
            let batch = 128;
            let steps_per_epoch = n_train.div_ceil(batch).max(1);
            Recipe {
                train: TrainConfig {
                    steps: 30 * steps_per_epoch,
                    batch_size: batch,
                    lr: 0.05,
                    optimizer: OptimizerConfig::Sgd { momentum: 0.9, weight_decay: 5e-4, nesterov: true },
                    schedule: Schedule::Cosine { warmup_steps: steps_per_epoch, final_fraction: 0.0 },
                    eval_every: steps_per_epoch,
                    seed: 0,
                    augment: Some(Augment { crop_padding: if color { 4 } else { 2 }, horizontal_flip: color }),
                    arch: ImageArch::standard(),
                    prefetch: true,
                    shuffle: true,
                },
                train_subset: None,
                test_subset: None,
                seeds: 3,
                models: image_models,
            }
        }
    }
}
