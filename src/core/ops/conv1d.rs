//! 1-D convolution, `[B, L, Cin] -> [B, OL, Cout]`: the 2-D kernels with a 1×k window (one
//! implementation, so the 1-D and 2-D paths cannot drift apart).

use crate::core::backend::Backend;
use crate::core::init::InitRng;
use crate::core::ops::conv2d::Conv;

/// A 1-D convolution with kernel `k`, stride `s`, padding `p` on each side.
pub fn conv1d<B: Backend>(cin: usize, cout: usize, k: usize, s: usize, p: usize, rng: &mut InitRng) -> Conv<B> {
    Conv::new(cin, cout, (1, k), (1, s), (0, p), rng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gradcheck::{check_layer, random_input};
    use crate::core::{Cpu, Layer, Mode, Tensor};
    use rand::SeedableRng;

    #[test]
    fn gradient_check_mnist1d_shapes() {
        let mut rng = InitRng::seed_from_u64(9);
        // the MNIST-1D CNN's first layer: k5, s2, p1 on length 40 -> 19
        let mut c = conv1d::<Cpu>(1, 3, 5, 2, 1, &mut rng);
        assert_eq!(c.output_shape(&[2, 40, 1]).unwrap(), vec![2, 19, 3]);
        check_layer(&mut c, &[2, 40, 1], random_input(80, 10, 0.0), 1e-2, 3e-3);
        let mut c = conv1d::<Cpu>(3, 2, 3, 1, 1, &mut rng);
        check_layer(&mut c, &[2, 7, 3], random_input(42, 11, 0.0), 1e-2, 3e-3);
    }

    #[test]
    fn matches_direct_definition() {
        let mut rng = InitRng::seed_from_u64(2);
        let mut c = conv1d::<Cpu>(2, 1, 3, 2, 1, &mut rng);
        let x: Vec<f32> = (0..10).map(|i| i as f32 * 0.1 - 0.3).collect(); // [1, 5, 2]
        let xt = Tensor::<Cpu>::from_slice(&[1, 5, 2], &x);
        let mut y = Tensor::empty();
        c.forward(&xt, &mut y, Mode::Eval);
        let w = c.weight.value.to_vec(); // [1, 3*2] ordered (tap, channel)
        let b = c.bias.value.to_vec()[0];
        for (o, got) in y.to_vec().iter().enumerate() {
            let mut want = b;
            for tap in 0..3 {
                let pos = (o * 2 + tap) as isize - 1;
                if (0..5).contains(&pos) {
                    for ch in 0..2 {
                        want += w[tap * 2 + ch] * x[pos as usize * 2 + ch];
                    }
                }
            }
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }
}
