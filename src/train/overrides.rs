//! Changes to a recipe's training config, as a user asks for them: every field is optional and
//! only what is given changes. Applied with [`TrainConfig::apply`], so the defaults live in one
//! place (the recipe) and are never retyped.

use crate::core::optim::{OptimizerConfig, OptimizerKind, Schedule, ScheduleKind};
use crate::error::{Error, Result};
use crate::train::TrainConfig;
use serde::{Deserialize, Serialize};

/// The order training examples are drawn in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchOrder {
    /// The same order every epoch: batch k holds examples k·b .. (k+1)·b (the MNIST-1D
    /// notebooks' loop, the protocol of their published numbers).
    Sequential,
    /// A fresh shuffle of the training set every epoch.
    Shuffled,
}

crate::named_enum!(BatchOrder { Sequential => "sequential", Shuffled => "shuffled" });

/// Optional changes to a [`TrainConfig`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainOverrides {
    pub steps: Option<usize>,
    pub batch_size: Option<usize>,
    pub lr: Option<f32>,
    /// Another optimizer family (its PyTorch defaults; weight decay carried over).
    pub optimizer: Option<OptimizerKind>,
    pub weight_decay: Option<f32>,
    /// SGD momentum (refused for other optimizers).
    pub momentum: Option<f32>,
    pub schedule: Option<ScheduleKind>,
    pub warmup_steps: Option<usize>,
    pub eval_every: Option<usize>,
    pub batch_order: Option<BatchOrder>,
}

impl TrainConfig {
    /// The order this config draws batches in.
    pub fn batch_order(&self) -> BatchOrder {
        if self.shuffle {
            BatchOrder::Shuffled
        } else {
            BatchOrder::Sequential
        }
    }

    /// Applies every given override, then checks the result ([`TrainConfig::validate`]).
    pub fn apply(&mut self, o: &TrainOverrides) -> Result<()> {
        if let Some(v) = o.steps {
            self.steps = v;
        }
        if let Some(v) = o.batch_size {
            self.batch_size = v;
        }
        if let Some(v) = o.lr {
            self.lr = v;
        }
        if let Some(v) = o.eval_every {
            self.eval_every = v;
        }
        if let Some(order) = o.batch_order {
            self.shuffle = order == BatchOrder::Shuffled;
        }
        let wd = o.weight_decay.unwrap_or(self.optimizer.weight_decay());
        let kind = o.optimizer.unwrap_or(self.optimizer.kind());
        if o.momentum.is_some() && kind != OptimizerKind::Sgd {
            return Err(Error::Config(format!("momentum applies to sgd, not to {kind}")));
        }
        self.optimizer = match (o.optimizer, &self.optimizer) {
            (Some(k), _) => OptimizerConfig::of_kind(k, wd, o.momentum.unwrap_or(0.9)),
            // the recipe's SGD keeps its Nesterov setting
            (None, OptimizerConfig::Sgd { momentum, nesterov, .. }) => OptimizerConfig::Sgd {
                momentum: o.momentum.unwrap_or(*momentum),
                weight_decay: wd,
                nesterov: *nesterov,
            },
            (None, other) => other.clone().with_weight_decay(wd),
        };
        if o.schedule.is_some() || o.warmup_steps.is_some() {
            let warmup = o.warmup_steps.unwrap_or(self.schedule.warmup_steps());
            self.schedule = match (&self.schedule, o.schedule) {
                (Schedule::Cosine { final_fraction, .. }, None | Some(ScheduleKind::Cosine)) => {
                    Schedule::Cosine { warmup_steps: warmup, final_fraction: *final_fraction }
                }
                (_, kind) => Schedule::of_kind(kind.unwrap_or(self.schedule.kind()), warmup),
            };
        }
        if let OptimizerConfig::Sgd { momentum, .. } = self.optimizer {
            if !(0.0..=1.0).contains(&momentum) {
                return Err(Error::Config(format!("momentum must lie in [0, 1], got {momentum}")));
            }
        }
        if !(wd.is_finite() && wd >= 0.0) {
            return Err(Error::Config(format!("weight decay must be a number >= 0, got {wd}")));
        }
        self.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_given_fields_change() {
        let base = TrainConfig::mnist1d();
        let mut c = base.clone();
        c.apply(&TrainOverrides::default()).unwrap();
        assert_eq!(c, base, "no overrides, no change");
        c.apply(&TrainOverrides { lr: Some(2e-2), batch_order: Some(BatchOrder::Shuffled), ..Default::default() })
            .unwrap();
        assert_eq!((c.lr, c.shuffle, c.optimizer.clone()), (2e-2, true, base.optimizer.clone()));
        c.apply(&TrainOverrides {
            optimizer: Some(OptimizerKind::Sgd),
            weight_decay: Some(1e-4),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.optimizer, OptimizerConfig::Sgd { momentum: 0.9, weight_decay: 1e-4, nesterov: false });
        c.apply(&TrainOverrides { schedule: Some(ScheduleKind::Cosine), warmup_steps: Some(7), ..Default::default() })
            .unwrap();
        assert_eq!(c.schedule, Schedule::Cosine { warmup_steps: 7, final_fraction: 0.0 });
    }

    #[test]
    fn flags_that_do_not_apply_or_bad_values_are_refused() {
        let mut c = TrainConfig::mnist1d();
        let e = c.apply(&TrainOverrides { momentum: Some(0.5), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("momentum applies to sgd"), "{e}");
        assert!(c.apply(&TrainOverrides { lr: Some(-1.0), ..Default::default() }).is_err());
        assert!(c.apply(&TrainOverrides { weight_decay: Some(f32::NAN), ..Default::default() }).is_err());
    }
}
