//! BatchNorm over the channel (last) dimension, statistics over every other dimension.
//! Train: batch mean and (biased) variance, running statistics updated with momentum 0.1 and
//! the unbiased variance, as PyTorch does. Eval: running statistics.
//! Backward (train), per channel over its `n` values: `dx = r/n·(n·g − Σg − x̂·Σ(g·x̂))`,
//! `g = dy·γ`.

use crate::core::backend::{Backend, BackendBase};
use crate::core::{Layer, Mode, Param, Tensor};
use crate::error::{Error, Result};

/// The backend kernels of BatchNorm: per-channel statistics of a `[rows, channels]` view,
/// normalisation with the affine map, and the backward through both.
pub trait BatchNormOps: BackendBase {
    /// Train mode: computes batch `mean`/`rstd`, updates running stats, writes `y`.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_forward_train(
        x: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        y: &mut Self::Buf,
        mean: &mut Self::Buf,
        rstd: &mut Self::Buf,
        running_mean: &mut Self::Buf,
        running_var: &mut Self::Buf,
        rows: usize,
        c: usize,
        eps: f32,
        momentum: f32,
    );
    /// Eval mode: normalises with the running statistics (also written to `mean`/`rstd`, so a
    /// backward pass after an eval forward differentiates the function that was computed).
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_forward_eval(
        x: &Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        y: &mut Self::Buf,
        mean: &mut Self::Buf,
        rstd: &mut Self::Buf,
        running_mean: &Self::Buf,
        running_var: &Self::Buf,
        rows: usize,
        c: usize,
        eps: f32,
    );
    /// With `batch_stats` (train mode) the statistics depend on `x`; without (eval mode) they
    /// are constants and `dx = dy·γ·rstd`.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_backward(
        x: &Self::Buf,
        dy: &Self::Buf,
        gamma: &Self::Buf,
        mean: &Self::Buf,
        rstd: &Self::Buf,
        dx: Option<&mut Self::Buf>,
        dgamma: &mut Self::Buf,
        dbeta: &mut Self::Buf,
        rows: usize,
        c: usize,
        batch_stats: bool,
    );
}

/// BatchNorm with learned scale and shift and running statistics.
pub struct BatchNorm<B: Backend> {
    pub channels: usize,
    pub eps: f32,
    pub momentum: f32,
    pub gamma: Param<B>,
    pub beta: Param<B>,
    pub running_mean: Tensor<B>,
    pub running_var: Tensor<B>,
    mean: Tensor<B>,
    rstd: Tensor<B>,
    /// The mode of the last forward pass (backward differentiates what was computed).
    last_mode: Mode,
}

impl<B: Backend> BatchNorm<B> {
    pub fn new(channels: usize) -> Self {
        Self {
            channels,
            eps: 1e-5,
            momentum: 0.1,
            gamma: Param::new("gamma", &[channels], &vec![1.0; channels], false),
            beta: Param::new("beta", &[channels], &vec![0.0; channels], false),
            running_mean: Tensor::zeros(&[channels]),
            running_var: Tensor::from_slice(&[channels], &vec![1.0; channels]),
            mean: Tensor::zeros(&[channels]),
            rstd: Tensor::zeros(&[channels]),
            last_mode: Mode::Train,
        }
    }
}

