//! Finite-difference gradient checks for layers (used by every op's tests).
//!
//! The loss is `L = Σ r ⊙ layer(x)` with a fixed random `r`, so `dL/dy = r`. Analytic input
//! and parameter gradients from `backward` are compared with central differences
//! `(L(θ+ε) − L(θ−ε)) / 2ε`, the loss summed in f64.

use crate::core::{Cpu, Layer, Mode, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Values drawn uniformly from [-1, 1), away from zero by at least `gap` (for ops with kinks).
pub fn random_input(len: usize, seed: u64, gap: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len)
        .map(|_| loop {
            let v: f32 = rng.random_range(-1.0..1.0);
            if v.abs() >= gap {
                break v;
            }
        })
        .collect()
}

fn loss(layer: &mut dyn Layer<Cpu>, x: &Tensor<Cpu>, r: &[f32], y: &mut Tensor<Cpu>) -> f64 {
    layer.forward(x, y, Mode::Train);
    y.buf().iter().zip(r).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// Checks input and parameter gradients; panics with the worst mismatch. At most
/// `max_coords` coordinates per tensor are probed (spread evenly).
pub fn check_layer(layer: &mut dyn Layer<Cpu>, shape: &[usize], x: Vec<f32>, eps: f32, tol: f32) {
    let mut xt = Tensor::<Cpu>::from_slice(shape, &x);
    let mut y = Tensor::<Cpu>::empty();
    layer.forward(&xt, &mut y, Mode::Train);
    let r = random_input(y.len(), 99, 0.0);
    let dy = Tensor::<Cpu>::from_slice(y.shape(), &r);
    let mut dx = Tensor::<Cpu>::empty();
    layer.backward(&xt, &y, &dy, Some(&mut dx));
    assert_eq!(dx.shape(), xt.shape(), "{}: dx shape", layer.describe());
    let analytic_dx = dx.to_vec();
    let mut analytic_params: Vec<Vec<f32>> = Vec::new();
    layer.visit_params(&mut |p| analytic_params.push(p.grad.to_vec()));

    let max_coords = 40;
    let probe = |len: usize| -> Vec<usize> {
        if len <= max_coords {
            (0..len).collect()
        } else {
            (0..max_coords).map(|i| i * len / max_coords).collect()
        }
    };
    let mut checked = 0;
    let mut report = |what: String, a: f32, n: f64| {
        let err = (a as f64 - n).abs();
        let bound = tol as f64 * (1.0 + a.abs().max(n.abs() as f32) as f64);
        assert!(err <= bound, "{what}: analytic {a} vs numeric {n} (err {err:.2e} > {bound:.2e})");
        checked += 1;
    };
    let name = layer.describe();
    for i in probe(x.len()) {
        let orig = xt.buf()[i];
        xt.buf_mut()[i] = orig + eps;
        let lp = loss(layer, &xt, &r, &mut y);
        xt.buf_mut()[i] = orig - eps;
        let lm = loss(layer, &xt, &r, &mut y);
        xt.buf_mut()[i] = orig;
        report(format!("{name}: dx[{i}]"), analytic_dx[i], (lp - lm) / (2.0 * eps as f64));
    }
    for (pi, grads) in analytic_params.iter().enumerate() {
        for i in probe(grads.len()) {
            let nudge = |delta: f32, layer: &mut dyn Layer<Cpu>| {
                let mut k = 0;
                layer.visit_params(&mut |p| {
                    if k == pi {
                        p.value.buf_mut()[i] += delta;
                    }
                    k += 1;
                });
            };
            nudge(eps, layer);
            let lp = loss(layer, &xt, &r, &mut y);
            nudge(-2.0 * eps, layer);
            let lm = loss(layer, &xt, &r, &mut y);
            nudge(eps, layer);
            report(format!("{name}: param {pi}[{i}]"), grads[i], (lp - lm) / (2.0 * eps as f64));
        }
    }
    assert!(checked > 0, "gradient check probed nothing");
}
