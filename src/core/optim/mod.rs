//! Optimizers (SGD with momentum and weight decay, Adam, AdamW) and learning-rate schedules.
//! Update rules follow PyTorch's `torch.optim` so published recipes carry over unchanged.

mod schedule;

pub use schedule::{Schedule, ScheduleKind};

use crate::core::backend::{Backend, BackendBase};
use crate::core::{Layer, Param};
use serde::{Deserialize, Serialize};

/// Per-parameter update kernels.
pub trait OptimOps: BackendBase {
    /// One Adam step (`decoupled`: AdamW's weight decay) at step `t` (1-based).
    #[allow(clippy::too_many_arguments)]
    fn adam_update(
        p: &mut Self::Buf,
        g: &Self::Buf,
        m: &mut Self::Buf,
        v: &mut Self::Buf,
        lr: f32,
        betas: (f32, f32),
        eps: f32,
        weight_decay: f32,
        decoupled: bool,
        t: u32,
    );
    /// One SGD step with momentum (`velocity` starts at zero, as in PyTorch's first step).
    #[allow(clippy::too_many_arguments)]
    fn sgd_update(
        p: &mut Self::Buf,
        g: &Self::Buf,
        velocity: &mut Self::Buf,
        lr: f32,
        momentum: f32,
        weight_decay: f32,
        nesterov: bool,
    );
    /// `p *= mask` (0/1 values): keeps pruned weights at zero.
    fn apply_mask(p: &mut Self::Buf, mask: &Self::Buf);
}

/// Adam's bias corrections at step `t` (1-based), as every backend applies them:
/// `(lr / (1 − β₁ᵗ), √(1 − β₂ᵗ))`, the step size and the divisor of `√v`.
pub(crate) fn adam_corrections(lr: f32, (b1, b2): (f32, f32), t: u32) -> (f32, f32) {
    (lr / (1.0 - b1.powi(t as i32)), (1.0 - b2.powi(t as i32)).sqrt())
}

/// Which optimizer, with its hyper-parameters (the learning rate comes from the schedule).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerConfig {
    Sgd { momentum: f32, weight_decay: f32, nesterov: bool },
    Adam { beta1: f32, beta2: f32, eps: f32, weight_decay: f32 },
    AdamW { beta1: f32, beta2: f32, eps: f32, weight_decay: f32 },
}

impl OptimizerConfig {
    /// PyTorch's Adam defaults.
    pub fn adam() -> Self {
        OptimizerConfig::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }

    /// `kind` with PyTorch's defaults, the given weight decay and (SGD) momentum.
    pub fn of_kind(kind: OptimizerKind, weight_decay: f32, momentum: f32) -> Self {
        match kind {
            OptimizerKind::Adam => Self::adam().with_weight_decay(weight_decay),
            OptimizerKind::AdamW => OptimizerConfig::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay },
            OptimizerKind::Sgd => OptimizerConfig::Sgd { momentum, weight_decay, nesterov: false },
        }
    }

    pub fn kind(&self) -> OptimizerKind {
        match self {
            OptimizerConfig::Sgd { .. } => OptimizerKind::Sgd,
            OptimizerConfig::Adam { .. } => OptimizerKind::Adam,
            OptimizerConfig::AdamW { .. } => OptimizerKind::AdamW,
        }
    }

    pub fn weight_decay(&self) -> f32 {
        match *self {
            OptimizerConfig::Sgd { weight_decay, .. }
            | OptimizerConfig::Adam { weight_decay, .. }
            | OptimizerConfig::AdamW { weight_decay, .. } => weight_decay,
        }
    }

    pub fn with_weight_decay(mut self, wd: f32) -> Self {
        match &mut self {
            OptimizerConfig::Sgd { weight_decay, .. }
            | OptimizerConfig::Adam { weight_decay, .. }
            | OptimizerConfig::AdamW { weight_decay, .. } => *weight_decay = wd,
        }
        self
    }
}

/// The optimizer families, by name (`adam`, `adamw`, `sgd`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adam,
    AdamW,
    Sgd,
}

crate::named_enum!(OptimizerKind { Adam => "adam", AdamW => "adamw", Sgd => "sgd" });

/// One parameter's two optimizer buffers on the host (Adam: first and second moments).
pub type Moments = (Vec<f32>, Vec<f32>);

/// Optimizer state for one model; buffers are created at the first step and reused.
pub struct Optimizer<B: Backend> {
    pub config: OptimizerConfig,
    state: Vec<(B::Buf, B::Buf)>,
    t: u32,
}

