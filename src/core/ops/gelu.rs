//! GELU, the exact form PyTorch uses by default: `y = x·Φ(x)`, `Φ` the normal CDF;
//! `dy/dx = Φ(x) + x·φ(x)`.

use crate::core::backend::{Backend, BackendBase};
use crate::core::cpu::{chunking, Cpu, PARALLEL_MIN_ELEMS};
use crate::core::{Layer, Mode, Tensor};
use crate::error::Result;
use rayon::prelude::*;

pub trait GeluOps: BackendBase {
    fn gelu_forward(x: &Self::Buf, y: &mut Self::Buf);
    fn gelu_backward(x: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf);
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * FRAC_1_SQRT_2))
}

fn gelu_grad(x: f32) -> f32 {
    0.5 * (1.0 + libm::erff(x * FRAC_1_SQRT_2)) + x * FRAC_1_SQRT_2PI * (-0.5 * x * x).exp()
}

impl GeluOps for Cpu {
    fn gelu_forward(x: &Vec<f32>, y: &mut Vec<f32>) {
        let f = |o: &mut [f32], i: &[f32]| o.iter_mut().zip(i).for_each(|(o, i)| *o = gelu(*i));
        if x.len() < PARALLEL_MIN_ELEMS {
            f(y, x);
        } else {
            let c = chunking(x.len(), 4096);
            y.par_chunks_mut(c).zip(x.par_chunks(c)).for_each(|(o, i)| f(o, i));
        }
    }

    fn gelu_backward(x: &Vec<f32>, dy: &Vec<f32>, dx: &mut Vec<f32>) {
        let f = |d: &mut [f32], i: &[f32], g: &[f32]| {
            d.iter_mut().zip(i).zip(g).for_each(|((d, i), g)| *d = g * gelu_grad(*i))
        };
        if x.len() < PARALLEL_MIN_ELEMS {
            f(dx, x, dy);
        } else {
            let c = chunking(x.len(), 4096);
            dx.par_chunks_mut(c).zip(x.par_chunks(c)).zip(dy.par_chunks(c)).for_each(|((d, i), g)| f(d, i, g));
        }
    }
}

/// The GELU layer.
#[derive(Default)]
pub struct Gelu;

impl<B: Backend> Layer<B> for Gelu {
    fn describe(&self) -> String {
        "gelu".into()
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }
    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, _mode: Mode) {
        y.resize(x.shape());
        B::gelu_forward(x.buf(), y.buf_mut());
    }
    fn backward(&mut self, x: &Tensor<B>, _y: &Tensor<B>, dy: &Tensor<B>, dx: Option<&mut Tensor<B>>) {
        if let Some(dx) = dx {
            dx.resize(x.shape());
            B::gelu_backward(x.buf(), dy.buf(), dx.buf_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gradcheck::{check_layer, random_input};

    #[test]
    fn gradient_check() {
        let x: Vec<f32> = random_input(40, 6, 0.0).iter().map(|v| v * 3.0).collect();
        check_layer(&mut Gelu, &[4, 10], x, 1e-2, 1e-3);
    }

    #[test]
    fn known_values() {
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-1.0) + 0.158_655_3).abs() < 1e-6);
    }
}