impl<B: Backend> Layer<B> for BatchNorm<B> {
    fn reads(&self) -> crate::core::layer::Reads {
        crate::core::layer::Reads::Pointwise
    }
    fn describe(&self) -> String {
        format!("batch-norm({})", self.channels)
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        if input.last() != Some(&self.channels) {
            return Err(Error::Shape(format!("{} expects [.., {}], got {input:?}", self.describe(), self.channels)));
        }
        Ok(input.to_vec())
    }
    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, mode: Mode) {
        let c = self.channels;
        let rows = x.len() / c;
        y.resize(x.shape());
        self.last_mode = mode;
        match mode {
            Mode::Train => B::batch_norm_forward_train(
                x.buf(),
                self.gamma.value.buf(),
                self.beta.value.buf(),
                y.buf_mut(),
                self.mean.buf_mut(),
                self.rstd.buf_mut(),
                self.running_mean.buf_mut(),
                self.running_var.buf_mut(),
                rows,
                c,
                self.eps,
                self.momentum,
            ),
            Mode::Eval => B::batch_norm_forward_eval(
                x.buf(),
                self.gamma.value.buf(),
                self.beta.value.buf(),
                y.buf_mut(),
                self.mean.buf_mut(),
                self.rstd.buf_mut(),
                self.running_mean.buf(),
                self.running_var.buf(),
                rows,
                c,
                self.eps,
            ),
        }
    }
    fn backward(&mut self, x: &Tensor<B>, _y: &Tensor<B>, dy: &Tensor<B>, dx: Option<&mut Tensor<B>>) {
        let c = self.channels;
        let rows = x.len() / c;
        let dx = dx.map(|t| {
            t.resize(x.shape());
            t.buf_mut()
        });
        B::batch_norm_backward(
            x.buf(),
            dy.buf(),
            self.gamma.value.buf(),
            self.mean.buf(),
            self.rstd.buf(),
            dx,
            self.gamma.grad.buf_mut(),
            self.beta.grad.buf_mut(),
            rows,
            c,
            self.last_mode == Mode::Train,
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
    fn visit_buffers(&mut self, f: &mut dyn FnMut(&'static str, &mut Tensor<B>)) {
        f("running_mean", &mut self.running_mean);
        f("running_var", &mut self.running_var);
    }
    fn visit_buffers_ref(&self, f: &mut dyn FnMut(&'static str, &Tensor<B>)) {
        f("running_mean", &self.running_mean);
        f("running_var", &self.running_var);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gradcheck::{check_layer, random_input};
    use crate::core::Cpu;

    #[test]
    fn gradient_check_train_mode() {
        let mut bn = BatchNorm::<Cpu>::new(3);
        bn.gamma.value = Tensor::from_slice(&[3], &[0.5, -1.2, 2.0]);
        bn.beta.value = Tensor::from_slice(&[3], &[0.1, 0.0, -0.3]);
        check_layer(&mut bn, &[4, 2, 3], random_input(24, 21, 0.0), 1e-2, 3e-3);
    }

    /// After an eval forward the statistics are constants: dx = dy·γ/√(var+ε), checked
    /// against central differences of the eval-mode output.
    #[test]
    fn eval_mode_backward_matches_finite_differences() {
        let mut bn = BatchNorm::<Cpu>::new(2);
        bn.gamma.value = Tensor::from_slice(&[2], &[0.7, -1.5]);
        bn.running_mean = Tensor::from_slice(&[2], &[0.2, -0.4]);
        bn.running_var = Tensor::from_slice(&[2], &[2.0, 0.5]);
        let xs = random_input(8, 5, 0.0);
        let r = random_input(8, 6, 0.0);
        let mut x = Tensor::<Cpu>::from_slice(&[4, 2], &xs);
        let (mut y, mut dx) = (Tensor::empty(), Tensor::empty());
        bn.forward(&x, &mut y, Mode::Eval);
        bn.backward(&x, &y, &Tensor::from_slice(&[4, 2], &r), Some(&mut dx));
        let analytic = dx.to_vec();
        let eps = 1e-2;
        for i in 0..8 {
            let mut loss_at = |v: f32, x: &mut Tensor<Cpu>| {
                x.buf_mut()[i] = v;
                bn.forward(x, &mut y, Mode::Eval);
                y.to_vec().iter().zip(&r).map(|(a, b)| (a * b) as f64).sum::<f64>()
            };
            let numeric = (loss_at(xs[i] + eps, &mut x) - loss_at(xs[i] - eps, &mut x)) / (2.0 * eps as f64);
            loss_at(xs[i], &mut x);
            assert!((numeric - analytic[i] as f64).abs() < 1e-4, "dx[{i}]: {} vs {numeric}", analytic[i]);
        }
    }

    #[test]
    fn eval_uses_running_statistics() {
        let mut bn = BatchNorm::<Cpu>::new(1);
        let x = Tensor::<Cpu>::from_slice(&[4, 1], &[1.0, 2.0, 3.0, 4.0]);
        let mut y = Tensor::empty();
        bn.momentum = 1.0; // running stats become the batch's
        bn.forward(&x, &mut y, Mode::Train);
        assert!((bn.running_mean.to_vec()[0] - 2.5).abs() < 1e-6);
        assert!((bn.running_var.to_vec()[0] - 5.0 / 3.0).abs() < 1e-5);
        bn.forward(&x, &mut y, Mode::Eval);
        let want = (1.0 - 2.5) / (5.0f32 / 3.0 + 1e-5).sqrt();
        assert!((y.to_vec()[0] - want).abs() < 1e-5);
    }
}
