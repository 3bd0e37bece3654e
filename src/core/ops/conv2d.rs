//! Convolution, channels last: `[B, H, W, Cin] -> [B, OH, OW, Cout]` (2-D) and, with a 1×k
//! kernel, `[B, L, Cin] -> [B, OL, Cout]` (1-D, see `conv1d.rs`).
//!
//! im2col turns each output position's receptive field into a row of `K = kh·kw·Cin` values
//! (ordered kernel-row, kernel-column, channel), so the convolution of a whole chunk of images
//! is one GEMM `[rows, K]·Wᵀ`, `W` being `[Cout, K]`. Channels-last makes the GEMM's output
//! already the next layer's input layout. Backward: `dW = dyᵀ·cols`, `db = Σ dy`,
//! `dcols = dy·W` scattered back by col2im. 1×1 convolutions skip im2col entirely.

use crate::core::backend::{Backend, BackendBase};
use crate::core::init::{fan_in_bound, uniform, InitRng};
use crate::core::{Layer, Mode, Param, Tensor};
use crate::error::{Error, Result};

/// Geometry of a sliding window over channels-last images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowGeom {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub oh: usize,
    pub ow: usize,
}

impl WindowGeom {
    /// Output size of one axis, or an error when the window does not fit.
    pub fn out_len(len: usize, k: usize, s: usize, p: usize) -> Result<usize> {
        if s == 0 || k == 0 || len + 2 * p < k {
            return Err(Error::Shape(format!("window {k} (stride {s}, padding {p}) does not fit length {len}")));
        }
        Ok((len + 2 * p - k) / s + 1)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        n: usize,
        h: usize,
        w: usize,
        c: usize,
        k: (usize, usize),
        s: (usize, usize),
        p: (usize, usize),
    ) -> Result<Self> {
        let oh = Self::out_len(h, k.0, s.0, p.0)?;
        let ow = Self::out_len(w, k.1, s.1, p.1)?;
        Ok(Self { n, h, w, c, kh: k.0, kw: k.1, sh: s.0, sw: s.1, ph: p.0, pw: p.1, oh, ow })
    }

    /// Values in one im2col row.
    pub fn k(&self) -> usize {
        self.kh * self.kw * self.c
    }

    /// Output positions per image.
    pub fn positions(&self) -> usize {
        self.oh * self.ow
    }

    /// True for a 1×1, stride-1, unpadded window: im2col would be the identity.
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.ph == 0 && self.pw == 0
    }
}

/// The backend kernels of a 2-D convolution: im2col, col2im, and the forward and backward
/// passes as matrix products over them.
pub trait Conv2dOps: BackendBase {
    /// Writes the im2col rows of images `img0..img0+imgs` into `cols` (`[imgs·OH·OW, K]`).
    fn im2col(x: &Self::Buf, g: &WindowGeom, cols: &mut Self::Buf, img0: usize, imgs: usize);
    /// Overwrites images `img0..img0+imgs` of `dx` with the scatter-add of `cols`.
    fn col2im(cols: &Self::Buf, g: &WindowGeom, dx: &mut Self::Buf, img0: usize, imgs: usize);
    /// `y = conv(x, w) + b` for the whole batch (`w` `[Cout, K]`). `scratch` is the backend's
    /// to use (resized as needed); returns whether it still holds the batch's im2col rows,
    /// which [`Conv2dOps::conv2d_backward`] may then reuse. `mode`: whether a backward pass
    /// may follow (a backend may convolve differently when none will).
    #[allow(clippy::too_many_arguments)]
    fn conv2d_forward(
        x: &Self::Buf,
        w: &Self::Buf,
        b: &Self::Buf,
        g: &WindowGeom,
        cout: usize,
        scratch: &mut Self::Buf,
        y: &mut Self::Buf,
        mode: Mode,
    ) -> bool;
    /// Writes `dw`, `db` and, if given, `dx`.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_backward(
        x: &Self::Buf,
        w: &Self::Buf,
        dy: &Self::Buf,
        g: &WindowGeom,
        cout: usize,
        scratch: &mut Self::Buf,
        scratch_holds_cols: bool,
        dw: &mut Self::Buf,
        db: &mut Self::Buf,
        dx: Option<&mut Self::Buf>,
    );
}

