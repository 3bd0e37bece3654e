//! Convolution, channels last: `[B, H, W, Cin] -> [B, OH, OW, Cout]` (2-D) and, with a 1×k
//! kernel, `[B, L, Cin] -> [B, OL, Cout]` (1-D, see `conv1d.rs`).
//!
//! im2col turns each output position's receptive field into a row of `K = kh·kw·Cin` values
//! (ordered kernel-row, kernel-column, channel), so the convolution of a whole chunk of images
//! is one GEMM `[rows, K]·Wᵀ`, `W` being `[Cout, K]`. Channels-last makes the GEMM's output
//! already the next layer's input layout. Backward: `dW = dyᵀ·cols`, `db = Σ dy`,
//! `dcols = dy·W` scattered back by col2im. 1×1 convolutions skip im2col entirely.

use crate::core::backend::{Backend, BackendBase};
use crate::core::cpu::{for_each_chunk_mut, Cpu};
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
            return Err(Error::Shape(format!(
                "window {k} (stride {s}, padding {p}) does not fit length {len}"
            )));
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
        Ok(Self {
            n,
            h,
            w,
            c,
            kh: k.0,
            kw: k.1,
            sh: s.0,
            sw: s.1,
            ph: p.0,
            pw: p.1,
            oh,
            ow,
        })
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

pub trait Conv2dOps: BackendBase {
    /// Writes the im2col rows of images `img0..img0+imgs` into `cols` (`[imgs·OH·OW, K]`).
    fn im2col(x: &Self::Buf, g: &WindowGeom, cols: &mut Self::Buf, img0: usize, imgs: usize);
    /// Overwrites images `img0..img0+imgs` of `dx` with the scatter-add of `cols`.
    fn col2im(cols: &Self::Buf, g: &WindowGeom, dx: &mut Self::Buf, img0: usize, imgs: usize);
}

impl Conv2dOps for Cpu {
    fn im2col(x: &Vec<f32>, g: &WindowGeom, cols: &mut Vec<f32>, img0: usize, imgs: usize) {
        let (k, p) = (g.k(), g.positions());
        let per_image = p * k;
        let images_per_task = if imgs * per_image < (1 << 16) {
            imgs
        } else {
            1
        };
        for_each_chunk_mut(
            &mut cols[..imgs * per_image],
            images_per_task * per_image,
            |t, out| {
                for (i, img_cols) in out.chunks_exact_mut(per_image).enumerate() {
                    let b = img0 + t * images_per_task + i;
                    let img = &x[b * g.h * g.w * g.c..(b + 1) * g.h * g.w * g.c];
                    im2col_image(img, g, img_cols);
                }
            },
        );
    }

    fn col2im(cols: &Vec<f32>, g: &WindowGeom, dx: &mut Vec<f32>, img0: usize, imgs: usize) {
        let img_len = g.h * g.w * g.c;
        let per_image = g.positions() * g.k();
        let images_per_task = if imgs * per_image < (1 << 16) {
            imgs
        } else {
            1
        };
        let region = &mut dx[img0 * img_len..(img0 + imgs) * img_len];
        for_each_chunk_mut(region, images_per_task * img_len, |t, out| {
            for (i, img) in out.chunks_exact_mut(img_len).enumerate() {
                let local = t * images_per_task + i;
                col2im_image(&cols[local * per_image..(local + 1) * per_image], g, img);
            }
        });
    }
}

/// One image's im2col rows (zeros where the window hangs over the padding).
fn im2col_image(img: &[f32], g: &WindowGeom, out: &mut [f32]) {
    let c = g.c;
    let mut o = 0;
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            for ki in 0..g.kh {
                let iy = (oy * g.sh + ki) as isize - g.ph as isize;
                if iy < 0 || iy >= g.h as isize {
                    out[o..o + g.kw * c].fill(0.0);
                    o += g.kw * c;
                    continue;
                }
                let row = iy as usize * g.w;
                for kj in 0..g.kw {
                    let ix = (ox * g.sw + kj) as isize - g.pw as isize;
                    if ix < 0 || ix >= g.w as isize {
                        out[o..o + c].fill(0.0);
                    } else {
                        let src = (row + ix as usize) * c;
                        out[o..o + c].copy_from_slice(&img[src..src + c]);
                    }
                    o += c;
                }
            }
        }
    }
}

/// One image's gradient: the sum of every im2col row entry that read each input value.
fn col2im_image(cols: &[f32], g: &WindowGeom, img: &mut [f32]) {
    let c = g.c;
    img.fill(0.0);
    let mut o = 0;
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            for ki in 0..g.kh {
                let iy = (oy * g.sh + ki) as isize - g.ph as isize;
                if iy < 0 || iy >= g.h as isize {
                    o += g.kw * c;
                    continue;
                }
                let row = iy as usize * g.w;
                for kj in 0..g.kw {
                    let ix = (ox * g.sw + kj) as isize - g.pw as isize;
                    if ix >= 0 && ix < g.w as isize {
                        let dst = (row + ix as usize) * c;
                        img[dst..dst + c]
                            .iter_mut()
                            .zip(&cols[o..o + c])
                            .for_each(|(d, s)| *d += s);
                    }
                    o += c;
                }
            }
        }
    }
}

/// im2col scratch is processed in chunks of whole images of at most this many values.
const CHUNK_VALUES: usize = 1 << 22;

/// Reads `[B, L, C]` as `[B, 1, L, C]` (1-D) or `[B, H, W, C]` (2-D).
pub(crate) fn image_dims(shape: &[usize]) -> Option<(usize, usize, usize, usize)> {
    match *shape {
        [n, l, c] => Some((n, 1, l, c)),
        [n, h, w, c] => Some((n, h, w, c)),
        _ => None,
    }
}

