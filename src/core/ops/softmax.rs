//! Softmax over the last axis: `y_j = exp(s·x_j − max) / Σ_k exp(s·x_k − max)` per row, with an
//! optional scale `s` (attention's 1/√d) and causal mask (row `i` of each n×n block sees only
//! columns `j ≤ i`; masked entries are exactly 0). Backward: `dx = s·y ⊙ (dy − Σ_k y_k·dy_k)`.

use crate::core::backend::{Backend, BackendBase};
use crate::core::{Layer, Mode, Tensor};
use crate::error::{Error, Result};

/// The backend kernels of the row softmax.
pub trait SoftmaxOps: BackendBase {
    /// Softmax of each of `rows` rows of length `n`, of the inputs scaled by `scale`. With
    /// `causal`, row `r` keeps only its first `r % n + 1` columns (the rows are n×n blocks of
    /// attention scores, query by key).
    fn softmax_forward(x: &Self::Buf, y: &mut Self::Buf, rows: usize, n: usize, scale: f32, causal: bool);
    /// `dx = scale · y ⊙ (dy − Σ y·dy)` per row (`dx` may not alias `dy`).
    fn softmax_backward(y: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf, rows: usize, n: usize, scale: f32);
}

/// Softmax over the last dimension (no parameters).
#[derive(Clone, Copy, Debug, Default)]
pub struct Softmax {
    pub causal: bool,
}

impl<B: Backend> Layer<B> for Softmax {
    fn describe(&self) -> String {
        if self.causal {
            "softmax(causal)".into()
        } else {
            "softmax".into()
        }
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let n = input.last().copied().unwrap_or(0);
        if n == 0 {
            return Err(Error::Shape(format!("softmax needs a non-empty last axis, got {input:?}")));
        }
        if self.causal && (input.len() < 2 || input[input.len() - 2] != n) {
            return Err(Error::Shape(format!("a causal softmax needs square [.., n, n] blocks, got {input:?}")));
        }
        Ok(input.to_vec())
    }
    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, _mode: Mode) {
        let n = x.last_dim();
        y.resize(x.shape());
        B::softmax_forward(x.buf(), y.buf_mut(), x.len() / n, n, 1.0, self.causal);
    }
    fn backward(&mut self, x: &Tensor<B>, y: &Tensor<B>, dy: &Tensor<B>, dx: Option<&mut Tensor<B>>) {
        if let Some(dx) = dx {
            let n = x.last_dim();
            dx.resize(x.shape());
            B::softmax_backward(y.buf(), dy.buf(), dx.buf_mut(), x.len() / n, n, 1.0);
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
        check_layer(&mut Softmax::default(), &[3, 7], random_input(21, 5, 0.0), 1e-2, 3e-3);
        // causal: two 4x4 blocks of scores
        check_layer(&mut Softmax { causal: true }, &[2, 4, 4], random_input(32, 6, 0.0), 1e-2, 3e-3);
    }

    #[test]
    fn rows_sum_to_one_and_the_mask_is_exact() {
        let x = Tensor::<Cpu>::from_slice(
            &[1, 3, 3],
            &random_input(9, 1, 0.0).iter().map(|v| v * 50.0).collect::<Vec<_>>(),
        );
        let mut y = Tensor::empty();
        Layer::<Cpu>::forward(&mut Softmax { causal: true }, &x, &mut y, Mode::Eval);
        let y = y.to_vec();
        for (i, row) in y.chunks(3).enumerate() {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{row:?}");
            assert!(row[i + 1..].iter().all(|&v| v == 0.0), "row {i} sees the future: {row:?}");
        }
        assert_eq!(y[0], 1.0, "the first query sees only itself");
    }
}