/// Reads `[B, L, C]` as `[B, 1, L, C]` (1-D) or `[B, H, W, C]` (2-D).
pub(crate) fn image_dims(shape: &[usize]) -> Option<(usize, usize, usize, usize)> {
    match *shape {
        [n, l, c] => Some((n, 1, l, c)),
        [n, h, w, c] => Some((n, h, w, c)),
        _ => None,
    }
}

/// Output shape of a window op with `out_c` channels, keeping the input's 1-D or 2-D form.
pub(crate) fn window_out_shape(input: &[usize], g: &WindowGeom, out_c: usize) -> crate::core::tensor::Shape {
    if input.len() == 3 {
        crate::core::tensor::Shape::from(&[g.n, g.ow, out_c][..])
    } else {
        crate::core::tensor::Shape::from(&[g.n, g.oh, g.ow, out_c][..])
    }
}

/// A convolution layer (1-D or 2-D by its input's rank), PyTorch-default initialisation.
pub struct Conv<B: Backend> {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub weight: Param<B>,
    pub bias: Param<B>,
    /// The backend's working memory (im2col rows, partial sums), reused every step.
    scratch: B::Buf,
    /// `scratch` still holds the last forward pass's im2col rows.
    scratch_holds_cols: bool,
}

impl<B: Backend> Conv<B> {
    /// A 2-D convolution with square kernel `k`, stride `s` and padding `p`.
    pub fn new_2d(cin: usize, cout: usize, k: usize, s: usize, p: usize, rng: &mut InitRng) -> Self {
        Self::new(cin, cout, (k, k), (s, s), (p, p), rng)
    }

    pub fn new(
        cin: usize,
        cout: usize,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        rng: &mut InitRng,
    ) -> Self {
        let k = kernel.0 * kernel.1 * cin;
        let bound = fan_in_bound(k);
        let w = uniform(rng, cout * k, bound);
        let b = uniform(rng, cout, bound);
        Self {
            in_channels: cin,
            out_channels: cout,
            kernel,
            stride,
            padding,
            weight: Param::new("weight", &[cout, k], &w, true),
            bias: Param::new("bias", &[cout], &b, false),
            scratch: B::zeros(0),
            scratch_holds_cols: false,
        }
    }

    fn geom(&self, shape: &[usize]) -> Result<WindowGeom> {
        let (n, h, w, c) = image_dims(shape).ok_or_else(|| {
            Error::Shape(format!("{} expects [B, L, C] or [B, H, W, C], got {shape:?}", self.describe()))
        })?;
        if c != self.in_channels {
            return Err(Error::Shape(format!(
                "{} expects {} input channels, got {c}",
                self.describe(),
                self.in_channels
            )));
        }
        WindowGeom::new(n, h, w, c, self.kernel, self.stride, self.padding)
    }

    fn describe_conv(&self) -> String {
        let (kh, kw) = self.kernel;
        if kh == 1 && self.stride.0 == 1 && self.padding.0 == 0 {
            format!(
                "conv1d({}->{}, k{kw}, s{}, p{})",
                self.in_channels, self.out_channels, self.stride.1, self.padding.1
            )
        } else {
            format!(
                "conv2d({}->{}, k{kh}x{kw}, s{}, p{})",
                self.in_channels, self.out_channels, self.stride.0, self.padding.0
            )
        }
    }
}

