//! LayerNorm over the last dimension: `y = (x − μ)/√(σ² + ε) · γ + β`, per row.
//! Backward with `x̂ = (x − μ)·r`, `g = dy·γ`: `dx = r·(g − mean(g) − x̂·mean(g·x̂))`,
//! `dγ = Σ_rows dy·x̂`, `dβ = Σ_rows dy`.

use crate::core::backend::{Backend, BackendBase};
use crate::core::{Layer, Mode, Param, Tensor};
use crate::error::{Error, Result};

/// The backend kernels of LayerNorm (over the last dimension of each row).
pub trait LayerNormOps: BackendBase {
    /// Normalises `rows` rows of length `d`; stores each row's mean and 1/σ.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_forward(
        x: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        y: &mut Self::Buf,
        mean: &mut Self::Buf,
        rstd: &mut Self::Buf,
        rows: usize,
        d: usize,
        eps: f32,
    );
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_backward(
        x: &Self::Buf,
        dy: &Self::Buf,
        gamma: &Self::Buf,
        mean: &Self::Buf,
        rstd: &Self::Buf,
        dx: Option<&mut Self::Buf>,
        dgamma: &mut Self::Buf,
        dbeta: &mut Self::Buf,
        rows: usize,
        d: usize,
    );
}

/// LayerNorm with a learned scale and shift over the last dimension.
pub struct LayerNorm<B: Backend> {
    pub dim: usize,
    pub eps: f32,
    pub gamma: Param<B>,
    pub beta: Param<B>,
    mean: Tensor<B>,
    rstd: Tensor<B>,
}

impl<B: Backend> LayerNorm<B> {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            eps: 1e-5,
            gamma: Param::new("gamma", &[dim], &vec![1.0; dim], false),
            beta: Param::new("beta", &[dim], &vec![0.0; dim], false),
            mean: Tensor::empty(),
            rstd: Tensor::empty(),
        }
    }
}

impl<B: Backend> Layer<B> for LayerNorm<B> {
    fn reads(&self) -> crate::core::layer::Reads {
        crate::core::layer::Reads::Pointwise
    }
    fn describe(&self) -> String {
        format!("layer-norm({})", self.dim)
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        if input.last() != Some(&self.dim) {
            return Err(Error::Shape(format!("{} expects [.., {}], got {input:?}", self.describe(), self.dim)));
        }
        Ok(input.to_vec())
    }
    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, _mode: Mode) {
        let rows = x.len() / self.dim;
        y.resize(x.shape());
        self.mean.resize(&[rows]);
        self.rstd.resize(&[rows]);
        B::layer_norm_forward(
            x.buf(),
            self.gamma.value.buf(),
            self.beta.value.buf(),
            y.buf_mut(),
            self.mean.buf_mut(),
            self.rstd.buf_mut(),
            rows,
            self.dim,
            self.eps,
        );
    }
    fn backward(&mut self, x: &Tensor<B>, _y: &Tensor<B>, dy: &Tensor<B>, dx: Option<&mut Tensor<B>>) {
        let rows = x.len() / self.dim;
        let dx = dx.map(|t| {
            t.resize(x.shape());
            t.buf_mut()
        });
        B::layer_norm_backward(
            x.buf(),
            dy.buf(),
            self.gamma.value.buf(),
            self.mean.buf(),
            self.rstd.buf(),
            dx,
            self.gamma.grad.buf_mut(),
            self.beta.grad.buf_mut(),
            rows,
            self.dim,
        );
    }
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param<B>)) {
        f(&mut self.gamma);
        f(&mut self.beta);
    }
    fn visit_params_ref(&self, f: &mut dyn FnMut(&Param<B>)) {
        f(&self.gamma);
        f(&self.beta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gradcheck::{check_layer, random_input};
    use crate::core::Cpu;

    #[test]
    fn gradient_check() {
        let mut ln = LayerNorm::<Cpu>::new(6);
        // non-trivial scale and shift so their gradients matter
        ln.gamma.value = Tensor::from_slice(&[6], &random_input(6, 11, 0.2));
        ln.beta.value = Tensor::from_slice(&[6], &random_input(6, 12, 0.0));
        check_layer(&mut ln, &[4, 6], random_input(24, 13, 0.0), 1e-2, 3e-3);
    }
}

#[cfg(test)]
mod parallel_tests {
    use super::*;
    use crate::core::cpu::with_intra_op_threads;
    use crate::core::gradcheck::random_input;
    use crate::core::Cpu;

    /// The multi-threaded paths (taken for large inputs) give the single-threaded results.
    #[test]
    fn threads_do_not_change_results() {
        let d = 8;
        let rows = crate::core::cpu::PARALLEL_MIN_ELEMS / d + 104;
        let x = Tensor::<Cpu>::from_slice(&[rows, d], &random_input(rows * d, 1, 0.0));
        let dy = Tensor::<Cpu>::from_slice(&[rows, d], &random_input(rows * d, 2, 0.0));
        let run = |threads| {
            with_intra_op_threads(threads, || {
                let mut ln = LayerNorm::<Cpu>::new(d);
                ln.gamma.value = Tensor::from_slice(&[d], &random_input(d, 3, 0.1));
                let (mut y, mut dx) = (Tensor::empty(), Tensor::empty());
                ln.forward(&x, &mut y, Mode::Train);
                ln.backward(&x, &y, &dy, Some(&mut dx));
                (y.to_vec(), dx.to_vec(), ln.gamma.grad.to_vec(), ln.beta.grad.to_vec())
            })
        };
        assert_eq!(run(1), run(2));
    }
}
