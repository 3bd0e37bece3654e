//! Transpose of the last two dimensions, `[B, T, C] -> [B, C, T]`: how a Mixer turns
//! "mix channels at each position" into "mix positions in each channel".
//! Backward is the same transpose applied to the gradient.

use crate::core::backend::{Backend, BackendBase};
use crate::core::{Layer, Mode, Tensor};
use crate::error::{Error, Result};

/// The backend kernel that swaps the two inner dimensions of a batch (the Mixer's switch
/// between channel and token mixing).
pub trait TransposeOps: BackendBase {
    /// `y[b, j, i] = x[b, i, j]` for `batch` matrices of `rows × cols`.
    fn transpose_batched(x: &Self::Buf, y: &mut Self::Buf, batch: usize, rows: usize, cols: usize);
}

/// Swaps the last two dimensions of a 3-D tensor.
#[derive(Default)]
pub struct Transpose;

impl<B: Backend> Layer<B> for Transpose {
    fn describe(&self) -> String {
        "transpose".into()
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input {
            [b, t, c] => Ok(vec![*b, *c, *t]),
            _ => Err(Error::Shape(format!("transpose expects [B, T, C], got {input:?}"))),
        }
    }
    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, _mode: Mode) {
        let s = x.shape();
        let (b, t, c) = (s[0], s[1], s[2]);
        y.resize(&[b, c, t]);
        B::transpose_batched(x.buf(), y.buf_mut(), b, t, c);
    }
    fn backward(&mut self, x: &Tensor<B>, _y: &Tensor<B>, dy: &Tensor<B>, dx: Option<&mut Tensor<B>>) {
        if let Some(dx) = dx {
            let s = x.shape();
            let (b, t, c) = (s[0], s[1], s[2]);
            dx.resize(&[b, t, c]);
            B::transpose_batched(dy.buf(), dx.buf_mut(), b, c, t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gradcheck::{check_layer, random_input};
    use crate::core::Cpu;

    #[test]
    fn gradient_check_and_values() {
        let x = Tensor::<Cpu>::from_slice(&[1, 2, 3], &[1., 2., 3., 4., 5., 6.]);
        let mut y = Tensor::empty();
        Layer::<Cpu>::forward(&mut Transpose, &x, &mut y, Mode::Eval);
        assert_eq!(y.shape(), &[1, 3, 2]);
        assert_eq!(y.to_vec(), vec![1., 4., 2., 5., 3., 6.]);
        check_layer(&mut Transpose, &[2, 3, 5], random_input(30, 2, 0.0), 1e-2, 1e-3);
    }
}
