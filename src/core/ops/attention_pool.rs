//! Attention pooling, `[B, L, D] -> [B, D]`: a learned query `q` scores every position,
//! `a = softmax(X·q / √D)` over positions, and the output is `Σ_i a_i·x_i`. The query starts
//! at zero, so the layer starts as the mean over positions and learns where to look (the query
//! position of the recall task, wherever a permutation puts it). Like the mean, it does not
//! depend on the order of positions: permuting them permutes the weights with them.
//!
//! Backward: `da_i = x_i·dy`, `ds = a ⊙ (da − Σ a·da) / √D`, `dx_i = a_i·dy + ds_i·q`,
//! `dq = Σ_{b,i} ds_i·x_i`; every product a GEMM, the softmax [`super::softmax`]'s kernel.

use crate::core::backend::Backend;
use crate::core::{Layer, Mode, Param, Tensor};
use crate::error::{Error, Result};

/// Pools positions with learned attention weights.
pub struct AttentionPool<B: Backend> {
    pub dim: usize,
    pub query: Param<B>,
    scores: Tensor<B>,
    /// The weights of the last forward pass, `[B, L]`.
    weights: Tensor<B>,
    dweights: Tensor<B>,
}

impl<B: Backend> AttentionPool<B> {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            query: Param::new("query", &[dim], &vec![0.0; dim], false),
            scores: Tensor::empty(),
            weights: Tensor::empty(),
            dweights: Tensor::empty(),
        }
    }

    /// The pooling weights of the last forward pass, `[B, L]`.
    pub fn weights(&self) -> &Tensor<B> {
        &self.weights
    }

    fn scale(&self) -> f32 {
        1.0 / (self.dim as f32).sqrt()
    }
}

impl<B: Backend> Layer<B> for AttentionPool<B> {
    fn describe(&self) -> String {
        format!("attention-pool({})", self.dim)
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input {
            [b, l, d] if *l > 0 && *d == self.dim => Ok(vec![*b, *d]),
            _ => Err(Error::Shape(format!("{} expects [B, L, {}], got {input:?}", self.describe(), self.dim))),
        }
    }
    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, _mode: Mode) {
        let (b, d) = (x.rows(), self.dim);
        let l = x.len() / (b * d).max(1);
        self.scores.resize(&[b, l]);
        self.weights.resize(&[b, l]);
        y.resize(&[b, d]);
        // s = X·q over all B·L positions
        B::matmul(
            b * l,
            1,
            d,
            (x.buf(), 0, d, 1),
            (self.query.value.buf(), 0, 1, 1),
            (self.scores.buf_mut(), 0, 1),
            false,
        );
        let scale = self.scale();
        B::softmax_forward(self.scores.buf(), self.weights.buf_mut(), b, l, scale, false);
        // y_b = a_bᵀ·X_b
        B::matmul_batched(
            b,
            (1, d, l),
            (self.weights.buf(), 0, l, 1, l),
            (x.buf(), 0, d, 1, l * d),
            (y.buf_mut(), 0, d, d),
            false,
        );
    }
    fn backward(&mut self, x: &Tensor<B>, _y: &Tensor<B>, dy: &Tensor<B>, dx: Option<&mut Tensor<B>>) {
        let (b, d) = (x.rows(), self.dim);
        let l = x.len() / (b * d).max(1);
        self.dweights.resize(&[b, l]);
        // da_b = X_b·dy_b
        B::matmul_batched(
            b,
            (l, 1, d),
            (x.buf(), 0, d, 1, l * d),
            (dy.buf(), 0, 1, 1, d),
            (self.dweights.buf_mut(), 0, 1, l),
            false,
        );
        // ds (into the scores' buffer)
        let scale = self.scale();
        B::softmax_backward(self.weights.buf(), self.dweights.buf(), self.scores.buf_mut(), b, l, scale);
        // dq = Σ ds_i·x_i
        B::matmul(
            1,
            d,
            b * l,
            (self.scores.buf(), 0, b * l, 1),
            (x.buf(), 0, d, 1),
            (self.query.grad.buf_mut(), 0, d),
            false,
        );
        if let Some(dx) = dx {
            dx.resize(x.shape());
            // dx_b = a_b·dy_bᵀ (an outer product per example), then += ds·qᵀ
            B::matmul_batched(
                b,
                (l, d, 1),
                (self.weights.buf(), 0, 1, 1, l),
                (dy.buf(), 0, d, 1, d),
                (dx.buf_mut(), 0, d, l * d),
                false,
            );
            B::matmul(
                b * l,
                d,
                1,
                (self.scores.buf(), 0, 1, 1),
                (self.query.value.buf(), 0, d, 1),
                (dx.buf_mut(), 0, d),
                true,
            );
        }
    }
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param<B>)) {
        f(&mut self.query);
    }
    fn visit_params_ref(&self, f: &mut dyn FnMut(&Param<B>)) {
        f(&self.query);
    }
    fn macs(&self, input: &[usize]) -> u64 {
        2 * input.iter().product::<usize>() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gradcheck::{check_layer, random_input};
    use crate::core::Cpu;

    #[test]
    fn gradient_check() {
        let mut p = AttentionPool::<Cpu>::new(4);
        // a non-zero query, so the weights are not uniform
        p.query.value = Tensor::from_slice(&[4], &random_input(4, 21, 0.3));
        check_layer(&mut p, &[3, 5, 4], random_input(60, 22, 0.0), 1e-2, 3e-3);
    }

    #[test]
    fn starts_as_the_mean() {
        let mut p = AttentionPool::<Cpu>::new(2);
        let x = Tensor::<Cpu>::from_slice(&[1, 3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 9.0]);
        let mut y = Tensor::empty();
        p.forward(&x, &mut y, Mode::Eval);
        assert_eq!(y.to_vec(), [3.0, 5.0]);
    }
}
