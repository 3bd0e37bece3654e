//! Patchify: `[B, H, W, C] -> [B, (H/p)·(W/p), p·p·C]`, cutting each image into p×p patches
//! (tokens) in raster order, each patch's values ordered (row, column, channel). The Mixer's
//! input layer; with p = 1 every pixel is a token. Backward puts the gradient back in place.

use crate::core::backend::{Backend, BackendBase};
use crate::core::{Layer, Mode, Tensor};
use crate::error::{Error, Result};

/// Cuts images into non-overlapping `patch`×`patch` tokens.
pub struct Patchify {
    pub patch: usize,
}

/// The backend kernels that cut images into non-overlapping patches (the Mixer's tokens) and
/// scatter gradients back.
pub trait PatchifyOps: BackendBase {
    /// Images `[n, h, w, c]` to tokens (`inverse`: tokens back to images).
    #[allow(clippy::too_many_arguments)]
    fn patchify(x: &Self::Buf, y: &mut Self::Buf, n: usize, h: usize, w: usize, c: usize, p: usize, inverse: bool);
}

impl Patchify {
    fn dims(&self, shape: &[usize]) -> Result<(usize, usize, usize, usize)> {
        match *shape {
            [n, h, w, c] if self.patch > 0 && h % self.patch == 0 && w % self.patch == 0 => Ok((n, h, w, c)),
            _ => Err(Error::Shape(format!(
                "patchify({}) needs [B, H, W, C] with H and W multiples of {0}, got {shape:?}",
                self.patch
            ))),
        }
    }
}

impl<B: Backend> Layer<B> for Patchify {
    fn describe(&self) -> String {
        format!("patchify({}x{0})", self.patch)
    }
    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let (n, h, w, c) = self.dims(input)?;
        let p = self.patch;
        Ok(vec![n, (h / p) * (w / p), p * p * c])
    }
    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, _mode: Mode) {
        let Ok((n, h, w, c)) = self.dims(x.shape()) else {
            return;
        };
        let p = self.patch;
        y.resize(&[n, (h / p) * (w / p), p * p * c]);
        if p == 1 {
            B::copy(x.buf(), y.buf_mut());
        } else {
            B::patchify(x.buf(), y.buf_mut(), n, h, w, c, p, false);
        }
    }
    fn backward(&mut self, x: &Tensor<B>, _y: &Tensor<B>, dy: &Tensor<B>, dx: Option<&mut Tensor<B>>) {
        let (Some(dx), Ok((n, h, w, c))) = (dx, self.dims(x.shape())) else {
            return;
        };
        let p = self.patch;
        dx.resize(x.shape());
        if p == 1 {
            B::copy(dy.buf(), dx.buf_mut());
        } else {
            B::patchify(dy.buf(), dx.buf_mut(), n, h, w, c, p, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gradcheck::{check_layer, random_input};
    use crate::core::Cpu;

    #[test]
    fn tokens_in_raster_order_and_gradient_check() {
        // one 4x4 image, 1 channel, values 0..16, patches of 2
        let x = Tensor::<Cpu>::from_slice(&[1, 4, 4, 1], &(0..16).map(|v| v as f32).collect::<Vec<_>>());
        let mut y = Tensor::empty();
        let mut p = Patchify { patch: 2 };
        Layer::<Cpu>::forward(&mut p, &x, &mut y, Mode::Eval);
        assert_eq!(y.shape(), &[1, 4, 4]);
        assert_eq!(&y.to_vec()[..8], &[0., 1., 4., 5., 2., 3., 6., 7.]);
        check_layer(&mut p, &[2, 4, 6, 3], random_input(144, 1, 0.0), 1e-2, 1e-3);
        check_layer(&mut Patchify { patch: 1 }, &[2, 2, 2, 3], random_input(24, 2, 0.0), 1e-2, 1e-3);
    }
}
