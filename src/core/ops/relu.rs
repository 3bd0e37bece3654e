//! ReLU: `y = max(x, 0)`; backward passes `dy` where `y > 0`.

use crate::core::backend::{Backend, BackendBase};
use crate::core::cpu::{chunking, Cpu, PARALLEL_MIN_ELEMS};
use crate::core::{Layer, Mode, Tensor};
use crate::error::Result;
use rayon::prelude::*;

pub trait ReluOps: BackendBase {
    fn relu_forward(x: &Self::Buf, y: &mut Self::Buf);
    fn relu_backward(y: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf);
}

impl ReluOps for Cpu {
    fn relu_forward(x: &Vec<f32>, y: &mut Vec<f32>) {
        let f = |(o, i): (&mut f32, &f32)| *o = i.max(0.0);
        if x.len() < PARALLEL_MIN_ELEMS {
            y.iter_mut().zip(x.iter()).for_each(f);
        } else {
            let c = chunking(x.len(), PARALLEL_MIN_ELEMS / 4);
            y.par_chunks_mut(c).zip(x.par_chunks(c)).for_each(|(o, i)| o.iter_mut().zip(i).for_each(f));
        }
    }

    fn relu_backward(y: &Vec<f32>, dy: &Vec<f32>, dx: &mut Vec<f32>) {
        let f = |((d, o), g): ((&mut f32, &f32), &f32)| *d = if *o > 0.0 { *g } else { 0.0 };
        if y.len() < PARALLEL_MIN_ELEMS {
            dx.iter_mut().zip(y.iter()).zip(dy.iter()).for_each(f);
        } else {
            let c = chunking(y.len(), PARALLEL_MIN_ELEMS / 4);
            dx.par_chunks_mut(c)
                .zip(y.par_chunks(c))
                .zip(dy.par_chunks(c))
                .for_each(|((d, o), g)| d.iter_mut().zip(o).zip(g).for_each(f));
        }
    }
}

/// The ReLU layer.
#[derive(Default)]
pub struct Relu;

impl<B: Backend> Layer<B> for Relu {
    fn describe(&self) -> String {
        "relu".into()
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }
    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, _mode: Mode) {
        y.resize(x.shape());
        B::relu_forward(x.buf(), y.buf_mut());
    }
    fn backward(&mut self, _x: &Tensor<B>, y: &Tensor<B>, dy: &Tensor<B>, dx: Option<&mut Tensor<B>>) {
        if let Some(dx) = dx {
            dx.resize(y.shape());
            B::relu_backward(y.buf(), dy.buf(), dx.buf_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gradcheck::{check_layer, random_input};

    #[test]
    fn gradient_check() {
        check_layer(&mut Relu, &[3, 11], random_input(33, 5, 0.05), 1e-2, 1e-3);
    }
}
