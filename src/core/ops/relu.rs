//! ReLU: `y = max(x, 0)`; backward passes `dy` where `y > 0`.

use crate::core::backend::{Backend, BackendBase};
use crate::core::{Layer, Mode, Tensor};
use crate::error::Result;

/// The backend kernels of ReLU.
pub trait ReluOps: BackendBase {
    fn relu_forward(x: &Self::Buf, y: &mut Self::Buf);
    fn relu_backward(y: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf);
}

/// The ReLU layer.
#[derive(Default)]
pub struct Relu;

impl<B: Backend> Layer<B> for Relu {
    fn reads(&self) -> crate::core::layer::Reads {
        crate::core::layer::Reads::Pointwise
    }
    fn is_nonlinearity(&self) -> bool {
        true
    }
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