/// Output shape of a window op with `out_c` channels, keeping the input's 1-D or 2-D form.
pub(crate) fn window_out_shape(
    input: &[usize],
    g: &WindowGeom,
    out_c: usize,
) -> crate::core::tensor::Shape {
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
    cols: Tensor<B>,
    dcols: Tensor<B>,
    /// `cols` holds the whole batch from the last forward pass.
    cols_hold_batch: bool,
}

impl<B: Backend> Conv<B> {
    /// A 2-D convolution with square kernel `k`, stride `s` and padding `p`.
    pub fn new_2d(
        cin: usize,
        cout: usize,
        k: usize,
        s: usize,
        p: usize,
        rng: &mut InitRng,
    ) -> Self {
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
            cols: Tensor::empty(),
            dcols: Tensor::empty(),
            cols_hold_batch: false,
        }
    }

    fn geom(&self, shape: &[usize]) -> Result<WindowGeom> {
        let (n, h, w, c) = image_dims(shape).ok_or_else(|| {
            Error::Shape(format!(
                "{} expects [B, L, C] or [B, H, W, C], got {shape:?}",
                self.describe()
            ))
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

    fn images_per_chunk(g: &WindowGeom) -> usize {
        (CHUNK_VALUES / (g.positions() * g.k()).max(1)).clamp(1, g.n.max(1))
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
    fn describe(&self) -> String {
        self.describe_conv()
    }

    fn output_shape(&self, input: &[usize]) -> Result<Vec<usize>> {
        let g = self.geom(input)?;
        Ok(window_out_shape(input, &g, self.out_channels).to_vec())
    }

    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, _mode: Mode) {
        let Ok(g) = self.geom(x.shape()) else { return };
        let (p, k, cout) = (g.positions(), g.k(), self.out_channels);
        y.resize(&window_out_shape(x.shape(), &g, cout));
        let chunk = Self::images_per_chunk(&g);
        self.cols_hold_batch = chunk >= g.n && !g.is_pointwise();
        for img0 in (0..g.n).step_by(chunk) {
            let imgs = chunk.min(g.n - img0);
            let rows = imgs * p;
            let out = (y.buf_mut(), img0 * p * cout, cout);
            if g.is_pointwise() {
                B::matmul(
                    rows,
                    cout,
                    k,
                    (x.buf(), img0 * p * k, k, 1),
                    (self.weight.value.buf(), 0, 1, k),
                    out,
                    false,
                );
            } else {
                self.cols.resize(&[rows, k]);
                B::im2col(x.buf(), &g, self.cols.buf_mut(), img0, imgs);
                B::matmul(
                    rows,
                    cout,
                    k,
                    (self.cols.buf(), 0, k, 1),
                    (self.weight.value.buf(), 0, 1, k),
                    out,
                    false,
                );
            }
        }
        B::add_bias_rows(y.buf_mut(), self.bias.value.buf(), g.n * p, cout);
    }

    fn backward(
        &mut self,
        x: &Tensor<B>,
        _y: &Tensor<B>,
        dy: &Tensor<B>,
        mut dx: Option<&mut Tensor<B>>,
    ) {
        let Ok(g) = self.geom(x.shape()) else { return };
        let (p, k, cout) = (g.positions(), g.k(), self.out_channels);
        B::sum_rows(dy.buf(), self.bias.grad.buf_mut(), g.n * p, cout);
        if let Some(dx) = dx.as_deref_mut() {
            dx.resize(x.shape());
        }
        let chunk = Self::images_per_chunk(&g);
        for img0 in (0..g.n).step_by(chunk) {
            let imgs = chunk.min(g.n - img0);
            let rows = imgs * p;
            let dy_off = img0 * p * cout;
            let acc = img0 > 0;
            if g.is_pointwise() {
                let a = (dy.buf(), dy_off, 1, cout);
                B::matmul(
                    cout,
                    k,
                    rows,
                    a,
                    (x.buf(), img0 * p * k, k, 1),
                    (self.weight.grad.buf_mut(), 0, k),
                    acc,
                );
                if let Some(dx) = dx.as_deref_mut() {
                    let w = (self.weight.value.buf(), 0, k, 1);
                    B::matmul(
                        rows,
                        k,
                        cout,
                        (dy.buf(), dy_off, cout, 1),
                        w,
                        (dx.buf_mut(), img0 * p * k, k),
                        false,
                    );
                }
                continue;
            }
            if !self.cols_hold_batch {
                self.cols.resize(&[rows, k]);
                B::im2col(x.buf(), &g, self.cols.buf_mut(), img0, imgs);
            }
            let a = (dy.buf(), dy_off, 1, cout);
            B::matmul(
                cout,
                k,
                rows,
                a,
                (self.cols.buf(), 0, k, 1),
                (self.weight.grad.buf_mut(), 0, k),
                acc,
            );
            if let Some(dx) = dx.as_deref_mut() {
                self.dcols.resize(&[rows, k]);
                let w = (self.weight.value.buf(), 0, k, 1);
                B::matmul(
                    rows,
                    k,
                    cout,
                    (dy.buf(), dy_off, cout, 1),
                    w,
                    (self.dcols.buf_mut(), 0, k),
                    false,
                );
                B::col2im(self.dcols.buf(), &g, dx.buf_mut(), img0, imgs);
            }
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
        self.geom(input)
            .map(|g| (g.n * g.positions() * g.k() * self.out_channels) as u64)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::gradcheck::{check_layer, random_input};
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
