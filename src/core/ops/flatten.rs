//! Flatten: `[B, d1, d2, ..] -> [B, d1·d2·..]`. Values are already contiguous, so forward and
//! backward are copies.

use crate::core::backend::Backend;
use crate::core::{Layer, Mode, Tensor};
use crate::error::{Error, Result};

#[derive(Default)]
pub struct Flatten;

impl<B: Backend> Layer<B> for Flatten {
    fn describe(&self) -> String {
        "flatten".into()
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input.split_first() {
            Some((b, rest)) => Ok(vec![*b, rest.iter().product()]),
            None => Err(Error::Shape("flatten needs a batch dimension".into())),
        }
    }
    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, _mode: Mode) {
        y.resize(&[x.rows(), x.row_len()]);
        B::copy(x.buf(), y.buf_mut());
    }
    fn backward(&mut self, x: &Tensor<B>, _y: &Tensor<B>, dy: &Tensor<B>, dx: Option<&mut Tensor<B>>) {
        if let Some(dx) = dx {
            dx.resize(x.shape());
            B::copy(dy.buf(), dx.buf_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gradcheck::{check_layer, random_input};
    use crate::core::Cpu;

    #[test]
    fn gradient_check() {
        let mut f = Flatten;
        assert_eq!(Layer::<Cpu>::output_shape(&f, &[2, 3, 4]).unwrap(), vec![2, 12]);
        check_layer(&mut f, &[2, 3, 4], random_input(24, 1, 0.0), 1e-2, 1e-3);
    }
}
