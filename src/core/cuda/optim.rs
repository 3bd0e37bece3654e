//! Optimizer updates and masks on the GPU (mirrors `core/optim/mod.rs`).

use super::{f, i, p, u, with_local, Cuda, CudaBuf, K};
use crate::core::optim::OptimOps;

impl OptimOps for Cuda {
    fn adam_update(
        pb: &mut CudaBuf,
        g: &CudaBuf,
        m: &mut CudaBuf,
        v: &mut CudaBuf,
        lr: f32,
        betas: (f32, f32),
        eps: f32,
        weight_decay: f32,
        decoupled: bool,
        t: u32,
    ) {
        let (b1, b2) = betas;
        let (step, bc2_sqrt) = crate::core::optim::adam_corrections(lr, betas, t);
        let args = [
            p(pb),
            p(g),
            p(m),
            p(v),
            u(pb.len),
            f(lr),
            f(b1),
            f(b2),
            f(eps),
            f(weight_decay),
            i(decoupled as i32),
            f(step),
            f(bc2_sqrt),
        ];
        with_local(|l| l.launch_n(K::adam_update, pb.len, &args));
    }

    fn sgd_update(
        pb: &mut CudaBuf,
        g: &CudaBuf,
        velocity: &mut CudaBuf,
        lr: f32,
        momentum: f32,
        weight_decay: f32,
        nesterov: bool,
    ) {
        let args = [p(pb), p(g), p(velocity), u(pb.len), f(lr), f(momentum), f(weight_decay), i(nesterov as i32)];
        with_local(|l| l.launch_n4(K::sgd_update, pb.len, &args));
    }

    fn apply_mask(pb: &mut CudaBuf, mask: &CudaBuf) {
        with_local(|l| l.launch_n(K::mul_inplace, pb.len, &[p(pb), p(mask), u(pb.len)]));
    }
}
