//! The pre-LN transformer encoder block (GPT-2's arrangement), on `[B, L, D]`:
//!
//! ```text
//! x = x + Wo·attention(Wqkv·LN(x))        (multi-head, optionally causal)
//! x = x + W2·gelu(W1·LN(x))
//! ```
//!
//! Built from existing layers ([`Residual`], [`LayerNorm`], [`Linear`], [`Attention`],
//! [`Gelu`]), so its backward is theirs; the gradient check below checks the composition.

use crate::core::init::InitRng;
use crate::core::layer::Sequential;
use crate::core::ops::{Attention, Gelu, LayerNorm, Linear, Residual};
use crate::core::{Backend, Layer};

/// One block of width `dim` with `heads` heads and an MLP of `hidden` units.
pub fn transformer_block<B: Backend>(
    dim: usize,
    heads: usize,
    hidden: usize,
    causal: bool,
    rng: &mut InitRng,
) -> Sequential<B> {
    let attend: Vec<Box<dyn Layer<B>>> = vec![
        Box::new(LayerNorm::new(dim)),
        Box::new(Linear::new(dim, 3 * dim, rng)),
        Box::new(Attention::new(heads, causal)),
        Box::new(Linear::new(dim, dim, rng)),
    ];
    let mlp: Vec<Box<dyn Layer<B>>> = vec![
        Box::new(LayerNorm::new(dim)),
        Box::new(Linear::new(dim, hidden, rng)),
        Box::new(Gelu::default()),
        Box::new(Linear::new(hidden, dim, rng)),
    ];
    Sequential::new(vec![Box::new(Residual::new(attend)), Box::new(Residual::new(mlp))])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gradcheck::{check_layer, random_input};
    use crate::core::Cpu;
    use rand::SeedableRng;

    #[test]
    fn gradient_check() {
        for causal in [false, true] {
            let mut block = transformer_block::<Cpu>(4, 2, 8, causal, &mut InitRng::seed_from_u64(4));
            check_layer(&mut block, &[2, 3, 4], random_input(24, 8, 0.0), 1e-2, 5e-3);
        }
    }
}
