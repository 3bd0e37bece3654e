//! Convolution, channels last: `[B, H, W, Cin] -> [B, OH, OW, Cout]` (2-D) and, with a 1×k
//! kernel, `[B, L, Cin] -> [B, OL, Cout]` (1-D, see `conv1d.rs`).
//!
//! im2col turns each output position's receptive field into a row of `K = kh·kw·Cin` values
//! (ordered kernel-row, kernel-column, channel), so the convolution of a whole chunk of images
//! is one GEMM `[rows, K]·Wᵀ`, `W` being `[Cout, K]`. Channels-last makes the GEMM's output
//! already the next layer's input layout. Backward: `dW = dyᵀ·cols`, `db = Σ dy`,
//! `dcols = dy·W` scattered back by col2im. 1×1 convolutions skip im2col entirely.

use crate::core::backend::{Backend, BackendBase};
use crate::core::cpu::{for_each_chunk_mut, sgemm, Cpu};
use crate::core::init::{fan_in_bound, uniform, InitRng};
use crate::core::ops::linear::LinearOps;
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

pub trait Conv2dOps: BackendBase {
    /// Writes the im2col rows of images `img0..img0+imgs` into `cols` (`[imgs·OH·OW, K]`).
    fn im2col(x: &Self::Buf, g: &WindowGeom, cols: &mut Self::Buf, img0: usize, imgs: usize);
    /// Overwrites images `img0..img0+imgs` of `dx` with the scatter-add of `cols`.
    fn col2im(cols: &Self::Buf, g: &WindowGeom, dx: &mut Self::Buf, img0: usize, imgs: usize);
    /// `y = conv(x, w) + b` for the whole batch (`w` `[Cout, K]`). `scratch` is the backend's
    /// to use (resized as needed); returns whether it still holds the batch's im2col rows,
    /// which [`Conv2dOps::conv2d_backward`] may then reuse.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_forward(
        x: &Self::Buf,
        w: &Self::Buf,
        b: &Self::Buf,
        g: &WindowGeom,
        cout: usize,
        scratch: &mut Self::Buf,
        y: &mut Self::Buf,
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

impl Conv2dOps for Cpu {
    fn im2col(x: &Vec<f32>, g: &WindowGeom, cols: &mut Vec<f32>, img0: usize, imgs: usize) {
        let (k, p) = (g.k(), g.positions());
        let per_image = p * k;
        let images_per_task = if imgs * per_image < (1 << 16) { imgs } else { 1 };
        for_each_chunk_mut(&mut cols[..imgs * per_image], images_per_task * per_image, |t, out| {
            for (i, img_cols) in out.chunks_exact_mut(per_image).enumerate() {
                let b = img0 + t * images_per_task + i;
                let img = &x[b * g.h * g.w * g.c..(b + 1) * g.h * g.w * g.c];
                im2col_image(img, g, img_cols);
            }
        });
    }

    fn col2im(cols: &Vec<f32>, g: &WindowGeom, dx: &mut Vec<f32>, img0: usize, imgs: usize) {
        let img_len = g.h * g.w * g.c;
        let per_image = g.positions() * g.k();
        let images_per_task = if imgs * per_image < (1 << 16) { imgs } else { 1 };
        let region = &mut dx[img0 * img_len..(img0 + imgs) * img_len];
        for_each_chunk_mut(region, images_per_task * img_len, |t, out| {
            for (i, img) in out.chunks_exact_mut(img_len).enumerate() {
                let local = t * images_per_task + i;
                col2im_image(&cols[local * per_image..(local + 1) * per_image], g, img);
            }
        });
    }

