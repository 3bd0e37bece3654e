//! Parameter initialisation, PyTorch's defaults: weights and biases of linear, convolutional
//! and locally-connected layers from U(-1/√fan_in, 1/√fan_in) (kaiming-uniform with a = √5);
//! embedding tables from N(0, 1).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The random generator every model is built from (one seed per run).
pub type InitRng = ChaCha8Rng;

/// `len` values from U(-bound, bound).
pub fn uniform(rng: &mut InitRng, len: usize, bound: f32) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-bound..bound)).collect()
}

/// `len` values from N(0, 1) (PyTorch's `nn.Embedding` default).
pub fn standard_normal(rng: &mut InitRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.sample(rand_distr::StandardNormal)).collect()
}

/// PyTorch's default bound for a layer with `fan_in` inputs per output.
pub fn fan_in_bound(fan_in: usize) -> f32 {
    1.0 / (fan_in.max(1) as f32).sqrt()
}
