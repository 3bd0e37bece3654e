//! Published numbers, and the protocol each was measured under: a reference is shown beside
//! our number only when our run follows that protocol.

use crate::core::optim::{OptimizerConfig, Schedule};
use crate::data::mnist1d::Mnist1dConfig;
use crate::data::{Condition, DataSource, DatasetSpec};
use crate::models::{ImageArch, ModelKind};
use crate::train::TrainConfig;

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

/// The MNIST-1D paper's protocol: the reference generator's default data, 6000 steps of Adam
/// 1e-2 on batches of 100 taken in the same order every epoch, no augmentation, the MLP at
/// 100-100.
pub fn follows_mnist1d_protocol(source: &DataSource, config: &TrainConfig) -> bool {
    source.dataset == DatasetSpec::Mnist1d
        && source.mnist1d == Mnist1dConfig::default()
        && source.train_subset.is_none()
        && source.test_subset.is_none()
        && config.steps == 6000
        && config.batch_size == 100
        && config.lr == 1e-2
        && config.optimizer == OptimizerConfig::adam()
        && config.schedule == Schedule::constant()
        && !config.shuffle
        && config.augment.is_none()
        && config.arch.sequence_mlp_hidden == ImageArch::small().sequence_mlp_hidden
}

/// The published test accuracy of `model` under `condition`, where a run of `config` on
/// `source` is comparable with it.
pub fn published(source: &DataSource, config: &TrainConfig, model: ModelKind, condition: Condition) -> Option<f64> {
    follows_mnist1d_protocol(source, config).then(|| mnist1d_reference(model, condition)).flatten()
}

/// Names the protocol of a run in one phrase (printed with results).
pub fn protocol(source: &DataSource, config: &TrainConfig) -> String {
    let order = match config.shuffle {
        false => "same batch order every epoch",
        true => "batches reshuffled every epoch",
    };
    if follows_mnist1d_protocol(source, config) {
        format!("the MNIST-1D paper's protocol ({order})")
    } else {
        order.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_only_under_the_published_protocol() {
        let source = DataSource::mnist1d();
        let cfg = TrainConfig::mnist1d();
        assert_eq!(published(&source, &cfg, ModelKind::Cnn, Condition::Original), Some(0.94));
        let short = TrainConfig { steps: 50, ..cfg.clone() };
        assert_eq!(published(&source, &short, ModelKind::Cnn, Condition::Original), None);
        let shuffled = TrainConfig { shuffle: true, ..cfg.clone() };
        assert_eq!(published(&source, &shuffled, ModelKind::Cnn, Condition::Original), None);
        let subset = DataSource { train_subset: Some(100), ..source.clone() };
        assert_eq!(published(&subset, &cfg, ModelKind::Mlp, Condition::Original), None);
        assert_eq!(published(&source, &cfg, ModelKind::Dnn, Condition::Original), None, "nothing published");
    }
}
