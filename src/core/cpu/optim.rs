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
        // as Adam: chunks across the threads, the variant a constant so the loop vectorises
        // (measured on 20M weights, two threads: 0.54 ns a weight, against 1.0 on one thread
        // with the branches inside; the full preset's LCN has about 190M)
        let chunk = values_per_task(p.len());
        let n = p.len();
        if momentum == 0.0 {
            let f = |pc: &mut [f32], gc: &[f32]| sgd_chunk::<PLAIN>(lr, 0.0, weight_decay, pc, gc, &mut []);
            if chunk >= n {
                f(p, g);
            } else {
                p.par_chunks_mut(chunk).zip(g[..n].par_chunks(chunk)).for_each(|(pc, gc)| f(pc, gc));
            }
            return;
        }
        let f = |pc: &mut [f32], gc: &[f32], vc: &mut [f32]| match nesterov {
            true => sgd_chunk::<NESTEROV>(lr, momentum, weight_decay, pc, gc, vc),
            false => sgd_chunk::<MOMENTUM>(lr, momentum, weight_decay, pc, gc, vc),
        };
        if chunk >= n {
            f(p, g, velocity);
        } else {
            p.par_chunks_mut(chunk)
                .zip(g[..n].par_chunks(chunk))
                .zip(velocity[..n].par_chunks_mut(chunk))
                .for_each(|((pc, gc), vc)| f(pc, gc, vc));
        }
    }
}

const PLAIN: u8 = 0;
const MOMENTUM: u8 = 1;
const NESTEROV: u8 = 2;

/// One chunk of the SGD step: `g + λ·p`, then (with momentum) `v = μ·v + g` and the step `v`
/// or, Nesterov's, `g + μ·v`; `p −= lr·step`.
#[inline(always)]
fn sgd_chunk<const MODE: u8>(lr: f32, momentum: f32, weight_decay: f32, pc: &mut [f32], gc: &[f32], vc: &mut [f32]) {
    let n = pc.len();
    let gc = &gc[..n];
    if MODE == PLAIN {
        for (p, g) in pc.iter_mut().zip(gc) {
            let gi = g + weight_decay * *p;
            *p -= lr * gi;
        }
        return;
    }
    for ((p, g), v) in pc.iter_mut().zip(gc).zip(&mut vc[..n]) {
        let gi = g + weight_decay * *p;
        *v = momentum * *v + gi;
        let step = if MODE == NESTEROV { gi + momentum * *v } else { *v };
        *p -= lr * step;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::cpu::with_intra_op_threads;
    use crate::core::gradcheck::random_input;

    #[test]
    fn sgd_matches_the_one_thread_loop_in_every_variant() {
        let n = PARALLEL_MIN_ELEMS + 50_000; // over the parallel threshold: several chunks
        let (p0, g, v0) = (random_input(n, 1, 0.0), random_input(n, 2, 0.0), random_input(n, 3, 0.0));
        for (momentum, nesterov) in [(0.0, false), (0.9, false), (0.9, true)] {
            let (mut want_p, mut want_v) = (p0.clone(), v0.clone());
            for i in 0..n {
                let gi = g[i] + 5e-4 * want_p[i];
                let step = if momentum != 0.0 {
                    want_v[i] = momentum * want_v[i] + gi;
                    if nesterov {
                        gi + momentum * want_v[i]
                    } else {
                        want_v[i]
                    }
                } else {
                    gi
                };
                want_p[i] -= 0.05 * step;
            }
            for threads in [1, 2, 3] {
                with_intra_op_threads(threads, || {
                    let (mut p, mut v) = (p0.clone(), v0.clone());
                    Cpu::sgd_update(&mut p, &g, &mut v, 0.05, momentum, 5e-4, nesterov);
                    assert_eq!(
                        (&p, &v),
                        (&want_p, &want_v),
                        "momentum {momentum}, nesterov {nesterov}, {threads} threads"
                    );
                });
            }
        }
    }
}