    fn conv2d_forward(
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: &Vec<f32>,
        g: &WindowGeom,
        cout: usize,
        scratch: &mut Vec<f32>,
        y: &mut Vec<f32>,
    ) -> bool {
        let (p, k) = (g.positions(), g.k());
        let split = BatchSplit::new(g, cout);
        let (cols_len, _, per_range) = split.layout(g, cout);
        if scratch.len() < split.ranges * per_range {
            scratch.resize(split.ranges * per_range, 0.0);
        }
        let body = |r: usize, yr: &mut [f32], sr: &mut [f32]| {
            let images = split.images(r, g.n);
            for img0 in images.clone().step_by(split.sub) {
                let imgs = split.sub.min(images.end - img0);
                let rows = imgs * p;
                let out = &mut yr[(img0 - images.start) * p * cout..][..rows * cout];
                if g.is_pointwise() {
                    sgemm(rows, cout, k, (&x[img0 * p * k..], k, 1), (w, 1, k), (out, cout), false);
                } else {
                    let cols = &mut sr[..cols_len];
                    Cpu::im2col_into(x, g, cols, img0, imgs);
                    sgemm(rows, cout, k, (cols, k, 1), (w, 1, k), (out, cout), false);
                }
                for row in out.chunks_exact_mut(cout) {
                    for (o, bias) in row.iter_mut().zip(&b[..cout]) {
                        *o += bias;
                    }
                }
            }
        };
        let (y, scratch) = (&mut y[..g.n * p * cout], &mut scratch[..split.ranges * per_range]);
        if split.ranges == 1 {
            body(0, y, scratch);
        } else {
            use rayon::prelude::*;
            y.par_chunks_mut(split.per_range * p * cout)
                .zip(scratch.par_chunks_mut(per_range))
                .enumerate()
                .for_each(|(r, (yr, sr))| crate::core::cpu::with_intra_op_threads(1, || body(r, yr, sr)));
        }
        !g.is_pointwise() && split.holds_batch()
    }

    fn conv2d_backward(
        x: &Vec<f32>,
        w: &Vec<f32>,
        dy: &Vec<f32>,
        g: &WindowGeom,
        cout: usize,
        scratch: &mut Vec<f32>,
        scratch_holds_cols: bool,
        dw: &mut Vec<f32>,
        db: &mut Vec<f32>,
        dx: Option<&mut Vec<f32>>,
    ) {
        let (p, k) = (g.positions(), g.k());
        let split = BatchSplit::new(g, cout);
        let (cols_per_range, dcols_per_range, per_range) = split.layout(g, cout);
        if scratch.len() < split.ranges * per_range {
            scratch.resize(split.ranges * per_range, 0.0);
        }
        let img_len = g.h * g.w * g.c;
        let want_dx = dx.is_some();
        let mut no_dx = [0.0f32; 1];
        let (dx_slice, dx_per_range): (&mut [f32], usize) = match dx {
            Some(d) => (&mut d[..g.n * img_len], split.per_range * img_len),
            None => (&mut no_dx[..], 0),
        };
        let body = |r: usize, dxr: &mut [f32], sr: &mut [f32]| {
            let (cols, rest) = sr.split_at_mut(cols_per_range);
            let (dcols, dw_part) = rest.split_at_mut(dcols_per_range);
            let images = split.images(r, g.n);
            for img0 in images.clone().step_by(split.sub) {
                let imgs = split.sub.min(images.end - img0);
                let rows = imgs * p;
                let dyc = &dy[img0 * p * cout..];
                let acc = img0 > images.start;
                let local = (img0 - images.start) * img_len;
                if g.is_pointwise() {
                    let xc = &x[img0 * p * k..];
                    sgemm(cout, k, rows, (dyc, 1, cout), (xc, k, 1), (&mut dw_part[..cout * k], k), acc);
                    if want_dx {
                        sgemm(rows, k, cout, (dyc, cout, 1), (w, k, 1), (&mut dxr[local..], k), false);
                    }
                    continue;
                }
                if !scratch_holds_cols {
                    Cpu::im2col_into(x, g, cols, img0, imgs);
                }
                sgemm(cout, k, rows, (dyc, 1, cout), (cols, k, 1), (&mut dw_part[..cout * k], k), acc);
                if want_dx {
                    sgemm(rows, k, cout, (dyc, cout, 1), (w, k, 1), (dcols, k), false);
                    let per_image = p * k;
                    for i in 0..imgs {
                        let img = &mut dxr[local + i * img_len..local + (i + 1) * img_len];
                        col2im_image(&dcols[i * per_image..(i + 1) * per_image], g, img);
                    }
                }
            }
        };
        let scratch = &mut scratch[..split.ranges * per_range];
        if split.ranges == 1 {
            body(0, dx_slice, scratch);
        } else if want_dx {
            use rayon::prelude::*;
            dx_slice
                .par_chunks_mut(dx_per_range)
                .zip(scratch.par_chunks_mut(per_range))
                .enumerate()
                .for_each(|(r, (dxr, sr))| crate::core::cpu::with_intra_op_threads(1, || body(r, dxr, sr)));
        } else {
            use rayon::prelude::*;
            scratch
                .par_chunks_mut(per_range)
                .enumerate()
                .for_each(|(r, sr)| crate::core::cpu::with_intra_op_threads(1, || body(r, &mut [], sr)));
        }
        // dW: the ranges' partial sums, added in range order (fixed for a thread count)
        let dw = &mut dw[..cout * k];
        dw.copy_from_slice(&scratch[cols_per_range + dcols_per_range..per_range]);
        for r in 1..split.ranges {
            let part = &scratch[r * per_range + cols_per_range + dcols_per_range..(r + 1) * per_range];
            dw.iter_mut().zip(part).for_each(|(d, v)| *d += v);
        }
        Cpu::sum_rows(dy, db, g.n * p, cout);
    }
}

/// How the CPU convolution splits a batch: `ranges` contiguous runs of whole images, one per
/// thread, each processed in sub-chunks of at most `sub` images (bounded im2col scratch).
/// Splitting the batch (rather than each GEMM) needs one fork-join per layer: measured on the
/// W3b workload, GEMM-internal threading ran slower on 2 threads than 1 thread did.
#[derive(Clone, Copy, Debug)]
struct BatchSplit {
    ranges: usize,
    per_range: usize,
    sub: usize,
}

/// Below this many multiply-adds per layer a convolution runs on one thread.
const PARALLEL_CONV_MIN_MACS: usize = 1 << 20;

impl BatchSplit {
    fn new(g: &WindowGeom, cout: usize) -> Self {
        let macs = g.n * g.positions() * g.k() * cout;
        let threads = crate::core::cpu::intra_op_threads();
        let ranges = if threads > 1 && macs >= PARALLEL_CONV_MIN_MACS { threads.min(g.n).max(1) } else { 1 };
        let per_range = g.n.div_ceil(ranges).max(1);
        let ranges = g.n.div_ceil(per_range).max(1);
        let per_image = (g.positions() * g.k()).max(1);
        let sub = (CHUNK_VALUES / ranges / per_image).clamp(1, per_range);
        Self { ranges, per_range, sub }
    }

