//! Multi-head scaled dot-product attention, `[B, L, 3D] -> [B, L, D]`: the input holds each
//! position's query, key and value (`[q | k | v]`, from a linear layer), `H` heads of `d = D/H`
//! values each. Per batch element and head:
//!
//! ```text
//! S = Q·Kᵀ            P = softmax(S / √d)  (causal: query i sees keys j ≤ i)      O = P·V
//! dP = dO·Vᵀ          dV = Pᵀ·dO           dS = P ⊙ (dP − rowsum(P ⊙ dP)) / √d
//! dQ = dS·K           dK = dSᵀ·Q
//! ```
//!
//! Every product is a strided GEMM over the batch ([`crate::core::BackendBase::matmul_batched`]), the
//! softmax is [`super::softmax`]'s kernel: no kernel of its own, so every backend has it.
//! Attention scores a pair of positions by their contents wherever they are: the mechanism a
//! model needs when related tokens are far apart (`cnnlab reproduce --dataset recall`).

use crate::core::backend::Backend;
use crate::core::{Layer, Mode, Tensor};
use crate::error::{Error, Result};

/// Attention without parameters (the projections around it are [`super::Linear`] layers).
pub struct Attention<B: Backend> {
    pub heads: usize,
    pub causal: bool,
    /// Scores, then (backward) their gradient `[B, H, L, L]`.
    scores: Tensor<B>,
    /// Attention weights `P` `[B, H, L, L]`, kept for backward (and for analyses).
    probs: Tensor<B>,
    /// Gradient of the weights, `dP`.
    dprobs: Tensor<B>,
}

impl<B: Backend> Attention<B> {
    pub fn new(heads: usize, causal: bool) -> Self {
        Self { heads, causal, scores: Tensor::empty(), probs: Tensor::empty(), dprobs: Tensor::empty() }
    }

    /// The attention weights of the last forward pass, `[B, H, L, L]` (query by key).
    pub fn weights(&self) -> &Tensor<B> {
        &self.probs
    }

    /// (batch, positions, model width D, head width d).
    fn dims(&self, x: &Tensor<B>) -> (usize, usize, usize, usize) {
        let (b, l) = (x.rows(), x.shape().get(1).copied().unwrap_or(0));
        let dim = x.last_dim() / 3;
        (b, l, dim, dim / self.heads.max(1))
    }
}

