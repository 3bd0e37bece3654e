//! Residual block: `y = x + f(x)` for an inner [`Sequential`]; backward `dx = dy + f'(x)ᵀ·dy`.

use crate::core::backend::{Backend, BackendBase};
use crate::core::layer::{LayerTime, Sequential};
use crate::core::{Layer, Mode, Param, Tensor};
use crate::error::{Error, Result};

/// The backend kernel of the residual connection's sum.
pub trait ResidualOps: BackendBase {
    /// `y = a + b`.
    fn add(a: &Self::Buf, b: &Self::Buf, y: &mut Self::Buf);
}

/// `x + inner(x)`; the inner block must keep the shape.
pub struct Residual<B: Backend> {
    pub inner: Sequential<B>,
    inner_out: Tensor<B>,
    inner_dx: Tensor<B>,
}

impl<B: Backend> Residual<B> {
    pub fn new(layers: Vec<Box<dyn Layer<B>>>) -> Self {
        Self { inner: Sequential::new(layers), inner_out: Tensor::empty(), inner_dx: Tensor::empty() }
    }
}

impl<B: Backend> Layer<B> for Residual<B> {
    fn visit_activations(&self, x: &Tensor<B>, _y: &Tensor<B>, f: &mut crate::core::layer::ActivationVisitor<B>) {
        self.inner.visit_activations(x, &self.inner_out, f);
    }
    fn describe(&self) -> String {
        format!("residual({})", self.inner.describe())
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let s = self.inner.output_shape(input)?;
        if s != input {
            return Err(Error::Shape(format!("residual block changes shape {input:?} -> {s:?}")));
        }
        Ok(s)
    }
    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, mode: Mode) {
        self.inner.forward(x, &mut self.inner_out, mode);
        y.resize(x.shape());
        B::add(x.buf(), self.inner_out.buf(), y.buf_mut());
    }
    fn backward(&mut self, x: &Tensor<B>, _y: &Tensor<B>, dy: &Tensor<B>, dx: Option<&mut Tensor<B>>) {
        match dx {
            Some(dx) => {
                self.inner.backward(x, &self.inner_out, dy, Some(&mut self.inner_dx));
                dx.resize(x.shape());
                B::add(dy.buf(), self.inner_dx.buf(), dx.buf_mut());
            }
            None => self.inner.backward(x, &self.inner_out, dy, None),
        }
    }
    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param<B>)) {
        self.inner.visit_params(f);
    }
    fn visit_params_ref(&self, f: &mut dyn FnMut(&Param<B>)) {
        self.inner.visit_params_ref(f);
    }
    fn visit_buffers(&mut self, f: &mut dyn FnMut(&'static str, &mut Tensor<B>)) {
        self.inner.visit_buffers(f);
    }
    fn visit_buffers_ref(&self, f: &mut dyn FnMut(&'static str, &Tensor<B>)) {
        self.inner.visit_buffers_ref(f);
    }
    fn macs(&self, input: &[usize]) -> u64 {
        self.inner.macs(input)
    }
    fn children(&self) -> Vec<&dyn Layer<B>> {
        vec![&self.inner]
    }
    fn permute_positions(&mut self, perm: &[usize]) -> Result<usize> {
        self.inner.permute_positions(perm)
    }
    fn profile_inside(&mut self, on: bool) {
        self.inner.profile(on);
    }
    fn inside_profile(&self) -> Vec<LayerTime> {
        self.inner.profile_report()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gradcheck::{check_layer, random_input};
    use crate::core::init::InitRng;
    use crate::core::ops::{Gelu, Linear};
    use crate::core::Cpu;
    use rand::SeedableRng;

    #[test]
    fn gradient_check() {
        let mut rng = InitRng::seed_from_u64(3);
        let mut r = Residual::<Cpu>::new(vec![Box::new(Linear::new(6, 6, &mut rng)), Box::new(Gelu::default())]);
        check_layer(&mut r, &[3, 6], random_input(18, 4, 0.0), 1e-2, 2e-3);
    }
}
