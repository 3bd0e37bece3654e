//! Linear (fully connected) layer on the last dimension: `y = x·Wᵀ + b`.
//!
//! `W` is `[out, in]` (PyTorch's layout). Leading dimensions are flattened into rows, so the
//! same layer is an MLP layer on `[B, in]` and a per-position (or per-channel) mixing layer on
//! `[B, T, in]`. Backward: `dW = dyᵀ·x`, `db = Σ_rows dy`, `dx = dy·W` — three GEMMs' worth.

use crate::core::backend::{Backend, BackendBase};
use crate::core::init::{fan_in_bound, uniform, InitRng};
use crate::core::{Layer, Mode, Param, Tensor};
use crate::error::{Error, Result};

/// Row-broadcast and column-reduction kernels shared by every layer with a bias.
pub trait LinearOps: BackendBase {
    /// Adds `bias` to each of `rows` rows of `y` (row length `n`).
    fn add_bias_rows(y: &mut Self::Buf, bias: &Self::Buf, rows: usize, n: usize);
    /// `db[j] = Σ_i dy[i, j]` over `rows` rows of length `n` (fixed summation order).
    fn sum_rows(dy: &Self::Buf, db: &mut Self::Buf, rows: usize, n: usize);
}

/// `shape` with its last dimension replaced, on the stack (no allocation in the hot path).
pub(crate) fn with_last_dim(shape: &[usize], last: usize) -> crate::core::tensor::Shape {
    let mut s = crate::core::tensor::Shape::from(shape);
    s.set_last(last);
    s
}

/// A fully connected layer on the last dimension.
pub struct Linear<B: Backend> {
    pub in_features: usize,
    pub out_features: usize,
    pub weight: Param<B>,
    pub bias: Param<B>,
}

impl<B: Backend> Linear<B> {
    /// PyTorch-default initialisation.
    pub fn new(in_features: usize, out_features: usize, rng: &mut InitRng) -> Self {
        let bound = fan_in_bound(in_features);
        let w = uniform(rng, in_features * out_features, bound);
        let b = uniform(rng, out_features, bound);
        Self {
            in_features,
            out_features,
            weight: Param::new("weight", &[out_features, in_features], &w, true),
            bias: Param::new("bias", &[out_features], &b, false),
        }
    }
}

impl<B: Backend> Layer<B> for Linear<B> {
    fn reads(&self) -> crate::core::layer::Reads {
        crate::core::layer::Reads::Linear { inputs: self.in_features }
    }
    fn describe(&self) -> String {
        format!("linear({}->{})", self.in_features, self.out_features)
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        match input.last() {
            Some(&d) if d == self.in_features && input.len() >= 2 => {
                let mut s = input.to_vec();
                let last = s.len() - 1;
                s[last] = self.out_features;
                Ok(s)
            }
            _ => Err(Error::Shape(format!("{} expects [.., {}], got {input:?}", self.describe(), self.in_features))),
        }
    }

    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, _mode: Mode) {
        let (i, o) = (self.in_features, self.out_features);
        let rows = x.len() / i;
        y.resize(&with_last_dim(x.shape(), o));
        B::matmul(rows, o, i, (x.buf(), 0, i, 1), (self.weight.value.buf(), 0, 1, i), (y.buf_mut(), 0, o), false);
        B::add_bias_rows(y.buf_mut(), self.bias.value.buf(), rows, o);
    }

    fn backward(&mut self, x: &Tensor<B>, _y: &Tensor<B>, dy: &Tensor<B>, dx: Option<&mut Tensor<B>>) {
        let (i, o) = (self.in_features, self.out_features);
        let rows = x.len() / i;
        B::matmul(o, i, rows, (dy.buf(), 0, 1, o), (x.buf(), 0, i, 1), (self.weight.grad.buf_mut(), 0, i), false);
        B::sum_rows(dy.buf(), self.bias.grad.buf_mut(), rows, o);
        if let Some(dx) = dx {
            dx.resize(x.shape());
            B::matmul(rows, i, o, (dy.buf(), 0, o, 1), (self.weight.value.buf(), 0, i, 1), (dx.buf_mut(), 0, i), false);
        }
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param<B>)) {
        f(&mut self.weight);
        f(&mut self.bias);
    }

    fn visit_params_ref(&self, f: &mut dyn FnMut(&Param<B>)) {
        f(&self.weight);
        f(&self.bias);
    }

    fn macs(&self, input: &[usize]) -> u64 {
        let rows: usize = input.iter().rev().skip(1).product();
        (rows * self.in_features * self.out_features) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gradcheck::{check_layer, random_input};
    use crate::core::Cpu;
    use rand::SeedableRng;

    #[test]
    fn gradient_check_2d_and_3d_inputs() {
        let mut rng = InitRng::seed_from_u64(1);
        let mut l = Linear::<Cpu>::new(7, 5, &mut rng);
        check_layer(&mut l, &[4, 7], random_input(28, 2, 0.0), 1e-2, 2e-3);
        check_layer(&mut l, &[2, 3, 7], random_input(42, 3, 0.0), 1e-2, 2e-3);
    }

    #[test]
    fn forward_matches_definition() {
        let mut rng = InitRng::seed_from_u64(1);
        let mut l = Linear::<Cpu>::new(3, 2, &mut rng);
        let x = Tensor::<Cpu>::from_slice(&[1, 3], &[1.0, 2.0, 3.0]);
        let mut y = Tensor::empty();
        l.forward(&x, &mut y, Mode::Eval);
        let w = l.weight.value.to_vec();
        let b = l.bias.value.to_vec();
        for j in 0..2 {
            let want = b[j] + w[j * 3] + 2.0 * w[j * 3 + 1] + 3.0 * w[j * 3 + 2];
            assert!((y.to_vec()[j] - want).abs() < 1e-6);
        }
    }
}