impl<B: Backend> Layer<B> for Attention<B> {
    fn describe(&self) -> String {
        format!("attention({} heads{})", self.heads, if self.causal { ", causal" } else { "" })
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input {
            [b, l, d3] if *l > 0 && d3 % 3 == 0 && self.heads > 0 && (d3 / 3) % self.heads == 0 && *d3 > 0 => {
                Ok(vec![*b, *l, d3 / 3])
            }
            _ => Err(Error::Shape(format!(
                "{} expects [B, L, 3·D] with D a multiple of the heads, got {input:?}",
                self.describe()
            ))),
        }
    }
    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, _mode: Mode) {
        let (b, l, dim, d) = self.dims(x);
        let h = self.heads;
        let (row, ll) = (3 * dim, l * l);
        y.resize(&[b, l, dim]);
        self.scores.resize(&[b, h, l, l]);
        self.probs.resize(&[b, h, l, l]);
        for head in 0..h {
            let (q, k) = (head * d, dim + head * d);
            let s_off = head * ll;
            // S = Q·Kᵀ
            B::matmul_batched(
                b,
                (l, l, d),
                (x.buf(), q, row, 1, l * row),
                (x.buf(), k, 1, row, l * row),
                (self.scores.buf_mut(), s_off, l, h * ll),
                false,
            );
        }
        B::softmax_forward(self.scores.buf(), self.probs.buf_mut(), b * h * l, l, 1.0 / (d as f32).sqrt(), self.causal);
        for head in 0..h {
            let v = 2 * dim + head * d;
            // O = P·V, written into this head's columns of the output
            B::matmul_batched(
                b,
                (l, d, l),
                (self.probs.buf(), head * ll, l, 1, h * ll),
                (x.buf(), v, row, 1, l * row),
                (y.buf_mut(), head * d, dim, l * dim),
                false,
            );
        }
    }
    fn backward(&mut self, x: &Tensor<B>, _y: &Tensor<B>, dy: &Tensor<B>, dx: Option<&mut Tensor<B>>) {
        let Some(dx) = dx else { return };
        let (b, l, dim, d) = self.dims(x);
        let h = self.heads;
        let (row, ll) = (3 * dim, l * l);
        dx.resize(x.shape());
        self.dprobs.resize(&[b, h, l, l]);
        for head in 0..h {
            let (v, o) = (2 * dim + head * d, head * d);
            // dP = dO·Vᵀ
            B::matmul_batched(
                b,
                (l, l, d),
                (dy.buf(), o, dim, 1, l * dim),
                (x.buf(), v, 1, row, l * row),
                (self.dprobs.buf_mut(), head * ll, l, h * ll),
                false,
            );
            // dV = Pᵀ·dO
            B::matmul_batched(
                b,
                (l, d, l),
                (self.probs.buf(), head * ll, 1, l, h * ll),
                (dy.buf(), o, dim, 1, l * dim),
                (dx.buf_mut(), v, row, l * row),
                false,
            );
        }
        // dS (into the scores' buffer, no longer needed)
        B::softmax_backward(
            self.probs.buf(),
            self.dprobs.buf(),
            self.scores.buf_mut(),
            b * h * l,
            l,
            1.0 / (d as f32).sqrt(),
        );
        for head in 0..h {
            let (q, k) = (head * d, dim + head * d);
            // dQ = dS·K
            B::matmul_batched(
                b,
                (l, d, l),
                (self.scores.buf(), head * ll, l, 1, h * ll),
                (x.buf(), k, row, 1, l * row),
                (dx.buf_mut(), q, row, l * row),
                false,
            );
            // dK = dSᵀ·Q
            B::matmul_batched(
                b,
                (l, d, l),
                (self.scores.buf(), head * ll, 1, l, h * ll),
                (x.buf(), q, row, 1, l * row),
                (dx.buf_mut(), k, row, l * row),
                false,
            );
        }
    }
    fn macs(&self, input: &[usize]) -> u64 {
        match input {
            [b, l, d3] => (2 * b * l * l * (d3 / 3)) as u64,
            _ => 0,
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
        // 2 heads of 3 values over 5 positions, with and without the causal mask
        for causal in [false, true] {
            let mut a = Attention::<Cpu>::new(2, causal);
            check_layer(&mut a, &[2, 5, 18], random_input(180, 7, 0.0), 1e-2, 3e-3);
        }
    }

    /// Against the definition, computed directly for one head.
    #[test]
    fn matches_direct_definition() {
        let (l, dim) = (4, 2);
        let x = random_input(l * 3 * dim, 3, 0.0);
        let mut a = Attention::<Cpu>::new(1, true);
        let mut y = Tensor::empty();
        a.forward(&Tensor::<Cpu>::from_slice(&[1, l, 3 * dim], &x), &mut y, Mode::Eval);
        let at = |i: usize, part: usize, c: usize| x[i * 3 * dim + part * dim + c];
        for i in 0..l {
            let s: Vec<f32> = (0..=i)
                .map(|j| (0..dim).map(|c| at(i, 0, c) * at(j, 1, c)).sum::<f32>() / (dim as f32).sqrt())
                .collect();
            let m = s.iter().cloned().fold(f32::MIN, f32::max);
            let z: f32 = s.iter().map(|v| (v - m).exp()).sum();
            for c in 0..dim {
                let want: f32 = (0..=i).map(|j| (s[j] - m).exp() / z * at(j, 2, c)).sum();
                let got = y.to_vec()[i * dim + c];
                assert!((got - want).abs() < 1e-5, "position {i}, channel {c}: {got} vs {want}");
            }
        }
    }
}
