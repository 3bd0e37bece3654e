//! LayerNorm over the last dimension: `y = (x − μ)/√(σ² + ε) · γ + β`, per row.
//! Backward with `x̂ = (x − μ)·r`, `g = dy·γ`: `dx = r·(g − mean(g) − x̂·mean(g·x̂))`,
//! `dγ = Σ_rows dy·x̂`, `dβ = Σ_rows dy`.

use crate::core::backend::{Backend, BackendBase};
use crate::core::cpu::{chunking, for_each_chunk_mut, Cpu, PARALLEL_MIN_ELEMS};
use crate::core::{Layer, Mode, Param, Tensor};
use crate::error::{Error, Result};

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

/// Rows per parallel task for row-wise kernels.
fn rows_per_task(rows: usize, d: usize) -> usize {
    if rows * d < PARALLEL_MIN_ELEMS {
        rows.max(1)
    } else {
        chunking(rows, 8)
    }
}

impl LayerNormOps for Cpu {
    fn layer_norm_forward(
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        y: &mut Vec<f32>,
        mean: &mut Vec<f32>,
        rstd: &mut Vec<f32>,
        rows: usize,
        d: usize,
        eps: f32,
    ) {
        for r in 0..rows {
            let row = &x[r * d..(r + 1) * d];
            let m = row.iter().sum::<f32>() / d as f32;
            let var = row.iter().map(|v| (v - m) * (v - m)).sum::<f32>() / d as f32;
            mean[r] = m;
            rstd[r] = 1.0 / (var + eps).sqrt();
        }
        let rpt = rows_per_task(rows, d);
        let (mean, rstd) = (&*mean, &*rstd);
        for_each_chunk_mut(&mut y[..rows * d], rpt * d, |t, out| {
            for (i, o) in out.chunks_exact_mut(d).enumerate() {
                let r = t * rpt + i;
                let row = &x[r * d..(r + 1) * d];
                let (m, s) = (mean[r], rstd[r]);
                for j in 0..d {
                    o[j] = (row[j] - m) * s * gamma[j] + beta[j];
                }
            }
        });
    }

    fn layer_norm_backward(
        x: &Vec<f32>,
        dy: &Vec<f32>,
        gamma: &Vec<f32>,
        mean: &Vec<f32>,
        rstd: &Vec<f32>,
        dx: Option<&mut Vec<f32>>,
        dgamma: &mut Vec<f32>,
        dbeta: &mut Vec<f32>,
        rows: usize,
        d: usize,
    ) {
        dgamma[..d].fill(0.0);
        dbeta[..d].fill(0.0);
        for r in 0..rows {
            let (m, s) = (mean[r], rstd[r]);
            let (xr, gr) = (&x[r * d..(r + 1) * d], &dy[r * d..(r + 1) * d]);
            for j in 0..d {
                dgamma[j] += gr[j] * (xr[j] - m) * s;
                dbeta[j] += gr[j];
            }
        }
        let Some(dx) = dx else { return };
        let rpt = rows_per_task(rows, d);
        for_each_chunk_mut(&mut dx[..rows * d], rpt * d, |t, out| {
            for (i, o) in out.chunks_exact_mut(d).enumerate() {
                let r = t * rpt + i;
                let (m, s) = (mean[r], rstd[r]);
                let (xr, gr) = (&x[r * d..(r + 1) * d], &dy[r * d..(r + 1) * d]);
                let (mut mg, mut mgx) = (0.0f32, 0.0f32);
                for j in 0..d {
                    let g = gr[j] * gamma[j];
                    mg += g;
                    mgx += g * (xr[j] - m) * s;
                }
                mg /= d as f32;
                mgx /= d as f32;
                for j in 0..d {
                    let xhat = (xr[j] - m) * s;
                    o[j] = s * (gr[j] * gamma[j] - mg - xhat * mgx);
                }
            }
        });
    }
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

    #[test]
    fn gradient_check() {
        let mut ln = LayerNorm::<Cpu>::new(6);
        // non-trivial scale and shift so their gradients matter
        ln.gamma.value = Tensor::from_slice(&[6], &random_input(6, 11, 0.2));
        ln.beta.value = Tensor::from_slice(&[6], &random_input(6, 12, 0.0));
        check_layer(&mut ln, &[4, 6], random_input(24, 13, 0.0), 1e-2, 3e-3);
    }
}