impl<B: Backend> Optimizer<B> {
    pub fn new(config: OptimizerConfig) -> Self {
        Self { config, state: Vec::new(), t: 0 }
    }

    /// The state on the host, for a checkpoint: the step count and each parameter's two
    /// moment buffers (SGD: momentum and an unused one), in parameter visit order.
    pub fn export(&self) -> (u32, Vec<Moments>) {
        let host = |b: &B::Buf| {
            let mut v = Vec::new();
            B::download(b, &mut v);
            v
        };
        (self.t, self.state.iter().map(|(a, b)| (host(a), host(b))).collect())
    }

    /// Restores a state written by [`Optimizer::export`].
    pub fn import(&mut self, t: u32, state: &[Moments]) {
        let device = |v: &[f32]| {
            let mut b = B::zeros(v.len());
            B::upload(&mut b, v);
            b
        };
        self.t = t;
        self.state = state.iter().map(|(a, b)| (device(a), device(b))).collect();
    }

    /// Applies one update with learning rate `lr` to every parameter of `model`.
    pub fn step(&mut self, model: &mut dyn Layer<B>, lr: f32) {
        self.t += 1;
        let (t, config, state) = (self.t, &self.config, &mut self.state);
        let mut i = 0;
        model.visit_params(&mut |p: &mut Param<B>| {
            if state.len() <= i {
                state.push((B::zeros(p.value.len()), B::zeros(p.value.len())));
            }
            let (a, b) = &mut state[i];
            let decay = |wd: f32| if p.decay { wd } else { 0.0 };
            match *config {
                OptimizerConfig::Adam { beta1, beta2, eps, weight_decay } => B::adam_update(
                    p.value.buf_mut(),
                    p.grad.buf(),
                    a,
                    b,
                    lr,
                    (beta1, beta2),
                    eps,
                    decay(weight_decay),
                    false,
                    t,
                ),
                OptimizerConfig::AdamW { beta1, beta2, eps, weight_decay } => B::adam_update(
                    p.value.buf_mut(),
                    p.grad.buf(),
                    a,
                    b,
                    lr,
                    (beta1, beta2),
                    eps,
                    decay(weight_decay),
                    true,
                    t,
                ),
                OptimizerConfig::Sgd { momentum, weight_decay, nesterov } => {
                    B::sgd_update(p.value.buf_mut(), p.grad.buf(), a, lr, momentum, decay(weight_decay), nesterov)
                }
            }
            i += 1;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Cpu;

    /// First Adam step moves every weight by lr·sign(g) (bias correction makes m̂/√v̂ = ±1).
    #[test]
    fn adam_first_step_is_signed_lr() {
        let mut p = vec![1.0f32, -2.0, 0.5];
        let g = vec![0.3f32, -0.01, 4.0];
        let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
        Cpu::adam_update(&mut p, &g, &mut m, &mut v, 0.1, (0.9, 0.999), 1e-8, 0.0, false, 1);
        let want = [0.9, -1.9, 0.4];
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    /// Plain SGD with momentum against the PyTorch recurrence, two steps by hand.
    #[test]
    fn sgd_momentum_and_weight_decay() {
        let mut p = vec![1.0f32];
        let mut vel = vec![0.0f32];
        Cpu::sgd_update(&mut p, &vec![0.5], &mut vel, 0.1, 0.9, 0.1, false);
        // g' = 0.5 + 0.1 = 0.6, v = 0.6, p = 1 - 0.06
        assert!((p[0] - 0.94).abs() < 1e-6);
        Cpu::sgd_update(&mut p, &vec![0.5], &mut vel, 0.1, 0.9, 0.1, false);
        // g' = 0.5 + 0.094, v = 0.54 + 0.594 = 1.134
        assert!((p[0] - (0.94 - 0.1134)).abs() < 1e-6);
    }

    /// Adam minimises a quadratic.
    #[test]
    fn adam_converges_on_a_quadratic() {
        let mut p = vec![3.0f32, -4.0];
        let (mut m, mut v) = (vec![0.0; 2], vec![0.0; 2]);
        for t in 1..=2000 {
            let g: Vec<f32> = p.iter().map(|x| 2.0 * x).collect();
            Cpu::adam_update(&mut p, &g, &mut m, &mut v, 0.05, (0.9, 0.999), 1e-8, 0.0, false, t);
        }
        assert!(p.iter().all(|x| x.abs() < 1e-2), "{p:?}");
    }
}
