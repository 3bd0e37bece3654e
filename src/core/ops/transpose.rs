//! Transpose of the last two dimensions, `[B, T, C] -> [B, C, T]`: how a Mixer turns
//! "mix channels at each position" into "mix positions in each channel".
//! Backward is the same transpose applied to the gradient.

use crate::core::backend::{Backend, BackendBase};
use crate::core::cpu::{for_each_chunk_mut, Cpu, PARALLEL_MIN_ELEMS};
use crate::core::{Layer, Mode, Tensor};
use crate::error::{Error, Result};

pub trait TransposeOps: BackendBase {
    /// `y[b, j, i] = x[b, i, j]` for `batch` matrices of `rows × cols`.
    fn transpose_batched(x: &Self::Buf, y: &mut Self::Buf, batch: usize, rows: usize, cols: usize);
}

impl TransposeOps for Cpu {
    fn transpose_batched(x: &Vec<f32>, y: &mut Vec<f32>, batch: usize, rows: usize, cols: usize) {
        let per = rows * cols;
        let chunk = if batch * per < PARALLEL_MIN_ELEMS { batch * per } else { per * batch.div_ceil(8).max(1) };
        for_each_chunk_mut(&mut y[..batch * per], chunk, |t, out| {
            let b0 = t * chunk / per.max(1);
            for (bi, o) in out.chunks_exact_mut(per).enumerate() {
                let xin = &x[(b0 + bi) * per..(b0 + bi + 1) * per];
                // blocked to keep both sides in cache
                const BLK: usize = 16;
                for i0 in (0..rows).step_by(BLK) {
                    for j0 in (0..cols).step_by(BLK) {
                        for i in i0..(i0 + BLK).min(rows) {
                            for j in j0..(j0 + BLK).min(cols) {
                                o[j * rows + i] = xin[i * cols + j];
                            }
                        }
                    }
                }
            }
        });
    }
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
