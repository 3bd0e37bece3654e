//! CPU kernel of the batch gather (trait and the host gather in `core/ops/gather_batch.rs`;
//! `core/cuda/gather.rs` is the GPU side).

use crate::core::cpu::Cpu;
use crate::core::ops::gather_batch::{gather_host, BatchPlan, ExampleGeom, GatherBatchOps};

impl GatherBatchOps for Cpu {
    fn gather_batch(
        x_train: &Vec<f32>,
        y_train: &Vec<f32>,
        g: ExampleGeom,
        plan: &BatchPlan,
        x: &mut Vec<f32>,
        y: &mut Vec<f32>,
    ) {
        x.resize(plan.rows() * g.len(), 0.0);
        y.resize(plan.rows(), 0.0);
        gather_host(x_train, g, plan, x);
        for (label, e) in y.iter_mut().zip(plan.examples.chunks_exact(4)) {
            *label = y_train[e[0] as usize];
        }
    }
}
