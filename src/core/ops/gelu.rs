//! GELU, the exact form PyTorch uses by default: `y = x·Φ(x)`, `Φ` the normal CDF;
//! `dy/dx = Φ(x) + x·φ(x)`.

use crate::core::backend::{Backend, BackendBase};
use crate::core::{Layer, Mode, Tensor};
use crate::error::Result;

/// The backend kernels of GELU (all buffers of one length; implementations check it).
pub trait GeluOps: BackendBase {
    /// `y = x·Φ(x)`; keeps `dydx = Φ(x) + x·φ(x)` for the backward pass.
    fn gelu_forward(x: &Self::Buf, y: &mut Self::Buf, dydx: &mut Self::Buf);
    /// `dx = dy · dydx`.
    fn gelu_backward(dydx: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf);
}

/// The GELU layer; keeps its local derivative from the forward pass.
pub struct Gelu<B: Backend> {
    dydx: Tensor<B>,
}

impl<B: Backend> Default for Gelu<B> {
    fn default() -> Self {
        Self { dydx: Tensor::empty() }
    }
}

impl<B: Backend> Layer<B> for Gelu<B> {
    fn reads(&self) -> crate::core::layer::Reads {
        crate::core::layer::Reads::Pointwise
    }
    fn is_nonlinearity(&self) -> bool {
        true
    }
    fn describe(&self) -> String {
        "gelu".into()
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        Ok(input.to_vec())
    }
    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, _mode: Mode) {
        y.resize(x.shape());
        self.dydx.resize(x.shape());
        B::gelu_forward(x.buf(), y.buf_mut(), self.dydx.buf_mut());
    }
    fn backward(&mut self, x: &Tensor<B>, _y: &Tensor<B>, dy: &Tensor<B>, dx: Option<&mut Tensor<B>>) {
        if let Some(dx) = dx {
            dx.resize(x.shape());
            B::gelu_backward(self.dydx.buf(), dy.buf(), dx.buf_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gradcheck::{check_layer, random_input};
    use crate::core::Cpu;

    fn gelu(x: f32) -> f32 {
        x * crate::core::cpu::elementwise::normal_cdf_pdf(x).0
    }

    #[test]
    fn gradient_check() {
        let x: Vec<f32> = random_input(40, 6, 0.0).iter().map(|v| v * 3.0).collect();
        check_layer(&mut Gelu::<Cpu>::default(), &[4, 10], x, 1e-2, 1e-3);
    }

    /// The CPU kernel writes `dydx` through a raw slice: mismatched lengths must stop it
    /// (a panic), never write out of bounds.
    #[test]
    #[should_panic(expected = "equal lengths")]
    fn mismatched_buffers_are_refused() {
        let x = vec![1.0f32; 100_000];
        let (mut y, mut dydx) = (vec![0.0f32; 100_000], vec![0.0f32; 10]);
        <Cpu as GeluOps>::gelu_forward(&x, &mut y, &mut dydx);
    }

    #[test]
    fn matches_exact_erf_gelu() {
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-1.0) + 0.158_655_3).abs() < 1e-6);
        for i in -400..=400 {
            let x = i as f32 / 50.0;
            let exact = 0.5 * x as f64 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2));
            assert!((gelu(x) as f64 - exact).abs() < 1e-6 * (1.0 + x.abs() as f64), "x = {x}");
        }
    }
}
