//! Learning-rate schedules: constant or cosine decay, each with an optional linear warm-up.

use serde::{Deserialize, Serialize};

/// The schedule families, by name (`constant`, `cosine`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    Constant,
    Cosine,
}

crate::named_enum!(ScheduleKind { Constant => "constant", Cosine => "cosine" });

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Schedule {
    /// The base rate throughout (after warm-up).
    Constant { warmup_steps: usize },
    /// Cosine decay from the base rate to `base · final_fraction` at the last step.
    Cosine { warmup_steps: usize, final_fraction: f32 },
}

impl Schedule {
    pub fn constant() -> Self {
        Schedule::Constant { warmup_steps: 0 }
    }

    pub fn warmup_steps(&self) -> usize {
        match *self {
            Schedule::Constant { warmup_steps } | Schedule::Cosine { warmup_steps, .. } => warmup_steps,
        }
    }

    pub fn kind(&self) -> ScheduleKind {
        match self {
            Schedule::Constant { .. } => ScheduleKind::Constant,
            Schedule::Cosine { .. } => ScheduleKind::Cosine,
        }
    }

    /// `kind` with `warmup_steps` (cosine decays to zero).
    pub fn of_kind(kind: ScheduleKind, warmup_steps: usize) -> Self {
        match kind {
            ScheduleKind::Constant => Schedule::Constant { warmup_steps },
            ScheduleKind::Cosine => Schedule::Cosine { warmup_steps, final_fraction: 0.0 },
        }
    }

    /// Learning rate at `step` (0-based) of `total` steps.
    pub fn lr(&self, base: f32, step: usize, total: usize) -> f32 {
        let warmup = match self {
            Schedule::Constant { warmup_steps } | Schedule::Cosine { warmup_steps, .. } => *warmup_steps,
        };
        if step < warmup {
            return base * (step + 1) as f32 / warmup as f32;
        }
        match self {
            Schedule::Constant { .. } => base,
            Schedule::Cosine { final_fraction, .. } => {
                let span = total.saturating_sub(warmup).max(1) as f32;
                let progress = ((step - warmup) as f32 / span).min(1.0);
                let cos = 0.5 * (1.0 + (std::f32::consts::PI * progress).cos());
                base * (final_fraction + (1.0 - final_fraction) * cos)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = Schedule::Cosine { warmup_steps: 10, final_fraction: 0.0 };
        assert!((s.lr(1.0, 0, 110) - 0.1).abs() < 1e-6);
        assert!((s.lr(1.0, 9, 110) - 1.0).abs() < 1e-6);
        assert!((s.lr(1.0, 10, 110) - 1.0).abs() < 1e-6);
        assert!((s.lr(1.0, 60, 110) - 0.5).abs() < 1e-6);
        assert!(s.lr(1.0, 110, 110).abs() < 1e-6);
        assert_eq!(Schedule::constant().lr(0.3, 500, 1000), 0.3);
    }
}