impl<B: Backend> Layer<B> for Conv<B> {
    fn reads(&self) -> crate::core::layer::Reads {
        crate::core::layer::Reads::Window {
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            weighted: true,
        }
    }
    fn describe(&self) -> String {
        self.describe_conv()
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let g = self.geom(input)?;
        Ok(window_out_shape(input, &g, self.out_channels).to_vec())
    }

    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, mode: Mode) {
        let Ok(g) = self.geom(x.shape()) else { return };
        y.resize(&window_out_shape(x.shape(), &g, self.out_channels));
        self.scratch_holds_cols = B::conv2d_forward(
            x.buf(),
            self.weight.value.buf(),
            self.bias.value.buf(),
            &g,
            self.out_channels,
            &mut self.scratch,
            y.buf_mut(),
            mode,
        );
    }

    fn backward(&mut self, x: &Tensor<B>, _y: &Tensor<B>, dy: &Tensor<B>, dx: Option<&mut Tensor<B>>) {
        let Ok(g) = self.geom(x.shape()) else { return };
        let dx = dx.map(|t| {
            t.resize(x.shape());
            t.buf_mut()
        });
        B::conv2d_backward(
            x.buf(),
            self.weight.value.buf(),
            dy.buf(),
            &g,
            self.out_channels,
            &mut self.scratch,
            self.scratch_holds_cols,
            self.weight.grad.buf_mut(),
            self.bias.grad.buf_mut(),
            dx,
        );
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
        self.geom(input).map(|g| (g.n * g.positions() * g.k() * self.out_channels) as u64).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gradcheck::{check_layer, random_input};
    use crate::core::Cpu;
    use rand::SeedableRng;

    #[test]
    fn gradient_check_strided_padded() {
        let mut rng = InitRng::seed_from_u64(5);
        let mut c = Conv::<Cpu>::new_2d(3, 4, 3, 2, 1, &mut rng);
        assert_eq!(c.output_shape(&[2, 5, 6, 3]).unwrap(), vec![2, 3, 3, 4]);
        check_layer(&mut c, &[2, 5, 6, 3], random_input(180, 6, 0.0), 1e-2, 3e-3);
    }

    #[test]
    fn gradient_check_pointwise() {
        let mut rng = InitRng::seed_from_u64(7);
        let mut c = Conv::<Cpu>::new_2d(3, 2, 1, 1, 0, &mut rng);
        check_layer(&mut c, &[2, 3, 3, 3], random_input(54, 8, 0.0), 1e-2, 3e-3);
    }

    #[test]
    fn all_ones_kernel_sums_the_window() {
        let mut rng = InitRng::seed_from_u64(1);
        let mut c = Conv::<Cpu>::new_2d(1, 1, 3, 1, 1, &mut rng);
        c.weight.value.fill(1.0);
        c.bias.value.fill(0.0);
        let x = Tensor::<Cpu>::from_slice(&[1, 3, 3, 1], &[1.0; 9]);
        let mut y = Tensor::empty();
        c.forward(&x, &mut y, Mode::Eval);
        assert_eq!(y.to_vec(), vec![4., 6., 4., 6., 9., 6., 4., 6., 4.]);
    }
}

#[cfg(test)]
mod parallel_tests {
    use super::*;
    use crate::core::cpu::with_intra_op_threads;
    use crate::core::gradcheck::random_input;
    use crate::core::Cpu;
    use rand::SeedableRng;

    /// The batch split across threads (taken for large layers) matches one thread exactly:
    /// 64 images of 166k multiply-adds make three blocks of 26 (about 2^22 multiply-adds
    /// each), shared by two threads, and dW adds the blocks' sums in block order.
    #[test]
    fn threads_do_not_change_results() {
        let shape = [64, 12, 12, 8];
        let n: usize = shape.iter().product();
        let x = Tensor::<Cpu>::from_slice(&shape, &random_input(n, 1, 0.0));
        let run = |threads| {
            with_intra_op_threads(threads, || {
                let mut c = Conv::<Cpu>::new_2d(8, 16, 3, 1, 1, &mut InitRng::seed_from_u64(4));
                let (mut y, mut dx) = (Tensor::empty(), Tensor::empty());
                c.forward(&x, &mut y, Mode::Train);
                let dy = Tensor::<Cpu>::from_slice(y.shape(), &random_input(y.len(), 2, 0.0));
                c.backward(&x, &y, &dy, Some(&mut dx));
                (y.to_vec(), dx.to_vec(), c.weight.grad.to_vec(), c.bias.grad.to_vec())
            })
        };
        assert!(run(1) == run(2));
    }
}
