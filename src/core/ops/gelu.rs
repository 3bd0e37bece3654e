//! GELU, the exact form PyTorch uses by default: `y = x·Φ(x)`, `Φ` the normal CDF;
//! `dy/dx = Φ(x) + x·φ(x)`.

use crate::core::backend::{Backend, BackendBase};
use crate::core::cpu::{elementwise, Cpu};
use crate::core::{Layer, Mode, Tensor};
use crate::error::Result;

pub trait GeluOps: BackendBase {
    /// `y = x·Φ(x)`; keeps `dydx = Φ(x) + x·φ(x)` for the backward pass.
    fn gelu_forward(x: &Self::Buf, y: &mut Self::Buf, dydx: &mut Self::Buf);
    /// `dx = dy · dydx`.
    fn gelu_backward(dydx: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf);
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// `(Φ(x), φ(x))` with `erf` from Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7, the
/// precision of f32 here). Measured: libm's scalar `erff` made GELU 60% of a Mixer step; this
/// form shares one `exp(−x²/2)` between forward and derivative and vectorises (with the
/// polynomial `exp` of `cpu::math`).
#[inline(always)]
fn normal_cdf_pdf(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];
    let z = x.abs() * FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    // clamped so exp stays out of the denormal range (where φ is 0 to f32 precision anyway)
    let e = crate::core::cpu::math::exp(-0.5 * (x * x).min(170.0));
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let erf_abs = 1.0 - poly * e;
    let erf = if x < 0.0 { -erf_abs } else { erf_abs };
    (0.5 * (1.0 + erf), FRAC_1_SQRT_2PI * e)
}

#[cfg(test)]
fn gelu(x: f32) -> f32 {
    x * normal_cdf_pdf(x).0
}

#[inline(always)]
fn forward_slice(x: &[f32], o: &mut [f32], dydx: &mut [f32]) {
    for ((o, d), x) in o.iter_mut().zip(dydx.iter_mut()).zip(x) {
        let (cdf, pdf) = normal_cdf_pdf(*x);
        *o = x * cdf;
        *d = cdf + x * pdf;
    }
}

impl GeluOps for Cpu {
    fn gelu_forward(x: &Vec<f32>, y: &mut Vec<f32>, dydx: &mut Vec<f32>) {
        let dydx_ptr = dydx.as_mut_ptr() as usize;
        elementwise(y, |off, o| {
            let x = &x[off..off + o.len()];
            // SAFETY: `elementwise` hands out disjoint ranges of `y`; `dydx` has the same
            // length, so the same range of it is touched by this task alone.
            let d = unsafe { std::slice::from_raw_parts_mut((dydx_ptr as *mut f32).add(off), o.len()) };
            crate::dispatch_simd!(forward_slice(x, o, d))
        });
    }

    fn gelu_backward(dydx: &Vec<f32>, dy: &Vec<f32>, dx: &mut Vec<f32>) {
        elementwise(dx, |off, d| {
            let (s, g) = (&dydx[off..off + d.len()], &dy[off..off + d.len()]);
            for i in 0..d.len() {
                d[i] = g[i] * s[i];
            }
        });
    }
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

    #[test]
    fn gradient_check() {
        let x: Vec<f32> = random_input(40, 6, 0.0).iter().map(|v| v * 3.0).collect();
        check_layer(&mut Gelu::<Cpu>::default(), &[4, 10], x, 1e-2, 1e-3);
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