    /// Scratch layout per range: (im2col rows, their gradient, partial dW), each range's
    /// block `per_range` values long. The same layout in forward and backward lets the
    /// backward pass reuse the forward pass's im2col rows in place.
    fn layout(&self, g: &WindowGeom, cout: usize) -> (usize, usize, usize) {
        let cols = if g.is_pointwise() { 0 } else { self.sub * g.positions() * g.k() };
        (cols, cols, 2 * cols + cout * g.k())
    }

    /// Whether one sub-chunk covers each range, so the scratch holds the whole batch's rows.
    fn holds_batch(&self) -> bool {
        self.sub >= self.per_range
    }

    /// Images of range `r`.
    fn images(&self, r: usize, n: usize) -> std::ops::Range<usize> {
        let start = (r * self.per_range).min(n);
        start..((r + 1) * self.per_range).min(n)
    }
}

impl Cpu {
    /// im2col rows of `imgs` images starting at `img0` into `out` (`imgs·P·K` values).
    fn im2col_into(x: &[f32], g: &WindowGeom, out: &mut [f32], img0: usize, imgs: usize) {
        let per_image = g.positions() * g.k();
        let img_len = g.h * g.w * g.c;
        for (i, o) in out[..imgs * per_image].chunks_exact_mut(per_image).enumerate() {
            let b = img0 + i;
            im2col_image(&x[b * img_len..(b + 1) * img_len], g, o);
        }
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
                        img[dst..dst + c].iter_mut().zip(&cols[o..o + c]).for_each(|(d, s)| *d += s);
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

    fn forward(&mut self, x: &Tensor<B>, y: &mut Tensor<B>, _mode: Mode) {
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
    use rand::SeedableRng;

    /// The batch split across threads (taken for large layers) matches one thread exactly in
    /// the forward pass and dx, and to rounding in dW (partial sums are added per range).
    #[test]
    fn threads_do_not_change_results() {
        let shape = [10, 12, 12, 8];
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
        let (a, b) = (run(1), run(2));
        assert_eq!(a.0, b.0);
        assert_eq!(a.1, b.1);
        assert_eq!(a.3, b.3);
        for (u, v) in a.2.iter().zip(&b.2) {
            assert!((u - v).abs() <= 1e-4 * (1.0 + u.abs()), "{u} vs {v}");
        }
    }
}
