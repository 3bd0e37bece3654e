//! CPU kernels of the optimizer updates (trait in `core/optim/mod.rs`; `core/cuda/optim.rs`
//! is the GPU side).

use crate::core::cpu::{Cpu, PARALLEL_MIN_ELEMS};
use crate::core::optim::OptimOps;
use rayon::prelude::*;

fn values_per_task(len: usize) -> usize {
    if len < PARALLEL_MIN_ELEMS {
        len
    } else {
        crate::core::cpu::chunking(len, 8192)
    }
}

impl OptimOps for Cpu {
    fn apply_mask(p: &mut Vec<f32>, mask: &Vec<f32>) {
        p.iter_mut().zip(mask).for_each(|(v, m)| *v *= m);
    }

    fn adam_update(
        p: &mut Vec<f32>,
        g: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        lr: f32,
        betas: (f32, f32),
        eps: f32,
        weight_decay: f32,
        decoupled: bool,
        t: u32,
    ) {
        let (b1, b2) = betas;
        let (step, bc2_sqrt) = crate::core::optim::adam_corrections(lr, betas, t);
        let s = AdamStep { lr, b1, b2, eps, weight_decay, step, bc2_sqrt };
        let mode = if decoupled {
            DECOUPLED
        } else if weight_decay != 0.0 {
            L2
        } else {
            NO_DECAY
        };
        let f = |pc: &mut [f32], gc: &[f32], mc: &mut [f32], vc: &mut [f32]| match mode {
            DECOUPLED => adam_chunk::<DECOUPLED>(&s, pc, gc, mc, vc),
            L2 => adam_chunk::<L2>(&s, pc, gc, mc, vc),
            _ => adam_chunk::<NO_DECAY>(&s, pc, gc, mc, vc),
        };
        let chunk = values_per_task(p.len());
        if chunk >= p.len() {
            f(p, g, m, v);
        } else {
            p.par_chunks_mut(chunk)
                .zip(g.par_chunks(chunk))
                .zip(m.par_chunks_mut(chunk))
                .zip(v.par_chunks_mut(chunk))
                .for_each(|(((pc, gc), mc), vc)| f(pc, gc, mc, vc));
        }
    }

    fn sgd_update(
        p: &mut Vec<f32>,
        g: &Vec<f32>,
        velocity: &mut Vec<f32>,
        lr: f32,
        momentum: f32,
        weight_decay: f32,
        nesterov: bool,
    ) {
        for i in 0..p.len() {
            let gi = g[i] + weight_decay * p[i];
            let step = if momentum != 0.0 {
                velocity[i] = momentum * velocity[i] + gi;
                if nesterov {
                    gi + momentum * velocity[i]
                } else {
                    velocity[i]
                }
            } else {
                gi
            };
            p[i] -= lr * step;
        }
    }
}

/// One Adam step's constants.
struct AdamStep {
    lr: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    weight_decay: f32,
    /// `lr / (1 − β₁ᵗ)`.
    step: f32,
    /// `√(1 − β₂ᵗ)`.
    bc2_sqrt: f32,
}

const NO_DECAY: u8 = 0;
const L2: u8 = 1;
const DECOUPLED: u8 = 2;

/// The Adam update of one chunk, its weight-decay form a constant so the loop has no branch
/// and vectorises. Measured (W3a, one thread): as a closure with the branch inside, the
/// compiler stopped inlining it once the kernels moved here, and Adam went from 10% to 32%
/// of a step.
#[inline(always)]
fn adam_chunk<const MODE: u8>(s: &AdamStep, pc: &mut [f32], gc: &[f32], mc: &mut [f32], vc: &mut [f32]) {
    let n = pc.len();
    let (gc, mc, vc) = (&gc[..n], &mut mc[..n], &mut vc[..n]);
    for i in 0..n {
        let mut gi = gc[i];
        if MODE == DECOUPLED {
            pc[i] *= 1.0 - s.lr * s.weight_decay;
        } else if MODE == L2 {
            gi += s.weight_decay * pc[i];
        }
        mc[i] = s.b1 * mc[i] + (1.0 - s.b1) * gi;
        vc[i] = s.b2 * vc[i] + (1.0 - s.b2) * gi * gi;
        pc[i] -= s.step * mc[i] / (vc[i].sqrt() / s.bc2_sqrt + s.eps);
    }
}
